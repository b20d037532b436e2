"""Synthetic FHIR R4 records for the patients of a synthetic DICOM corpus.

Each patient of an :class:`~compose.synthetic.dicom.AnswerKey` gets one transaction Bundle,
shaped like Synthea's: the Patient (the hospital's MRN as its ``MR`` identifier, which is what
links the record to the images' PatientID, plus the name, sex and birth date the images
carry), and a memory-clinic history drawn from the seed — Alzheimer's disease for some,
hypertension for others, an MMSE score near each imaging study (low with dementia), and
donepezil for those with dementia. The same seed gives the same files.

File names carry no identifier: ``p001.json`` is the patient of ``p001/`` in the DICOM corpus.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from compose.synthetic.dicom import PatientTruth

__all__ = [
    "ALZHEIMER",
    "DONEPEZIL",
    "HYPERTENSION",
    "MMSE",
    "ClinicalKey",
    "generate_bundles",
]

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    display: str

    @property
    def concept(self) -> str:
        """How a cohort definition names it (``ICD10CM:G30.9``)."""
        short = {ICD10CM: "ICD10CM", LOINC: "LOINC", ATC: "ATC"}[self.system]
        return f"{short}:{self.code}"

    def codeable(self) -> dict[str, Any]:
        coding = {"system": self.system, "code": self.code, "display": self.display}
        return {"coding": [coding], "text": self.display}


ALZHEIMER = Code(ICD10CM, "G30.9", "Alzheimer's disease, unspecified")
HYPERTENSION = Code(ICD10CM, "I10", "Essential (primary) hypertension")
MMSE = Code(LOINC, "72107-6", "Mini-Mental State Examination [MMSE] total score")
DONEPEZIL = Code(ATC, "N06DA02", "donepezil")
MMSE_UNIT = "{score}"


@dataclass(frozen=True)
class ClinicalKey:
    """What was generated, in counts (the demo compares them with what the node imported)."""

    files: tuple[str, ...]
    patients: int
    resources: int
    with_dementia: int


def generate_bundles(
    out_dir: Path,
    patients: Sequence[PatientTruth],
    *,
    seed: int = 0,
    dementia_share: float = 0.5,
) -> ClinicalKey:
    """Write one transaction Bundle per patient under ``out_dir``; return what was written."""
    if not 0.0 <= dementia_share <= 1.0:
        raise ValueError(f"dementia_share must be within 0..1, not {dementia_share}")
    rng = random.Random(f"havenet-synthetic-fhir-{seed}")  # noqa: S311 (fake data, not secrets)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    resources = dementia = 0
    for number, truth in enumerate(patients, start=1):
        has_dementia = rng.random() < dementia_share
        bundle = _Bundle(rng)
        _history(bundle, truth, has_dementia, rng)
        name = f"p{number:03d}.json"
        (out_dir / name).write_text(json.dumps(bundle.document(), indent=1) + "\n")
        files.append(name)
        resources += len(bundle.entries)
        dementia += has_dementia
    return ClinicalKey(
        files=tuple(files), patients=len(patients), resources=resources, with_dementia=dementia
    )


class _Bundle:
    """A transaction Bundle whose resources refer to each other by ``urn:uuid:``."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.entries: list[dict[str, Any]] = []

    def add(self, resource: dict[str, Any]) -> str:
        """Add ``resource`` (an id of its own); the reference other resources use for it."""
        logical_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        full_url = f"urn:uuid:{logical_id}"
        self.entries.append(
            {
                "fullUrl": full_url,
                "resource": {"resourceType": resource["resourceType"], "id": logical_id} | resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
        )
        return full_url

    def document(self) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}


def _history(bundle: _Bundle, truth: PatientTruth, has_dementia: bool, rng: random.Random) -> None:
    subject = {"reference": bundle.add(_patient(truth))}
    first_study = min(_day(d) for d in truth.study_dates)
    onset = max(first_study - timedelta(days=rng.randint(30, 700)), _day(truth.birth_date))
    if has_dementia:
        bundle.add(_condition(subject, ALZHEIMER, onset))
        bundle.add(_medication(subject, DONEPEZIL, onset + timedelta(days=rng.randint(7, 60))))
    if rng.random() < 0.4:
        bundle.add(_condition(subject, HYPERTENSION, onset - timedelta(days=rng.randint(0, 900))))
    for study_date in truth.study_dates:
        score = _mmse(rng, has_dementia)
        bundle.add(_observation(subject, MMSE, score, _day(study_date) - timedelta(days=3)))


def _patient(truth: PatientTruth) -> dict[str, Any]:
    family, _, given = truth.name.partition("^")
    identifier = {
        "type": {"coding": [{"system": V2_0203, "code": "MR"}], "text": "Medical Record Number"},
        "system": "urn:havenet:synthetic-hospital",
        "value": truth.patient_id,
    }
    return {
        "resourceType": "Patient",
        "identifier": [identifier],
        "name": [{"use": "official", "family": family, "given": [given] if given else []}],
        "gender": {"F": "female", "M": "male"}.get(truth.sex, "unknown"),
        "birthDate": _day(truth.birth_date).isoformat(),
    }


def _condition(subject: dict[str, str], code: Code, onset: date) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": code.codeable(),
        "subject": subject,
        "onsetDateTime": onset.isoformat(),
    }


def _medication(subject: dict[str, str], code: Code, started: date) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": code.codeable(),
        "subject": subject,
        "effectiveDateTime": started.isoformat(),
    }


def _observation(subject: dict[str, str], code: Code, value: int, on: date) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": code.codeable(),
        "subject": subject,
        "effectiveDateTime": on.isoformat(),
        "valueQuantity": {"value": value, "unit": "score", "system": UCUM, "code": MMSE_UNIT},
    }


def _mmse(rng: random.Random, has_dementia: bool) -> int:
    """An MMSE total (0 to 30): around 18 with Alzheimer's disease, near the ceiling without."""
    mean, sd = (18.0, 4.0) if has_dementia else (27.5, 1.5)
    return max(0, min(30, round(rng.gauss(mean, sd))))


def _day(text: str) -> date:
    """``YYYYMMDD`` (DICOM DA) as a date."""
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
