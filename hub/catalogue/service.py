"""The hub's catalogue: receive a node's publication, search across nodes.

A publication replaces the node's previous one whole. The hub enforces the threshold again:
a cell or marginal below the larger of the node's and the hub's threshold is dropped.

Search is faceted: the total and per-node counts obey every filter; the counts of a facet
obey every filter but its own, so a researcher sees what choosing another value would give.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, false, func, insert, or_, select
from sqlalchemy.orm import Session

from common.schemas.catalogue import SLICE_BANDS, VIEWS, CataloguePublication
from hub.catalogue.models import CatalogueCell, CatalogueMarginal, CatalogueSnapshot
from hub.catalogue.schemas import (
    FACETS,
    CatalogueQuery,
    ConceptAvailability,
    Counts,
    FacetValue,
    NodeCounts,
    PublicationReceipt,
    SearchResult,
)
from hub.nodes.models import Node

logger = logging.getLogger(__name__)

HUB_THRESHOLD = 10

# Words a researcher uses for a family of sequence types.
SEQUENCE_GROUPS: Mapping[str, tuple[str, ...]] = {
    "perfusion": ("DSC perfusion", "DCE perfusion", "ASL perfusion", "CT perfusion"),
    "angiography": ("MRA", "CTA"),
    "diffusion": ("DWI", "ADC"),
    "t2": ("T2w", "FLAIR", "T2starw"),
}

Expander = Callable[[str], Mapping[str, set[str]]]  # "SYSTEM:CODE" -> codes per system


def store_publication(
    *,
    session: Session,
    node: Node,
    publication: CataloguePublication,
    threshold: int = HUB_THRESHOLD,
) -> PublicationReceipt:
    """Replace what ``node`` last published."""
    floor = max(threshold, publication.threshold)
    cells = [
        {"node_id": node.id, **cell.model_dump()}
        for cell in publication.cells
        if cell.patients >= floor
    ]
    marginals = [
        {
            "node_id": node.id,
            "dimension": m.dimension.value,
            "system": m.system,
            "code": m.code,
            "patients": m.patients,
        }
        for m in publication.marginals
        if m.patients >= floor
    ]
    session.execute(delete(CatalogueCell).where(CatalogueCell.node_id == node.id))
    session.execute(delete(CatalogueMarginal).where(CatalogueMarginal.node_id == node.id))
    if cells:
        session.execute(insert(CatalogueCell), cells)
    if marginals:
        session.execute(insert(CatalogueMarginal), marginals)
    snapshot = session.get(CatalogueSnapshot, node.id) or CatalogueSnapshot(node_id=node.id)
    snapshot.generated_at = publication.generated_at
    snapshot.threshold = publication.threshold
    snapshot.rounding = publication.rounding
    snapshot.suppressed_cells = publication.suppressed_cells + len(publication.cells) - len(cells)
    snapshot.suppressed_marginals = (
        publication.suppressed_marginals + len(publication.marginals) - len(marginals)
    )
    session.add(snapshot)
    dropped = len(publication.cells) - len(cells) + len(publication.marginals) - len(marginals)
    if dropped:
        logger.warning("catalogue: node %s published %d counts below threshold", node.name, dropped)
    return PublicationReceipt(cells=len(cells), marginals=len(marginals))


def sequence_types(requested: Sequence[str]) -> list[str]:
    """Requested sequence types with groups expanded; matched without regard to case."""
    found: list[str] = []
    for value in requested:
        found.extend(SEQUENCE_GROUPS.get(value.strip().lower(), (value.strip(),)))
    return found


def _bands_up_to(limit: float) -> list[str]:
    return [label for label, upper in SLICE_BANDS if upper <= limit]


def filtered_dimensions(query: CatalogueQuery) -> set[str]:
    asked = {
        "modality": bool(query.modality),
        "body_part": bool(query.body_part),
        "sequence_type": bool(query.sequence_type),
        "contrast": query.contrast is not None,
        "manufacturer": bool(query.manufacturer),
        "field_strength": bool(query.field_strength),
        "slice_band": query.slice_thickness_max is not None,
        "study_year": query.year_from is not None or query.year_to is not None,
    }
    return {name for name, wanted in asked.items() if wanted}


def choose_view(dimensions: set[str]) -> tuple[str, set[str]]:
    """The first view that crosses all ``dimensions``; else the one crossing most of them,
    with the dimensions it lacks."""
    for name, crossed in VIEWS.items():
        if dimensions <= set(crossed):
            return name, set()
    best = max(VIEWS, key=lambda name: len(dimensions & set(VIEWS[name])))
    return best, dimensions - set(VIEWS[best])


def _conditions(
    query: CatalogueQuery, view: str, skip: str | None = None
) -> list[ColumnElement[bool]]:
    cell = CatalogueCell
    applied = set(VIEWS[view]) - {skip}
    where: list[ColumnElement[bool]] = [cell.view == view]

    def text_in(facet: str, column: Any, values: Sequence[str]) -> None:
        if values and facet in applied:
            where.append(func.lower(column).in_([v.strip().lower() for v in values]))

    text_in("modality", cell.modality, query.modality)
    text_in("body_part", cell.body_part, query.body_part)
    text_in("sequence_type", cell.sequence_type, sequence_types(query.sequence_type))
    text_in("manufacturer", cell.manufacturer, query.manufacturer)
    if query.contrast is not None and "contrast" in applied:
        where.append(cell.contrast == query.contrast)
    if query.field_strength and "field_strength" in applied:
        where.append(cell.field_strength.in_([round(v, 1) for v in query.field_strength]))
    if query.slice_thickness_max is not None and "slice_band" in applied:
        bands = _bands_up_to(query.slice_thickness_max)
        where.append(cell.slice_band.in_(bands) if bands else false())
    if "study_year" in applied:
        if query.year_from is not None:
            where.append(cell.study_year >= query.year_from)
        if query.year_to is not None:
            where.append(cell.study_year <= query.year_to)
    return where


def _sums() -> tuple[Any, Any, Any]:
    return (
        func.coalesce(func.sum(CatalogueCell.patients), 0),
        func.coalesce(func.sum(CatalogueCell.studies), 0),
        func.coalesce(func.sum(CatalogueCell.series), 0),
    )


def _facet_label(value: object) -> str:
    if value is None or value == "":
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _facet(session: Session, query: CatalogueQuery, name: str) -> list[FacetValue]:
    """Counts by ``name`` under every other filter; none when no view crosses them all."""
    view, lacking = choose_view((filtered_dimensions(query) - {name}) | {name})
    if lacking:
        return []
    column = getattr(CatalogueCell, name)
    patients, _, series = _sums()
    statement = (
        select(column, patients, series)
        .where(*_conditions(query, view, skip=name))
        .group_by(column)
        .order_by(series.desc())
    )
    return [
        FacetValue(value=_facet_label(value), series=int(n_series), patients=int(n_patients))
        for value, n_patients, n_series in session.execute(statement)
    ]


def _concepts(
    session: Session, query: CatalogueQuery, expand: Expander | None
) -> list[ConceptAvailability]:
    found: list[ConceptAvailability] = []
    for concept in query.concepts:
        system, _, code = concept.partition(":")
        codes = expand(concept) if expand is not None else {system: {code}}
        pairs = [(s, c) for s, members in codes.items() for c in members]
        conditions = [
            (CatalogueMarginal.system == s) & (CatalogueMarginal.code == c) for s, c in pairs
        ]
        per_node: dict[str, int] = {}
        if conditions:
            statement = (
                select(Node.name, func.max(CatalogueMarginal.patients))
                .join(Node, Node.id == CatalogueMarginal.node_id)
                .where(or_(*conditions))
                .group_by(Node.name)
            )
            per_node = {name: int(n) for name, n in session.execute(statement)}
        found.append(ConceptAvailability(concept=concept, codes=len(pairs), nodes=per_node))
    return found


def search(
    query: CatalogueQuery, *, session: Session, expand: Expander | None = None
) -> SearchResult:
    patients, studies, series = _sums()
    dimensions = filtered_dimensions(query)
    view, lacking = choose_view(dimensions)
    where = _conditions(query, view)
    per_node = session.execute(
        select(Node.name, patients, studies, series)
        .join(Node, Node.id == CatalogueCell.node_id)
        .where(*where)
        .group_by(Node.name)
        .order_by(Node.name)
    )
    nodes = [
        NodeCounts(node=name, patients=int(p), studies=int(st), series=int(se))
        for name, p, st, se in per_node
    ]
    total = Counts(
        patients=sum(n.patients for n in nodes),
        studies=sum(n.studies for n in nodes),
        series=sum(n.series for n in nodes),
    )
    facets = {name: _facet(session, query, name) for name in FACETS}
    notes = []
    if lacking:
        notes.append(
            f"no published view crosses {', '.join(sorted(lacking))} with the other filters: "
            "those filters were not applied"
        )
    if dimensions and query.concepts:
        notes.append(
            "imaging and clinical criteria together: the catalogue knows each on its own only"
        )
    combined = bool(lacking) or bool(dimensions and query.concepts)
    if combined:
        notes.append("run a federated query for the patients who meet all criteria")
    return SearchResult(
        view=view,
        total=total,
        nodes=nodes,
        facets=facets,
        concepts=_concepts(session, query, expand),
        unanswered=sorted(lacking),
        federated_query_needed=combined,
        note="; ".join(notes),
    )
