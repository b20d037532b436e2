"""Disclosure control at the node (DESIGN.md, decision 7): nothing small leaves, ever.

- A count below ``min_cell`` is never published, only the reason (``below_threshold``).
- Published counts get noise (when ``noise`` > 0) and are rounded to ``rounding``. The
  noise is a function of the site secret, the question's canonical hash and the cell, so
  asking again returns the same answer: averaging repeats cannot remove it.
- Breakdown cells and histogram bins are suppressed with complementary suppression
  (:func:`node.catalogue.suppression.suppress`): the total of each breakdown is known, so
  withholding one small cell alone would reveal it by subtraction.
- A statistic group (n, sum, sum of squares) is withheld when it has fewer than
  ``min_cell`` patients with a value, and complementarily where the groups partition them.
- The differencing guard: for each project the node keeps the patient sets it has
  published about (the cohort, each statistic group), as keyed hashes of their members.
  A new set that differs from a remembered one by at least one and fewer than ``min_cell``
  patients is refused, so two answers can never be subtracted to single out a patient.
- A per-project budget of answered queries.
"""

from __future__ import annotations

import functools
import hmac
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.crypto import SiteSecret
from common.schemas.cohort import (
    PARTITIONING_BREAKDOWNS,
    Breakdown,
    BreakdownCell,
    CohortCountAnswer,
    CohortCountRequest,
    Count,
    GroupStatistic,
    StatisticAnswer,
    StatisticRequest,
    Withheld,
)
from node.catalogue.suppression import rounded, suppress
from node.query.exceptions import QueryRefused
from node.query.models import QueryAnswer
from node.query.schemas import Evaluation, GroupValues
from node.settings import NodeSettings

_MEMBER_HASH_CHARS = 20  # 80 bits: no collisions within a hospital's patients


@dataclass(frozen=True)
class Policy:
    """What this node publishes (mirrors the ``query_*`` node settings)."""

    min_cell: int = 10
    rounding: int = 5
    noise: float = 0.0
    breakdowns: frozenset[str] = frozenset(b.value for b in Breakdown)
    statistics: bool = True
    auto_answer: bool = True
    budget: int = 1000

    @classmethod
    def from_settings(cls, settings: NodeSettings) -> Policy:
        return cls(
            min_cell=settings.query_min_cell,
            rounding=settings.query_rounding,
            noise=settings.query_noise,
            breakdowns=frozenset(settings.query_breakdowns),
            statistics=settings.query_statistics,
            auto_answer=settings.query_auto_answer,
            budget=settings.query_budget_per_project,
        )


# -- before evaluating -----------------------------------------------------------------------


def check_request(request: CohortCountRequest, policy: Policy) -> None:
    """The breakdowns and statistic asked are ones the node answers (whether it answers at
    once or after local approval is the handler's business: ``auto_answer``)."""
    for breakdown in request.breakdowns:
        if breakdown.value not in policy.breakdowns:
            raise QueryRefused(f"this node does not allow the breakdown {breakdown.value!r}")
    statistic = request.statistic
    if statistic is not None:
        if not policy.statistics:
            raise QueryRefused("this node does not answer statistics")
        if statistic.by is not None and statistic.by.value not in policy.breakdowns:
            raise QueryRefused(f"this node does not allow the breakdown {statistic.by.value!r}")


def answered_count(project: str, *, session: Session) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(QueryAnswer).where(QueryAnswer.project == project)
        )
        or 0
    )


def check_budget(project: str, policy: Policy, *, session: Session) -> None:
    if answered_count(project, session=session) >= policy.budget:
        raise QueryRefused(f"the project's query budget at this node ({policy.budget}) is spent")


# -- protecting the figures ------------------------------------------------------------------


def _uniform(secret: SiteSecret, question_hash: str, cell: str) -> float:
    """A number in (0, 1) fixed by the secret, the question and the cell."""
    digest = secret.digest("query-noise", question_hash, cell)
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2**64


def noise(secret: SiteSecret, question_hash: str, cell: str, scale: float) -> int:
    """Laplace noise of ``scale``, rounded to a whole count; 0 when ``scale`` is 0."""
    if scale <= 0:
        return 0
    u = _uniform(secret, question_hash, cell) - 0.5
    return round(-scale * math.copysign(1.0, u) * math.log(1 - 2 * abs(u)))


@dataclass(frozen=True)
class Publisher:
    policy: Policy
    secret: SiteSecret
    question_hash: str

    def count(self, true_count: int, cell: str, withheld: bool = False) -> Count:
        if true_count < self.policy.min_cell:
            return Count(withheld=Withheld.BELOW_THRESHOLD)
        if withheld:
            return Count(withheld=Withheld.COMPLEMENTARY)
        noisy = true_count + noise(self.secret, self.question_hash, cell, self.policy.noise)
        # Noise may not bring a published count under the threshold: "<10" means fewer.
        return Count(value=max(rounded(noisy, self.policy.rounding), self.policy.min_cell))

    def cells(self, counts: Mapping[str, int], prefix: str) -> dict[str, Count]:
        """Cells of one table whose total is known: small ones and their complements out."""
        withheld = suppress(counts, self.policy.min_cell, [sorted(counts)])
        return {
            key: self.count(value, f"{prefix}/{key}", key in withheld)
            for key, value in counts.items()
        }


@dataclass(frozen=True)
class Published:
    answer: CohortCountAnswer
    member_sets: tuple[frozenset[str], ...]  # the patient sets the answer is about


def _histogram(values: Iterable[float], edges: list[float]) -> tuple[dict[str, int], list[str]]:
    """Counts per bin (``[a, b)``, the last one closed) and below / above the edges."""
    names = [f"bin{i}" for i in range(len(edges) - 1)]
    counts = dict.fromkeys([*names, "below", "above"], 0)
    for value in values:
        if value < edges[0]:
            counts["below"] += 1
        elif value > edges[-1]:
            counts["above"] += 1
        else:
            index = next((i for i in range(len(edges) - 1) if value < edges[i + 1]), len(edges) - 2)
            counts[names[index]] += 1
    return counts, names


def _statistic(
    publisher: Publisher,
    request: StatisticRequest,
    groups: Mapping[str, GroupValues],
) -> tuple[StatisticAnswer, list[frozenset[str]]]:
    min_cell = publisher.policy.min_cell
    sizes = {name: len(group.values) for name, group in groups.items()}
    partition = request.split is not None or request.by in PARTITIONING_BREAKDOWNS
    withheld = suppress(sizes, min_cell, [sorted(sizes)] if partition else [])
    answers: list[GroupStatistic] = []
    published_sets: list[frozenset[str]] = []
    for name in sorted(groups):
        members, values = groups[name].members, groups[name].values
        if name in withheld:
            reason = Withheld.BELOW_THRESHOLD if sizes[name] < min_cell else Withheld.COMPLEMENTARY
            answers.append(GroupStatistic(group=name, withheld=reason))
            continue
        counts, bins = _histogram(values, request.bin_edges)
        cells = publisher.cells(counts, f"statistic/{name}")
        answers.append(
            GroupStatistic(
                group=name,
                n=len(values),
                sum=math.fsum(values),
                sum_squares=math.fsum(v * v for v in values),
                histogram=[cells[b] for b in bins],
                below=cells["below"],
                above=cells["above"],
            )
        )
        published_sets.append(members)
    by = "split" if request.split is not None else (request.by.value if request.by else "all")
    answer = StatisticAnswer(
        measurement=request.measurement,
        unit=request.unit,
        by=by,
        bin_edges=request.bin_edges,
        groups=answers,
    )
    return answer, published_sets


def protect(
    evaluation: Evaluation,
    request: CohortCountRequest,
    policy: Policy,
    secret: SiteSecret,
    question_hash: str,
) -> Published:
    """The answer that may leave the node, and the patient sets it tells about."""
    publisher = Publisher(policy, secret, question_hash)
    total = len(evaluation.patients)
    patients = publisher.count(total, "patients")
    if patients.value is None:  # a small cohort: nothing else about it either
        hidden = Count(withheld=Withheld.BELOW_THRESHOLD)
        return Published(
            CohortCountAnswer(
                cohort_hash=question_hash,
                min_cell=policy.min_cell,
                rounding=policy.rounding,
                noisy=policy.noise > 0,
                patients=patients,
                studies=hidden,
                series=hidden,
            ),
            (),
        )
    breakdowns = {
        name.value: [
            BreakdownCell(value=value, patients=count)
            for value, count in sorted(publisher.cells(cells, f"breakdown/{name.value}").items())
        ]
        for name, cells in evaluation.breakdowns.items()
    }
    statistic = None
    sets: list[frozenset[str]] = [evaluation.patients]
    if request.statistic is not None and evaluation.statistic is not None:
        statistic, group_sets = _statistic(publisher, request.statistic, evaluation.statistic)
        sets.extend(group_sets)
    answer = CohortCountAnswer(
        cohort_hash=question_hash,
        min_cell=policy.min_cell,
        rounding=policy.rounding,
        noisy=policy.noise > 0,
        patients=patients,
        studies=publisher.count(evaluation.studies, "studies"),
        series=publisher.count(evaluation.series, "series"),
        breakdowns=breakdowns,
        statistic=statistic,
    )
    return Published(answer, tuple(sets))


# -- the differencing guard ------------------------------------------------------------------


def member_hashes(members: Iterable[str], secret: SiteSecret) -> frozenset[str]:
    key = secret.digest("query-guard", "", "member-key")
    return frozenset(_member_hash(key, m) for m in members)


def hashed_sets(sets: Iterable[frozenset[str]], secret: SiteSecret) -> tuple[frozenset[str], ...]:
    """The patient sets an answer is about, as the guard compares and remembers them."""
    return tuple(member_hashes(s, secret) for s in sets)


@functools.lru_cache(maxsize=200_000)
def _member_hash(key: bytes, member: str) -> str:
    # A node's patients recur from query to query: each is hashed once (one-shot HMAC).
    return hmac.digest(key, member.encode("utf-8"), "sha256").hex()[:_MEMBER_HASH_CHARS]


def _remembered(project: str, *, session: Session) -> Iterable[str]:
    """The remembered patient sets of the project, one line each."""
    statement = select(QueryAnswer.member_sets).where(QueryAnswer.project == project)
    for (text,) in session.execute(statement.execution_options(yield_per=200)):
        yield from text.splitlines()


def guard_differencing(
    project: str,
    hashed: Iterable[frozenset[str]],
    policy: Policy,
    *,
    session: Session,
) -> None:
    """Refuse when a published set (:func:`hashed_sets`) differs from an earlier one by
    1 … min_cell - 1 patients."""
    current_sets = list(hashed)
    if not current_sets:
        return
    for line in _remembered(project, session=session):
        size = line.count(" ") + 1 if line else 0
        # The difference is at least the difference in size: most sets are never parsed.
        near = [c for c in current_sets if abs(size - len(c)) < policy.min_cell]
        if not near:
            continue
        earlier = frozenset(line.split())
        for current in near:
            difference = len(earlier ^ current)
            if 0 < difference < policy.min_cell:
                raise QueryRefused(
                    "the patients counted differ from an earlier answer to this project by "
                    f"fewer than {policy.min_cell}: answering could single patients out"
                )


def remember(
    project: str,
    question_hash: str,
    hashed: Iterable[frozenset[str]],
    *,
    session: Session,
) -> None:
    """Keep the answer's patient sets (:func:`hashed_sets`) for the guard."""
    lines = [" ".join(sorted(members)) for members in hashed]
    session.add(
        QueryAnswer(project=project, question_hash=question_hash, member_sets="\n".join(lines))
    )
    session.flush()
