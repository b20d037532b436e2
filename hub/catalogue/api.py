"""The catalogue over HTTP: nodes publish (signed, ``/api/v1/channel/catalogue``), users
search (``/api/v1/catalogue``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from common.schemas.catalogue import CataloguePublication
from common.schemas.channel import API_PREFIX
from hub import audit
from hub.catalogue import service as catalogue
from hub.catalogue.ontology import concept_expander, typeahead
from hub.catalogue.schemas import CatalogueQuery, ConceptHit, PublicationReceipt, SearchResult
from hub.deps import CurrentUser, SessionDep, SignedNode
from hub.nodes import service as nodes

channel = APIRouter(prefix=API_PREFIX, tags=["channel"])
router = APIRouter(prefix="/api/v1/catalogue", tags=["catalogue"])


@channel.post("/catalogue", summary="Publish the node's aggregates (replaces the last ones)")
def publish(
    body: CataloguePublication, node: SignedNode, session: SessionDep
) -> PublicationReceipt:
    current = nodes.attached(session=session, node=node)
    receipt = catalogue.store_publication(session=session, node=current, publication=body)
    audit.record(
        session=session,
        actor=f"node:{current.name}",
        action="catalogue.published",
        subject=current.name,
        cells=receipt.cells,
        marginals=receipt.marginals,
        withheld_cells=body.suppressed_cells,
    )
    return receipt


@router.post("/search", summary="Faceted search over every node's published aggregates")
def search(query: CatalogueQuery, user: CurrentUser, session: SessionDep) -> SearchResult:
    result = catalogue.search(query, session=session, expand=concept_expander(session))
    audit.record(
        session=session,
        actor=f"user:{user.name}",
        action="catalogue.searched",
        query=query.model_dump(exclude_defaults=True),
        series=result.total.series,
    )
    return result


@router.get("/concepts", summary="Typeahead over concept names (conditions, drugs, labs …)")
def concepts(
    _user: CurrentUser,
    session: SessionDep,
    q: Annotated[str, Query(min_length=2, max_length=100)],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> list[ConceptHit]:
    return typeahead(session, q, limit)
