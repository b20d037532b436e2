"""The node registry over HTTP: enrollment and key rotation for nodes (``/api/v1/channel``),
creation, listing and revocation for admins (``/api/v1/nodes``)."""

from __future__ import annotations

from fastapi import APIRouter, status

from common.schemas.channel import (
    API_PREFIX,
    EnrollRequest,
    EnrollResponse,
    KeyRotation,
    NodeIdentity,
)
from hub.db import aware
from hub.deps import AdminUser, RuntimeDep, SessionDep, SignedNode
from hub.nodes import service as nodes
from hub.nodes.models import Node, NodeState
from hub.nodes.schemas import NodeCreate, NodeCreated, NodeRead

channel = APIRouter(prefix=API_PREFIX, tags=["channel"])
admin = APIRouter(prefix="/api/v1/nodes", tags=["nodes"])


def identity(node: Node) -> NodeIdentity:
    rotated = aware(node.key_rotated_at) if node.key_rotated_at else None
    return NodeIdentity(
        node_id=node.node_id,
        name=node.name,
        state=NodeState(node.state).value,
        key_rotated_at=rotated,
    )


@channel.post("/enroll", summary="Enroll with a one-time token and a public key")
def enroll(body: EnrollRequest, hub: RuntimeDep, session: SessionDep) -> EnrollResponse:
    """The one unsigned request a node makes: it has no enrolled key yet."""
    node = nodes.enroll(session=session, secret=hub.secret, request=body)
    return EnrollResponse(node_id=node.node_id, name=node.name)


@channel.get("/me", summary="Who the hub takes the signing node to be")
def whoami(node: SignedNode) -> NodeIdentity:
    return identity(node)


@channel.post("/key", summary="Replace the node's key (signed with the old one)")
def rotate_key(body: KeyRotation, node: SignedNode, session: SessionDep) -> NodeIdentity:
    current = nodes.attached(session=session, node=node)
    return identity(nodes.rotate_key(session=session, node=current, rotation=body))


@admin.get("", summary="Every node, by name")
def list_nodes(_admin: AdminUser, session: SessionDep) -> list[NodeRead]:
    return [NodeRead.model_validate(node) for node in nodes.get_all(session=session)]


@admin.post("", status_code=status.HTTP_201_CREATED, summary="Create a node entry")
def create_node(
    body: NodeCreate, user: AdminUser, hub: RuntimeDep, session: SessionDep
) -> NodeCreated:
    """The enrollment token is shown here once; the hub keeps only its keyed hash."""
    node, token, expires = nodes.create(
        session=session,
        secret=hub.secret,
        name=body.name,
        token_hours=hub.settings.enrollment_token_hours,
        actor=f"user:{user.name}",
    )
    return NodeCreated(
        node=NodeRead.model_validate(node), enrollment_token=token, expires_at=expires
    )


@admin.post("/{name}/revoke", summary="Refuse the node from now on")
def revoke_node(name: str, user: AdminUser, session: SessionDep) -> NodeRead:
    return NodeRead.model_validate(
        nodes.revoke(session=session, name=name, actor=f"user:{user.name}")
    )
