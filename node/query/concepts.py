"""Concepts of a cohort (``ICD10CM:G30``) → the (system URI, code) pairs the fact store holds.

The ontology names systems by short canonical names; the fact store by the standard URIs
of FHIR. A concept expands to its descendants and mapped concepts through the ontology when
the node's database holds it (``havenet ontology load``); otherwise it matches its own code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from ontology import expand as ontology
from ontology.exceptions import OntologyError
from ontology.models import VocabularyRecord
from ontology.sources import canonical_system

logger = logging.getLogger(__name__)

SYSTEM_URIS: dict[str, tuple[str, ...]] = {
    "ICD10CM": ("http://hl7.org/fhir/sid/icd-10-cm",),
    "ICD10": ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-nl"),
    "SNOMED": ("http://snomed.info/sct",),
    "LOINC": ("http://loinc.org",),
    "ATC": ("http://www.whocc.no/atc",),
    "RXNORM": ("http://www.nlm.nih.gov/research/umls/rxnorm",),
    "OMOP": ("https://ohdsi.org/omop/concept",),
}

# system name → codes: what a concept covers, in the ontology's terms.
Expander = Callable[[str, str], Mapping[str, set[str]]]


def own_code(system: str, code: str) -> Mapping[str, set[str]]:
    return {system: {code}}


def ontology_expander(session: Session) -> Expander:
    """Expansion through the ontology in ``session``'s database, or the code alone."""
    if not inspect(session.connection()).has_table(VocabularyRecord.__tablename__):
        return own_code
    if session.scalar(select(VocabularyRecord.system).limit(1)) is None:
        return own_code

    def expand(system: str, code: str) -> Mapping[str, set[str]]:
        try:
            return ontology.expand_codes(system, code, session=session)
        except OntologyError:  # not in the ontology: the code as written
            return own_code(system, code)

    return expand


def _spellings(system: str, code: str) -> set[str]:
    # ICD codes arrive with and without the dot ("G30.1", "G301").
    if system.startswith("ICD"):
        return {code, code.replace(".", "")}
    return {code}


def fact_codes(concept: str, *, descendants: bool, expander: Expander) -> dict[str, set[str]]:
    """``"ICD10CM:G30"`` → ``{"http://hl7.org/fhir/sid/icd-10-cm": {"G30", "G30.1", …}, …}``."""
    raw_system, _, code = concept.partition(":")
    system = canonical_system(raw_system)
    covered = expander(system, code) if descendants else own_code(system, code)
    by_uri: dict[str, set[str]] = {}
    for name, codes in covered.items():
        uris = SYSTEM_URIS.get(name, (name,))
        for uri in uris:
            for each in codes:
                by_uri.setdefault(uri, set()).update(_spellings(name, each))
    return by_uri
