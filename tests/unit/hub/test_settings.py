"""The hub's settings: no start without a good secret; SQLite in the data folder by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigurationError
from hub.settings import HubSettings, load


@pytest.mark.parametrize("secret", ["", "changeme", "short"])
def test_the_hub_refuses_an_empty_short_or_default_secret(secret: str) -> None:
    settings = HubSettings(secret=secret)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="HAVENET_HUB_SECRET"):
        settings.secret_bytes()


def test_the_database_defaults_to_sqlite_in_the_data_folder(tmp_path: Path) -> None:
    settings = HubSettings(data_dir=tmp_path)
    assert settings.database == f"sqlite:///{tmp_path.resolve() / 'hub.db'}"


def test_an_invalid_setting_is_named_without_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAVENET_HUB_PORT", "not-a-port-s3cr3t")
    with pytest.raises(ConfigurationError, match="port") as raised:
        load()
    assert "s3cr3t" not in str(raised.value)
