"""Keyed, deterministic mappings from one site secret (DESIGN.md, decision 4).

Every pseudonym havenet writes comes from an HMAC-SHA256 of the site secret over a
purpose, a project and the original value, so that

- the same value, for the same project, always maps the same way (re-sending data gives
  byte-identical output, and references between files stay intact);
- two projects never share subject keys, UIDs or date offsets;
- nothing can be reversed without the secret (and the node's local table).

The three parts are length-prefixed before hashing, so that ("ab", "c") and ("a", "bc")
never collide — the trap of pydicom's ``generate_uid(entropy_srcs=...)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigurationError

MIN_SECRET_BYTES = 16
# Values a careless installation leaves in place; refused like an empty secret.
KNOWN_DEFAULT_SECRETS = frozenset({"changeme", "change-me", "secret", "default", "havenet"})
UID_ROOT = "2.25."
SUBJECT_KEY_LENGTH = 12  # base32 characters: 60 bits, collision-free for any one hospital


def _field(value: str) -> bytes:
    raw = value.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


@dataclass(frozen=True)
class SiteSecret:
    """The one secret of a site. Never logged, never sent anywhere."""

    value: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.value) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"the site secret must hold at least {MIN_SECRET_BYTES} bytes; "
                "generate one with `havenet deid secret > FILE`"
            )
        if self.value.strip().decode("utf-8", "replace").lower() in KNOWN_DEFAULT_SECRETS:
            raise ConfigurationError("the site secret is a well-known default; generate one")

    @classmethod
    def from_file(cls, path: Path) -> SiteSecret:
        try:
            text = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"{path}: cannot read the secret file ({exc.strerror})"
            ) from exc
        if not text:
            raise ConfigurationError(f"{path}: the secret file is empty")
        return cls(text)

    @staticmethod
    def generate() -> str:
        return secrets.token_hex(32)

    def digest(self, purpose: str, project: str, value: str) -> bytes:
        message = _field(purpose) + _field(project) + _field(value)
        return hmac.new(self.value, message, hashlib.sha256).digest()


@dataclass(frozen=True)
class Pseudonymizer:
    """Mappings for one project (stage 1 uses the node's own project name)."""

    secret: SiteSecret
    project: str
    subject_key_prefix: str = ""
    min_offset_days: int = -1095
    max_offset_days: int = -1

    def __post_init__(self) -> None:
        if not self.project:
            raise ConfigurationError("a project name is required for keyed mappings")
        if self.min_offset_days > self.max_offset_days:
            raise ConfigurationError("date shift: min_days must not exceed max_days")

    def subject_key(self, patient_id: str) -> str:
        digest = self.secret.digest("subject", self.project, patient_id)
        code = base64.b32encode(digest).decode("ascii")[:SUBJECT_KEY_LENGTH]
        return f"{self.subject_key_prefix}{code}"

    def uid(self, original: str) -> str:
        """A ``2.25`` UID: the HMAC shaped as a version-8 (custom) UUID, as PS3.5 B.2 allows."""
        value = int.from_bytes(self.secret.digest("uid", self.project, original)[:16], "big")
        value &= ~(0xF << 76)
        value |= 0x8 << 76  # UUID version 8
        value &= ~(0x3 << 62)
        value |= 0x2 << 62  # RFC 4122 variant
        return f"{UID_ROOT}{value}"

    def date_offset_days(self, patient_id: str) -> int:
        """One offset per patient and project, so intervals between a patient's dates hold."""
        span = self.max_offset_days - self.min_offset_days + 1
        draw = int.from_bytes(self.secret.digest("date-offset", self.project, patient_id)[:8])
        offset = self.min_offset_days + draw % span
        if offset == 0:  # a zero shift would leave the dates as they were
            offset = self.min_offset_days if self.min_offset_days != 0 else 1
        return offset

    def hash_value(self, value: str, length: int = 16) -> str:
        digest = self.secret.digest("value", self.project, value)
        return base64.b32encode(digest).decode("ascii")[:length]
