"""`havenet node import fhir|omop`: one transaction per file, errors that name the place."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from compose.cli import app
from node.clinical.models import Measurement, Person
from node.store import correspondence
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from node.store.models import AuditRecord
from tests.unit.node.clinical.conftest import OMOP_DIR, SYNTHEA_BUNDLES, hospital_bundle

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A node's data folder with its database, and its secrets in the environment."""
    for name in list(os.environ):
        if name.startswith("HAVENET_NODE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HAVENET_NODE_SITE_SECRET", "site-secret-for-cli-tests-0123456789abcdef")
    monkeypatch.setenv("HAVENET_NODE_CORRESPONDENCE_KEY", correspondence.new_key())
    folder = tmp_path / "data"
    folder.mkdir()
    migrate(f"sqlite:///{folder / 'node.db'}")
    return folder


def count(data_dir: Path, model: type[object]) -> int:
    engine = make_engine(f"sqlite:///{data_dir / 'node.db'}")
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return int(session.execute(select(func.count()).select_from(model)).scalar_one())
    finally:
        engine.dispose()


def test_fhir_imports_every_bundle_of_a_folder(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    for bundle in SYNTHEA_BUNDLES:
        shutil.copy(bundle, folder)
    result = runner.invoke(
        app, ["node", "import", "fhir", str(folder), "--data-dir", str(data_dir)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("1 patients") == 2
    assert count(data_dir, Person) == 2
    assert count(data_dir, AuditRecord) == 2


def test_fhir_goes_on_past_a_bad_file_and_exits_1(data_dir: Path, tmp_path: Path) -> None:
    bad = hospital_bundle()
    bad["entry"][2]["resource"]["effectiveDateTime"] = "yesterday"
    (tmp_path / "a-bad.json").write_text(json.dumps(bad))
    shutil.copy(SYNTHEA_BUNDLES[0], tmp_path / "b-good.json")
    result = runner.invoke(
        app,
        ["node", "import", "fhir", str(tmp_path / "a-bad.json"), str(tmp_path / "b-good.json")],
        env={"HAVENET_NODE_DATA_DIR": str(data_dir)},
    )
    assert result.exit_code == 1
    assert "a-bad.json: entry 2 (Observation): Observation.effectiveDateTime" in result.output
    assert "yesterday" not in result.output
    assert count(data_dir, Person) == 1  # the good file only


def test_omop_imports_a_folder_and_prints_json(data_dir: Path) -> None:
    result = runner.invoke(
        app, ["node", "import", "omop", str(OMOP_DIR), "--data-dir", str(data_dir), "--json"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["format"] for line in lines][:2] == ["omop-person", "omop-death"]
    assert count(data_dir, Measurement) == 1265


def test_import_needs_the_node_database(tmp_path: Path, data_dir: Path) -> None:
    result = runner.invoke(
        app, ["node", "import", "omop", str(OMOP_DIR), "--data-dir", str(tmp_path / "nowhere")]
    )
    assert result.exit_code == 1
    assert "no node database here" in result.output


def test_fhir_imports_bulk_export_patients_before_the_files_that_refer_to_them(
    data_dir: Path, tmp_path: Path
) -> None:
    resources = [entry["resource"] for entry in hospital_bundle()["entry"]]
    for resource in resources[1:]:
        resource["subject"] = {"reference": f"Patient/{resources[0]['id']}"}
    export = tmp_path / "bulk"
    export.mkdir()
    (export / "Condition.ndjson").write_text(json.dumps(resources[1]) + "\n")
    (export / "Patient.ndjson").write_text(json.dumps(resources[0]) + "\n")
    result = runner.invoke(
        app, ["node", "import", "fhir", str(export), "--data-dir", str(data_dir)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.index("Patient.ndjson") < result.output.index("Condition.ndjson")
