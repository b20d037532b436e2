"""`havenet deid` over folders: outputs, reasons, exit status, no partial files."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from typer.testing import CliRunner

from compose.cli import app
from tests.conftest import PATIENT_ID, ct_dataset

runner = CliRunner()


def make_input(folder: Path) -> None:
    (folder / "a").mkdir(parents=True)
    for index in range(3):
        ds = ct_dataset(sop_uid=f"1.2.826.0.1.3680043.10.1.1.1.{index + 1}")
        ds.save_as(folder / "a" / f"{index}.dcm", enforce_file_format=True)
    (folder / "notes.txt").write_text("not an image")
    whole = (folder / "a" / "0.dcm").read_bytes()
    (folder / "a" / "broken.dcm").write_bytes(whole[: len(whole) - 100])


def deid(source: Path, output: Path, secret: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(
        app,
        [
            "deid",
            str(source),
            str(output),
            "--profile",
            "anonymize",
            "--project",
            "p",
            "--secret-file",
            str(secret),
            "--quiet",
            *extra,
        ],
    )
    return result.exit_code, result.output


def test_a_folder_is_de_identified_and_bad_files_are_listed(tmp_path, secret_file) -> None:
    make_input(tmp_path / "in")
    code, output = deid(tmp_path / "in", tmp_path / "out", secret_file)
    assert code == 1  # something was rejected
    assert "5 files: 3 written, 2 rejected, 0 failed" in output
    assert "notes.txt: not a DICOM file" in output
    assert "broken.dcm: truncated" in output
    written = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(written) == 3
    assert all(pydicom.dcmread(p).PatientIdentityRemoved == "YES" for p in written)
    assert not list((tmp_path / "out").rglob(".partial-*"))


def test_the_report_and_summary_are_phi_free(tmp_path, secret_file) -> None:
    make_input(tmp_path / "in")
    deid(tmp_path / "in", tmp_path / "out", secret_file)
    report = (tmp_path / "out" / "deid-report.jsonl").read_text()
    summary = json.loads((tmp_path / "out" / "deid-summary.json").read_text())
    assert len(report.splitlines()) == 3
    assert summary["written"] == 3
    for text in (report, json.dumps(summary)):
        assert PATIENT_ID not in text
        assert "PHILLIPS" not in text
        assert "notes.txt" not in text


def test_two_workers_write_the_same_bytes_as_one(tmp_path, secret_file) -> None:
    make_input(tmp_path / "in")
    deid(tmp_path / "in", tmp_path / "one", secret_file, "--workers", "1")
    deid(tmp_path / "in", tmp_path / "two", secret_file, "--workers", "2")
    one = {
        p.relative_to(tmp_path / "one"): p.read_bytes()
        for p in (tmp_path / "one").rglob("*")
        if p.is_file()
    }
    two = {
        p.relative_to(tmp_path / "two"): p.read_bytes()
        for p in (tmp_path / "two").rglob("*")
        if p.is_file() and p.name != "deid-summary.json"
    }
    one.pop(Path("deid-summary.json"))
    assert one == two


def test_a_clean_run_exits_zero(tmp_path, secret_file) -> None:
    (tmp_path / "in").mkdir()
    ct_dataset().save_as(tmp_path / "in" / "x.dcm", enforce_file_format=True)
    code, output = deid(tmp_path / "in", tmp_path / "out", secret_file)
    assert code == 0, output


def test_a_bad_profile_stops_before_any_work_with_file_and_line(tmp_path, secret_file) -> None:
    (tmp_path / "in").mkdir()
    profile = tmp_path / "p.yaml"
    profile.write_text("name: p\noptions: [retain_everything]\n")
    result = runner.invoke(
        app,
        [
            "deid",
            str(tmp_path / "in"),
            str(tmp_path / "out"),
            "--profile",
            str(profile),
            "--project",
            "p",
            "--secret-file",
            str(secret_file),
            "--quiet",
        ],
    )
    assert result.exit_code == 2
    assert "p.yaml:2: unknown option 'retain_everything'" in result.output


def test_a_missing_lookup_entry_rejects_the_file(tmp_path, secret_file) -> None:
    (tmp_path / "in").mkdir()
    ct_dataset().save_as(tmp_path / "in" / "x.dcm", enforce_file_format=True)
    table = tmp_path / "keys.csv"
    table.write_text("MRN-OTHER,TRIAL-1\n")
    code, output = deid(tmp_path / "in", tmp_path / "out", secret_file, "--lookup", str(table))
    assert code == 1
    assert "not in the project's lookup table" in output
    assert not list((tmp_path / "out").rglob("*.dcm"))


def test_an_output_folder_inside_the_input_is_not_read_back(tmp_path, secret_file) -> None:
    make_input(tmp_path / "in")
    deid(tmp_path / "in", tmp_path / "in" / "out", secret_file)
    code, output = deid(tmp_path / "in", tmp_path / "in" / "out", secret_file)
    assert "5 files: 3 written, 2 rejected" in output  # the 3 outputs are not inputs
    assert code == 1


def test_an_input_inside_the_output_is_refused(tmp_path, secret_file) -> None:
    make_input(tmp_path / "out" / "in")
    code, output = deid(tmp_path / "out" / "in", tmp_path / "out", secret_file)
    assert code == 2
    assert "the input lies inside the output folder" in output
