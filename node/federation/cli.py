"""`havenet node enroll` and `havenet node federation status|rotate-key`.

They work on the node's data folder (key, enrollment file, database) and talk to the hub
themselves, signed like the agent; they need none of the node's secrets.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from common.errors import ConfigurationError, HavenetError
from node import settings as node_settings
from node.federation import enroll as enrolling
from node.federation import enrollment as enrollments
from node.settings import NodeSettings
from node.store.db import make_engine, make_sessionmaker, migrate

STDIN = "-"

federation_app = typer.Typer(
    help="The node's channel to the hub: status and key rotation.", no_args_is_help=True
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Settings file (YAML).", dir_okay=False)
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="The node's data folder.", file_okay=False)
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _settings(config: Path | None, data_dir: Path | None) -> NodeSettings:
    try:
        return node_settings.load(config, data_dir=data_dir)
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from None


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


@contextmanager
def _sessions(settings: NodeSettings) -> Iterator[sessionmaker[Session]]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.database)
    engine = make_engine(settings.database)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def enroll(
    hub_url: Annotated[str, typer.Argument(help="The hub's address, https://HOST[:PORT].")],
    token: Annotated[
        str, typer.Argument(help="The one-time token from `havenet hub node add`; - reads stdin.")
    ],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Enroll again, discarding the current key.")
    ] = False,
) -> None:
    """Generate this node's key pair and enroll it with the hub (once per node)."""
    settings = _settings(config, data_dir)
    if token == STDIN:
        token = typer.get_text_stream("stdin").readline().strip()
    try:
        with _sessions(settings) as sessions:
            enrollment = enrolling.enroll(
                settings=settings,
                sessions=sessions,
                hub_url=hub_url,
                token=token,
                actor=_actor(),
                replace=replace,
            )
    except HavenetError as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"enrolled as {enrollment.name!r} (node id {enrollment.node_id}) with {enrollment.hub_url}"
    )


@federation_app.command("status")
def status(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Say whether this node is enrolled, and whether the hub accepts its signature now."""
    settings = _settings(config, data_dir)
    try:
        enrollment = enrollments.load(settings.data_dir)
    except HavenetError as exc:
        raise _fail(str(exc)) from None
    report: dict[str, object] = {
        "hub_url": enrollment.hub_url,
        "node_id": enrollment.node_id,
        "name": enrollment.name,
    }
    try:
        identity = enrolling.whoami(settings)
        report["hub"] = f"accepts this node ({identity.state})"
        ok = True
    except HavenetError as exc:
        report["hub"] = str(exc)
        ok = False
    if as_json:
        typer.echo(json.dumps({**report, "ok": ok}))
    else:
        for name, value in report.items():
            typer.echo(f"{name}: {value}")
    if not ok:
        raise typer.Exit(1)


@federation_app.command("rotate-key")
def rotate_key(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Replace the node's key pair; the hub takes the new key in a request signed by the old."""
    settings = _settings(config, data_dir)
    try:
        with _sessions(settings) as sessions:
            identity = enrolling.rotate_key(settings=settings, sessions=sessions, actor=_actor())
    except HavenetError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"key rotated; the hub accepts node {identity.name!r} with the new key")
