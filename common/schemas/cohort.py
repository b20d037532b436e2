"""Cohort definitions and the ``cohort.count`` task: the contract between researcher, hub and node.

A cohort is ``inclusion`` minus ``exclusion``, each a tree of criteria combined with
``all``, ``any`` and ``not``. Leaves are the patient (sex), imaging (a series of the store)
and clinical facts (condition, medication, measurement, procedure). Concepts are written
``SYSTEM:CODE`` (``ICD10CM:G30``) and match their descendants through the ontology. An event
criterion (imaging or a fact) may carry the patient's age at the event and a time window
relative to another criterion it names by ``id``::

    {"version": 1,
     "inclusion": {"all": [
        {"kind": "condition", "id": "dementia", "concept": "ICD10CM:G30"},
        {"kind": "imaging", "modality": ["MR"],
         "within": {"anchor": "dementia", "min_days": 0, "max_days": 90}}]}}

``canonical_json`` is the definition with defaults filled in and keys sorted; its SHA-256
(:func:`canonical_hash`) names a query wherever it must be recognised again (seeded noise,
the differencing guard), so two spellings of the same question are one question.

The answer (:class:`CohortCountAnswer`) holds only disclosure-controlled aggregates: a
suppressed count has no value, only the reason it is withheld.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

COHORT_SCHEMA_VERSION: Literal[1] = 1
COHORT_COUNT = "cohort.count"

CONCEPT_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]*:[^\s:]+$"
ID_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
SEXES = ("M", "F", "O", "U")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnchorOccurrence(str, Enum):
    """Which events of the anchor criterion a window is measured from."""

    # The patient's earliest anchor event ("after the first dementia diagnosis").
    FIRST = "first"
    # Any of the patient's anchor events.
    ANY = "any"


class Within(_Strict):
    """The event lies ``min_days`` to ``max_days`` after an anchor event (negative: before)."""

    anchor: str = Field(pattern=ID_PATTERN)
    min_days: int = Field(default=0, ge=-36_500, le=36_500)
    max_days: int = Field(ge=-36_500, le=36_500)
    anchor_occurrence: AnchorOccurrence = AnchorOccurrence.FIRST

    @model_validator(mode="after")
    def _ordered(self) -> Within:
        if self.min_days > self.max_days:
            raise ValueError("min_days must not exceed max_days")
        return self


class _Event(_Strict):
    """What every dated criterion shares: a name, the age at the event and a time window."""

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    age_min: int | None = Field(default=None, ge=0, le=130)
    age_max: int | None = Field(default=None, ge=0, le=130)
    within: Within | None = None

    @model_validator(mode="after")
    def _ages(self) -> _Event:
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ValueError("age_min must not exceed age_max")
        return self


def _sorted_unique(values: list[str]) -> list[str]:
    return sorted({v.strip() for v in values if v.strip()})


class PatientCriterion(_Strict):
    kind: Literal["patient"]
    sex: list[Literal["M", "F", "O", "U"]] = Field(min_length=1)

    @field_validator("sex")
    @classmethod
    def _sorted(cls, value: list[str]) -> list[str]:
        return _sorted_unique(value)


class ImagingCriterion(_Event):
    """A series of the store; every field given must hold (lists: any of their values)."""

    kind: Literal["imaging"]
    modality: list[str] = []
    body_part: list[str] = []  # normalized Body Part Examined terms (ontology)
    sequence_type: list[str] = []  # ontology.normalize.SequenceType values
    contrast: bool | None = None
    slice_thickness_max: float | None = Field(default=None, gt=0)
    field_strength_min: float | None = Field(default=None, ge=0)
    field_strength_max: float | None = Field(default=None, ge=0)
    manufacturer: list[str] = []  # folded names: Siemens, GE, Philips, Canon …
    date_from: dt.date | None = None
    date_to: dt.date | None = None

    @field_validator("modality")
    @classmethod
    def _modalities(cls, value: list[str]) -> list[str]:
        return _sorted_unique([v.upper() for v in value])

    @field_validator("body_part", "sequence_type", "manufacturer")
    @classmethod
    def _terms(cls, value: list[str]) -> list[str]:
        return _sorted_unique(value)

    @model_validator(mode="after")
    def _windows(self) -> ImagingCriterion:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from must not be after date_to")
        low, high = self.field_strength_min, self.field_strength_max
        if low is not None and high is not None and low > high:
            raise ValueError("field_strength_min must not exceed field_strength_max")
        return self


class _Concept(_Event):
    concept: str = Field(pattern=CONCEPT_PATTERN, max_length=80)
    descendants: bool = True  # expand through the ontology

    @field_validator("concept")
    @classmethod
    def _system_upper(cls, value: str) -> str:
        system, _, code = value.partition(":")
        return f"{system.upper()}:{code}"


class ConditionCriterion(_Concept):
    kind: Literal["condition"]


class MedicationCriterion(_Concept):
    kind: Literal["medication"]


class ProcedureCriterion(_Concept):
    kind: Literal["procedure"]


class MeasurementCriterion(_Concept):
    kind: Literal["measurement"]
    value_min: float | None = None
    value_max: float | None = None
    unit: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _range(self) -> MeasurementCriterion:
        low, high = self.value_min, self.value_max
        if low is not None and high is not None and low > high:
            raise ValueError("value_min must not exceed value_max")
        return self


class AllOf(_Strict):
    all: list[Criterion] = Field(min_length=1)


class AnyOf(_Strict):
    any: list[Criterion] = Field(min_length=1)


class NotOf(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    not_: Criterion = Field(alias="not")


EventCriterion = (
    ImagingCriterion
    | ConditionCriterion
    | MedicationCriterion
    | ProcedureCriterion
    | MeasurementCriterion
)
_COMBINATORS = ("all", "any", "not")
_KINDS = ("patient", "imaging", "condition", "medication", "procedure", "measurement")


def _criterion_tag(value: Any) -> str | None:
    """Which member of the union a criterion is: its combinator key or its ``kind``."""
    if isinstance(value, BaseModel):
        for name in _COMBINATORS:
            if hasattr(value, name) or hasattr(value, f"{name}_"):
                return name
        kind = getattr(value, "kind", None)
        return kind if isinstance(kind, str) else None
    if not isinstance(value, dict):
        return None
    for name in _COMBINATORS:
        if name in value:
            return name
    kind = value.get("kind")
    return kind if isinstance(kind, str) and kind in _KINDS else None


Criterion = Annotated[
    Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")]
    | Annotated[PatientCriterion, Tag("patient")]
    | Annotated[ImagingCriterion, Tag("imaging")]
    | Annotated[ConditionCriterion, Tag("condition")]
    | Annotated[MedicationCriterion, Tag("medication")]
    | Annotated[ProcedureCriterion, Tag("procedure")]
    | Annotated[MeasurementCriterion, Tag("measurement")],
    Discriminator(
        _criterion_tag,
        custom_error_type="criterion",
        custom_error_message=(
            "a criterion is {'all': [...]}, {'any': [...]}, {'not': {...}} or has a kind: "
            + ", ".join(_KINDS)
        ),
    ),
]


for _model in (AllOf, AnyOf, NotOf):
    _model.model_rebuild()


def children(criterion: Criterion) -> list[Criterion]:
    if isinstance(criterion, AllOf):
        return list(criterion.all)
    if isinstance(criterion, AnyOf):
        return list(criterion.any)
    if isinstance(criterion, NotOf):
        return [criterion.not_]
    return []


def walk(criterion: Criterion) -> list[Criterion]:
    """The criterion and everything under it, depth first."""
    found = [criterion]
    for child in children(criterion):
        found.extend(walk(child))
    return found


class Cohort(_Strict):
    """Patients matching ``inclusion`` and not ``exclusion``."""

    version: Literal[1] = COHORT_SCHEMA_VERSION
    name: str = Field(default="", max_length=200)
    inclusion: Criterion
    exclusion: Criterion | None = None

    @model_validator(mode="after")
    def _anchors(self) -> Cohort:
        events = self.events()
        named: dict[str, EventCriterion] = {}
        for event in events:
            if event.id is not None:
                if event.id in named:
                    raise ValueError(f"criterion id {event.id!r} is used twice")
                named[event.id] = event
        for event in events:
            if event.within is not None and event.within.anchor not in named:
                raise ValueError(
                    f"within.anchor {event.within.anchor!r} names no criterion with that id"
                )
        for event in events:  # a window may not lead back to itself
            seen: set[str] = set()
            current: EventCriterion | None = event
            while current is not None and current.within is not None:
                anchor = current.within.anchor
                if anchor in seen:
                    raise ValueError(f"the windows anchored on {anchor!r} form a cycle")
                seen.add(anchor)
                current = named[anchor]
        return self

    def canonical(self) -> dict[str, Any]:
        """The definition as data, without its name: the name does not change the question."""
        return self.model_dump(mode="json", by_alias=True, exclude={"name"})

    def criteria(self) -> list[Criterion]:
        found = walk(self.inclusion)
        if self.exclusion is not None:
            found.extend(walk(self.exclusion))
        return found

    def events(self) -> list[EventCriterion]:
        return [c for c in self.criteria() if isinstance(c, _EVENT_TYPES)]

    def named(self) -> dict[str, EventCriterion]:
        return {e.id: e for e in self.events() if e.id is not None}


_EVENT_TYPES = (
    ImagingCriterion,
    ConditionCriterion,
    MedicationCriterion,
    ProcedureCriterion,
    MeasurementCriterion,
)


# -- the cohort.count task ---------------------------------------------------------------------


class Breakdown(str, Enum):
    """A dimension counts can be broken down by (patients per value)."""

    SEX = "sex"
    AGE_BAND = "age_band"  # age at the patient's first study
    MODALITY = "modality"
    SEQUENCE_TYPE = "sequence_type"
    BODY_PART = "body_part"
    STUDY_YEAR = "study_year"


# Dimensions where every patient is in exactly one cell, so the cells add up to the total.
PARTITIONING_BREAKDOWNS = frozenset({Breakdown.SEX, Breakdown.AGE_BAND})


class StatisticRequest(_Strict):
    """Sufficient statistics of a measurement (each patient's latest value) per group.

    Groups are the cells of ``by`` (a breakdown), or in/out of ``split`` (a criterion,
    e.g. a dementia diagnosis), or the whole cohort when neither is given.
    """

    measurement: str = Field(pattern=CONCEPT_PATTERN, max_length=80)
    unit: str | None = Field(default=None, max_length=64)
    by: Breakdown | None = None
    split: Criterion | None = None
    bin_edges: list[float] = Field(min_length=2, max_length=101)

    @model_validator(mode="after")
    def _groups_and_bins(self) -> StatisticRequest:
        if self.by is not None and self.split is not None:
            raise ValueError("give by or split, not both")
        if any(b <= a for a, b in zip(self.bin_edges, self.bin_edges[1:], strict=False)):
            raise ValueError("bin_edges must increase strictly")
        return self


class CohortCountRequest(_Strict):
    """The payload of a ``cohort.count`` task."""

    version: Literal[1] = COHORT_SCHEMA_VERSION
    project: str = Field(min_length=1, max_length=128)
    cohort: Cohort
    breakdowns: list[Breakdown] = Field(default=[], max_length=6)
    statistic: StatisticRequest | None = None

    @model_validator(mode="after")
    def _split_anchors(self) -> CohortCountRequest:
        if self.statistic is None or self.statistic.split is None:
            return self
        named = self.cohort.named()
        for criterion in walk(self.statistic.split):
            if isinstance(criterion, _EVENT_TYPES):
                if criterion.id is not None:
                    raise ValueError("statistic.split: name criteria in the cohort, not here")
                if criterion.within is not None and criterion.within.anchor not in named:
                    raise ValueError(
                        f"statistic.split: within.anchor {criterion.within.anchor!r} "
                        "names no criterion of the cohort"
                    )
        return self

    def canonical_question(self) -> dict[str, Any]:
        """What identifies the question (the project asking is not part of it)."""
        question = self.model_dump(mode="json", by_alias=True, exclude={"project"})
        question["cohort"] = self.cohort.canonical()
        question["breakdowns"] = sorted(set(question["breakdowns"]))
        return question


class Withheld(str, Enum):
    """Why a count is not published."""

    # Fewer patients than the node's minimum cell size.
    BELOW_THRESHOLD = "below_threshold"
    # Published, it would let a suppressed cell be recovered by subtraction.
    COMPLEMENTARY = "complementary"


class Count(_Strict):
    """A published count (rounded, perhaps noisy), or why there is none."""

    value: int | None = Field(default=None, ge=0)
    withheld: Withheld | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Count:
        if (self.value is None) == (self.withheld is None):
            raise ValueError("a count has a value or a reason it is withheld, not both")
        return self

    def display(self, min_cell: int) -> str:
        if self.value is not None:
            return str(self.value)
        return f"<{min_cell}" if self.withheld is Withheld.BELOW_THRESHOLD else "withheld"


class BreakdownCell(_Strict):
    value: str  # the dimension's value ("" when not known)
    patients: Count


class GroupStatistic(_Strict):
    """One group's sufficient statistics; all None when the group is withheld."""

    group: str
    withheld: Withheld | None = None
    n: int | None = Field(default=None, ge=0)
    sum: float | None = None
    sum_squares: float | None = None
    histogram: list[Count] = []  # one per bin of bin_edges
    below: Count | None = None  # values under the first edge
    above: Count | None = None  # values over the last edge


class StatisticAnswer(_Strict):
    measurement: str
    unit: str | None
    by: str  # a breakdown name, "split" or "all"
    bin_edges: list[float]
    groups: list[GroupStatistic]


class CohortCountAnswer(_Strict):
    """What a node answers to ``cohort.count``: aggregates under its disclosure policy."""

    version: Literal[1] = COHORT_SCHEMA_VERSION
    cohort_hash: str
    min_cell: int
    rounding: int
    noisy: bool
    patients: Count
    studies: Count
    series: Count
    breakdowns: dict[str, list[BreakdownCell]] = {}
    statistic: StatisticAnswer | None = None


# -- canonical form, hash, schema and errors ---------------------------------------------------


def canonical_json(value: BaseModel | dict[str, Any]) -> str:
    """Sorted keys, no whitespace, defaults filled in: one text per meaning."""
    if isinstance(value, Cohort):
        data = value.canonical()
    elif isinstance(value, CohortCountRequest):
        data = value.canonical_question()
    elif isinstance(value, BaseModel):
        data = value.model_dump(mode="json", by_alias=True)
    else:
        data = value
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical_hash(value: BaseModel | dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()


def cohort_json_schema() -> dict[str, Any]:
    """The JSON Schema of a cohort definition (version 1), for editors and other tools."""
    return Cohort.model_json_schema(by_alias=True)


class InvalidCohort(ValueError):
    """A cohort definition that does not validate; each problem names its JSON path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid cohort definition: " + "; ".join(problems))
        self.problems = problems


def _path(location: tuple[int | str, ...]) -> str:
    parts = ["$"]
    for index, part in enumerate(location):
        following = location[index + 1] if index + 1 < len(location) else None
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part in _KINDS or (part in _COMBINATORS and following == part):
            continue  # the union member pydantic tried, not a key of the document
        else:
            parts.append(f".{part}")
    return "".join(parts)


def parse_cohort(data: object) -> Cohort:
    """Validate a cohort, with errors like ``$.inclusion.all[1].within.max_days: ...``.

    The messages never repeat the input values."""
    try:
        return Cohort.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{_path(tuple(error['loc']))}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        ]
        raise InvalidCohort(problems) from None


# -- in words, for the people who approve a query -----------------------------------------------


def _range(low: float | None, high: float | None, unit: str = "") -> str:
    suffix = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return f"{low:g} to {high:g}{suffix}"
    if low is not None:
        return f"at least {low:g}{suffix}"
    return f"at most {high:g}{suffix}"


def _window(within: Within) -> str:
    which = "first" if within.anchor_occurrence is AnchorOccurrence.FIRST else "any"
    return f"{within.min_days} to {within.max_days} days after the {which} {within.anchor!r} event"


def _imaging_terms(criterion: ImagingCriterion) -> list[str]:
    terms = [
        f"{name.replace('_', ' ')} {' or '.join(values)}"
        for name, values in (
            ("modality", criterion.modality),
            ("body_part", criterion.body_part),
            ("sequence_type", criterion.sequence_type),
            ("manufacturer", criterion.manufacturer),
        )
        if values
    ]
    if criterion.contrast is not None:
        terms.append("with contrast" if criterion.contrast else "without contrast")
    if criterion.slice_thickness_max is not None:
        terms.append(f"slices at most {criterion.slice_thickness_max:g} mm")
    low, high = criterion.field_strength_min, criterion.field_strength_max
    if low is not None or high is not None:
        terms.append(f"field strength {_range(low, high, 'T')}")
    if criterion.date_from is not None or criterion.date_to is not None:
        start = criterion.date_from.isoformat() if criterion.date_from else "…"
        end = criterion.date_to.isoformat() if criterion.date_to else "…"
        terms.append(f"study date {start} to {end}")
    return terms


def _leaf(criterion: PatientCriterion | EventCriterion) -> str:
    if isinstance(criterion, PatientCriterion):
        return f"sex {' or '.join(criterion.sex)}"
    if isinstance(criterion, ImagingCriterion):
        terms = _imaging_terms(criterion)
        text = "an imaging series" + (f": {', '.join(terms)}" if terms else "")
    else:
        text = f"a {criterion.kind} {criterion.concept}"
        text += " or a descendant" if criterion.descendants else " (this code only)"
        if isinstance(criterion, MeasurementCriterion) and (
            criterion.value_min is not None or criterion.value_max is not None
        ):
            text += (
                f", value {_range(criterion.value_min, criterion.value_max, criterion.unit or '')}"
            )
    if criterion.age_min is not None or criterion.age_max is not None:
        text += f", aged {_range(criterion.age_min, criterion.age_max)} at the time"
    if criterion.within is not None:
        text += f", {_window(criterion.within)}"
    return f"[{criterion.id}] {text}" if criterion.id else text


def describe(criterion: Criterion, depth: int = 0) -> list[str]:
    """The criterion in words, one line each, indented two spaces per level."""
    pad = "  " * depth
    if isinstance(criterion, AllOf | AnyOf | NotOf):
        heading = {AllOf: "all of:", AnyOf: "any of:", NotOf: "not:"}[type(criterion)]
        return [
            f"{pad}{heading}",
            *(line for child in children(criterion) for line in describe(child, depth + 1)),
        ]
    return [f"{pad}{_leaf(criterion)}"]


def describe_request(request: CohortCountRequest) -> list[str]:
    """A ``cohort.count`` request in words: the cohort, the breakdowns and the statistic."""
    cohort = request.cohort
    lines = [f"cohort {cohort.name!r}: patients with" if cohort.name else "patients with"]
    lines.extend(describe(cohort.inclusion, 1))
    if cohort.exclusion is not None:
        lines.append("excluding patients with")
        lines.extend(describe(cohort.exclusion, 1))
    lines.append("counted: patients, studies, series")
    if request.breakdowns:
        lines.append(f"broken down by {', '.join(b.value for b in request.breakdowns)}")
    statistic = request.statistic
    if statistic is not None:
        unit = f" ({statistic.unit})" if statistic.unit else ""
        edges = ", ".join(f"{edge:g}" for edge in statistic.bin_edges)
        text = f"statistic: the latest {statistic.measurement}{unit} of each patient"
        if statistic.by is not None:
            lines.append(f"{text}, per {statistic.by.value}, histogram edges {edges}")
        elif statistic.split is not None:
            lines.append(f"{text}, in two groups (yes/no), histogram edges {edges}, split on")
            lines.extend(describe(statistic.split, 1))
        else:
            lines.append(f"{text}, histogram edges {edges}")
    return lines
