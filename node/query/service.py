"""Evaluate a ``cohort.count`` request on the node's store, and answer it under the policy.

:func:`evaluate` computes the true, unprotected figures — they never leave this module's
callers on the node. :func:`answer` is the whole path of a query: policy and budget checks,
evaluation, disclosure control, the differencing guard, and the audit record.
:func:`preview` is the same path without its effects: what the node would answer now, for
hospital IT deciding on a query that waits for approval.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from sqlalchemy import FromClause, distinct, extract, func, select
from sqlalchemy.orm import Session

from common import audit
from common.crypto import SiteSecret
from common.schemas.catalogue import age_band
from common.schemas.cohort import (
    PARTITIONING_BREAKDOWNS,
    Breakdown,
    CohortCountAnswer,
    CohortCountRequest,
    StatisticRequest,
    canonical_hash,
)
from node.clinical.models import Measurement
from node.query import disclosure, scratch
from node.query.compile import Compiler, concept_condition, demographics, needs_demographics
from node.query.concepts import Expander, fact_codes, ontology_expander
from node.query.disclosure import Policy, Published
from node.query.exceptions import QueryRefused
from node.query.labels import label_new_series
from node.query.models import SeriesLabel
from node.query.schemas import Evaluation, GroupValues
from node.store.db import lock_for_writing
from node.store.models import AuditRecord, Patient, Series, Study

logger = logging.getLogger(__name__)

SERIES_BREAKDOWNS = (
    Breakdown.MODALITY,
    Breakdown.SEQUENCE_TYPE,
    Breakdown.BODY_PART,
    Breakdown.STUDY_YEAR,
)
SPLIT_GROUPS = ("yes", "no")


def _patient_values(
    session: Session, cohort: FromClause, breakdowns: set[Breakdown]
) -> dict[Breakdown, dict[str, set[str]]]:
    """Patient-level breakdowns (each patient has exactly one value), from one read of the
    cohort's demographics."""
    if not breakdowns:
        return {}
    demo = demographics(within=cohort)
    first_study = (
        select(Patient.subject_key, func.min(Study.study_date).label("date"))
        .join(Study, Study.patient_id == Patient.id)
        .join(cohort, cohort.c.subject_key == Patient.subject_key)
        .group_by(Patient.subject_key)
        .subquery("first_study")
    )
    age = extract("year", first_study.c.date) - demo.c.birth_year
    rows = session.connection().execute(
        select(demo.c.subject_key, demo.c.sex, age).outerjoin(
            first_study, first_study.c.subject_key == demo.c.subject_key
        )
    )
    found: dict[Breakdown, dict[str, set[str]]] = {b: {} for b in breakdowns}
    sexes, bands = found.get(Breakdown.SEX), found.get(Breakdown.AGE_BAND)
    for key, sex, years in rows:
        if sexes is not None:
            sexes[key] = {(sex or "").strip().upper()}
        if bands is not None:
            bands[key] = {_age_band(None if years is None else int(years))}
    return found


_age_band = functools.lru_cache(maxsize=256)(age_band)  # a few dozen ages, many patients


def _series_values(session: Session, matched: FromClause) -> dict[Breakdown, dict[str, set[str]]]:
    """Series-level breakdowns: a patient is in the cell of each of their matching series."""
    statement = (
        select(
            matched.c.subject_key,
            Series.modality,
            SeriesLabel.sequence_type,
            SeriesLabel.body_part,
            Study.study_date,
        )
        .join(Series, Series.id == matched.c.series_id)
        .join(Study, Study.id == matched.c.study_id)
        .outerjoin(SeriesLabel, SeriesLabel.series_id == Series.id)
    )
    values: dict[Breakdown, dict[str, set[str]]] = {b: defaultdict(set) for b in SERIES_BREAKDOWNS}
    for key, modality, kind, body, study_date in session.execute(statement):
        values[Breakdown.MODALITY][key].add((modality or "").upper())
        values[Breakdown.SEQUENCE_TYPE][key].add(kind or "")
        values[Breakdown.BODY_PART][key].add(body or "")
        values[Breakdown.STUDY_YEAR][key].add(str(study_date.year) if study_date else "")
    return values


def _cells(values_of: dict[str, set[str]]) -> dict[str, int]:
    cells: dict[str, int] = defaultdict(int)
    for values in values_of.values():
        for value in values:
            cells[value] += 1
    return dict(cells)


def _latest_values(
    session: Session, cohort: FromClause, request: StatisticRequest, expander: Expander
) -> dict[str, float]:
    """Each cohort patient's latest value of the measurement (ties: the last recorded)."""
    codes = fact_codes(request.measurement, descendants=True, expander=expander)
    statement = select(
        Measurement.subject_key, Measurement.date, Measurement.id, Measurement.value_as_number
    ).where(
        concept_condition(Measurement, codes),
        Measurement.value_as_number.is_not(None),
        Measurement.subject_key.in_(select(cohort.c.subject_key)),
    )
    if request.unit is not None:
        statement = statement.where(Measurement.unit == request.unit)
    latest: dict[str, tuple[tuple[dt.date, int], float]] = {}
    for key, when, row_id, value in session.execute(statement):
        order = (when or dt.date.min, row_id)
        if value is not None and (key not in latest or order > latest[key][0]):
            latest[key] = (order, float(value))
    return {key: value for key, (_, value) in latest.items()}


def _statistic_groups(
    session: Session,
    compiler: Compiler,
    request: StatisticRequest,
    cohort: FromClause,
    patients: frozenset[str],
    values_by: dict[Breakdown, dict[str, set[str]]],
) -> dict[str, set[str]]:
    if request.split is not None:
        inside = set(
            session.scalars(
                select(cohort.c.subject_key).where(
                    compiler.condition(request.split, cohort.c.subject_key)
                )
            )
        )
        return {"yes": inside & patients, "no": set(patients) - inside}
    if request.by is None:
        return {"all": set(patients)}
    groups: dict[str, set[str]] = defaultdict(set)
    for key, values in values_by[request.by].items():
        for value in values:
            groups[value].add(key)
    return dict(groups)


def evaluate(
    request: CohortCountRequest, *, session: Session, expander: Expander | None = None
) -> Evaluation:
    """The true figures of ``request`` on this store (labels new series first)."""
    label_new_series(session=session)
    split = request.statistic.split if request.statistic is not None else None
    with ExitStack() as scratches:
        people = None
        if needs_demographics(request.cohort, split):
            people = scratches.enter_context(scratch.demographics(session))
        compiler = Compiler(
            cohort=request.cohort,
            dialect=session.get_bind().dialect.name,
            expander=expander or ontology_expander(session),
            people=people,
        )
        cohort = scratches.enter_context(scratch.cohort_keys(session, compiler.patients()))
        return _figures(session, request, compiler, cohort)


def _figures(
    session: Session, request: CohortCountRequest, compiler: Compiler, cohort: FromClause
) -> Evaluation:
    """The figures of the cohort whose keys ``cohort`` holds."""
    patients = frozenset(session.connection().scalars(select(cohort.c.subject_key)))
    matched = compiler.matched_series(cohort)
    studies, series = session.execute(
        select(func.count(distinct(matched.c.study_id)), func.count(distinct(matched.c.series_id)))
    ).one()

    wanted = set(request.breakdowns)
    statistic = request.statistic
    if statistic is not None and statistic.by is not None:
        wanted.add(statistic.by)
    values_by: dict[Breakdown, dict[str, set[str]]] = {}
    if wanted & set(SERIES_BREAKDOWNS):
        values_by.update(_series_values(session, matched))
    values_by.update(_patient_values(session, cohort, wanted & PARTITIONING_BREAKDOWNS))
    breakdowns = {b: _cells(values_by[b]) for b in request.breakdowns}

    groups: dict[str, GroupValues] | None = None
    if statistic is not None:
        values = _latest_values(session, cohort, statistic, compiler.expander)
        groups = {
            name: GroupValues(
                members=frozenset(k for k in members if k in values),
                values=tuple(values[k] for k in sorted(members) if k in values),
            )
            for name, members in _statistic_groups(
                session, compiler, statistic, cohort, patients, values_by
            ).items()
        }
    return Evaluation(
        patients=patients,
        studies=int(studies),
        series=int(series),
        breakdowns=breakdowns,
        statistic=groups,
    )


def _audit(
    session: Session, *, actor: str, action: str, project: str, details: dict[str, Any]
) -> None:
    audit.append(session, AuditRecord, actor=actor, action=action, subject=project, details=details)


def refuse(session: Session, *, actor: str, project: str, question_hash: str, reason: str) -> None:
    """Record a refusal in the node's audit log (the caller commits)."""
    logger.info("refused a query of project %s: %s", project, reason)
    _audit(
        session,
        actor=actor,
        action="query.refused",
        project=project,
        details={"question": question_hash, "reason": reason},
    )


def _published(
    request: CohortCountRequest,
    question_hash: str,
    *,
    session: Session,
    policy: Policy,
    secret: SiteSecret,
    expander: Expander | None,
) -> tuple[Published, tuple[frozenset[str], ...]]:
    """Every check, the evaluation and disclosure control: the answer, and the patient sets
    it is about as the guard keeps them. Raises :class:`QueryRefused`."""
    disclosure.check_request(request, policy)
    disclosure.check_budget(request.project, policy, session=session)
    evaluation = evaluate(request, session=session, expander=expander)
    published = disclosure.protect(evaluation, request, policy, secret, question_hash)
    hashed = disclosure.hashed_sets(published.member_sets, secret)
    disclosure.guard_differencing(request.project, hashed, policy, session=session)
    return published, hashed


@dataclass(frozen=True)
class Preview:
    """What the node would answer now, or why it would refuse."""

    answer: CohortCountAnswer | None
    refusal: str


def preview(
    request: CohortCountRequest,
    *,
    session: Session,
    policy: Policy,
    secret: SiteSecret,
    expander: Expander | None = None,
) -> Preview:
    """The answer :func:`answer` would give now; nothing is remembered, counted or audited."""
    try:
        published, _ = _published(
            request,
            canonical_hash(request),
            session=session,
            policy=policy,
            secret=secret,
            expander=expander,
        )
    except QueryRefused as refused:
        return Preview(answer=None, refusal=refused.reason)
    return Preview(answer=published.answer, refusal="")


def answer(
    request: CohortCountRequest,
    *,
    session: Session,
    policy: Policy,
    secret: SiteSecret,
    actor: str,
    expander: Expander | None = None,
) -> CohortCountAnswer:
    """The disclosure-controlled answer, remembered for the differencing guard and audited.

    Raises :class:`QueryRefused` when the policy, the budget or the guard forbids it; the
    caller records the refusal with :func:`refuse`.

    The whole of it runs as the node's only writer (:func:`lock_for_writing`): the budget
    and the differencing guard read what earlier answers remembered, so two answers must
    not interleave, and a write committed elsewhere meanwhile must not fail this one."""
    lock_for_writing(session)
    question_hash = canonical_hash(request)
    published, hashed = _published(
        request, question_hash, session=session, policy=policy, secret=secret, expander=expander
    )
    disclosure.remember(request.project, question_hash, hashed, session=session)
    result = published.answer
    _audit(
        session,
        actor=actor,
        action="query.answered",
        project=request.project,
        details={
            "question": question_hash,
            "patients": result.patients.display(policy.min_cell),
            "studies": result.studies.display(policy.min_cell),
            "series": result.series.display(policy.min_cell),
            "breakdowns": sorted(result.breakdowns),
            "statistic": result.statistic is not None,
        },
    )
    logger.info("answered a query of project %s (%s)", request.project, question_hash[:12])
    return result


__all__ = [
    "Evaluation",
    "GroupValues",
    "Preview",
    "QueryRefused",
    "answer",
    "evaluate",
    "preview",
    "refuse",
]
