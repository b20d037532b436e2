"""The node registry: creation with a one-time enrollment token, enrollment, key rotation,
revocation, and the check of every signed request (signature, clock, nonce, state).

Plain functions taking a keyword-only ``session``; none of them commits.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common import signing
from common.schemas.channel import EnrollRequest, KeyRotation
from common.signing import SignedHeaders, SigningError
from hub import audit, tokens
from hub.db import aware, utcnow
from hub.nodes.exceptions import (
    BadSignature,
    EnrollmentRefused,
    InvalidKey,
    NodeExists,
    NodeNotFound,
    NodeRevoked,
    NotSigned,
    ReplayedRequest,
    StaleTimestamp,
    UnknownNode,
)
from hub.nodes.models import EnrollmentToken, Node, NodeState, Nonce

logger = logging.getLogger(__name__)


def create(
    *,
    session: Session,
    secret: bytes,
    name: str,
    token_hours: float,
    actor: str,
    now: dt.datetime | None = None,
) -> tuple[Node, str, dt.datetime]:
    """A node entry and its one-time enrollment token (returned once, stored hashed)."""
    now = now or utcnow()
    if get_by_name(session=session, name=name) is not None:
        raise NodeExists(name)
    node = Node(node_id=uuid.uuid4().hex, name=name, state=NodeState.CREATED)
    session.add(node)
    token, expires = _issue_token(session, secret, node, now, token_hours)
    audit.record(session=session, actor=actor, action="node.add", subject=name)
    return node, token, expires


def _issue_token(
    session: Session, secret: bytes, node: Node, now: dt.datetime, hours: float
) -> tuple[str, dt.datetime]:
    token = tokens.new_token(tokens.ENROLLMENT_PREFIX)
    expires = now + dt.timedelta(hours=hours)
    node.tokens.append(
        EnrollmentToken(
            token_hash=tokens.token_hash(secret, token), created_at=now, expires_at=expires
        )
    )
    session.flush()
    return token, expires


def get_by_name(*, session: Session, name: str) -> Node | None:
    return session.execute(select(Node).where(Node.name == name)).scalar_one_or_none()


def get_by_node_id(*, session: Session, node_id: str) -> Node | None:
    return session.execute(select(Node).where(Node.node_id == node_id)).scalar_one_or_none()


def require(*, session: Session, name: str) -> Node:
    node = get_by_name(session=session, name=name)
    if node is None:
        raise NodeNotFound(name)
    return node


def attached(*, session: Session, node: Node) -> Node:
    """The node as ``session`` reads it now. Not ``merge``: that would write the fields of a
    stale copy (from the request's signature check) back over newer ones (a rotated key)."""
    found = session.get(Node, node.id)
    if found is None:
        raise UnknownNode()
    return found


def get_all(*, session: Session) -> list[Node]:
    return list(session.execute(select(Node).order_by(Node.name)).scalars())


def enroll(
    *, session: Session, secret: bytes, request: EnrollRequest, now: dt.datetime | None = None
) -> Node:
    """Spend the one-time token: the node's public key is its identity from now on."""
    now = now or utcnow()
    found = session.execute(
        select(EnrollmentToken).where(
            EnrollmentToken.token_hash == tokens.token_hash(secret, request.token)
        )
    ).scalar_one_or_none()
    if found is None:
        raise EnrollmentRefused("the enrollment token is not known to this hub")
    if found.used_at is not None:
        raise EnrollmentRefused("the enrollment token was used already; ask for a new one")
    if aware(found.expires_at) <= now:
        raise EnrollmentRefused("the enrollment token has expired; ask for a new one")
    node = found.node
    if node.state == NodeState.REVOKED:
        raise NodeRevoked()
    _check_public_key(request.public_key)
    found.used_at = now
    node.state = NodeState.ENROLLED
    node.public_key = request.public_key
    node.software_version = request.software_version
    node.enrolled_at = now
    node.last_seen_at = now
    audit.record(
        session=session,
        actor=f"node:{node.name}",
        action="node.enroll",
        subject=node.name,
        software_version=request.software_version,
    )
    return node


def _check_public_key(text: str) -> None:
    try:
        signing.parse_public_key(text)
    except SigningError as exc:
        raise InvalidKey(f"public_key: {exc}") from None


def revoke(*, session: Session, name: str, actor: str, now: dt.datetime | None = None) -> Node:
    node = require(session=session, name=name)
    if node.state != NodeState.REVOKED:
        node.state = NodeState.REVOKED
        node.revoked_at = now or utcnow()
        audit.record(session=session, actor=actor, action="node.revoke", subject=name)
    return node


def rotate_key(
    *, session: Session, node: Node, rotation: KeyRotation, now: dt.datetime | None = None
) -> Node:
    """Replace the node's key (the request was signed with the old one; the proof shows the
    node holds the new one). The old key is refused from now on."""
    _check_public_key(rotation.public_key)
    if not signing.verify_rotation(node.node_id, rotation.public_key, rotation.proof):
        raise InvalidKey("proof: not a signature of the rotation statement by the new key")
    if rotation.public_key == node.public_key:
        raise InvalidKey("public_key: this is the node's current key")
    node.public_key = rotation.public_key
    node.key_rotated_at = now or utcnow()
    audit.record(
        session=session, actor=f"node:{node.name}", action="node.rotate_key", subject=node.name
    )
    return node


def authenticate(
    *,
    session: Session,
    headers: SignedHeaders | None,
    method: str,
    target: str,
    body: bytes,
    skew_seconds: int,
    now: dt.datetime | None = None,
) -> Node:
    """The node that signed this request, or the error naming the first check that failed.

    The order matters: the signature is checked before the node's state is told and before
    the nonce is spent, so nobody without the key learns that a node is revoked or can burn
    its nonces; the nonce is checked last, by inserting it (see
    :class:`~hub.nodes.models.Nonce`).
    """
    now = now or utcnow()
    if headers is None:
        raise NotSigned()
    node = get_by_node_id(session=session, node_id=headers.node_id)
    if node is None or node.state == NodeState.CREATED or not node.public_key:
        raise UnknownNode()
    stamp = headers.unix_time
    if stamp is None or abs(now.timestamp() - stamp) > skew_seconds:
        raise StaleTimestamp(skew_seconds)
    if len(headers.nonce) > signing.MAX_NONCE_LENGTH:
        raise BadSignature()
    if not signing.verify_request(
        signing.parse_public_key(node.public_key),
        headers,
        method=method,
        target=target,
        body=body,
    ):
        raise BadSignature()
    # After the signature: only the holder of the key learns that the node is revoked.
    if node.state == NodeState.REVOKED:
        raise NodeRevoked()
    # Kept until the timestamp could no longer pass the clock check above.
    expires = dt.datetime.fromtimestamp(stamp + skew_seconds + 1, dt.UTC)
    session.add(Nonce(node_pk=node.id, nonce=headers.nonce, expires_at=expires))
    try:
        session.flush()
    except IntegrityError:
        raise ReplayedRequest() from None
    node.last_seen_at = now
    return node


def prune_nonces(*, session: Session, now: dt.datetime | None = None) -> int:
    """Forget nonces whose requests the clock check refuses anyway."""
    result = session.execute(delete(Nonce).where(Nonce.expires_at < (now or utcnow())))
    return int(getattr(result, "rowcount", 0) or 0)
