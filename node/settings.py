"""Node settings: a YAML file, then environment variables (``HAVENET_NODE_*``), then flags.

Built once in the entry point and passed down; nothing reads them at import. The site
secret, the correspondence key and the API token are required: an empty or well-known
value stops the node at start, with a message saying how to make a good one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from common.crypto import SiteSecret
from common.errors import ConfigurationError
from node.store.correspondence import Keyring, parse_key

_WEAK_TOKENS = {"", "changeme", "change-me", "secret", "token", "admin", "havenet"}


class Pacs(BaseModel):
    """A PACS the node queries and retrieves from."""

    name: str
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)


class NodeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HAVENET_NODE_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Path("node-data")
    database_url: str = ""  # empty: SQLite in data_dir
    site_secret: SecretStr = SecretStr("")
    site_secret_file: Path | None = None
    correspondence_key: SecretStr = SecretStr("")
    correspondence_old_keys: list[SecretStr] = []
    api_token: SecretStr = SecretStr("")
    ae_title: str = "HAVENET"
    dicom_host: str = "127.0.0.1"
    dicom_port: int = Field(default=11112, ge=1, le=65535)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    # Who may send: "AE", "AE@host" or "@host"; empty lets any peer in (logged at start).
    allowed_peers: list[str] = []
    max_associations: int = Field(default=8, ge=1)
    workers: int = Field(default=2, ge=1)  # processes that de-identify arrivals
    profile: str = "pseudonymize"  # stage 1
    site_project: str = "site"  # the project name stage-1 keys are derived under
    pacs: list[Pacs] = []
    # The hub channel (node/federation): how long a poll is held, and the back-off when the
    # hub cannot be reached (doubling from min to max).
    hub_poll_wait_seconds: float = Field(default=20.0, gt=0, le=300)
    hub_retry_min_seconds: float = Field(default=1.0, gt=0, le=3600)
    hub_retry_max_seconds: float = Field(default=60.0, gt=0, le=3600)
    hub_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # The catalogue (node/catalogue): smallest patient count published, rounding of counts,
    # and how often it is published (0: only on demand).
    catalogue_threshold: int = Field(default=10, ge=5)
    catalogue_rounding: int = Field(default=5, ge=1)
    catalogue_publish_hours: float = Field(default=24.0, ge=0)
    # Load the vocabularies (concept expansion in federated queries) into the node's
    # database at start, in the background, when they are not there yet (~7 s, ~55 MB).
    ontology_at_start: bool = True
    # Federated queries (node/query): the disclosure policy this node enforces on every
    # answer — smallest count published, rounding, noise scale (0: none), which breakdowns
    # and whether statistics are answered, automatic answers or local approval, and how
    # many queries each project may ask.
    query_min_cell: int = Field(default=10, ge=5)
    query_rounding: int = Field(default=5, ge=1)
    query_noise: float = Field(default=0.0, ge=0)
    query_breakdowns: list[str] = [
        "sex",
        "age_band",
        "modality",
        "sequence_type",
        "body_part",
        "study_year",
    ]
    query_statistics: bool = True
    query_auto_answer: bool = True
    query_budget_per_project: int = Field(default=1000, ge=0)
    # Data release (node/release): the size of the content-addressed chunks uploaded (the
    # hub takes up to 4 MiB), and how often the upload worker looks for work when idle.
    release_chunk_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=4 * 1024 * 1024)
    release_poll_seconds: float = Field(default=1.0, gt=0, le=300)
    # Processes running stage 2, and threads sending chunks to the hub at once.
    release_workers: int = Field(default=2, ge=1, le=64)
    release_upload_workers: int = Field(default=2, ge=1, le=16)

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        if not value or len(value) > 16 or "\\" in value:
            raise ValueError("an AE title has 1 to 16 characters and no backslash")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get("path")
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    # -- derived -------------------------------------------------------------------------

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'node.db'}"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    def secret(self) -> SiteSecret:
        if self.site_secret_file is not None:
            return SiteSecret.from_file(self.site_secret_file)
        value = self.site_secret.get_secret_value().encode()
        if not value:
            raise ConfigurationError(
                "no site secret: set HAVENET_NODE_SITE_SECRET or site_secret_file "
                "(make one with `havenet secret`)"
            )
        return SiteSecret(value)

    def keyring(self) -> Keyring:
        current = self.correspondence_key.get_secret_value()
        if not current:
            raise ConfigurationError(
                "no correspondence key: set HAVENET_NODE_CORRESPONDENCE_KEY "
                "(make one with `havenet node keys new`)"
            )
        older = tuple(parse_key(k.get_secret_value()) for k in self.correspondence_old_keys)
        return Keyring(current=parse_key(current), older=older)

    def check_api_token(self) -> str:
        token = self.api_token.get_secret_value()
        if token.strip().lower() in _WEAK_TOKENS or len(token) < 16:
            raise ConfigurationError(
                "the API token must hold at least 16 characters and not be a default; "
                "make one with `havenet secret`"
            )
        return token

    def validate_secrets(self) -> None:
        """Refuse to start without good secrets (called by `havenet node serve`)."""
        self.secret()
        self.keyring()
        self.check_api_token()


_CONFIG_FILE: dict[str, Path | None] = {"path": None}


def load(config_file: Path | None = None, **overrides: Any) -> NodeSettings:
    """Settings from ``config_file`` (YAML), the environment and ``overrides`` (flags)."""
    if config_file is not None and not config_file.is_file():
        raise ConfigurationError(f"{config_file}: no such settings file")
    _CONFIG_FILE["path"] = config_file
    try:
        return NodeSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        # Never the input values: a misspelt key may hold a secret.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(f"invalid node settings: {problems}") from None
    finally:
        _CONFIG_FILE["path"] = None
