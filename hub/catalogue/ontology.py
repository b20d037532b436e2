"""The ontology inside the hub's database: concept expansion and typeahead for search.

The vocabularies load into the hub's own database (``havenet hub ontology-load``, or the
first ``havenet hub serve``). Until they are, a concept matches its own code only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session

from hub.catalogue.schemas import ConceptHit
from hub.catalogue.service import Expander
from ontology import expand as ontology
from ontology import loader
from ontology.exceptions import OntologyError
from ontology.models import VocabularyRecord

logger = logging.getLogger(__name__)


def loaded(session: Session) -> bool:
    if not inspect(session.connection()).has_table(VocabularyRecord.__tablename__):
        return False
    return session.scalar(select(VocabularyRecord.system).limit(1)) is not None


def ensure_loaded(engine: Engine) -> bool:
    """Load the vocabularies once; True when this call loaded them."""
    return loader.ensure_loaded(engine)


def concept_expander(session: Session) -> Expander | None:
    if not loaded(session):
        return None

    def expand(concept: str) -> Mapping[str, set[str]]:
        system, _, code = concept.partition(":")
        try:
            return ontology.expand_codes(system, code, session=session)
        except OntologyError:  # unknown to the ontology: the code as given
            return {system: {code}}

    return expand


def typeahead(session: Session, text: str, limit: int) -> list[ConceptHit]:
    if not loaded(session):
        return []
    return [
        ConceptHit(system=c.system, code=c.code, display=c.display)
        for c in ontology.search(text, limit, session=session)
    ]
