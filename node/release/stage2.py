"""Stage 2 for a project: the selected stage-1 instances de-identified with the project's
profile (project subject keys, per-patient date shift, project UIDs; the leak check runs
inside the engine on every output), grouped into studies with a manifest each.

The mappings are keyed by the site secret and the project's name, so releasing the same
instances to the same project writes byte-identical files at the same paths, and another
project gets other keys and UIDs. A file the engine refuses is held, with its reason.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from common.crypto import Pseudonymizer
from common.deid import runner
from common.deid.engine import Engine
from common.deid.profile import load_profile, read_lookup_table
from common.schemas.release import ManifestFile, Selection, StudyManifest
from node.settings import NodeSettings
from node.store.models import Instance, Patient, Series, Study

logger = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class HeldOutcome:
    sop_uid: str  # the stage-1 UID
    code: str
    reason: str


@dataclass
class Stage2Result:
    root: Path  # the project's release folder; manifest paths are relative to it
    manifests: list[StudyManifest] = field(default_factory=list)
    held: list[HeldOutcome] = field(default_factory=list)


def release_root(settings: NodeSettings, project: str) -> Path:
    name = project if _SAFE_NAME.match(project) else hashlib.sha256(project.encode()).hexdigest()
    return settings.data_dir / "release" / name


def build_engine(settings: NodeSettings, profile_name: str, project: str) -> Engine:
    profile = load_profile(profile_name)
    mapper = Pseudonymizer(
        secret=settings.secret(),
        project=project,
        subject_key_prefix=profile.subject_key_prefix,
        min_offset_days=profile.min_offset_days,
        max_offset_days=profile.max_offset_days,
    )
    lookup = read_lookup_table(profile.subject_key_lookup) if profile.subject_key_lookup else None
    return Engine(profile, mapper, lookup)


def selected_instances(*, session: Session, selection: Selection) -> list[Instance]:
    conditions = []
    if selection.study_uids:
        conditions.append(Study.study_uid.in_(selection.study_uids))
    if selection.subject_keys:
        conditions.append(Patient.subject_key.in_(selection.subject_keys))
    if not conditions:
        return []
    query = (
        select(Instance)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .join(Patient, Study.patient_id == Patient.id)
        .where(or_(*conditions))
        .order_by(Instance.sop_uid)
    )
    return list(session.execute(query).scalars())


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
    engine = build_engine(settings, profile, project)
    result = Stage2Result(root=release_root(settings, project))
    studies: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for instance in selected_instances(session=session, selection=selection):
        outcome = runner.process_file(
            engine, settings.data_dir / instance.path, instance.sop_uid, result.root
        )
        if outcome.status != "written" or outcome.report is None:
            result.held.append(HeldOutcome(instance.sop_uid, outcome.code, outcome.reason))
            continue
        studies.setdefault(outcome.report["study_instance_uid"], []).append(
            (outcome.output, outcome.report)
        )
    for study_uid, files in sorted(studies.items()):
        result.manifests.append(
            _manifest(result.root, request_id, project, profile, study_uid, files, chunk_bytes)
        )
    logger.info(
        "stage 2 for data request %d: %d studies, %d files held",
        request_id,
        len(result.manifests),
        len(result.held),
    )
    return result


def _manifest(
    root: Path,
    request_id: int,
    project: str,
    profile: str,
    study_uid: str,
    files: list[tuple[str, dict[str, Any]]],
    chunk_bytes: int,
) -> StudyManifest:
    entries = []
    actions: dict[str, set[str]] = {}
    pixels: Counter[str] = Counter()
    for path, report in sorted(files):
        entries.append(describe_file(root, path, report["sop_instance_uid"], chunk_bytes))
        for action, attributes in report["actions"].items():
            actions.setdefault(action, set()).update(attributes)
        pixels[report["pixels"]] += 1
    return StudyManifest(
        request_id=request_id,
        project=project,
        profile=profile,
        subject_key=files[0][1]["subject_key"],
        study_uid=study_uid,
        files=entries,
        report={
            "profile": profile,
            "files": len(entries),
            "leak_check": "passed",
            "pixels": dict(sorted(pixels.items())),
            "actions": {action: sorted(paths) for action, paths in sorted(actions.items())},
        },
    )


def describe_file(root: Path, path: str, sop_uid: str, chunk_bytes: int) -> ManifestFile:
    whole = hashlib.sha256()
    chunks = []
    size = 0
    with (root / path).open("rb") as handle:
        while block := handle.read(chunk_bytes):
            whole.update(block)
            chunks.append(hashlib.sha256(block).hexdigest())
            size += len(block)
    return ManifestFile(
        path=path, size=size, sha256=whole.hexdigest(), sop_instance_uid=sop_uid, chunks=chunks
    )
