"""The node's signing key: generated on the node, kept in its data folder (mode 0600), never
sent. Only the public half reaches the hub, at enrollment and at rotation."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import signing
from common.errors import ConfigurationError

logger = logging.getLogger(__name__)

KEY_FILE = "node-key.pem"
NEXT_KEY_FILE = "node-key.next.pem"  # a rotation in progress
PRIVATE_MODE = 0o600


def federation_dir(data_dir: Path) -> Path:
    return data_dir / "federation"


def key_path(data_dir: Path) -> Path:
    return federation_dir(data_dir) / KEY_FILE


def next_key_path(data_dir: Path) -> Path:
    return federation_dir(data_dir) / NEXT_KEY_FILE


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write ``key`` readable by the node's user only; the file appears whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(signing.private_key_pem(key))
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)


def read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the node's key ({exc.strerror})") from None
    if mode & 0o077:
        raise ConfigurationError(
            f"{path}: the node's private key is readable by others (mode {mode:o}); "
            f"chmod 600 {path}"
        )
    try:
        return signing.load_private_key_pem(data)
    except signing.SigningError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None


class KeyFile:
    """The current key, read again when the file changes (a rotation by the CLI while the
    node runs takes effect at the next request)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._key: Ed25519PrivateKey | None = None

    def get(self) -> Ed25519PrivateKey:
        with self._lock:
            try:
                info = self.path.stat()
            except OSError as exc:
                raise ConfigurationError(
                    f"{self.path}: cannot read the node's key ({exc.strerror})"
                ) from None
            stamp = (info.st_mtime_ns, info.st_ino)
            if self._key is None or stamp != self._stamp:
                self._key = read_private_key(self.path)
                self._stamp = stamp
            return self._key
