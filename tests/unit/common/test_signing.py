"""Signed requests: the signature covers method, path and query, timestamp, nonce, body and
node id, so changing any of them breaks it; keys travel as base64 of their raw bytes."""

from __future__ import annotations

import dataclasses

import pytest

from common import signing
from common.signing import SignedHeaders, SigningError

REQUEST = {"method": "POST", "target": "/api/v1/channel/tasks/7/result?x=1", "body": b'{"a":1}'}


@pytest.fixture(scope="module")
def key() -> signing.Ed25519PrivateKey:
    return signing.generate_private_key()


def sign(key: signing.Ed25519PrivateKey, **overrides: object) -> SignedHeaders:
    values: dict[str, object] = {"node_id": "node-1", **REQUEST, **overrides}
    return signing.sign_request(key, **values)  # type: ignore[arg-type]


def verify(key: signing.Ed25519PrivateKey, headers: SignedHeaders, **overrides: object) -> bool:
    values: dict[str, object] = {**REQUEST, **overrides}
    return signing.verify_request(key.public_key(), headers, **values)  # type: ignore[arg-type]


def test_a_signed_request_verifies_with_the_nodes_public_key(
    key: signing.Ed25519PrivateKey,
) -> None:
    assert verify(key, sign(key))


@pytest.mark.parametrize(
    "change",
    [
        {"method": "GET"},
        {"target": "/api/v1/channel/tasks/8/result?x=1"},
        {"target": "/api/v1/channel/tasks/7/result?x=2"},
        {"body": b'{"a":2}'},
    ],
    ids=["method", "path", "query", "body"],
)
def test_changing_any_part_of_the_request_breaks_the_signature(
    key: signing.Ed25519PrivateKey, change: dict[str, object]
) -> None:
    assert not verify(key, sign(key), **change)


@pytest.mark.parametrize("field", ["node_id", "timestamp", "nonce"])
def test_changing_any_signed_header_breaks_the_signature(
    key: signing.Ed25519PrivateKey, field: str
) -> None:
    headers = sign(key)
    changed = dataclasses.replace(headers, **{field: getattr(headers, field) + "0"})
    assert not verify(key, changed)


def test_another_key_does_not_verify(key: signing.Ed25519PrivateKey) -> None:
    other = signing.generate_private_key()
    assert not verify(other, sign(key))


def test_a_garbled_signature_does_not_verify(key: signing.Ed25519PrivateKey) -> None:
    assert not verify(key, dataclasses.replace(sign(key), signature="not base64!"))


def test_every_request_gets_a_fresh_nonce(key: signing.Ed25519PrivateKey) -> None:
    assert sign(key).nonce != sign(key).nonce


def test_headers_are_read_back_and_a_missing_one_means_unsigned(
    key: signing.Ed25519PrivateKey,
) -> None:
    headers = sign(key)
    lowered = {name.lower(): value for name, value in headers.as_dict().items()}
    assert SignedHeaders.from_headers(lowered) == headers
    del lowered[signing.NONCE_HEADER.lower()]
    assert SignedHeaders.from_headers(lowered) is None


def test_keys_round_trip_through_their_text_forms(key: signing.Ed25519PrivateKey) -> None:
    text = signing.public_key_text(key)
    assert signing.public_key_text(signing.parse_public_key(text)) == text
    again = signing.load_private_key_pem(signing.private_key_pem(key))
    assert signing.public_key_text(again) == text


@pytest.mark.parametrize("text", ["", "%%zz%%", "QUJDRA==", "QUFB" * 30])
def test_a_malformed_public_key_is_an_error_without_its_bytes(text: str) -> None:
    with pytest.raises(SigningError) as raised:
        signing.parse_public_key(text)
    assert not text or text not in str(raised.value)


def test_a_rotation_proof_holds_only_for_the_new_key_and_the_node(
    key: signing.Ed25519PrivateKey,
) -> None:
    new = signing.generate_private_key()
    proof = signing.sign_rotation(new, "node-1")
    assert signing.verify_rotation("node-1", signing.public_key_text(new), proof)
    assert not signing.verify_rotation("node-2", signing.public_key_text(new), proof)
    assert not signing.verify_rotation("node-1", signing.public_key_text(key), proof)
