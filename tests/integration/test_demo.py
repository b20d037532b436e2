"""`havenet demo --once --json` end to end: a hub and two nodes as real processes, fed by
synthetic hospitals (one over C-STORE, one from a local Orthanc when installed), through
enrollment, catalogue, federated query, data request, approval, release, curation and
export — and every process stopped at the end."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest

from compose.network import havenet_command, orthanc_program
from tests.integration.peers import REQUIRE_PEERS_ENV, peers_required

pytestmark = [pytest.mark.slow, pytest.mark.peers]
# ~75 s on two idle shared cores; the margin is for a machine other work is loading.
RUN_SECONDS = 400
MIN_CELL = 10  # the nodes' smallest published count
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "demo"


def test_havenet_demo_once_runs_every_step_and_stops_everything(tmp_path: Path) -> None:
    """One run, checked step by step (a run takes a minute or more: one test, so that
    pytest-xdist never runs it twice)."""
    workdir = tmp_path / "demo-output"
    summary, seconds = run(workdir)
    check_steps(summary, seconds)
    check_ingest_and_catalogue(summary)
    check_query(summary)
    check_release_curation_and_export(summary, workdir)
    check_nothing_left_running(workdir)
    check_no_identifier_on_the_hub_side(workdir)


def run(workdir: Path) -> tuple[dict[str, Any], float]:
    """The summary `havenet demo --once --json` printed, and how long it took."""
    if orthanc_program() is None and peers_required():
        pytest.fail(f"Orthanc is not installed ({REQUIRE_PEERS_ENV}=1)")
    started = time.monotonic()
    done = subprocess.run(
        [*havenet_command(), "demo", "--workdir", str(workdir), "--once", "--json"],
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        check=False,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, f"{done.stderr[-3000:]}\n{done.stdout[-2000:]}"
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary, seconds


def check_steps(summary: dict[str, Any], seconds: float) -> None:
    """Every step succeeded; the times go to test-artifacts/demo/timing.json (measured, not
    asserted)."""
    assert summary["ok"] and not summary["error"]
    steps = ["hospitals", "hub", "enrollment", "feeding", "catalogue", "query"]
    assert list(summary["steps"]) == [*steps, "release", "curation", "export"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    timing = {"seconds": round(seconds, 1), "steps": summary["steps"]}
    (ARTIFACTS / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")


def check_ingest_and_catalogue(summary: dict[str, Any]) -> None:
    nodes = summary["nodes"]
    assert sorted(nodes) == ["hospital-1", "hospital-2"]
    for node in nodes.values():
        assert node["instances_ingested"] == node["instances_sent"] > 0
        assert node["instances_rejected"] == 0
        assert node["clinical_patients"] == node["patients"] >= 30
        assert node["clinical_facts"] > node["clinical_patients"]
        assert node["catalogue_cells"] > 0
    assert "C-STORE" in nodes["hospital-1"]["feed"]
    if orthanc_program() is not None:
        assert "Orthanc" in nodes["hospital-2"]["feed"]


def check_query(summary: dict[str, Any]) -> None:
    """Real numbers, under each node's disclosure control."""
    query = summary["query"]
    assert query["complete"] and query["answered"] == 2
    per_node = [node["query_patients"] for node in summary["nodes"].values()]
    assert all(count is not None and count >= MIN_CELL and count % 5 == 0 for count in per_node)
    assert query["patients"] == {"value": sum(per_node), "at_least": False, "withheld_by": 0}
    published = [cell for cell in query["breakdowns"]["sex"].values() if not cell["at_least"]]
    assert published and all(cell["value"] >= MIN_CELL for cell in published)
    groups = {group["group"]: group for group in query["statistic"]["groups"]}
    assert groups["yes"]["mean"] < groups["no"]["mean"]  # MMSE with and without Alzheimer's
    assert query["statistic"]["welch"]["p"] < 0.05


def check_release_curation_and_export(summary: dict[str, Any], workdir: Path) -> None:
    nodes = summary["nodes"].values()
    for node in nodes:
        assert node["studies_released"] > 0 and node["clinical_released"] > 0
        assert node["files_held"] == 0
        assert node["studies_accepted"] + node["studies_rejected"] == node["studies_released"]
        assert node["studies_exported"] == node["studies_accepted"] > 0
        assert node["clinical_exported"] == node["clinical_accepted"] == node["clinical_released"]
    rejected = [node for node in nodes if node["studies_rejected"]]
    assert len(rejected) == 1 and rejected[0]["rejection_delivered"]
    exported = sorted(path.name for path in (workdir / "export").iterdir())
    assert {"README.md", "manifest.json"} <= set(exported)
    zips = [name for name in exported if name.endswith(".zip")]
    assert len(zips) == sum(n["studies_exported"] + n["clinical_exported"] for n in nodes)


def check_nothing_left_running(workdir: Path) -> None:
    left = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(workdir) not in left.stdout


def hospital_identifiers(workdir: Path) -> set[str]:
    """Patient IDs, name parts and accession numbers of both synthetic hospitals' images."""
    found: set[str] = set()
    for folder in sorted(workdir.glob("hospital-*/archive/p*")):
        first = min(folder.rglob("*.dcm"))
        ds = pydicom.dcmread(first, stop_before_pixels=True)
        found |= {str(ds.PatientID), str(ds.AccessionNumber), *str(ds.PatientName).split("^")}
    return found


def check_no_identifier_on_the_hub_side(workdir: Path) -> None:
    """Neither the summary, the hub's log nor the export names a synthetic patient."""
    identifiers = hospital_identifiers(workdir)
    assert len(identifiers) > 100
    texts = {
        path: path.read_text(errors="replace")
        for path in (
            workdir / "summary.json",
            workdir / "hub" / "hub.log",
            workdir / "export" / "manifest.json",
            workdir / "export" / "README.md",
        )
    }
    for path, text in texts.items():
        leaked = sorted(identifier for identifier in identifiers if identifier in text)
        assert not leaked, f"{path}: {len(leaked)} identifiers"
