"""Enrollment and key rotation: the two moments the node's public key travels to the hub.

Enrollment generates the node's key pair, sends the public half with the one-time token,
and remembers the hub's URL and the node id. Rotation sends a new public key in a request
signed with the old key, with a proof signed by the new one; the new key replaces the old
file only once the hub has taken it. Both are in the node's audit log.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from sqlalchemy.orm import Session, sessionmaker

from common import __version__, audit, signing
from common.errors import ConfigurationError
from common.schemas.channel import (
    API_PREFIX,
    EnrollRequest,
    EnrollResponse,
    KeyRotation,
    NodeIdentity,
)
from node.federation import enrollment as enrollments
from node.federation import keys
from node.federation.client import checked, client, unreachable
from node.federation.enrollment import Enrollment
from node.settings import NodeSettings
from node.store.db import transaction
from node.store.models import AuditRecord

logger = logging.getLogger(__name__)


def normalized_hub_url(hub_url: str) -> str:
    parts = urlsplit(hub_url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigurationError("HUB_URL: give the hub's address as https://HOST[:PORT]")
    if parts.query or parts.fragment:
        raise ConfigurationError("HUB_URL: no query or fragment, just https://HOST[:PORT]")
    return hub_url.rstrip("/")


def enroll(
    *,
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    hub_url: str,
    token: str,
    actor: str,
    replace: bool = False,
) -> Enrollment:
    """Generate the node's key, enroll it with the hub, remember where and as whom."""
    hub_url = normalized_hub_url(hub_url)
    if enrollments.is_enrolled(settings.data_dir) and not replace:
        raise ConfigurationError(
            "this node is enrolled already; pass --replace to enroll it again (the old key "
            "is discarded)"
        )
    key = signing.generate_private_key()
    # On disk before it is sent (a key the hub accepted is never lost to a crash), but beside
    # the current one, which stays in use until the hub has taken the new one.
    pending = keys.next_key_path(settings.data_dir)
    keys.write_private_key(pending, key)
    request = EnrollRequest(
        token=token, public_key=signing.public_key_text(key), software_version=__version__
    )
    try:
        with httpx.Client(base_url=hub_url, timeout=settings.hub_timeout_seconds) as http:
            response = http.post(
                f"{API_PREFIX}/enroll",
                content=request.model_dump_json(),
                headers={"Content-Type": "application/json"},
            )
        answer = EnrollResponse.model_validate(checked(response))
    except httpx.HTTPError as exc:
        _discard(pending)
        raise unreachable(exc) from None
    except Exception:
        _discard(pending)
        raise
    pending.replace(keys.key_path(settings.data_dir))
    enrollment = Enrollment(hub_url=hub_url, node_id=answer.node_id, name=answer.name)
    enrollments.save(settings.data_dir, enrollment)
    with transaction(sessions) as session:
        audit.append(
            session,
            AuditRecord,
            actor=actor,
            action="federation.enroll",
            subject=answer.name,
            details={"hub": urlsplit(hub_url).netloc, "node_id": answer.node_id},
        )
    return enrollment


def whoami(settings: NodeSettings) -> NodeIdentity:
    """Ask the hub who it takes this node to be (proves the key and the clock are right)."""
    enrollment = enrollments.load(settings.data_dir)
    key = keys.read_private_key(keys.key_path(settings.data_dir))
    try:
        with client(enrollment, key, timeout=settings.hub_timeout_seconds) as http:
            response = http.get(f"{API_PREFIX}/me")
    except httpx.HTTPError as exc:
        raise unreachable(exc) from None
    return NodeIdentity.model_validate(checked(response))


def rotate_key(
    *, settings: NodeSettings, sessions: sessionmaker[Session], actor: str
) -> NodeIdentity:
    """A new key pair; the hub takes it in a request signed with the old key."""
    enrollment = enrollments.load(settings.data_dir)
    current_path = keys.key_path(settings.data_dir)
    old = keys.read_private_key(current_path)
    new = signing.generate_private_key()
    pending = keys.next_key_path(settings.data_dir)
    keys.write_private_key(pending, new)
    rotation = KeyRotation(
        public_key=signing.public_key_text(new),
        proof=signing.sign_rotation(new, enrollment.node_id),
    )
    try:
        with client(enrollment, old, timeout=settings.hub_timeout_seconds) as http:
            response = http.post(
                f"{API_PREFIX}/key",
                content=rotation.model_dump_json(),
                headers={"Content-Type": "application/json"},
            )
        identity = NodeIdentity.model_validate(checked(response))
    except httpx.HTTPError as exc:
        _discard(pending)
        raise unreachable(exc) from None
    except Exception:
        _discard(pending)
        raise
    pending.replace(current_path)  # the running agent reads it at its next request
    with transaction(sessions) as session:
        audit.append(
            session,
            AuditRecord,
            actor=actor,
            action="federation.rotate_key",
            subject=enrollment.name,
            details={"hub": urlsplit(enrollment.hub_url).netloc},
        )
    logger.info("node key rotated")
    return identity


def _discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
