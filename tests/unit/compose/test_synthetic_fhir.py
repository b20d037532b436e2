"""Synthetic FHIR records for the demo's hospitals: valid R4, linked to the images' patients,
and imported by the node as conditions, drugs and measurements."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from sqlalchemy import func, select

from compose.synthetic.dicom import AnswerKey, generate_corpus
from compose.synthetic.fhir import ALZHEIMER, DONEPEZIL, MMSE, generate_bundles
from node.clinical import fhir, service
from node.clinical.models import Condition, Drug, Measurement, Person
from node.clinical.service import ImportContext
from node.store.correspondence import Keyring, new_key, parse_key
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from tests.conftest import SECRET

PATIENTS = 12


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> AnswerKey:
    return generate_corpus(
        tmp_path_factory.mktemp("dicom"),
        patients=PATIENTS,
        studies_per_patient=2,
        series_per_study=1,
        instances_per_series=1,
        rows=16,
        columns=16,
        seed=5,
    )


def bundles(folder: Path) -> list[dict[str, object]]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def test_each_patient_gets_one_valid_r4_transaction_bundle(key: AnswerKey, tmp_path: Path) -> None:
    written = generate_bundles(tmp_path, key.patients, seed=5)
    documents = bundles(tmp_path)
    assert len(documents) == len(written.files) == PATIENTS
    for document in documents:
        get_fhir_model_class("Bundle").model_validate(document)
        assert document["type"] == "transaction"
        for entry in document["entry"]:  # type: ignore[attr-defined]
            resource = entry["resource"]
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_the_patient_carries_the_images_patient_id_as_its_mr_identifier(
    key: AnswerKey, tmp_path: Path
) -> None:
    generate_bundles(tmp_path, key.patients, seed=5)
    for truth, document in zip(key.patients, bundles(tmp_path), strict=True):
        first = document["entry"][0]  # type: ignore[index]
        entry = fhir.Entry("p", first["resource"], first["fullUrl"])
        assert fhir.hospital_patient_id(entry, "MR", "") == truth.patient_id
        assert entry.resource["birthDate"].replace("-", "") == truth.birth_date
        assert entry.resource["gender"] == {"F": "female", "M": "male"}[truth.sex]


def test_file_names_carry_no_identifier(key: AnswerKey, tmp_path: Path) -> None:
    written = generate_bundles(tmp_path, key.patients, seed=5)
    assert list(written.files) == [f"p{n:03d}.json" for n in range(1, PATIENTS + 1)]


def test_the_same_seed_gives_the_same_files(key: AnswerKey, tmp_path: Path) -> None:
    generate_bundles(tmp_path / "a", key.patients, seed=9)
    generate_bundles(tmp_path / "b", key.patients, seed=9)
    generate_bundles(tmp_path / "c", key.patients, seed=10)
    a, b, c = (bundles(tmp_path / name) for name in "abc")
    assert a == b
    assert a != c


def test_mmse_is_lower_with_alzheimers_disease(tmp_path: Path) -> None:
    many = generate_corpus(
        tmp_path / "dicom",
        patients=60,
        studies_per_patient=1,
        series_per_study=1,
        instances_per_series=1,
        rows=16,
        columns=16,
    )
    generate_bundles(tmp_path / "fhir", many.patients, seed=1)
    scores: dict[bool, list[float]] = {True: [], False: []}
    for document in bundles(tmp_path / "fhir"):
        resources = [e["resource"] for e in document["entry"]]  # type: ignore[attr-defined]
        ill = any(r.get("code", {}).get("text") == ALZHEIMER.display for r in resources)
        scores[ill] += [r["valueQuantity"]["value"] for r in resources if "valueQuantity" in r]
    assert len(scores[True]) >= 10 and len(scores[False]) >= 10
    assert statistics.mean(scores[True]) + 5 < statistics.mean(scores[False])


def test_a_node_imports_them_as_conditions_drugs_and_measurements(
    key: AnswerKey, tmp_path: Path
) -> None:
    written = generate_bundles(tmp_path / "fhir", key.patients, seed=5)
    url = f"sqlite:///{tmp_path / 'node.db'}"
    migrate(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    context = ImportContext(
        rules=service.build_rules("pseudonymize", "site", SECRET),
        keyring=Keyring(current=parse_key(new_key())),
        actor="test",
    )
    try:
        for name in written.files:
            with transaction(sessions) as session:
                service.import_fhir_file(
                    session=session, context=context, path=tmp_path / "fhir" / name
                )
        with transaction(sessions) as session:

            def count(model: type[Condition | Drug | Measurement], code: str) -> int:
                query = select(func.count()).select_from(model).where(model.code == code)
                return int(session.execute(query).scalar_one())

            persons = session.execute(select(func.count()).select_from(Person)).scalar_one()
            assert persons == PATIENTS
            assert count(Condition, ALZHEIMER.code) == written.with_dementia > 0
            assert count(Drug, DONEPEZIL.code) == written.with_dementia
            assert count(Measurement, MMSE.code) == PATIENTS * 2  # one per study
    finally:
        engine.dispose()
