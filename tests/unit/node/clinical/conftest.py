"""Fixtures for the clinical import: a migrated node database, the stage-1 context, and a
hospital's FHIR Bundle built in code with the identifiers a real one carries."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from node.clinical import service
from node.clinical.service import ImportContext
from node.store.correspondence import Keyring, new_key, parse_key
from node.store.db import make_engine, make_sessionmaker, migrate
from tests.conftest import BIRTH_DATE, PATIENT_ID, PATIENT_NAME, SECRET

DATA = Path(__file__).resolve().parents[3] / "data" / "clinical"
SYNTHEA_BUNDLES = sorted((DATA / "fhir").glob("*.json"))
OMOP_DIR = DATA / "omop"
STUDY_UID = "1.2.826.0.1.3680043.10.1.1"  # ct_dataset()'s study
PHONE = "555-0199-2231"
STREET = "22 Acacia Avenue"
NOTE = "Patient seen by Dr Phillips at home"
SSN = "999-61-3984"
IDENTIFIERS = (PATIENT_ID, SSN, PHONE, STREET, NOTE, *PATIENT_NAME.split("^"))


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    migrate(url)
    return url


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def keyring() -> Keyring:
    return Keyring(current=parse_key(new_key()))


@pytest.fixture
def context(keyring: Keyring) -> ImportContext:
    return ImportContext(
        rules=service.build_rules("pseudonymize", "site", SECRET), keyring=keyring, actor="test"
    )


def hospital_bundle(bundle_type: str = "transaction") -> dict[str, Any]:
    """One patient with a dementia diagnosis, a note, a lab value and an MR study."""
    patient_url = "urn:uuid:7f1d6a52-0d6e-4a35-9f55-3f6f2a6c0001"
    family, given = PATIENT_NAME.split("^")[:2]
    resources: list[tuple[str, dict[str, Any]]] = [
        (
            patient_url,
            {
                "resourceType": "Patient",
                "id": "7f1d6a52-0d6e-4a35-9f55-3f6f2a6c0001",
                "text": {"status": "generated", "div": f"<div>{family} {given}</div>"},
                "identifier": [
                    {
                        "type": {"coding": [{"code": "MR"}]},
                        "system": "urn:hospital:mrn",
                        "value": PATIENT_ID,
                    },
                    {"system": "http://hl7.org/fhir/sid/us-ssn", "value": SSN},
                ],
                "name": [{"family": family, "given": [given]}],
                "telecom": [{"system": "phone", "value": PHONE}],
                "address": [{"line": [STREET], "city": "Springfield"}],
                "gender": "female",
                "birthDate": f"{BIRTH_DATE[:4]}-{BIRTH_DATE[4:6]}-{BIRTH_DATE[6:]}",
            },
        ),
        (
            "urn:uuid:7f1d6a52-0d6e-4a35-9f55-3f6f2a6c0002",
            {
                "resourceType": "Condition",
                "id": "7f1d6a52-0d6e-4a35-9f55-3f6f2a6c0002",
                "code": {
                    "coding": [
                        {
                            "system": "http://snomed.info/sct",
                            "code": "52448006",
                            "display": "Dementia",
                        },
                        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F03.90"},
                    ]
                },
                "subject": {"reference": patient_url, "display": f"{given} {family}"},
                "onsetDateTime": "2023-03-02T10:00:00+01:00",
                "note": [{"text": NOTE}],
            },
        ),
        (
            "urn:uuid:7f1d6a52-0d6e-4a35-9f55-3f6f2a6c0003",
            {
                "resourceType": "Observation",
                "id": "7f1d6a52-0d6e-4a35-9f55-3f6f2a6c0003",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
                "subject": {"reference": patient_url},
                "effectiveDateTime": "2023-03-02",
                "valueQuantity": {
                    "value": 1.1,
                    "unit": "mg/dL",
                    "system": "http://unitsofmeasure.org",
                    "code": "mg/dL",
                },
            },
        ),
        (
            "urn:uuid:7f1d6a52-0d6e-4a35-9f55-3f6f2a6c0004",
            {
                "resourceType": "ImagingStudy",
                "id": "7f1d6a52-0d6e-4a35-9f55-3f6f2a6c0004",
                "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"}],
                "status": "available",
                "subject": {"reference": patient_url},
                "started": "2023-04-15T10:15:00Z",
                "modality": [
                    {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "MR"}
                ],
                "description": f"MR head for {family}",
                "series": [
                    {
                        "uid": f"{STUDY_UID}.1",
                        "modality": {
                            "system": "http://dicom.nema.org/resources/ontology/DCM",
                            "code": "MR",
                        },
                    }
                ],
            },
        ),
    ]
    return {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [
            {"fullUrl": url, "resource": copy.deepcopy(resource)} for url, resource in resources
        ],
    }
