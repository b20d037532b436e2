"""`havenet demo` without starting the network: its folder, its steps' bookkeeping, its exit
status. The whole run is tests/integration/test_demo.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compose import demo
from compose.cli import app
from compose.exceptions import DemoError
from compose.scenario import Scenario, Summary, is_imaging


def quiet(text: str, *, step: bool = False) -> None:
    """A reporter that prints nothing."""


def test_the_demo_leaves_a_folder_it_did_not_make_alone(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("months of work")
    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path), "--once"])
    assert result.exit_code == 2
    assert "holds files the demo did not write" in result.output
    assert (tmp_path / "thesis.tex").read_text() == "months of work"


def test_a_folder_the_demo_made_is_emptied_for_the_next_run(tmp_path: Path) -> None:
    folder = tmp_path / "demo-output"
    demo._prepare(folder)
    (folder / "hub").mkdir()
    (folder / "hub" / "hub.db").write_text("old")
    demo._prepare(folder)
    assert sorted(p.name for p in folder.iterdir()) == [demo.MARKER]


def test_what_the_first_demo_left_is_emptied_too(tmp_path: Path) -> None:
    for name in ("hospital", "stage1", "stage2"):
        (tmp_path / name).mkdir()
    (tmp_path / "site-secret").write_text("x")
    demo._prepare(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [demo.MARKER]


def test_a_failed_step_is_named_and_the_later_steps_are_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = Scenario(tmp_path, patients=12, say=quiet, use_orthanc=False)
    ran: list[str] = []
    for name in ("make_hospitals", "start_hub", "enroll_nodes", "publish_catalogues"):
        monkeypatch.setattr(scenario, name, lambda name=name: ran.append(name))

    def feeding_fails() -> None:
        raise DemoError("hospital-2: stage 1 of 600 images: not done after 180 s")

    monkeypatch.setattr(scenario, "feed_nodes", feeding_fails)
    summary = scenario.run()
    assert ran == ["make_hospitals", "start_hub", "enroll_nodes"]
    assert not summary.ok
    assert summary.failed_step == "feeding"
    assert summary.error == "hospital-2: stage 1 of 600 images: not done after 180 s"
    assert set(summary.steps) == {"hospitals", "hub", "enrollment", "feeding"}


def test_the_summary_is_json_with_one_entry_per_node(tmp_path: Path) -> None:
    scenario = Scenario(tmp_path, patients=12, say=quiet, use_orthanc=False)
    data = json.loads(json.dumps(scenario.summary.as_dict()))
    assert sorted(data["nodes"]) == ["hospital-1", "hospital-2"]
    node = data["nodes"]["hospital-1"]
    assert node["api"].startswith("http://127.0.0.1:") and node["pages"].endswith("/ui/")
    for count in ("instances_ingested", "catalogue_cells", "studies_released", "studies_exported"):
        assert node[count] == 0


def test_a_failed_run_exits_with_status_1_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(self: Scenario) -> Summary:
        return Summary(ok=False, failed_step="query", error="the nodes' answers: not done")

    monkeypatch.setattr(Scenario, "run", fails)
    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "d"), "--once", "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["failed_step"]) == (False, "query")
    assert json.loads((tmp_path / "d" / "summary.json").read_text()) == summary


def test_curation_entries_without_dicom_files_are_clinical_records() -> None:
    assert is_imaging({"files": 6})
    assert not is_imaging({"files": 0})
