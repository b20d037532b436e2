"""Uploads into quarantine: the hub takes content-addressed chunks (several to a request,
each hashed against its name), then a study's signed manifest, and verifies before anything
is queued for a curator — the node's signature over the manifest, every file's size and
SHA-256 against its chunks, that pydicom parses its header (read from storage up to the
pixels) and that it carries the UIDs and subject key the manifest names, that clinical records are
a valid FHIR Bundle or OMOP table — then runs its own PHI scan (:mod:`hub.curation.scan`,
:mod:`hub.curation.records`, and OCR of burned-in text where the policy asks,
:mod:`hub.curation.ocr`).

Files wait under ``incoming/`` until all have passed, then move into quarantine at once, so a
refused upload leaves nothing behind and never half-replaces a study.

A study sent again with the same files changes nothing (idempotent, also when the same data
is released again under a new request: acknowledged, not queued again); a rejected study may
be sent again with new files.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO

import pydicom
from cryptography.exceptions import InvalidSignature
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from common import signing
from common.deid.profile import load_profile
from common.schemas.release import (
    BATCH_PART_PATTERN,
    CHUNK_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_CHUNKS,
    ManifestFile,
    ReleaseState,
    SignedManifest,
    StudyManifest,
    canonical_manifest,
)
from hub import audit
from hub.curation import ocr as burned_in
from hub.curation import records
from hub.curation.exceptions import ManifestConflict
from hub.curation.models import ReceivedStudy, StudyState
from hub.curation.ocr import OcrPolicy
from hub.curation.scan import scan
from hub.db import utcnow
from hub.nodes.models import Node
from hub.release import service as releases
from hub.release.exceptions import BatchInvalid, ChunkMismatch, ManifestInvalid, StateNotAllowed
from hub.storage.service import Storage, chunk_key

logger = logging.getLogger(__name__)

_UPLOADING = frozenset({ReleaseState.APPROVED, ReleaseState.RELEASING, ReleaseState.RELEASED})
_BATCH_PART = re.compile(BATCH_PART_PATTERN)


def held_chunks(storage: Storage, hashes: list[str]) -> list[str]:
    return [sha for sha in dict.fromkeys(hashes) if storage.exists(chunk_key(sha))]


def put_chunk(storage: Storage, sha256: str, data: bytes | memoryview) -> bool:
    """Store a chunk under its hash; False when it was there already."""
    if len(data) > CHUNK_BYTES or hashlib.sha256(data).hexdigest() != sha256:
        raise ChunkMismatch(sha256)
    key = chunk_key(sha256)
    if storage.exists(key):
        return False
    storage.put(key, data)
    return True


def batch_parts(parts: list[str], body_size: int) -> list[tuple[str, int]]:
    """A batch's ``SHA-256:size`` parts, checked to add up to its body."""
    if not parts or len(parts) > MAX_BATCH_CHUNKS or body_size > MAX_BATCH_BYTES:
        raise BatchInvalid(
            f"a batch holds 1 to {MAX_BATCH_CHUNKS} chunks and at most {MAX_BATCH_BYTES} bytes"
        )
    parsed = []
    for index, part in enumerate(parts):
        if not _BATCH_PART.match(part):
            raise BatchInvalid(f"part {index}: not 'SHA-256:size'")
        sha256, size = part.split(":")
        parsed.append((sha256, int(size)))
    if sum(size for _, size in parsed) != body_size:
        raise BatchInvalid("the parts' sizes do not add up to the body's")
    return parsed


def put_chunks(storage: Storage, parts: list[tuple[str, int]], body: bytes) -> int:
    """Store a batch's chunks, each checked against its name first (a batch with a chunk that
    does not match stores nothing); how many were new."""
    view = memoryview(body)
    chunks = []
    for sha256, size in parts:
        chunk, view = view[:size], view[size:]
        if size > CHUNK_BYTES or hashlib.sha256(chunk).hexdigest() != sha256:
            raise ChunkMismatch(sha256)
        chunks.append((sha256, chunk))
    stored = 0
    for sha256, chunk in chunks:
        key = chunk_key(sha256)
        if not storage.exists(key):
            storage.put(key, chunk)
            stored += 1
    return stored


def quarantine_prefix(project: str, study_uid: str) -> str:
    return f"quarantine/{project}/{study_uid}"


def incoming_prefix(project: str, study_uid: str) -> str:
    """Where an upload's files wait until every one of them has passed."""
    return f"incoming/{project}/{study_uid}"


def receive(
    *,
    session: Session,
    storage: Storage,
    node: Node,
    signed: SignedManifest,
    ocr: OcrPolicy = OcrPolicy.OFF,
) -> ReceivedStudy:
    manifest = signed.manifest
    target = releases.require_target(session=session, node=node, request_id=manifest.request_id)
    if ReleaseState(target.state) not in _UPLOADING:
        raise StateNotAllowed(manifest.request_id, target.state, "an upload")
    data_request = target.request
    project = releases.project_of(session=session, data_request=data_request)
    if manifest.project != project.name or manifest.profile != data_request.profile:
        raise ManifestInvalid("manifest: project or profile is not the request's")
    _check_signature(node, signed)
    digest = content_digest(manifest)
    existing = session.execute(
        select(ReceivedStudy).where(
            ReceivedStudy.project_id == project.id, ReceivedStudy.study_uid == manifest.study_uid
        )
    ).scalar_one_or_none()
    if existing is not None and existing.content_sha256 == digest:
        return existing  # the same files again (a retry, or the same data re-released)
    if existing is not None and StudyState(existing.state) == StudyState.ACCEPTED:
        raise ManifestConflict(manifest.study_uid)
    incoming = incoming_prefix(project.name, manifest.study_uid)
    _clear(storage, incoming)
    try:
        verified = _verify(storage, incoming, manifest, ocr)
    except BaseException:
        _clear(storage, incoming)
        raise
    prefix = quarantine_prefix(project.name, manifest.study_uid)
    _clear(storage, prefix)
    for key in storage.list(incoming):
        storage.move(key, f"{prefix}/{key[len(incoming) + 1 :]}")
    study = existing or ReceivedStudy(project_id=project.id, study_uid=manifest.study_uid)
    study.request_id = data_request.id
    study.node_pk = node.id
    study.subject_key = manifest.subject_key
    study.manifest = manifest.model_dump(mode="json")
    study.content_sha256 = digest
    study.signature = signed.signature
    study.summary = verified.summary()
    study.findings = verified.findings
    study.state = StudyState.AWAITING_REVIEW
    study.reason = ""
    study.reviewed_by = ""
    study.reviewed_at = None
    study.received_at = utcnow()
    session.add(study)
    session.flush()
    audit.record(
        session=session,
        actor=f"node:{node.name}",
        action="curation.quarantine",
        subject=f"study {study.id}",
        project=project.name,
        request=data_request.id,
        files=len(manifest.files),
        records=len(manifest.records),
        bytes=sum(f.size for f in manifest.files) + sum(r.size for r in manifest.records),
        findings=len(verified.findings),
    )
    return study


@dataclass
class _Verified:
    """What verification learnt of an upload: headers, record counts and the findings."""

    datasets: list[Dataset] = field(default_factory=list)
    records: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        summary = _summary(self.datasets)
        if self.records:
            summary["records"] = dict(sorted(self.records.items()))
        return summary


def _verify(storage: Storage, incoming: str, manifest: StudyManifest, ocr: OcrPolicy) -> _Verified:
    """Each file checked against the manifest, validated, scanned and composed of its chunks
    under ``incoming`` — one file in memory at a time, and of a one-chunk file only its
    header (its bytes were hashed against the chunk's name on arrival)."""
    latest = _latest_shifted_date(manifest.profile)
    verified = _Verified()
    for entry in manifest.files:
        key = f"{incoming}/{entry.path}"
        _check_content(storage, entry.path, entry.chunks, entry.size, entry.sha256)
        storage.compose(key, [chunk_key(sha) for sha in entry.chunks])
        with storage.open(key) as stream:
            ds = _parse(entry, stream, manifest)
        verified.datasets.append(ds)
        verified.findings += scan(
            ds, path=entry.path, subject_key=manifest.subject_key, latest_date=latest
        )
        if burned_in.wanted(ds, ocr):
            verified.findings += burned_in.findings(storage.get(key), path=entry.path, policy=ocr)
    for record in manifest.records:
        _check_content(storage, record.path, record.chunks, record.size, record.sha256)
        data = b"".join(storage.get(chunk_key(sha)) for sha in record.chunks)
        counts, found = records.check(
            record, data, subject_key=manifest.subject_key, latest_date=latest
        )
        verified.records.update(counts)
        verified.findings += found
        storage.compose(f"{incoming}/{record.path}", [chunk_key(sha) for sha in record.chunks])
    return verified


def _clear(storage: Storage, prefix: str) -> None:
    for key in storage.list(prefix):
        storage.delete(key)


def content_digest(manifest: StudyManifest) -> str:
    """What makes two uploads of a study the same: its files' (and records') paths, sizes and
    hashes."""
    files = sorted((f.path, f.size, f.sha256) for f in manifest.files)
    files += sorted((r.path, r.size, r.sha256) for r in manifest.records)
    return hashlib.sha256(repr(files).encode()).hexdigest()


def _check_signature(node: Node, signed: SignedManifest) -> None:
    try:
        key = signing.parse_public_key(node.public_key)
        signature = base64.b64decode(signed.signature.encode("ascii"), validate=True)
        key.verify(signature, canonical_manifest(signed.manifest))
    except (signing.SigningError, ValueError, binascii.Error, InvalidSignature):
        raise ManifestInvalid("signature: not the node's signature over this manifest") from None


def _check_content(storage: Storage, path: str, chunks: list[str], size: int, sha256: str) -> None:
    """The file's chunks are all uploaded and make up the size and SHA-256 the manifest names.

    A one-chunk file is its chunk, whose bytes were hashed against its name on arrival: only
    its size is looked at. Longer files are hashed again, chunk by chunk."""
    keys = [chunk_key(sha) for sha in chunks]
    missing = [key for key in keys if not storage.exists(key)]
    if missing:
        raise ManifestInvalid(f"{path}: {len(missing)} chunk(s) not uploaded")
    if chunks == [sha256]:
        matches = storage.size(keys[0]) == size
    else:
        digest = hashlib.sha256()
        total = 0
        for key in keys:
            data = storage.get(key)
            digest.update(data)
            total += len(data)
        matches = total == size and digest.hexdigest() == sha256
    if not matches:
        raise ManifestInvalid(f"{path}: size or SHA-256 differs from the manifest")


def _parse(entry: ManifestFile, stream: BinaryIO, manifest: StudyManifest) -> Dataset:
    """The file's header (pydicom reads up to its pixels, not beyond)."""
    try:
        ds = pydicom.dcmread(stream, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError):
        raise ManifestInvalid(f"{entry.path}: not a readable DICOM file") from None
    for keyword, expected in (
        ("SOPInstanceUID", entry.sop_instance_uid),
        ("StudyInstanceUID", manifest.study_uid),
    ):
        if str(ds.get(keyword, "")) != expected:
            raise ManifestInvalid(f"{entry.path}: {keyword} is not the manifest's")
    return ds


def _latest_shifted_date(profile_name: str) -> dt.date:
    """A shifted date lies at least ``max_days`` in the past (the profile's shift window)."""
    return dt.datetime.now(dt.UTC).date() + dt.timedelta(days=_max_offset_days(profile_name))


@functools.lru_cache(maxsize=64)
def _max_offset_days(profile_name: str) -> int:
    """The profile's shift window, parsed once per name (profiles ship with the code)."""
    try:
        return load_profile(profile_name).max_offset_days
    except Exception:  # a node-local profile file: only the future is out of range
        return 0


def _summary(datasets: list[Dataset]) -> dict[str, object]:
    """The header summary a curator previews: counts and coded attributes, no free text."""
    first = datasets[0] if datasets else Dataset()
    return {
        "instances": len(datasets),
        "series": len({str(ds.get("SeriesInstanceUID", "")) for ds in datasets}),
        "modalities": sorted({str(ds.get("Modality", "")) for ds in datasets} - {""}),
        "sop_classes": sorted({str(ds.get("SOPClassUID", "")) for ds in datasets} - {""}),
        "study_date": str(first.get("StudyDate", "")),
        "body_part": str(first.get("BodyPartExamined", "")),
        "rows": int(first.get("Rows", 0) or 0),
        "columns": int(first.get("Columns", 0) or 0),
        "patient_sex": str(first.get("PatientSex", "")),
        "patient_age": str(first.get("PatientAge", "")),
    }
