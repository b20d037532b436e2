"""The cohort builder's form, turned into a ``cohort.count`` payload (common/schemas/cohort.py).

The form is a list of criterion rows and a few settings. Each row has a *role*:

* ``include`` — the patient must match it; the included rows are combined with ``all``
  (AND) or ``any`` (OR), as the form says;
* ``include_not`` — the patient must *not* match it, inside that same combination (NOT);
* ``exclude`` — a patient matching it is left out whatever else holds (the cohort's
  ``exclusion``: any excluded row excludes).

A row may be named (``id``) and another row's time window (``within``) anchored on it:
"an MR within 90 days after the first dementia diagnosis". A definition pasted as JSON is
used as it is, for trees the rows cannot draw (nested groups).

Problems are collected per row and field ("criterion 2: concept: …"), never echoing what
was typed beyond the field's name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import ImmutableMultiDict

from common.schemas.cohort import (
    AnchorOccurrence,
    Breakdown,
    CohortCountRequest,
    Criterion,
    InvalidCohort,
    parse_cohort,
)

ROLES = ("include", "include_not", "exclude")
KINDS = ("patient", "imaging", "condition", "medication", "procedure", "measurement")
CONCEPT_KINDS = frozenset({"condition", "medication", "procedure", "measurement"})
EVENT_KINDS = frozenset(KINDS) - {"patient"}
SEXES = {"F": "female", "M": "male", "O": "other", "U": "unknown"}
ROW_FIELDS = (
    "role",
    "kind",
    "id",
    "concept",
    "sex",
    "modality",
    "body_part",
    "sequence_type",
    "contrast",
    "value_min",
    "value_max",
    "unit",
    "age_min",
    "age_max",
    "anchor",
    "min_days",
    "max_days",
    "occurrence",
)
STARTING_ROWS = 3
MAX_ROWS = 20
_criterion = TypeAdapter[Criterion](Criterion)


@dataclass
class Row:
    """One criterion row as typed; every field a string ("" when left empty)."""

    values: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.values.get(name, "")

    @property
    def used(self) -> bool:
        return bool(self["kind"])


@dataclass
class CohortForm:
    name: str = ""
    project: str = ""
    combine: str = "all"
    rows: list[Row] = field(default_factory=lambda: [Row() for _ in range(STARTING_ROWS)])
    breakdowns: list[str] = field(default_factory=list)
    stat_measurement: str = ""
    stat_unit: str = ""
    stat_bins: str = ""
    stat_by: str = ""
    stat_split: str = ""
    definition: str = ""  # a pasted JSON definition; used instead of the rows when given

    @classmethod
    def from_form(cls, form: ImmutableMultiDict[str, Any]) -> CohortForm:
        count = min(_int(form.get("rows"), STARTING_ROWS), MAX_ROWS)
        rows = [
            Row({name: str(form.get(f"c{index}_{name}") or "").strip() for name in ROW_FIELDS})
            for index in range(count)
        ]
        return cls(
            name=str(form.get("name") or "").strip(),
            project=str(form.get("project") or "").strip(),
            combine="any" if form.get("combine") == "any" else "all",
            rows=rows,
            breakdowns=[str(v) for v in form.getlist("breakdown") if v],
            stat_measurement=str(form.get("stat_measurement") or "").strip(),
            stat_unit=str(form.get("stat_unit") or "").strip(),
            stat_bins=str(form.get("stat_bins") or "").strip(),
            stat_by=str(form.get("stat_by") or "").strip(),
            stat_split=str(form.get("stat_split") or "").strip(),
            definition=str(form.get("definition") or "").strip(),
        )

    def with_another_row(self) -> CohortForm:
        if len(self.rows) < MAX_ROWS:
            self.rows.append(Row())
        return self


class FormProblems(ValueError):
    """Everything wrong with the form, one line per row and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _int(value: object, default: int) -> int:
    try:
        return max(int(str(value)), 1)
    except (TypeError, ValueError):
        return default


# -- rows -> criteria ----------------------------------------------------------------------------


def _terms(text: str, *, upper: bool = False) -> list[str]:
    terms = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    return [term.upper() for term in terms] if upper else terms


def _number(row: Row, name: str, label: str, problems: list[str]) -> float | None:
    text = row[name]
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        problems.append(f"{label}: {name.replace('_', ' ')} must be a number")
        return None


def criterion(row: Row, label: str, problems: list[str]) -> dict[str, Any] | None:
    """The criterion a row stands for, or None with its problems appended."""
    kind = row["kind"]
    if kind not in KINDS:
        problems.append(f"{label}: choose what kind of criterion it is")
        return None
    found: dict[str, Any] = {"kind": kind}
    before = len(problems)
    if kind == "patient":
        _patient_fields(row, label, found, problems)
    elif kind == "imaging":
        _imaging_fields(row, found)
    else:
        _concept_fields(row, label, found, problems)
    if kind in EVENT_KINDS:
        _event_fields(row, label, found, problems)
    if len(problems) > before:
        return None
    try:
        _criterion.validate_python(found)
    except ValidationError as exc:
        problems.extend(_messages(exc, label))
        return None
    return found


def _patient_fields(row: Row, label: str, found: dict[str, Any], problems: list[str]) -> None:
    if row["sex"] not in SEXES:
        problems.append(f"{label}: choose a sex")
    found["sex"] = [row["sex"]]


def _imaging_fields(row: Row, found: dict[str, Any]) -> None:
    for name in ("modality", "body_part", "sequence_type"):
        if row[name]:
            found[name] = _terms(row[name], upper=name == "modality")
    if row["contrast"] in {"yes", "no"}:
        found["contrast"] = row["contrast"] == "yes"


def _concept_fields(row: Row, label: str, found: dict[str, Any], problems: list[str]) -> None:
    if not row["concept"]:
        problems.append(f"{label}: concept: write SYSTEM:CODE, e.g. ICD10CM:G30")
    found["concept"] = row["concept"]
    if row["kind"] != "measurement":
        return
    for name in ("value_min", "value_max"):
        number = _number(row, name, label, problems)
        if number is not None:
            found[name] = number
    if row["unit"]:
        found["unit"] = row["unit"]


def _event_fields(row: Row, label: str, found: dict[str, Any], problems: list[str]) -> None:
    if row["id"]:
        found["id"] = row["id"]
    for name in ("age_min", "age_max"):
        number = _number(row, name, label, problems)
        if number is not None:
            found[name] = int(number)
    if not row["anchor"]:
        return
    within: dict[str, Any] = {"anchor": row["anchor"]}
    for name in ("min_days", "max_days"):
        number = _number(row, name, label, problems)
        if number is not None:
            within[name] = int(number)
    if "max_days" not in within:
        problems.append(f"{label}: within: give the most days after the anchor (max days)")
    if row["occurrence"] == AnchorOccurrence.ANY.value:
        within["anchor_occurrence"] = AnchorOccurrence.ANY.value
    found["within"] = within


def _messages(exc: ValidationError, label: str) -> list[str]:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"] if part not in KINDS)
        message = str(error["msg"])
        if where == "concept":
            message = "write SYSTEM:CODE, e.g. ICD10CM:G30"
        elif where == "id" or where.endswith("anchor"):
            message = "a name is a lower-case letter, then letters, digits or '_' (32 at most)"
        problems.append(f"{label}: {where}: {message}" if where else f"{label}: {message}")
    return problems


def _combined(operator: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return items[0] if len(items) == 1 else {operator: items}


def cohort_definition(form: CohortForm) -> dict[str, Any]:
    """The cohort the rows (or the pasted JSON) describe; :class:`FormProblems` if none."""
    if form.definition:
        return _pasted(form.definition)
    problems: list[str] = []
    included: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    for number, row in enumerate(form.rows, start=1):
        if not row.used:
            continue
        found = criterion(row, f"criterion {number}", problems)
        if found is None:
            continue
        role = row["role"] if row["role"] in ROLES else "include"
        if role == "exclude":
            excluded.append(found)
        else:
            included.append({"not": found} if role == "include_not" else found)
    if not included and not problems:
        problems.append("give at least one criterion a patient must match (include)")
    if problems:
        raise FormProblems(problems)
    definition: dict[str, Any] = {"inclusion": _combined(form.combine, included)}
    if form.name:
        definition["name"] = form.name
    if excluded:
        definition["exclusion"] = _combined("any", excluded)
    try:
        parse_cohort(definition)  # what only the whole cohort can tell: anchors, cycles
    except InvalidCohort as exc:
        raise FormProblems(exc.problems) from None
    return definition


def _pasted(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormProblems([f"definition: not JSON (line {exc.lineno})"]) from None
    if not isinstance(data, dict):
        raise FormProblems(["definition: a cohort is a JSON object ({...})"])
    try:
        parse_cohort(data)
    except InvalidCohort as exc:
        raise FormProblems([f"definition: {problem}" for problem in exc.problems]) from None
    return data


# -- the whole request ----------------------------------------------------------------------------


def _edges(text: str) -> list[float]:
    try:
        return [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise FormProblems(["statistic: bins are numbers separated by commas"]) from None


def statistic(form: CohortForm) -> dict[str, Any] | None:
    if not form.stat_measurement:
        return None
    found: dict[str, Any] = {
        "measurement": form.stat_measurement,
        "bin_edges": _edges(form.stat_bins),
    }
    if form.stat_unit:
        found["unit"] = form.stat_unit
    if form.stat_by == "split":
        if not form.stat_split:
            raise FormProblems(["statistic: give the condition that splits the groups"])
        found["split"] = {"kind": "condition", "concept": form.stat_split}
    elif form.stat_by in {b.value for b in Breakdown}:
        found["by"] = form.stat_by
    return found


def payload(form: CohortForm) -> dict[str, Any]:
    """The ``cohort.count`` payload of the form, validated; :class:`FormProblems` if not."""
    if not form.project:
        raise FormProblems(["project: choose the project asking"])
    definition = cohort_definition(form)
    request: dict[str, Any] = {
        "project": form.project,
        "cohort": definition,
        "breakdowns": sorted(set(form.breakdowns) & {b.value for b in Breakdown}),
    }
    found = statistic(form)
    if found is not None:
        request["statistic"] = found
    try:
        CohortCountRequest.model_validate(request)
    except ValidationError as exc:
        raise FormProblems(
            [
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors(include_input=False, include_url=False)
            ]
        ) from None
    return request


def pretty(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=False)


def breakdown_names() -> list[str]:
    return [b.value for b in Breakdown]
