"""Cohort definitions → SQLAlchemy statements that run on SQLite and PostgreSQL.

Every criterion becomes a condition on a patient's ``subject_key`` — the key the imaging
store (``patient``) and the fact store (``person`` and the fact tables) share:

- ``all`` / ``any`` / ``not`` are ``AND`` / ``OR`` / ``NOT`` of their children;
- a patient criterion tests the patient's demographics (either store may know them);
- an event criterion (imaging or a fact) selects its *events* — rows with a subject key and
  a date (imaging events also carry their series and study) — and tests that the patient
  has one. The age at the event and a window after another criterion's events (``within``)
  filter those events, so "an MR within 90 days after the first G30 diagnosis" is an MR
  event of the same patient whose date lies 0 to 90 days after the earliest G30 event.

Date arithmetic is the one place the dialects differ: PostgreSQL subtracts dates to whole
days, SQLite has no date type and subtracts Julian day numbers.

The cohort is the set of *known* subject keys (either store) the criteria hold for. Its
candidates are the subjects of a leaf criterion the inclusion requires, when it has one (an
``all`` holding an event, say), else every known subject. Demographics (sex, birth year,
reconciled across both stores) cost a grouping of every row: they are read where a
criterion tests them — from the evaluation's scratch table when it made one (``people``) —
and for a breakdown only for the cohort's own patients (``demographics(within=...)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Integer,
    Select,
    Subquery,
    and_,
    cast,
    exists,
    extract,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    union,
    union_all,
)

from common.schemas.cohort import (
    AllOf,
    AnchorOccurrence,
    AnyOf,
    Cohort,
    ConditionCriterion,
    Criterion,
    EventCriterion,
    ImagingCriterion,
    MeasurementCriterion,
    MedicationCriterion,
    NotOf,
    PatientCriterion,
    ProcedureCriterion,
    Within,
    walk,
)
from node.clinical.models import Condition, Drug, Measurement, Person, Procedure
from node.query.concepts import Expander, fact_codes
from node.query.models import SeriesLabel
from node.store.models import Patient, Series, Study

AnySelect = Select[*tuple[Any, ...]]

_FACT_TABLES: dict[type[Any], type[Any]] = {
    ConditionCriterion: Condition,
    MedicationCriterion: Drug,
    ProcedureCriterion: Procedure,
    MeasurementCriterion: Measurement,
}


def days_between(later: Any, earlier: Any, dialect: str) -> ColumnElement[Any]:
    """``later - earlier`` in days, in the dialect's own date arithmetic."""
    if dialect == "sqlite":
        return func.julianday(later) - func.julianday(earlier)
    return cast(later - earlier, Integer)


def cast_bool(expression: Any) -> ColumnElement[bool]:
    """``expression`` as what it is: a condition (``subject`` columns arrive untyped)."""
    condition: ColumnElement[bool] = expression
    return condition


def subjects() -> Subquery:
    """Every subject key known to either store, once."""
    return union(select(Patient.subject_key), select(Person.subject_key)).subquery("subjects")


def demographics(within: FromClause | None = None) -> Subquery:
    """One row per subject key known to either store (of those in ``within``'s
    ``subject_key`` column, when given): sex and birth year where known."""
    imaging = select(Patient.subject_key, Patient.sex, Patient.birth_year)
    facts = select(Person.subject_key, Person.sex, Person.birth_year)
    if within is not None:
        imaging = imaging.join(within, within.c.subject_key == Patient.subject_key)
        facts = facts.join(within, within.c.subject_key == Person.subject_key)
    both = union_all(imaging, facts).subquery("known")
    return (
        select(
            both.c.subject_key,
            func.max(func.upper(both.c.sex)).label("sex"),
            func.max(both.c.birth_year).label("birth_year"),
        )
        .group_by(both.c.subject_key)
        .subquery("demographics")
    )


def concept_condition(table: type[Any], codes: dict[str, set[str]]) -> ColumnElement[bool]:
    if not codes:
        return false()
    return or_(
        *(
            and_(table.system == uri, table.code.in_(sorted(values)))
            for uri, values in sorted(codes.items())
        )
    )


def positive_imaging(criterion: Criterion) -> list[ImagingCriterion]:
    """The imaging criteria a cohort's patients satisfy (those not under a ``not``)."""
    if isinstance(criterion, ImagingCriterion):
        return [criterion]
    if isinstance(criterion, AllOf | AnyOf):
        members = criterion.all if isinstance(criterion, AllOf) else criterion.any
        return [found for child in members for found in positive_imaging(child)]
    return []


@dataclass
class Compiler:
    """Compiles the criteria of one cohort; event statements are built once per criterion."""

    cohort: Cohort
    dialect: str
    expander: Expander
    subjects: Subquery = field(default_factory=subjects)
    # The demographics as a table (``node.query.scratch``), when the caller made one: each
    # use is then an index lookup rather than a grouping of both stores.
    people: FromClause | None = None
    _events: dict[int, Subquery] = field(default_factory=dict)

    def _demographics(self) -> FromClause:
        """A fresh copy each time: a statement using two must not correlate them."""
        return self.people.alias() if self.people is not None else demographics()

    # -- patients --------------------------------------------------------------------------

    def condition(self, criterion: Criterion, subject: Any) -> ColumnElement[bool]:
        """True for the subject keys ``criterion`` holds for."""
        if isinstance(criterion, AllOf):
            return and_(true(), *(self.condition(c, subject) for c in criterion.all))
        if isinstance(criterion, AnyOf):
            return or_(false(), *(self.condition(c, subject) for c in criterion.any))
        if isinstance(criterion, NotOf):
            return not_(self.condition(criterion.not_, subject))
        if isinstance(criterion, PatientCriterion):
            demo = self._demographics()
            members = select(demo.c.subject_key).where(demo.c.sex.in_(criterion.sex))
            return cast_bool(subject.in_(members))
        events = self.events(criterion)
        return cast_bool(subject.in_(select(events.c.subject_key)))

    def patients(self) -> AnySelect:
        """The cohort's subject keys (each once).

        When the inclusion requires some leaf criterion (it is one, or an ``all`` holding
        one), the candidates are that leaf's subjects, tested for the rest; otherwise every
        known subject is a candidate."""
        found = required_leaf(self.cohort.inclusion)
        if found is None:
            subject = self.subjects.c.subject_key
            where = self.condition(self.cohort.inclusion, subject)
        else:
            leaf, rest = found
            keys = self._leaf_keys(leaf)
            subject = keys.c.subject_key
            where = and_(true(), *(self.condition(c, subject) for c in rest))
        if self.cohort.exclusion is not None:
            where = and_(where, not_(self.condition(self.cohort.exclusion, subject)))
        return select(subject).distinct().where(where)

    def _leaf_keys(self, leaf: PatientCriterion | EventCriterion) -> Subquery:
        """The subject keys a leaf holds for, of known subjects only (a fact may name a
        subject neither store has a record of)."""
        if isinstance(leaf, PatientCriterion):
            demo = self._demographics()
            return select(demo.c.subject_key).where(demo.c.sex.in_(leaf.sex)).subquery()
        events = self.events(leaf)
        statement = select(events.c.subject_key)
        if not isinstance(leaf, ImagingCriterion):  # imaging events come from known patients
            key = events.c.subject_key
            statement = statement.where(
                or_(key.in_(select(Person.subject_key)), key.in_(select(Patient.subject_key)))
            )
        return statement.subquery("candidates")

    # -- events ----------------------------------------------------------------------------

    def events(self, criterion: EventCriterion) -> Subquery:
        """The criterion's events: ``subject_key``, ``date`` (+ ``series_id``, ``study_id``)."""
        key = id(criterion)
        if key not in self._events:
            self._events[key] = self._filtered(criterion, self._base_events(criterion))
        return self._events[key]

    def _base_events(self, criterion: EventCriterion) -> Subquery:
        if isinstance(criterion, ImagingCriterion):
            return self._imaging(criterion).subquery()
        table = _FACT_TABLES[type(criterion)]
        codes = fact_codes(
            criterion.concept, descendants=criterion.descendants, expander=self.expander
        )
        statement = select(table.subject_key.label("subject_key"), table.date.label("date")).where(
            concept_condition(table, codes)
        )
        if isinstance(criterion, MeasurementCriterion):
            if criterion.value_min is not None:
                statement = statement.where(table.value_as_number >= criterion.value_min)
            if criterion.value_max is not None:
                statement = statement.where(table.value_as_number <= criterion.value_max)
            if criterion.unit is not None:
                statement = statement.where(table.unit == criterion.unit)
        return statement.subquery()

    def _imaging(self, criterion: ImagingCriterion) -> AnySelect:
        statement: AnySelect = (
            select(
                Patient.subject_key.label("subject_key"),
                Study.study_date.label("date"),
                Series.id.label("series_id"),
                Study.id.label("study_id"),
            )
            .join(Study, Series.study_id == Study.id)
            .join(Patient, Study.patient_id == Patient.id)
        )
        labelled = criterion.body_part or criterion.sequence_type or criterion.manufacturer
        if labelled or criterion.contrast is not None:
            statement = statement.join(SeriesLabel, SeriesLabel.series_id == Series.id)
        wheres: list[ColumnElement[bool]] = []
        if criterion.modality:
            wheres.append(func.upper(Series.modality).in_(criterion.modality))
        if criterion.body_part:
            wheres.append(SeriesLabel.body_part.in_(criterion.body_part))
        if criterion.sequence_type:
            wheres.append(SeriesLabel.sequence_type.in_(criterion.sequence_type))
        if criterion.contrast is not None:
            wheres.append(SeriesLabel.contrast.is_(criterion.contrast))
        if criterion.manufacturer:
            wheres.append(SeriesLabel.manufacturer.in_(criterion.manufacturer))
        if criterion.slice_thickness_max is not None:
            wheres.append(Series.slice_thickness <= criterion.slice_thickness_max)
        if criterion.field_strength_min is not None:
            wheres.append(Series.field_strength >= criterion.field_strength_min)
        if criterion.field_strength_max is not None:
            wheres.append(Series.field_strength <= criterion.field_strength_max)
        if criterion.date_from is not None:
            wheres.append(Study.study_date >= criterion.date_from)
        if criterion.date_to is not None:
            wheres.append(Study.study_date <= criterion.date_to)
        return statement.where(*wheres)

    def _filtered(self, criterion: EventCriterion, base: Subquery) -> Subquery:
        statement = select(*base.c)
        if criterion.age_min is not None or criterion.age_max is not None:
            demo = self._demographics()
            age = extract("year", base.c.date) - demo.c.birth_year
            statement = statement.join(demo, demo.c.subject_key == base.c.subject_key)
            if criterion.age_min is not None:
                statement = statement.where(age >= criterion.age_min)
            if criterion.age_max is not None:
                statement = statement.where(age <= criterion.age_max)
        if criterion.within is not None:
            statement = statement.where(self._within(criterion.within, base))
        return statement.subquery()

    def _within(self, within: Within, base: Subquery) -> ColumnElement[bool]:
        anchor_events = self.events(self.cohort.named()[within.anchor])
        if within.anchor_occurrence is AnchorOccurrence.FIRST:
            anchors = (
                select(
                    anchor_events.c.subject_key,
                    func.min(anchor_events.c.date).label("date"),
                )
                .group_by(anchor_events.c.subject_key)
                .subquery()
            )
        else:
            anchors = anchor_events
        gap = days_between(base.c.date, anchors.c.date, self.dialect)
        return exists(
            select(literal(1)).where(
                anchors.c.subject_key == base.c.subject_key,
                anchors.c.date.is_not(None),
                base.c.date.is_not(None),
                gap >= within.min_days,
                gap <= within.max_days,
            )
        )

    # -- imaging of the cohort -------------------------------------------------------------

    def matched_series(self, patients: FromClause) -> Subquery:
        """``series_id``, ``study_id``, ``subject_key`` of the cohort's matching series: those
        of its imaging criteria, or all of the cohort's series when it has none."""
        criteria = positive_imaging(self.cohort.inclusion)
        parts: Sequence[AnySelect]
        everything: AnySelect
        if criteria:
            parts = [
                select(e.c.series_id, e.c.study_id, e.c.subject_key).where(
                    e.c.subject_key.in_(select(patients.c.subject_key))
                )
                for e in (self.events(c) for c in criteria)
            ]
        else:
            everything = (
                select(
                    Series.id.label("series_id"),
                    Study.id.label("study_id"),
                    Patient.subject_key.label("subject_key"),
                )
                .join(Study, Series.study_id == Study.id)
                .join(Patient, Study.patient_id == Patient.id)
                .where(Patient.subject_key.in_(select(patients.c.subject_key)))
            )
            parts = [everything]
        combined = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("matched")
        return (
            select(combined.c.series_id, combined.c.study_id, combined.c.subject_key)
            .distinct()
            .subquery("matched_series")
        )


def needs_demographics(cohort: Cohort, split: Criterion | None = None) -> bool:
    """Whether the criteria test sex or an age at an event (read demographics)."""
    criteria = [*cohort.criteria(), *(walk(split) if split is not None else [])]
    return any(
        isinstance(c, PatientCriterion)
        or (isinstance(c, EventCriterion) and (c.age_min is not None or c.age_max is not None))
        for c in criteria
    )


def _leaf_rank(criterion: Criterion) -> int:
    """Which required leaf to start from: facts tend to be rarer than series, and both
    than a sex."""
    if isinstance(criterion, PatientCriterion):
        return 2
    return 1 if isinstance(criterion, ImagingCriterion) else 0


def required_leaf(
    criterion: Criterion,
) -> tuple[PatientCriterion | EventCriterion, list[Criterion]] | None:
    """A leaf criterion every subject of ``criterion`` meets, and the criteria they meet
    besides (together: ``criterion``); None when there is none (``any``, ``not``)."""
    if isinstance(criterion, PatientCriterion | EventCriterion):
        return criterion, []
    if not isinstance(criterion, AllOf):
        return None
    options = []
    for index, child in enumerate(criterion.all):
        found = required_leaf(child)
        if found is not None:
            leaf, rest = found
            others = [c for i, c in enumerate(criterion.all) if i != index]
            options.append((_leaf_rank(leaf), index, leaf, [*rest, *others]))
    if not options:
        return None
    _, _, leaf, rest = min(options, key=lambda option: option[:2])
    return leaf, rest
