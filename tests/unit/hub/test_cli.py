"""`havenet hub`: node, user and project commands print tokens once and refuse bad secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.schemas.channel import EnrollRequest
from compose.cli import app
from hub.db import make_engine, make_sessionmaker, transaction
from hub.nodes import service as nodes
from hub.users import service as users
from tests.unit.hub.conftest import HUB_SECRET

PUBLIC_KEY = "Kq2j4cRzLhJm3w5a0l0pVfH3m4vY6cQ8T2u1bQy8yHk="


@pytest.fixture
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HAVENET_HUB_SECRET", HUB_SECRET)
    monkeypatch.setenv("HAVENET_HUB_DATA_DIR", str(tmp_path / "hub"))
    return tmp_path / "hub"


def run(*args: str) -> str:
    result = CliRunner().invoke(app, ["hub", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_node_add_prints_a_token_that_enrolls_the_node_once(hub_env: Path) -> None:
    token = run("node", "add", "north").strip()
    engine = make_engine(f"sqlite:///{hub_env / 'hub.db'}")
    try:
        with transaction(make_sessionmaker(engine)) as session:
            request = EnrollRequest(token=token, public_key=PUBLIC_KEY)
            node = nodes.enroll(session=session, secret=HUB_SECRET.encode(), request=request)
            assert node.name == "north"
    finally:
        engine.dispose()
    listed = json.loads(run("node", "list", "--json"))
    assert [(n["name"], n["state"]) for n in listed] == [("north", "enrolled")]


def test_node_revoke_marks_the_node_revoked(hub_env: Path) -> None:
    run("node", "add", "north")
    run("node", "revoke", "north")
    assert json.loads(run("node", "list", "--json"))[0]["state"] == "revoked"


def test_user_add_prints_a_token_that_authenticates_the_user(hub_env: Path) -> None:
    token = run("user", "add", "ada", "--role", "researcher").strip()
    run("project", "add", "p1")
    run("project", "member", "add", "p1", "ada")
    engine = make_engine(f"sqlite:///{hub_env / 'hub.db'}")
    try:
        with transaction(make_sessionmaker(engine)) as session:
            user = users.authenticate(session=session, secret=HUB_SECRET.encode(), token=token)
            project = users.require_project(session=session, name="p1")
            assert users.is_member(session=session, project=project, user=user)
    finally:
        engine.dispose()


def test_commands_refuse_a_default_secret(hub_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAVENET_HUB_SECRET", "changeme")
    result = CliRunner().invoke(app, ["hub", "node", "list"])
    assert result.exit_code == 2
    assert "HAVENET_HUB_SECRET" in result.output


def test_a_duplicate_name_is_an_error_that_names_it(hub_env: Path) -> None:
    run("node", "add", "north")
    result = CliRunner().invoke(app, ["hub", "node", "add", "north"])
    assert result.exit_code == 1
    assert "'north' exists already" in result.output
