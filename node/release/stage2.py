"""Stage 2 for a project: the selected stage-1 instances de-identified with the project's
profile (project subject keys, per-patient date shift, project UIDs; the leak check runs
inside the engine on every output), grouped into studies with a manifest each, and the
selected patients' clinical records exported with the same keys and date shift, one
records manifest per patient.

The mappings are keyed by the site secret and the project's name, so releasing the same
instances to the same project writes byte-identical files at the same paths, and another
project gets other keys and UIDs. A file the engine refuses is held, with its reason, and
so are a patient's records when their export fails or still holds the stage-1 key.

Instances are de-identified in a pool of ``release_workers`` processes (the engine is CPU
bound); each worker hashes what it wrote while the bytes are in memory — the file's SHA-256
and its chunks' — so nothing is read back to describe it.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from common.crypto import Pseudonymizer
from common.deid.engine import Engine
from common.deid.exceptions import InstanceRejected, SourceUnavailable
from common.deid.files import read_instance, write_atomic
from common.deid.profile import OMOP_COLUMNS, Profile, load_profile, read_lookup_table
from common.errors import HavenetError
from common.schemas.release import (
    ManifestFile,
    RecordFile,
    RecordFormat,
    Selection,
    StudyManifest,
)
from node.clinical import export
from node.clinical.rules import ClinicalPseudonymizer
from node.release import selection as selections
from node.settings import NodeSettings

logger = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RECORDS_FOLDER = "clinical"
_RECORDS_UID_PURPOSE = "havenet.records"  # the project UID naming a patient's records
_POOL_MIN_FILES = 8  # below this a pool costs more than it saves


@dataclass
class HeldOutcome:
    sop_uid: str  # the stage-1 UID (for clinical records: the stage-1 subject key)
    code: str
    reason: str


@dataclass
class Stage2Result:
    root: Path  # the project's release folder; manifest paths are relative to it
    manifests: list[StudyManifest] = field(default_factory=list)
    held: list[HeldOutcome] = field(default_factory=list)

    def add(self, outcome: StudyManifest | HeldOutcome) -> None:
        if isinstance(outcome, HeldOutcome):
            self.held.append(outcome)
        else:
            self.manifests.append(outcome)


@dataclass(frozen=True)
class Job:
    """A release to one project: what every worker needs to de-identify for it."""

    settings: NodeSettings
    profile: str
    project: str
    root: Path  # the project's release folder
    chunk_bytes: int

    @classmethod
    def for_project(
        cls, settings: NodeSettings, project: str, profile: str, chunk_bytes: int
    ) -> Job:
        return cls(settings, profile, project, release_root(settings, project), chunk_bytes)


@dataclass(frozen=True)
class Plan:
    """What a selection selects: stage-1 files study by study, and patients with records."""

    sources: list[selections.Source]
    record_subjects: list[str]


@dataclass(frozen=True)
class _Written:
    """One instance's outcome: a described file with its report, or why it is held."""

    sop_uid: str
    entry: ManifestFile | None = None
    report: dict[str, Any] | None = None
    code: str = ""
    reason: str = ""


def release_root(settings: NodeSettings, project: str) -> Path:
    name = project if _SAFE_NAME.match(project) else hashlib.sha256(project.encode()).hexdigest()
    return settings.data_dir / "release" / name


def project_mapper(settings: NodeSettings, profile: Profile, project: str) -> Pseudonymizer:
    return Pseudonymizer(
        secret=settings.secret(),
        project=project,
        subject_key_prefix=profile.subject_key_prefix,
        min_offset_days=profile.min_offset_days,
        max_offset_days=profile.max_offset_days,
    )


def lookup_table(profile: Profile) -> dict[str, str] | None:
    return read_lookup_table(profile.subject_key_lookup) if profile.subject_key_lookup else None


def build_engine(settings: NodeSettings, profile_name: str, project: str) -> Engine:
    profile = load_profile(profile_name)
    return Engine(profile, project_mapper(settings, profile, project), lookup_table(profile))


def plan(*, session: Session, selection: Selection) -> Plan:
    """Resolve the selection (which may label new series: commit before streaming)."""
    resolved = selections.resolve(session=session, selection=selection)
    return Plan(
        selections.sources(session=session, resolved=resolved), sorted(resolved.record_subjects)
    )


Outcome = StudyManifest | HeldOutcome


def images(job: Job, request_id: int, sources: list[selections.Source]) -> Iterator[Outcome]:
    """Each study's manifest as soon as its last file is written (so that its upload can
    start while stage 2 goes on), and each file held, with its reason."""
    paths = [(str(job.settings.data_dir / s.path), s.sop_uid) for s in sources]
    written_files = _deidentify_all(job, paths, job.settings.release_workers)
    study: list[_Written] = []
    current: int | None = None
    for source, written in zip(sources, written_files, strict=True):
        if source.study_id != current:
            yield from _study_manifests(job, request_id, study)
            study, current = [], source.study_id
        if written.entry is None or written.report is None:
            yield HeldOutcome(written.sop_uid, written.code, written.reason)
        else:
            study.append(written)
    yield from _study_manifests(job, request_id, study)


def run(
    *,
    session: Session,
    settings: NodeSettings,
    project: str,
    profile: str,
    request_id: int,
    selection: Selection,
    chunk_bytes: int,
) -> Stage2Result:
    """Stage 2 of a selection in one go: images, then records."""
    job = Job.for_project(settings, project, profile, chunk_bytes)
    planned = plan(session=session, selection=selection)
    result = Stage2Result(root=job.root)
    for outcome in images(job, request_id, planned.sources):
        result.add(outcome)
    for outcome in records(
        session=session, job=job, request_id=request_id, subjects=planned.record_subjects
    ):
        result.add(outcome)
    logger.info(
        "stage 2 for data request %d: %d manifests, %d held",
        request_id,
        len(result.manifests),
        len(result.held),
    )
    return result


# -- images ---------------------------------------------------------------------------------


def _deidentify_all(job: Job, sources: list[tuple[str, str]], workers: int) -> Iterator[_Written]:
    if workers <= 1 or len(sources) < _POOL_MIN_FILES:
        engine = build_engine(job.settings, job.profile, job.project)
        for source, sop_uid in sources:
            yield deidentify(engine, job, source, sop_uid)
        return
    # forkserver, not fork: the node process runs threads (the web server, the DICOM server,
    # the upload workers), and a fork taken while one of them holds a lock can hang the child.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["node.release.stage2"])
    with context.Pool(workers, _init_worker, (job,)) as pool:
        yield from pool.imap(_work, sources, chunksize=4)


_worker: tuple[Engine, Job] | None = None


def _init_worker(job: Job) -> None:
    global _worker  # noqa: PLW0603 - one engine per worker process
    _worker = (build_engine(job.settings, job.profile, job.project), job)


def _work(source: tuple[str, str]) -> _Written:
    assert _worker is not None
    engine, job = _worker
    return deidentify(engine, job, *source)


def deidentify(engine: Engine, job: Job, source: str, sop_uid: str) -> _Written:
    """One stage-1 file through the engine and its leak check, written and described."""
    try:
        result = engine.deidentify(read_instance(Path(source)))
        write_atomic(job.root / result.relative_path, result.data)
    except InstanceRejected as exc:
        return _Written(sop_uid, code=exc.code, reason=exc.reason)
    except SourceUnavailable as exc:
        return _Written(sop_uid, code="unreadable", reason=str(exc))
    except Exception as exc:
        # Only the type: a message from deep inside a library might quote a value.
        logger.warning("stage 2 failed on a file with %s", type(exc).__name__)
        return _Written(sop_uid, code="failed", reason=f"internal error ({type(exc).__name__})")
    report = result.report.as_dict()
    sha256, chunks = digest(result.data, job.chunk_bytes)
    entry = ManifestFile(
        path=result.relative_path,
        size=len(result.data),
        sha256=sha256,
        sop_instance_uid=report["sop_instance_uid"],
        chunks=chunks,
    )
    return _Written(sop_uid, entry, report)


def digest(data: bytes, chunk_bytes: int) -> tuple[str, list[str]]:
    """The SHA-256 of ``data`` and of each of its chunks (one hash for a one-chunk file)."""
    if len(data) <= chunk_bytes:
        whole = hashlib.sha256(data).hexdigest()
        return whole, [whole] if data else []
    view = memoryview(data)
    chunks = [
        hashlib.sha256(view[start : start + chunk_bytes]).hexdigest()
        for start in range(0, len(data), chunk_bytes)
    ]
    return hashlib.sha256(view).hexdigest(), chunks


def _study_manifests(job: Job, request_id: int, files: list[_Written]) -> Iterator[StudyManifest]:
    by_study: dict[str, list[_Written]] = {}
    for written in files:
        assert written.report is not None
        by_study.setdefault(written.report["study_instance_uid"], []).append(written)
    for study_uid, study_files in sorted(by_study.items()):
        yield _study_manifest(job, request_id, study_uid, study_files)


def _study_manifest(
    job: Job, request_id: int, study_uid: str, files: list[_Written]
) -> StudyManifest:
    entries = []
    actions: dict[str, set[str]] = {}
    pixels: Counter[str] = Counter()
    for written in sorted(files, key=lambda w: w.entry.path if w.entry else ""):
        assert written.entry is not None and written.report is not None
        entries.append(written.entry)
        for action, attributes in written.report["actions"].items():
            actions.setdefault(action, set()).update(attributes)
        pixels[written.report["pixels"]] += 1
    assert files[0].report is not None
    return StudyManifest(
        request_id=request_id,
        project=job.project,
        profile=job.profile,
        subject_key=files[0].report["subject_key"],
        study_uid=study_uid,
        files=entries,
        report={
            "profile": job.profile,
            "files": len(entries),
            "leak_check": "passed",
            "pixels": dict(sorted(pixels.items())),
            "actions": {action: sorted(paths) for action, paths in sorted(actions.items())},
        },
    )


# -- clinical records -----------------------------------------------------------------------


class RecordsHeld(HavenetError):
    """A patient's records cannot be released; the message is PHI-free."""


def records(
    *, session: Session, job: Job, request_id: int, subjects: list[str]
) -> Iterator[Outcome]:
    """Each patient's clinical records as a manifest of their own, or held with the reason."""
    if not subjects:
        return
    profile = load_profile(job.profile)
    if profile.clinical is None:  # the project's profile releases images only
        logger.info("profile %s has no clinical section: no records released", job.profile)
        return
    mapper = project_mapper(job.settings, profile, job.project)
    rules = ClinicalPseudonymizer(profile, mapper, lookup_table(profile))
    for stage1_key in subjects:
        try:
            yield _records_manifest(session, job, request_id, rules, mapper, stage1_key)
        except RecordsHeld as exc:
            yield HeldOutcome(stage1_key, "records", str(exc))


def _records_manifest(
    session: Session,
    job: Job,
    request_id: int,
    rules: ClinicalPseudonymizer,
    mapper: Pseudonymizer,
    stage1_key: str,
) -> StudyManifest:
    subject_key = rules.subject_key(stage1_key)
    if subject_key is None:
        raise RecordsHeld("clinical records: the patient is not in the project's lookup table")
    folder = job.root / subject_key / _RECORDS_FOLDER
    shutil.rmtree(folder, ignore_errors=True)  # a table no longer exported must not linger
    try:
        exported = export.export_cohort(
            session=session, subject_keys=[stage1_key], rules=rules, out_dir=folder
        )
    except HavenetError as exc:
        logger.warning("clinical export held: %s", type(exc).__name__)
        raise RecordsHeld(f"clinical records: export failed ({type(exc).__name__})") from None
    records = [_record_file(job, path) for path in _record_paths(folder)]
    _leak_check(job.root, records, stage1_key)
    return StudyManifest(
        request_id=request_id,
        project=job.project,
        profile=job.profile,
        subject_key=subject_key,
        study_uid=mapper.uid(f"{_RECORDS_UID_PURPOSE}\x00{stage1_key}"),
        files=[],
        records=records,
        report={
            "profile": job.profile,
            "records": len(records),
            "leak_check": "passed",
            "fhir_resources": dict(sorted(exported.resources.items())),
            "omop_rows": dict(sorted(exported.rows.items())),
            "date_shift": "per patient" if rules.shifts_dates else "none",
        },
    )


def _record_paths(folder: Path) -> Iterable[Path]:
    bundle = folder / export.BUNDLE_FILE
    if bundle.is_file():
        yield bundle
    for table in sorted(OMOP_COLUMNS):
        if (folder / f"{table}.csv").is_file():
            yield folder / f"{table}.csv"


def _record_file(job: Job, path: Path) -> RecordFile:
    data = path.read_bytes()
    sha256, chunks = digest(data, job.chunk_bytes)
    kind = RecordFormat.FHIR_BUNDLE if path.suffix == ".json" else RecordFormat.OMOP_CSV
    return RecordFile(
        path=str(path.relative_to(job.root)),
        format=kind,
        size=len(data),
        sha256=sha256,
        chunks=chunks,
    )


def _leak_check(root: Path, records: list[RecordFile], stage1_key: str) -> None:
    """The node's leak check of exported records: the stage-1 key (which the correspondence
    table ties to the patient) must have been replaced everywhere."""
    needle = stage1_key.encode()
    for record in records:
        if needle in (root / record.path).read_bytes():
            raise RecordsHeld(f"leak check: {Path(record.path).name} holds the stage-1 key")
