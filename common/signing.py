"""Signed, replay-protected requests from a node to the hub (DESIGN.md, decision 2).

A node holds an Ed25519 key pair it generated itself; the hub knows only the public key.
Every request after enrollment carries four headers — the node's id, a timestamp, a nonce
and a signature — and the signature covers a canonical string of the request:

    havenet-request-v1
    METHOD
    /path?query
    timestamp (Unix seconds)
    nonce
    SHA-256 of the body (hex)
    node id

so a signed request cannot be replayed to another path, with another body, by another
node, or (the hub keeps the nonces it has seen while the timestamp is valid) twice.
Keys travel as base64 of the 32 raw bytes; private keys as unencrypted PKCS #8 PEM in a
file only the node's user may read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import HavenetError

SCHEME = "havenet-request-v1"
NODE_HEADER = "X-Havenet-Node"
TIMESTAMP_HEADER = "X-Havenet-Timestamp"
NONCE_HEADER = "X-Havenet-Nonce"
SIGNATURE_HEADER = "X-Havenet-Signature"
HEADERS = (NODE_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
NONCE_BYTES = 16
MAX_NONCE_LENGTH = 64
ROTATION_SCHEME = "havenet-key-rotation-v1"


class SigningError(HavenetError):
    """A key or a signature cannot be read (the message names which, never its bytes)."""


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError("the private key file is not an unencrypted PEM key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError("the private key file does not hold an Ed25519 key")
    return key


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as the hub stores it: base64 of the 32 raw bytes."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise SigningError("the public key is not base64 of 32 raw Ed25519 bytes") from exc


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    *, method: str, target: str, timestamp: str, nonce: str, body: bytes, node_id: str
) -> bytes:
    """The bytes a node signs; ``target`` is the path with its query string, as sent."""
    parts = (SCHEME, method.upper(), target, timestamp, nonce, body_digest(body), node_id)
    return "\n".join(parts).encode("utf-8")


@dataclass(frozen=True)
class SignedHeaders:
    node_id: str
    timestamp: str
    nonce: str
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {
            NODE_HEADER: self.node_id,
            TIMESTAMP_HEADER: self.timestamp,
            NONCE_HEADER: self.nonce,
            SIGNATURE_HEADER: self.signature,
        }

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> SignedHeaders | None:
        """The four headers, or None when any is missing (an unsigned request)."""
        lowered = {key.lower(): value for key, value in headers.items()}
        values = [lowered.get(name.lower(), "") for name in HEADERS]
        if not all(values):
            return None
        return cls(*values)

    @property
    def unix_time(self) -> int | None:
        try:
            return int(self.timestamp)
        except ValueError:
            return None


def sign_request(
    key: Ed25519PrivateKey,
    *,
    node_id: str,
    method: str,
    target: str,
    body: bytes = b"",
    timestamp: int | None = None,
    nonce: str | None = None,
) -> SignedHeaders:
    """The headers that make this request the node's own, for this moment only."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    once = nonce or secrets.token_hex(NONCE_BYTES)
    message = canonical_request(
        method=method, target=target, timestamp=stamp, nonce=once, body=body, node_id=node_id
    )
    signature = base64.b64encode(key.sign(message)).decode("ascii")
    return SignedHeaders(node_id=node_id, timestamp=stamp, nonce=once, signature=signature)


def verify_request(
    public_key: Ed25519PublicKey,
    headers: SignedHeaders,
    *,
    method: str,
    target: str,
    body: bytes,
) -> bool:
    """Whether ``headers`` hold the node's signature of exactly this request."""
    try:
        signature = base64.b64decode(headers.signature.encode("ascii"), validate=True)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        return False
    message = canonical_request(
        method=method,
        target=target,
        timestamp=headers.timestamp,
        nonce=headers.nonce,
        body=body,
        node_id=headers.node_id,
    )
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def rotation_statement(node_id: str, new_public_key: str) -> bytes:
    """What the new key signs to prove the node holds it (the old key signs the request)."""
    return "\n".join((ROTATION_SCHEME, node_id, new_public_key)).encode("utf-8")


def sign_rotation(new_key: Ed25519PrivateKey, node_id: str) -> str:
    statement = rotation_statement(node_id, public_key_text(new_key))
    return base64.b64encode(new_key.sign(statement)).decode("ascii")


def verify_rotation(node_id: str, new_public_key: str, proof: str) -> bool:
    try:
        key = parse_public_key(new_public_key)
        signature = base64.b64decode(proof.encode("ascii"), validate=True)
        key.verify(signature, rotation_statement(node_id, new_public_key))
    except (SigningError, ValueError, binascii.Error, UnicodeEncodeError, InvalidSignature):
        return False
    return True
