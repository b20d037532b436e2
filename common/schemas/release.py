"""The hub-node contract of data release (issue 7): the request task a node receives, the
state it reports back, the signed manifest of one study's files and the chunk exchange.

Chunks are content-addressed (SHA-256 of their bytes), so the hub answers which it already
holds and a node never sends a byte twice. A manifest is signed with the node's enrolled
key over its canonical JSON (:func:`canonical_manifest`), so the hub can check it at rest,
not only on the wire. Nothing here carries a hospital identifier: project subject keys,
project UIDs, sizes, hashes and PHI-free reasons only.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.schemas.cohort import Cohort

RELEASE_REQUEST = "release.request"
RELEASE_REJECTED = "release.rejected"
CHUNK_BYTES = 4 * 1024 * 1024
SHA256_PATTERN = r"^[0-9a-f]{64}$"
MAX_CHUNKS_PER_QUERY = 10_000
# Chunks travel several to a request (a batch: their bytes back to back, each named with its
# size in the query), so that a study of small files is not a request per file.
MAX_BATCH_BYTES = 4 * CHUNK_BYTES
MAX_BATCH_CHUNKS = 16
BATCH_PART_PATTERN = r"^[0-9a-f]{64}:[0-9]{1,8}$"  # "SHA-256:size"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReleaseState(str, Enum):
    """Where a data request stands at one node."""

    # Sent to the node; hospital IT has not decided yet.
    REQUESTED = "requested"
    # Hospital IT approved; stage 2 runs next.
    APPROVED = "approved"
    # Hospital IT declined; the reason says why.
    DECLINED = "declined"
    # Stage 2 runs and its studies are uploaded as they are done.
    RELEASING = "releasing"
    # Every study that passed the leak check is at the hub.
    RELEASED = "released"
    # Stage 2 or the upload failed; the reason names the step.
    FAILED = "failed"


class Selection(_Message):
    """What to release: a cohort (the federated query's definition, which each node resolves
    with its own query engine) and/or stage-1 study UIDs and subject keys of the node (for
    hospital IT and tests). The release is the union of what they name."""

    cohort: Cohort | None = None
    study_uids: list[str] = Field(default=[], max_length=100_000)
    subject_keys: list[str] = Field(default=[], max_length=100_000)

    @model_validator(mode="after")
    def _names_something(self) -> Selection:
        if self.cohort is None and not self.study_uids and not self.subject_keys:
            raise ValueError("selection: give a cohort, study_uids or subject_keys")
        return self


class ReleaseRequestPayload(_Message):
    """The payload of a ``release.request`` task."""

    request_id: int
    profile: str = Field(default="anonymize", pattern=r"^[a-z][a-z0-9_-]*$", max_length=64)
    selection: Selection


class ReleaseReceived(_Message):
    """A node's answer to ``release.request``: queued for hospital IT's decision."""

    state: ReleaseState


class ReleaseRejectedPayload(_Message):
    """The payload of a ``release.rejected`` task: a curator rejected one study."""

    request_id: int
    study_uid: str = Field(max_length=64)
    reason: str = Field(max_length=500)


class RejectionReceived(_Message):
    recorded: bool


class StateReport(_Message):
    """A node's report on one request: its decision, then its progress."""

    state: ReleaseState
    reason: str = Field(default="", max_length=500)
    studies: int = Field(default=0, ge=0)
    held: int = Field(default=0, ge=0)


class ManifestFile(_Message):
    path: str = Field(max_length=512)  # subject/study/series/instance.dcm — project keys only
    size: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_PATTERN)
    sop_instance_uid: str = Field(max_length=64)
    chunks: list[str]


class RecordFormat(str, Enum):
    """How a released clinical file is written."""

    # A FHIR R4 ``collection`` Bundle (``<subject>/clinical/bundle.json``).
    FHIR_BUNDLE = "fhir-r4-bundle"
    # One OMOP CDM 5.4 table with every column (``<subject>/clinical/<table>.csv``).
    OMOP_CSV = "omop-cdm-5.4-csv"


class RecordFile(_Message):
    path: str = Field(max_length=512)  # subject/clinical/bundle.json, subject/clinical/person.csv
    format: RecordFormat
    size: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_PATTERN)
    chunks: list[str]


class StudyManifest(_Message):
    """One study as released — its files, their chunks and the de-identification report — or
    one subject's clinical records (``records``, no ``files``), under a project UID of their
    own, so that records go through the same chunks, signature and curation as images."""

    request_id: int
    project: str
    profile: str
    subject_key: str = Field(max_length=64)
    study_uid: str = Field(max_length=64)
    files: list[ManifestFile]
    records: list[RecordFile] = []
    report: dict[str, Any] = {}

    def chunk_hashes(self) -> list[str]:
        """Every chunk of its files and records, each once, in order."""
        chunks = [sha for entry in self.files for sha in entry.chunks]
        chunks += [sha for entry in self.records for sha in entry.chunks]
        return list(dict.fromkeys(chunks))


class SignedManifest(_Message):
    manifest: StudyManifest
    signature: str = Field(max_length=200)  # base64 Ed25519 over canonical_manifest()


class ChunkQuery(_Message):
    hashes: list[str] = Field(max_length=MAX_CHUNKS_PER_QUERY)


class ChunksHeld(_Message):
    held: list[str]


class ManifestReceipt(_Message):
    study: int
    state: str


def canonical_manifest(manifest: StudyManifest) -> bytes:
    """The bytes a manifest's signature covers: sorted keys, no spaces."""
    return json.dumps(
        manifest.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
    ).encode()
