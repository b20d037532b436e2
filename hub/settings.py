"""Hub settings: environment variables (``HAVENET_HUB_*``), then flags.

Built once in the entry point and passed to :func:`hub.main.create_app`; nothing reads
them at import. The hub secret keys the hashes under which user and enrollment tokens are
stored: an empty or well-known value stops the hub (and its admin commands) at start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.crypto import KNOWN_DEFAULT_SECRETS, MIN_SECRET_BYTES
from common.errors import ConfigurationError


class HubSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HAVENET_HUB_", extra="forbid")

    data_dir: Path = Path("hub-data")
    database_url: str = ""  # empty: SQLite in data_dir
    secret: SecretStr = SecretStr("")
    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    # A node's long poll is held open at most this long (the node asks for less).
    max_poll_wait_seconds: float = Field(default=30.0, gt=0, le=300)
    # While holding a poll, how often to look again for tasks another hub worker created.
    poll_recheck_seconds: float = Field(default=1.0, gt=0, le=60)
    # How far a signed request's timestamp may be from the hub's clock.
    clock_skew_seconds: int = Field(default=300, ge=5, le=3600)
    enrollment_token_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    default_task_ttl_seconds: int = Field(default=24 * 3600, ge=1, le=30 * 24 * 3600)
    # A node not seen for longer is shown "offline" in a task's per-node states, and a query
    # waits for it no longer (it still answers if it returns within the TTL). A node is seen
    # at each poll: keep this well above max_poll_wait_seconds.
    node_offline_after_seconds: float = Field(default=180.0, ge=1, le=7 * 24 * 3600)
    # Load the vocabularies (catalogue concept expansion, typeahead) into the hub's database
    # at start, in the background, when they are not there yet (~7 s, ~55 MB in SQLite).
    ontology_at_start: bool = True
    # Central storage (hub/storage): chunks, quarantine and project workspaces on local disk;
    # empty means data_dir/storage.
    storage_dir: Path | None = None
    # OCR of burned-in text in received images (hub/curation/ocr, Debian tesseract-ocr):
    # "likely" reads US, SC, OT and any image flagged BurnedInAnnotation=YES; "all" every
    # image; "off" none. Words read become scan findings for the curator.
    curation_ocr: Literal["off", "likely", "all"] = "likely"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'hub.db'}"

    @property
    def storage_root(self) -> Path:
        return self.storage_dir or self.data_dir / "storage"

    def secret_bytes(self) -> bytes:
        value = self.secret.get_secret_value()
        if len(value.encode()) < MIN_SECRET_BYTES or value.strip().lower() in KNOWN_DEFAULT_SECRETS:
            raise ConfigurationError(
                f"secret (HAVENET_HUB_SECRET): must hold at least {MIN_SECRET_BYTES} characters "
                "and not be a default; make one with `havenet secret`"
            )
        return value.encode()


def load(**overrides: Any) -> HubSettings:
    """Settings from the environment and ``overrides`` (flags; None means not given)."""
    try:
        return HubSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        # Never the input values: a misspelt key may hold a secret.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(f"invalid hub settings: {problems}") from None
