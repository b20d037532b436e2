"""The node's catalogue: aggregates of its own store, suppressed, ready to publish.

The store is read once, series by series (streamed, never loaded whole): each series is
normalized with the ontology (sequence type, contrast, body part), put in its cell, and
counted there with its study and patient. Each view of the publication (see
``common.schemas.catalogue.VIEWS``) merges those cells over the dimensions it leaves out.
Then small cells are withheld (see :mod:`node.catalogue.suppression`) and the rest rounded.
Within a view, the groups whose totals an outsider may learn are all of its margins — every
cell of the view that agrees on some of its dimensions ("all MR", "all MR brain of 2021"):
a federated count can ask each of them.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.schemas.catalogue import (
    VIEWS,
    CataloguePublication,
    CubeCell,
    ImagingKey,
    MarginalCell,
    MarginalDimension,
    age_band,
    slice_band,
)
from node.catalogue.suppression import rounded, suppress
from node.clinical.models import Condition, Drug
from node.store.models import Patient, Series, Study
from ontology.normalize import SeriesText, normalize
from ontology.sources import canonical_system

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 10
DEFAULT_ROUNDING = 5
_STREAM_BATCH = 5_000

# Manufacturer spellings seen in the wild, folded to one name.
_MANUFACTURERS = (
    ("siemens", "Siemens"),
    ("ge ", "GE"),
    ("ge medical", "GE"),
    ("general electric", "GE"),
    ("philips", "Philips"),
    ("toshiba", "Canon"),
    ("canon", "Canon"),
    ("hitachi", "Hitachi"),
    ("fujifilm", "Fujifilm"),
    ("agfa", "Agfa"),
    ("carestream", "Carestream"),
    ("hologic", "Hologic"),
    ("united imaging", "United Imaging"),
)


@dataclass
class Counts:
    patients: set[int] = field(default_factory=set)
    studies: set[int] = field(default_factory=set)
    series: int = 0


@dataclass(frozen=True)
class CatalogueDraft:
    """The unsuppressed aggregates; never leaves the node."""

    cells: dict[ImagingKey, Counts]
    marginals: dict[tuple[MarginalDimension, str, str], int]


def manufacturer(text: str) -> str:
    folded = f"{text.strip().lower()} "
    for needle, name in _MANUFACTURERS:
        if folded.startswith(needle) or f" {needle}" in f" {folded}":
            return name
    return text.strip()[:64]


@functools.lru_cache(maxsize=65_536)
def _normalized(text: SeriesText) -> tuple[str, bool, str]:
    result = normalize(text)
    body = result.body_part.term if result.body_part is not None else ""
    return result.sequence_type.value, result.contrast, body


def _field_strength(modality: str, tesla: float | None) -> float | None:
    if modality != "MR" or tesla is None or tesla <= 0:
        return None
    return round(tesla, 1)


_ROW = (
    Series.id,
    Series.study_id,
    Study.patient_id,
    Series.modality,
    Series.body_part,
    Series.description,
    Series.protocol_name,
    Series.manufacturer,
    Series.field_strength,
    Series.slice_thickness,
    Series.contrast_agent,
    Series.scanning_sequence,
    Series.sequence_variant,
    Series.repetition_time,
    Series.echo_time,
    Series.inversion_time,
    Study.study_date,
    Study.description,
)


def _rows(session: Session) -> Iterator[tuple[ImagingKey, int, int]]:
    statement = select(*_ROW).join(Study, Series.study_id == Study.id).order_by(Series.id)
    for row in session.execute(statement.execution_options(yield_per=_STREAM_BATCH)):
        values: tuple[Any, ...] = tuple(row)
        (_, study_id, patient_id, modality, body_part, description, protocol) = values[:7]
        (maker, tesla, thickness, agent, scanning, variant, tr, te, ti) = values[7:16]
        study_date, study_description = values[16], values[17]
        text = SeriesText(
            modality=modality.upper(),
            series_description=description,
            protocol_name=protocol,
            study_description=study_description,
            body_part_examined=body_part,
            scanning_sequence=tuple(v for v in scanning.split("\\") if v),
            sequence_variant=tuple(v for v in variant.split("\\") if v),
            repetition_time=tr,
            echo_time=te,
            inversion_time=ti,
            contrast_bolus_agent=agent,
        )
        kind, contrast, body = _normalized(text)
        key = ImagingKey(
            modality=text.modality,
            body_part=body,
            sequence_type=kind,
            contrast=contrast,
            manufacturer=manufacturer(maker),
            field_strength=_field_strength(text.modality, tesla),
            slice_band=slice_band(thickness),
            study_year=study_date.year if study_date is not None else None,
        )
        yield key, study_id, patient_id


def _patient_marginals(session: Session) -> dict[tuple[MarginalDimension, str, str], int]:
    counts: dict[tuple[MarginalDimension, str, str], int] = defaultdict(int)
    first_study: dict[int, tuple[dt.date | None, int | None]] = {}
    statement = select(Study.patient_id, Study.study_date, Study.patient_age_years)
    for patient_id, study_date, age in session.execute(statement):
        known = first_study.get(patient_id)
        if known is None or (
            study_date is not None and (known[0] is None or study_date < known[0])
        ):
            first_study[patient_id] = (study_date, age)
    for patient_id, sex, birth_year in session.execute(
        select(Patient.id, Patient.sex, Patient.birth_year)
    ):
        if patient_id not in first_study:
            continue  # a patient with no study left (being deleted): not in the catalogue
        study_date, age = first_study[patient_id]
        if age is None and birth_year is not None and study_date is not None:
            age = study_date.year - birth_year
        counts[(MarginalDimension.SEX, "", sex.strip().upper() or "")] += 1
        counts[(MarginalDimension.AGE_BAND, "", age_band(age))] += 1
    return dict(counts)


def _concept_marginals(session: Session) -> dict[tuple[MarginalDimension, str, str], int]:
    """Patients per coded diagnosis and drug of the clinical fact store, systems named as
    the ontology names them (the hub expands a query concept with the ontology)."""
    counts: dict[tuple[MarginalDimension, str, str], int] = {}
    for dimension, table in (
        (MarginalDimension.CONDITION, Condition),
        (MarginalDimension.MEDICATION, Drug),
    ):
        statement = select(
            table.system, table.code, func.count(func.distinct(table.subject_key))
        ).group_by(table.system, table.code)
        for system, code, patients in session.execute(statement):
            key = (dimension, canonical_system(system), code)
            counts[key] = max(counts.get(key, 0), int(patients))
    return counts


def draft(session: Session) -> CatalogueDraft:
    """Count the store, unsuppressed."""
    cells: dict[ImagingKey, Counts] = defaultdict(Counts)
    for key, study_id, patient_id in _rows(session):
        counts = cells[key]
        counts.patients.add(patient_id)
        counts.studies.add(study_id)
        counts.series += 1
    marginals = _patient_marginals(session) | _concept_marginals(session)
    return CatalogueDraft(cells=dict(cells), marginals=marginals)


ViewKey = tuple[object, ...]


def _view_cells(
    cells: Mapping[ImagingKey, Counts], dimensions: tuple[str, ...]
) -> dict[ViewKey, Counts]:
    merged: dict[ViewKey, Counts] = defaultdict(Counts)
    for key, counts in cells.items():
        into = merged[tuple(getattr(key, name) for name in dimensions)]
        into.patients |= counts.patients
        into.studies |= counts.studies
        into.series += counts.series
    return dict(merged)


def _margin_groups(keys: Iterable[ViewKey], width: int) -> list[list[ViewKey]]:
    """For every proper subset of the view's dimensions, the cells grouped by their values
    on it: the margins of the view (the empty subset is the whole view)."""
    everything = list(keys)
    groups: list[list[ViewKey]] = []
    for size in range(width):
        for subset in itertools.combinations(range(width), size):
            by_value: dict[ViewKey, list[ViewKey]] = defaultdict(list)
            for key in everything:
                by_value[tuple(key[i] for i in subset)].append(key)
            groups.extend(group for group in by_value.values() if len(group) > 1)
    return groups


def _publish_view(
    name: str, cells: Mapping[ImagingKey, Counts], threshold: int, rounding: int
) -> tuple[list[CubeCell], int]:
    dimensions = VIEWS[name]
    merged = _view_cells(cells, dimensions)
    patients = {key: len(counts.patients) for key, counts in merged.items()}
    hidden = suppress(patients, threshold, _margin_groups(patients, len(dimensions)))
    published = [
        CubeCell(
            view=name,
            **dict(zip(dimensions, key, strict=True)),  # type: ignore[arg-type]
            patients=rounded(len(counts.patients), rounding),
            studies=rounded(len(counts.studies), rounding),
            series=rounded(counts.series, rounding),
        )
        for key, counts in sorted(merged.items(), key=lambda item: repr(item[0]))
        if key not in hidden
    ]
    return published, len(hidden)


def _marginal_groups(
    keys: Iterable[tuple[MarginalDimension, str, str]],
) -> list[list[tuple[MarginalDimension, str, str]]]:
    """Sex and age band each partition the patients, so each table's total is known; a
    concept table is no partition (one patient, many diagnoses): each cell stands alone."""
    tables: dict[MarginalDimension, list[tuple[MarginalDimension, str, str]]] = defaultdict(list)
    for key in keys:
        if key[0] in (MarginalDimension.SEX, MarginalDimension.AGE_BAND):
            tables[key[0]].append(key)
    return list(tables.values())


def publish(
    counted: CatalogueDraft,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    rounding: int = DEFAULT_ROUNDING,
    now: dt.datetime | None = None,
) -> CataloguePublication:
    """What may leave the node: cells and marginals above threshold, protected, rounded."""
    cells: list[CubeCell] = []
    withheld = 0
    for name in VIEWS:
        published, hidden = _publish_view(name, counted.cells, threshold, rounding)
        cells.extend(published)
        withheld += hidden
    hidden_marginals = suppress(counted.marginals, threshold, _marginal_groups(counted.marginals))
    marginals = [
        MarginalCell(dimension=key[0], system=key[1], code=key[2], patients=rounded(n, rounding))
        for key, n in sorted(counted.marginals.items())
        if key not in hidden_marginals
    ]
    logger.info(
        "catalogue: %d cells published, %d withheld; %d marginals published, %d withheld",
        len(cells),
        withheld,
        len(marginals),
        len(hidden_marginals),
    )
    return CataloguePublication(
        generated_at=now or dt.datetime.now(dt.UTC),
        threshold=threshold,
        rounding=rounding,
        cells=cells,
        marginals=marginals,
        suppressed_cells=withheld,
        suppressed_marginals=len(hidden_marginals),
    )


def build(
    *,
    session: Session,
    threshold: int = DEFAULT_THRESHOLD,
    rounding: int = DEFAULT_ROUNDING,
    extra_marginals: Mapping[tuple[MarginalDimension, str, str], int] | None = None,
) -> CataloguePublication:
    """Count the store and make the publication. ``extra_marginals``: concept counts
    (condition, medication) from the clinical side, added before suppression."""
    counted = draft(session)
    if extra_marginals:
        counted.marginals.update(extra_marginals)
    return publish(counted, threshold=threshold, rounding=rounding)
