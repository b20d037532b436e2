"""The upload worker: sends the release outbox to the hub, oldest first, over the signed
channel — decisions and progress, and studies as content-addressed chunks plus a signed
manifest.

For a study it first asks the hub which chunks it holds and sends only the others, so an
upload cut short (the node killed, the hub gone) resumes without re-sending a byte the hub
has. While the hub cannot be reached the worker backs off (doubling, with jitter, up to
``hub_retry_max_seconds``) and the outbox waits in the database, across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import threading
from collections.abc import Callable

import httpx
from sqlalchemy.orm import Session, sessionmaker

from common.schemas.channel import API_PREFIX
from common.schemas.release import (
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
        """Send what is due, oldest first; stop at the first item the hub cannot take now."""
        with transaction(self.sessions) as session:
            item_ids = [item.id for item in releases.due(session=session, now=utcnow())]
        for item_id in item_ids:
            if self._stop.is_set():
                break
            self.send_one(hub, item_id)
        return len(item_ids)

    def send_one(self, hub: httpx.Client, item_id: int) -> None:
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
                self._send_study(hub, item_id, body)
        except HubUnreachable:
            raise
        except HubRefused as exc:
            logger.error("release outbox item %d refused: %s", item_id, exc.detail)
            with transaction(self.sessions) as session:
                item = session.get(OutboxItem, item_id)
                assert item is not None
                item.state = OutboxState.FAILED
                item.last_error = exc.detail[:500]
            return
        with transaction(self.sessions) as session:
            item = session.get(OutboxItem, item_id)
            assert item is not None
            item.state = OutboxState.SENT
            item.last_error = ""
            if kind == "study":
                releases.study_sent(session=session, item=item)

    def _send_study(self, hub: httpx.Client, item_id: int, body: dict[str, object]) -> None:
        manifest = StudyManifest.model_validate(body["manifest"])
        root = self.settings.data_dir / str(body["root"])
        chunk_bytes = int(str(body["chunk_bytes"]))
        held = self._held(hub, manifest)
        for entry in manifest.files:
            if all(sha in held for sha in entry.chunks):
                continue
            with (root / entry.path).open("rb") as handle:
                for sha in entry.chunks:
                    block = handle.read(chunk_bytes)
                    if sha in held:
                        continue
                    if hashlib.sha256(block).hexdigest() != sha:
                        raise FileChanged(entry.path)
                    _put(hub, f"{API_PREFIX}/chunks/{sha}", block)
                    held.add(sha)
                    self._count_chunk(item_id)
        key = keys.KeyFile(keys.key_path(self.settings.data_dir)).get()
        signature = base64.b64encode(key.sign(canonical_manifest(manifest))).decode("ascii")
        signed = SignedManifest(manifest=manifest, signature=signature)
        _post(hub, f"{API_PREFIX}/releases/manifests", signed.model_dump(mode="json"))

    def _held(self, hub: httpx.Client, manifest: StudyManifest) -> set[str]:
        wanted = list(dict.fromkeys(sha for entry in manifest.files for sha in entry.chunks))
        held: set[str] = set()
        for start in range(0, len(wanted), MAX_CHUNKS_PER_QUERY):
            answer = _post(
                hub,
                f"{API_PREFIX}/chunks/held",
                {"hashes": wanted[start : start + MAX_CHUNKS_PER_QUERY]},
            )
            held.update(ChunksHeld.model_validate(answer).held)
        return held

    def _count_chunk(self, item_id: int) -> None:
        with transaction(self.sessions) as session:
            item = session.get(OutboxItem, item_id)
            assert item is not None
            item.chunks_sent += 1


def _post(hub: httpx.Client, path: str, body: object) -> object:
    try:
        return checked(hub.post(path, json=body))
    except httpx.HTTPError as exc:
        raise unreachable(exc) from None


def _put(hub: httpx.Client, path: str, data: bytes) -> object:
    try:
        return checked(
            hub.put(path, content=data, headers={"Content-Type": "application/octet-stream"})
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
