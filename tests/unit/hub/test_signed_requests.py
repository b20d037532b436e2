"""Every request of a node is signed and replay-protected: the hub refuses unsigned, forged,
tampered, stale, replayed and revoked requests, each with a message naming the check."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from common import signing
from common.schemas.channel import API_PREFIX
from hub.db import transaction
from hub.deps import Runtime
from hub.nodes import service as nodes
from tests.unit.hub.conftest import SigningNode

ME = f"{API_PREFIX}/me"


def test_a_signed_request_is_taken_as_the_node_that_signed_it(node: SigningNode) -> None:
    response = node.request("GET", ME)
    assert response.status_code == 200
    assert response.json()["name"] == node.name


def test_an_unsigned_request_is_refused(client: TestClient, node: SigningNode) -> None:
    response = client.get(ME)
    assert response.status_code == 401
    assert "not signed" in response.json()["detail"]


def test_a_request_signed_with_another_key_is_refused(node: SigningNode) -> None:
    forger = SigningNode(node.client, node.name, node.node_id, signing.generate_private_key())
    response = forger.request("GET", ME)
    assert response.status_code == 401
    assert "does not verify" in response.json()["detail"]


def test_a_body_changed_after_signing_is_refused(client: TestClient, node: SigningNode) -> None:
    path = f"{API_PREFIX}/tasks/1/result"
    signed = signing.sign_request(
        node.key, node_id=node.node_id, method="POST", target=path, body=b'{"status":"refused"}'
    )
    response = client.post(
        path,
        content=b'{"status":"answered"}',
        headers={**signed.as_dict(), "Content-Type": "application/json"},
    )
    assert response.status_code == 401


def test_a_request_for_another_query_string_is_refused(
    client: TestClient, node: SigningNode
) -> None:
    signed = signing.sign_request(
        node.key, node_id=node.node_id, method="GET", target=f"{API_PREFIX}/tasks?wait=0"
    )
    response = client.get(f"{API_PREFIX}/tasks?wait=1", headers=signed.as_dict())
    assert response.status_code == 401


def test_a_timestamp_outside_five_minutes_is_refused(node: SigningNode) -> None:
    for offset in (-301, 301):
        response = node.request("GET", ME, timestamp=int(time.time()) + offset)
        assert response.status_code == 401
        assert "±300 s" in response.json()["detail"]


def test_a_replayed_request_is_refused(client: TestClient, node: SigningNode) -> None:
    signed = signing.sign_request(node.key, node_id=node.node_id, method="GET", target=ME)
    assert client.get(ME, headers=signed.as_dict()).status_code == 200
    replay = client.get(ME, headers=signed.as_dict())
    assert replay.status_code == 401
    assert "already used" in replay.json()["detail"]


def test_an_unknown_node_id_is_refused(node: SigningNode) -> None:
    stranger = SigningNode(node.client, "x", "0" * 32, node.key)
    assert stranger.request("GET", ME).status_code == 401


def test_a_revoked_node_is_refused_with_403(node: SigningNode, runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        nodes.revoke(session=session, name=node.name, actor="test")
    response = node.request("GET", ME)
    assert response.status_code == 403
    assert "revoked" in response.json()["detail"]


def test_refusals_never_echo_the_signature_or_the_nonce(
    client: TestClient, node: SigningNode
) -> None:
    signed = signing.sign_request(
        signing.generate_private_key(), node_id=node.node_id, method="GET", target=ME
    )
    text = client.get(ME, headers=signed.as_dict()).text
    assert signed.signature not in text
    assert signed.nonce not in text


def test_after_a_rotation_the_new_key_signs_and_the_old_one_is_refused(
    node: SigningNode,
) -> None:
    new = signing.generate_private_key()
    rotation = {
        "public_key": signing.public_key_text(new),
        "proof": signing.sign_rotation(new, node.node_id),
    }
    assert node.request("POST", f"{API_PREFIX}/key", rotation).status_code == 200

    assert node.request("GET", ME).status_code == 401
    rotated = SigningNode(node.client, node.name, node.node_id, new)
    assert rotated.request("GET", ME).status_code == 200


def test_a_rotation_without_proof_of_the_new_key_is_refused(node: SigningNode) -> None:
    new, other = signing.generate_private_key(), signing.generate_private_key()
    rotation = {
        "public_key": signing.public_key_text(new),
        "proof": signing.sign_rotation(other, node.node_id),
    }
    response = node.request("POST", f"{API_PREFIX}/key", rotation)
    assert response.status_code == 422
    assert node.request("GET", ME).status_code == 200  # the old key still holds


def test_only_the_holder_of_the_key_learns_that_a_node_is_revoked(
    node: SigningNode, runtime: Runtime
) -> None:
    with transaction(runtime.sessions) as session:
        nodes.revoke(session=session, name=node.name, actor="test")
    forger = SigningNode(node.client, node.name, node.node_id, signing.generate_private_key())
    response = forger.request("GET", ME)
    assert response.status_code == 401
    assert "revoked" not in response.json()["detail"]
