"""The correspondence table: hospital identifiers ↔ pseudonyms, encrypted at rest.

Originals are stored only as AES-GCM ciphertext (the kind is bound as associated data, so a
ciphertext cannot be moved to another kind) and found through a keyed hash, never in clear.
The key lives in the node's settings, not in the database: a stolen database file reveals
nothing. ``rotate`` re-encrypts every row under a new key, in one transaction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from common.errors import ConfigurationError, HavenetError
from node.store.models import Correspondence

KEY_BYTES = 32
# 32 random bytes have about 30 distinct values; a typed or patterned key has few.
_MIN_DISTINCT_BYTES = 16
_NONCE_BYTES = 12


class CorrespondenceError(HavenetError):
    """The table and the key do not fit (wrong key, damaged row, conflicting mapping)."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"havenet-correspondence-key" + key).hexdigest()[:16]


def parse_key(text: str) -> bytes:
    """A key as written in settings: 32 bytes, base64 or hex."""
    text = text.strip()
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            key = decode(text)
        except ValueError:
            continue
        if len(key) == KEY_BYTES:
            if len(set(key)) < _MIN_DISTINCT_BYTES:
                raise ConfigurationError(
                    "the correspondence key is not random (too few distinct bytes); "
                    "generate one with `havenet node keys new`"
                )
            return key
    raise ConfigurationError(
        "the correspondence key must be 32 bytes, base64 or hex; "
        "generate one with `havenet node keys new`"
    )


def new_key() -> str:
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


@dataclass(frozen=True)
class Keyring:
    """The current key, and older ones still able to decrypt rows not yet rotated."""

    current: bytes = field(repr=False)
    older: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def current_id(self) -> str:
        return key_id(self.current)

    def _key(self, identifier: str) -> bytes:
        for key in (self.current, *self.older):
            if key_id(key) == identifier:
                return key
        raise CorrespondenceError(
            f"a row was encrypted under key {identifier}, which is not configured"
        )

    def lookup(self, kind: str, original: str) -> str:
        message = f"{kind}\x00{original}".encode()
        return hmac.new(self.current, message, hashlib.sha256).hexdigest()

    def encrypt(self, kind: str, original: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + AESGCM(self.current).encrypt(nonce, original.encode(), kind.encode())

    def decrypt(self, row: Correspondence) -> str:
        key = self._key(row.key_id)
        nonce, body = row.ciphertext[:_NONCE_BYTES], row.ciphertext[_NONCE_BYTES:]
        try:
            return AESGCM(key).decrypt(nonce, body, row.kind.encode()).decode()
        except InvalidTag:
            raise CorrespondenceError(f"row {row.id} does not decrypt: damaged or moved") from None


def record(
    *, session: Session, keyring: Keyring, kind: str, original: str, pseudonym: str
) -> Correspondence:
    """Remember ``original`` ↔ ``pseudonym`` once; the same pair again is a no-op."""
    lookup = keyring.lookup(kind, original)
    row = session.execute(
        select(Correspondence).where(Correspondence.kind == kind, Correspondence.lookup == lookup)
    ).scalar_one_or_none()
    if row is not None:
        if row.pseudonym != pseudonym:
            raise CorrespondenceError(f"a {kind} already has another pseudonym (row {row.id})")
        return row
    row = Correspondence(
        kind=kind,
        lookup=lookup,
        pseudonym=pseudonym,
        ciphertext=keyring.encrypt(kind, original),
        key_id=keyring.current_id,
    )
    session.add(row)
    session.flush()
    return row


def pseudonym_for(*, session: Session, keyring: Keyring, kind: str, original: str) -> str | None:
    lookup = keyring.lookup(kind, original)
    return session.execute(
        select(Correspondence.pseudonym).where(
            Correspondence.kind == kind, Correspondence.lookup == lookup
        )
    ).scalar_one_or_none()


def originals_for(*, session: Session, keyring: Keyring, kind: str, pseudonym: str) -> list[str]:
    """Re-identification: the hospital identifiers behind a pseudonym (audit it!)."""
    rows = session.execute(
        select(Correspondence).where(
            Correspondence.kind == kind, Correspondence.pseudonym == pseudonym
        )
    ).scalars()
    return sorted({keyring.decrypt(row) for row in rows})


def rotate(*, session: Session, keyring: Keyring, new: bytes) -> int:
    """Re-encrypt every row under ``new``; returns how many rows moved."""
    target = Keyring(current=new, older=(keyring.current, *keyring.older))
    moved = 0
    for row in session.execute(select(Correspondence)).scalars():
        original = keyring.decrypt(row) if row.key_id != key_id(new) else target.decrypt(row)
        row.lookup = target.lookup(row.kind, original)
        row.ciphertext = target.encrypt(row.kind, original)
        row.key_id = target.current_id
        moved += 1
    session.flush()
    return moved
