"""The upload worker: sends the release outbox to the hub, oldest first, over the signed
channel — decisions and progress, and studies as content-addressed chunks plus a signed
manifest.

For a study it first asks the hub which chunks it holds and sends only the others, so an
upload cut short (the node killed, the hub gone) resumes without re-sending a byte the hub
has. While the hub cannot be reached the worker backs off (doubling, with jitter, up to
``hub_retry_max_seconds``) and the outbox waits in the database, across restarts.

Chunks go several to a request (up to 16 MiB: a request costs the hub's signed channel more
than megabytes of body do), on ``release_upload_workers`` threads, and two studies are in
flight at once, so the wire stays busy while the hub verifies a manifest. A request is
reported released by the worker itself once every study of it is sent
(:func:`node.release.service.complete`); a study the hub refuses fails its request, which
hospital IT may retry.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from common.schemas.channel import API_PREFIX
from common.schemas.release import (
    MAX_BATCH_BYTES,
    MAX_BATCH_CHUNKS,
    MAX_CHUNKS_PER_QUERY,
    ChunksHeld,
    SignedManifest,
    StudyManifest,
    canonical_manifest,
)
from node.federation import enrollment as enrollments
from node.federation import keys
from node.federation.client import checked, client, unreachable
from node.federation.exceptions import HubRefused, HubUnreachable
from node.release import service as releases
from node.release.models import OutboxItem, OutboxState
from node.settings import NodeSettings
from node.store.db import transaction
from node.store.models import utcnow

logger = logging.getLogger(__name__)

_STUDIES_IN_FLIGHT = 2  # one study's chunks on the wire while the hub verifies another
_CHUNK_MISMATCH = 422  # the hub's answer to bytes that do not hash to the chunk's name


class FileChanged(HubRefused):
    """A released file no longer matches its manifest; the study must be released again."""

    def __init__(self, path: str) -> None:
        super().__init__(0, f"{path}: the file changed since stage 2")


class Uploader:
    def __init__(
        self,
        settings: NodeSettings,
        sessions: sessionmaker[Session],
        make_client: Callable[[], httpx.Client],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.make_client = make_client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._delay = settings.hub_retry_min_seconds

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="havenet-release-upload")
        self._thread.start()

    def stop(self) -> None:
        """Stop after the request in flight; what is left waits in the outbox."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        logger.info("release upload stopped")

    def run(self) -> None:
        with self.make_client() as hub:
            while not self._stop.is_set():
                try:
                    sent = self.send_due(hub)
                except HubUnreachable as exc:
                    logger.warning("release upload: %s; trying again in %.1f s", exc, self._delay)
                    self._stop.wait(self._delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
                    self._delay = min(self._delay * 2, self.settings.hub_retry_max_seconds)
                    continue
                except Exception as exc:  # the worker must outlive one bad round
                    logger.error("release upload failed: %s", type(exc).__name__)
                    sent = 0
                self._delay = self.settings.hub_retry_min_seconds
                if not sent:
                    self._stop.wait(self.settings.release_poll_seconds)

    def send_due(self, hub: httpx.Client) -> int:
        """Send what is due, oldest first; stop at the first item the hub cannot take now.

        Decisions and progress go one by one, in order; the studies between them go two at a
        time, their chunks through one pool of ``release_upload_workers`` threads, so that
        one study's chunks travel while the hub verifies the other's manifest."""
        with transaction(self.sessions) as session:
            due = [(item.id, item.kind) for item in releases.due(session=session, now=utcnow())]
        studies: list[int] = []
        for item_id, kind in due:
            if self._stop.is_set():
                break
            if kind == "study":
                studies.append(item_id)
                continue
            self._send_studies(hub, studies)
            studies = []
            self.send_one(hub, item_id)
        self._send_studies(hub, studies)
        with transaction(self.sessions) as session:
            releases.complete(session=session)
        return len(due)

    def _send_studies(self, hub: httpx.Client, item_ids: list[int]) -> None:
        if not item_ids:
            return
        workers = self.settings.release_upload_workers
        # Manifests go in the outbox's order (a study's after the one before it is answered):
        # the hub receives studies in the order stage 2 finished them.
        answered = [threading.Event() for _ in item_ids]
        with (
            ThreadPoolExecutor(workers, thread_name_prefix="havenet-release-chunk") as chunks,
            ThreadPoolExecutor(_STUDIES_IN_FLIGHT, thread_name_prefix="havenet-release") as pool,
        ):
            _all_or_first_error(
                [
                    pool.submit(
                        self.send_one,
                        hub,
                        item_id,
                        _Turn(chunks, answered[index - 1] if index else None, answered[index]),
                    )
                    for index, item_id in enumerate(item_ids)
                ]
            )

    def send_one(self, hub: httpx.Client, item_id: int, turn: _Turn | None = None) -> None:
        try:
            self._send_one(hub, item_id, turn)
        finally:
            if turn is not None:
                turn.answered.set()

    def _send_one(self, hub: httpx.Client, item_id: int, turn: _Turn | None) -> None:
        with transaction(self.sessions) as session:
            item = session.get(OutboxItem, item_id)
            assert item is not None
            item.attempts += 1
            request = releases.require_by_pk(session=session, pk=item.request_id)
            kind, body, hub_request_id = item.kind, item.body, request.hub_request_id
        try:
            if kind == "state":
                _post(hub, f"{API_PREFIX}/releases/{hub_request_id}/state", body)
            else:
                self._send_study(hub, item_id, body, turn)
        except HubUnreachable:
            raise
        except HubRefused as exc:
            logger.error("release outbox item %d refused: %s", item_id, exc.detail)
            with transaction(self.sessions) as session:
                item = session.get(OutboxItem, item_id)
                assert item is not None
                if kind == "study":
                    releases.study_failed(session=session, item=item, reason=exc.detail)
                else:
                    item.state = OutboxState.FAILED
                    item.last_error = exc.detail[:500]
            return
        with transaction(self.sessions) as session:
            item = session.get(OutboxItem, item_id)
            assert item is not None
            item.state = OutboxState.SENT
            item.last_error = ""

    def _send_study(
        self,
        hub: httpx.Client,
        item_id: int,
        body: dict[str, object],
        turn: _Turn | None,
    ) -> None:
        manifest = StudyManifest.model_validate(body["manifest"])
        root = self.settings.data_dir / str(body["root"])
        missing = _missing(manifest, self._held(hub, manifest), int(str(body["chunk_bytes"])))

        def send(batch: list[_Chunk]) -> None:
            if self._stop.is_set():
                return
            _send_batch(hub, root, batch)
            self._count_chunks(item_id, len(batch))

        if turn is None:
            for batch in _batches(missing):
                send(batch)
        else:
            _all_or_first_error([turn.chunks.submit(send, batch) for batch in _batches(missing)])
            if turn.after is not None:
                turn.after.wait()
        if self._stop.is_set():  # stopped mid-study: the rest waits in the outbox
            raise HubUnreachable("the upload was stopped before the study was complete")
        key = keys.KeyFile(keys.key_path(self.settings.data_dir)).get()
        signature = base64.b64encode(key.sign(canonical_manifest(manifest))).decode("ascii")
        signed = SignedManifest(manifest=manifest, signature=signature)
        _post(hub, f"{API_PREFIX}/releases/manifests", signed.model_dump(mode="json"))

    def _held(self, hub: httpx.Client, manifest: StudyManifest) -> set[str]:
        wanted = manifest.chunk_hashes()
        held: set[str] = set()
        for start in range(0, len(wanted), MAX_CHUNKS_PER_QUERY):
            answer = _post(
                hub,
                f"{API_PREFIX}/chunks/held",
                {"hashes": wanted[start : start + MAX_CHUNKS_PER_QUERY]},
            )
            held.update(ChunksHeld.model_validate(answer).held)
        return held

    def _count_chunks(self, item_id: int, count: int) -> None:
        # One statement, not read-then-write: two upload threads count at once.
        with transaction(self.sessions) as session:
            session.execute(
                update(OutboxItem)
                .where(OutboxItem.id == item_id)
                .values(chunks_sent=OutboxItem.chunks_sent + count)
            )


@dataclass(frozen=True)
class _Chunk:
    """Where a chunk's bytes are: a released file, at an offset."""

    sha256: str
    path: str
    offset: int
    size: int


def _missing(manifest: StudyManifest, held: set[str], chunk_bytes: int) -> list[_Chunk]:
    """The chunks of the study's files and records that the hub does not hold, each once."""
    missing: dict[str, _Chunk] = {}
    files = [(e.path, e.size, e.chunks) for e in manifest.files]
    files += [(e.path, e.size, e.chunks) for e in manifest.records]
    for path, size, hashes in files:
        for index, sha in enumerate(hashes):
            if sha not in held and sha not in missing:
                offset = index * chunk_bytes
                missing[sha] = _Chunk(sha, path, offset, min(chunk_bytes, size - offset))
    return list(missing.values())


def _batches(chunks: list[_Chunk]) -> list[list[_Chunk]]:
    """Chunks in order, grouped into requests the hub takes (a request costs both sides more
    than a few megabytes of body do)."""
    batches: list[list[_Chunk]] = []
    size = 0
    for chunk in chunks:
        full = batches and (
            len(batches[-1]) == MAX_BATCH_CHUNKS or size + chunk.size > MAX_BATCH_BYTES
        )
        if not batches or full:
            batches.append([])
            size = 0
        batches[-1].append(chunk)
        size += chunk.size
    return batches


def _send_batch(hub: httpx.Client, root: Path, batch: list[_Chunk]) -> None:
    """One request of chunks; a file changed since stage 2 fails its study, named."""
    blocks = []
    for chunk in batch:
        with (root / chunk.path).open("rb") as handle:
            handle.seek(chunk.offset)
            blocks.append(handle.read(chunk.size))
        if len(blocks[-1]) != chunk.size:
            raise FileChanged(chunk.path)
    parts = {"part": [f"{chunk.sha256}:{chunk.size}" for chunk in batch]}
    try:  # the hub hashes the bytes against the names: no second hash here
        _post_bytes(hub, f"{API_PREFIX}/chunks", parts, b"".join(blocks))
    except HubRefused as exc:
        if exc.status != _CHUNK_MISMATCH:
            raise
        for chunk, block in zip(batch, blocks, strict=True):
            if hashlib.sha256(block).hexdigest() != chunk.sha256:
                raise FileChanged(chunk.path) from None
        raise


@dataclass(frozen=True)
class _Turn:
    """A study's place in a round: the chunk pool it shares, the study whose manifest must be
    answered before its own, and the event it sets once its own is."""

    chunks: Executor
    after: threading.Event | None
    answered: threading.Event


def _all_or_first_error(futures: list[Future[None]]) -> None:
    """Wait for all; the first failure is raised, and what had not started is not run."""
    try:
        for future in futures:
            future.result()
    except BaseException:
        for future in futures:
            future.cancel()
        wait(futures)
        raise


def _post(hub: httpx.Client, path: str, body: object) -> object:
    try:
        return checked(hub.post(path, json=body))
    except httpx.HTTPError as exc:
        raise unreachable(exc) from None


def _post_bytes(hub: httpx.Client, path: str, params: dict[str, list[str]], data: bytes) -> object:
    try:
        return checked(
            hub.post(
                path,
                params=params,
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
        )
    except httpx.HTTPError as exc:
        raise unreachable(exc) from None


def start(settings: NodeSettings, sessions: sessionmaker[Session]) -> Uploader | None:
    """The running upload worker of an enrolled node; None for one not enrolled."""
    if not enrollments.is_enrolled(settings.data_dir):
        return None
    enrollment = enrollments.load(settings.data_dir)
    key = keys.KeyFile(keys.key_path(settings.data_dir))
    key.get()

    def make_client() -> httpx.Client:
        return client(enrollment, key, timeout=settings.hub_timeout_seconds)

    uploader = Uploader(settings, sessions, make_client)
    uploader.start()
    return uploader
