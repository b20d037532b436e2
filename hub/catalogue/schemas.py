"""Catalogue search: the question (facet filters) and the answer (counts, never patients)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from common.schemas.catalogue import DIMENSIONS

FACETS = DIMENSIONS


class CatalogueQuery(BaseModel):
    """Every filter narrows; values inside one filter are alternatives."""

    modality: list[str] = Field(default_factory=list)
    body_part: list[str] = Field(default_factory=list)  # Body Part Examined terms
    sequence_type: list[str] = Field(default_factory=list)  # T1w, FLAIR, or a group: perfusion
    contrast: bool | None = None
    manufacturer: list[str] = Field(default_factory=list)
    field_strength: list[float] = Field(default_factory=list)  # tesla
    slice_thickness_max: float | None = Field(default=None, gt=0)  # mm, whole bands only
    year_from: int | None = None
    year_to: int | None = None
    concepts: list[str] = Field(default_factory=list)  # "ICD10CM:G30", expanded by the ontology


class Counts(BaseModel):
    """Sums over published cells. A patient imaged in several cells counts in each, so
    ``patients`` is an upper bound; withheld cells are in no sum, so all are lower bounds of
    what the nodes hold."""

    patients: int = 0
    studies: int = 0
    series: int = 0


class NodeCounts(Counts):
    node: str


class FacetValue(BaseModel):
    value: str
    series: int
    patients: int


class ConceptAvailability(BaseModel):
    """How many patients with a concept (or any concept it subsumes) each node reports."""

    concept: str
    codes: int  # codes the concept expanded to
    nodes: dict[str, int]  # node name -> largest published count among those codes


class SearchResult(BaseModel):
    view: str  # the published view that answered (common.schemas.catalogue.VIEWS)
    total: Counts
    nodes: list[NodeCounts]
    facets: dict[str, list[FacetValue]]
    concepts: list[ConceptAvailability]
    unanswered: list[str]  # filters no single view crosses with the others: not applied
    federated_query_needed: bool  # criteria the catalogue cannot combine: ask the nodes
    note: str = ""


class PublicationReceipt(BaseModel):
    cells: int
    marginals: int


class ConceptHit(BaseModel):
    system: str
    code: str
    display: str
