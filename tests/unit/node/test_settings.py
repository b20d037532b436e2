"""Node settings: a file, then the environment, then flags; weak secrets refused with advice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.errors import ConfigurationError
from node import settings as node_settings
from node.store.correspondence import new_key

GOOD_SECRET = "5f0c1d9e8b7a6f5e4d3c2b1a09f8e7d6c5b4a39281706f5e"
GOOD_TOKEN = "node-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HAVENET_NODE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text("ae_title: FROM_FILE\ndicom_port: 4242\napi_port: 8181\n")
    return path


def good(**overrides: object) -> node_settings.NodeSettings:
    values: dict[str, object] = {
        "site_secret": GOOD_SECRET,
        "correspondence_key": new_key(),
        "api_token": GOOD_TOKEN,
    }
    values.update(overrides)
    return node_settings.load(None, **values)


# -- precedence -----------------------------------------------------------------------------


def test_the_file_gives_values(config: Path) -> None:
    loaded = node_settings.load(config)
    assert (loaded.ae_title, loaded.dicom_port, loaded.api_port) == ("FROM_FILE", 4242, 8181)


def test_the_environment_overrides_the_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAVENET_NODE_AE_TITLE", "FROM_ENV")
    loaded = node_settings.load(config)
    assert loaded.ae_title == "FROM_ENV"
    assert loaded.dicom_port == 4242  # what the environment does not set still comes from the file


def test_flags_override_the_environment_and_the_file(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAVENET_NODE_AE_TITLE", "FROM_ENV")
    monkeypatch.setenv("HAVENET_NODE_DICOM_PORT", "5151")
    loaded = node_settings.load(config, ae_title="FROM_FLAG", dicom_port=None)
    assert loaded.ae_title == "FROM_FLAG"
    assert loaded.dicom_port == 5151  # a flag not given leaves the environment's value
    assert loaded.api_port == 8181


def test_defaults_apply_without_file_or_environment() -> None:
    loaded = node_settings.load(None)
    assert (loaded.ae_title, loaded.dicom_port, loaded.api_port) == ("HAVENET", 11112, 8080)


def test_the_data_folder_places_the_sqlite_database(tmp_path: Path) -> None:
    loaded = node_settings.load(None, data_dir=tmp_path / "data")
    assert loaded.database == f"sqlite:///{(tmp_path / 'data').resolve() / 'node.db'}"


def test_a_missing_settings_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"missing\.yaml: no such settings file"):
        node_settings.load(tmp_path / "missing.yaml")


def test_an_unknown_setting_in_the_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("ae_titel: TYPO\n")
    with pytest.raises(ConfigurationError, match="ae_titel"):
        node_settings.load(path)


def test_an_invalid_ae_title_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="1 to 16 characters"):
        node_settings.load(None, ae_title="A" * 17)


# -- secrets --------------------------------------------------------------------------------


def test_good_secrets_pass() -> None:
    good().validate_secrets()


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAVENET_NODE_SITE_SECRET", GOOD_SECRET)
    monkeypatch.setenv("HAVENET_NODE_CORRESPONDENCE_KEY", new_key())
    monkeypatch.setenv("HAVENET_NODE_API_TOKEN", GOOD_TOKEN)
    node_settings.load(None).validate_secrets()


def test_secrets_never_show_in_the_settings_repr() -> None:
    loaded = good()
    text = repr(loaded) + str(loaded.model_dump())
    assert GOOD_SECRET not in text
    assert GOOD_TOKEN not in text


def test_an_empty_site_secret_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ConfigurationError, match="HAVENET_NODE_SITE_SECRET") as caught:
        good(site_secret="").validate_secrets()
    assert "havenet secret" in str(caught.value)


@pytest.mark.parametrize("value", ["changeme", "secret", "havenet", "short-secret"])
def test_a_default_or_short_site_secret_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="site secret"):
        good(site_secret=value).validate_secrets()


def test_an_empty_site_secret_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "site-secret"
    path.write_text("\n")
    with pytest.raises(ConfigurationError, match=f"{path}: the secret file is empty"):
        good(site_secret="", site_secret_file=path).validate_secrets()


def test_a_missing_correspondence_key_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ConfigurationError, match="HAVENET_NODE_CORRESPONDENCE_KEY"):
        good(correspondence_key="").validate_secrets()


def test_a_malformed_correspondence_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        good(correspondence_key="not-a-key").validate_secrets()


@pytest.mark.parametrize("token", ["", "changeme", "admin", "too-short"])
def test_an_empty_default_or_short_api_token_is_refused(token: str) -> None:
    with pytest.raises(ConfigurationError, match="API token"):
        good(api_token=token).validate_secrets()
