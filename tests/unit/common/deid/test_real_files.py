"""Real files from pydicom, pydicom-data, deid-data and highdicom through the engine.

Every file is either written (readable, marked de-identified, without the input's own
patient name and ID anywhere in its bytes) or rejected with a reason; none fails.
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pydicom
import pytest

from common.deid import runner
from common.deid.files import read_instance
from tests.conftest import SHARED


def package_folder(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def corpora() -> list[tuple[str, Path]]:
    found = [("pydicom", Path(pydicom.__file__).parent / "data" / "test_files")]
    for name, module, sub in (
        ("pydicom-data", "data_store", "data"),
        ("deid-data", "deid_data", "data"),
    ):
        folder = package_folder(module)
        if folder is not None:
            found.append((name, folder / sub))
    highdicom = SHARED / "data" / "dicom" / "highdicom-test-files"
    if highdicom.is_dir():
        found.append(("highdicom", highdicom))
    return found


def own_identifiers(path: Path) -> list[bytes]:
    try:
        ds = read_instance(path)
    except Exception:
        return []
    values = [str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))]
    return [v.encode() for v in values if len(v) >= 6]


@pytest.mark.parametrize(("name", "folder"), corpora(), ids=[c[0] for c in corpora()])
def test_real_files_are_written_clean_or_rejected_with_a_reason(
    name: str, folder: Path, secret_file: Path, tmp_path: Path
) -> None:
    outcomes: list[runner.FileOutcome] = []
    config = runner.RunConfig(profile="anonymize", project="p", secret_file=secret_file)
    summary = runner.run(config, folder, tmp_path / "out", on_outcome=outcomes.append)
    assert summary.failed == 0, [o.reason for o in outcomes if o.status == "failed"]
    assert summary.written > 0
    for outcome in outcomes:
        if outcome.status == "rejected":
            assert outcome.reason
            continue
        data = (tmp_path / "out" / outcome.output).read_bytes()
        assert pydicom.dcmread(tmp_path / "out" / outcome.output).PatientIdentityRemoved == "YES"
        for identifier in own_identifiers(folder / outcome.source):
            assert identifier not in data, f"{name}: {outcome.source}"


def test_every_deid_data_ultrasound_is_rejected_for_burned_in_text(
    secret_file: Path, tmp_path: Path
) -> None:
    """Real ultrasound exports with names burned into the pixels, two without the flag."""
    folder = package_folder("deid_data")
    if folder is None:
        pytest.skip("deid-data is not installed")
    ultrasounds = tmp_path / "us"
    ultrasounds.mkdir()
    for path in (folder / "data" / "ultrasounds").iterdir():
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                archive.extractall(ultrasounds / path.stem)
        elif path.suffix == ".dcm":
            (ultrasounds / path.name).write_bytes(path.read_bytes())
    outcomes: list[runner.FileOutcome] = []
    config = runner.RunConfig(profile="anonymize", project="p", secret_file=secret_file)
    runner.run(config, ultrasounds, tmp_path / "out", on_outcome=outcomes.append)
    dicom = [o for o in outcomes if o.code != "not-dicom"]
    assert len(dicom) == 5
    assert all(o.code == "burned-in-risk" for o in dicom)
    assert sum("BurnedInAnnotation" not in o.reason for o in dicom) >= 2  # caught by modality
    assert not list((tmp_path / "out").rglob("*.dcm"))
