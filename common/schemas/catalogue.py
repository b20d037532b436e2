"""The catalogue a node publishes to the hub: aggregates only (DESIGN.md, decision 6).

A publication holds joint counts (patients, studies, series) over the imaging dimensions
and marginal patient counts (sex, age band, clinical concepts). The imaging counts come as
a few *views*, each a cube over some of the dimensions: a joint cube over all eight would
split a hospital's series into cells so small that almost every one is withheld. A search
is answered from the view that holds all of its dimensions.

A cell whose patient count is below the node's threshold is not in a publication, nor is a
cell withheld to protect another one (complementary suppression, see
``node.catalogue.suppression``): the hub sees how many cells were withheld, never their
keys. There are no totals: a total is the sum of published cells, a lower bound.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CATALOGUE_SCHEMA_VERSION: Literal[1] = 1

# Slice-thickness bands, by their upper bound in mm (inclusive); "" when it is not known.
SLICE_BANDS: tuple[tuple[str, float], ...] = (
    ("0-1", 1.0),
    ("1-1.5", 1.5),
    ("1.5-3", 3.0),
    ("3-5", 5.0),
    ("5+", float("inf")),
)
AGE_BANDS: tuple[tuple[str, int], ...] = (
    ("0-17", 17),
    ("18-39", 39),
    ("40-59", 59),
    ("60-79", 79),
    ("80+", 10_000),
)


def slice_band(thickness_mm: float | None) -> str:
    if thickness_mm is None or thickness_mm <= 0:
        return ""
    return next(label for label, upper in SLICE_BANDS if thickness_mm <= upper)


def age_band(age_years: int | None) -> str:
    if age_years is None or age_years < 0:
        return ""
    return next(label for label, upper in AGE_BANDS if age_years <= upper)


DIMENSIONS = (
    "modality",
    "body_part",
    "sequence_type",
    "contrast",
    "manufacturer",
    "field_strength",
    "slice_band",
    "study_year",
)
# The cubes a node publishes, by name: which dimensions each one crosses.
VIEWS: dict[str, tuple[str, ...]] = {
    "sequence": ("modality", "body_part", "sequence_type", "contrast", "slice_band"),
    "device": ("modality", "body_part", "manufacturer", "field_strength"),
    "year": ("modality", "body_part", "sequence_type", "study_year"),
}


class ImagingKey(BaseModel):
    """The imaging dimensions of one series ("" or None: not known)."""

    model_config = ConfigDict(frozen=True)

    modality: str
    body_part: str  # Body Part Examined defined term, normalized (ontology)
    sequence_type: str  # ontology.normalize.SequenceType value
    contrast: bool
    manufacturer: str
    field_strength: float | None  # tesla, one decimal; MR only
    slice_band: str  # one of SLICE_BANDS' labels
    study_year: int | None


class CubeCell(BaseModel):
    """One cell of a view: its dimensions are set, the others are None."""

    model_config = ConfigDict(frozen=True)

    view: str
    modality: str | None = None
    body_part: str | None = None
    sequence_type: str | None = None
    contrast: bool | None = None
    manufacturer: str | None = None
    field_strength: float | None = None
    slice_band: str | None = None
    study_year: int | None = None
    patients: int = Field(ge=0)
    studies: int = Field(ge=0)
    series: int = Field(ge=0)


class MarginalDimension(str, Enum):
    SEX = "sex"  # DICOM Patient's Sex: M, F, O
    AGE_BAND = "age_band"  # age at the patient's first study, AGE_BANDS
    CONDITION = "condition"  # a coded diagnosis (system + code)
    MEDICATION = "medication"  # a coded drug (system + code)


class MarginalCell(BaseModel):
    model_config = ConfigDict(frozen=True)

    dimension: MarginalDimension
    system: str = ""  # code system URI for concepts; "" for sex and age band
    code: str
    patients: int = Field(ge=0)


class CataloguePublication(BaseModel):
    version: Literal[1] = CATALOGUE_SCHEMA_VERSION
    generated_at: dt.datetime
    threshold: int = Field(ge=1)  # smallest patient count published
    rounding: int = Field(ge=1)  # counts are multiples of this
    cells: list[CubeCell]
    marginals: list[MarginalCell]
    suppressed_cells: int = Field(ge=0)
    suppressed_marginals: int = Field(ge=0)
