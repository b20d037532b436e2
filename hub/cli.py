"""`havenet hub`: run the hub, and the admin's commands on its database.

The admin commands work on the hub's database directly (same settings as ``serve``:
``HAVENET_HUB_*`` and the flags) and are audited as the OS user running them. Tokens are
printed once, on standard output, and never stored in the clear.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from common.errors import ConfigurationError, HavenetError
from hub import settings as hub_settings
from hub.db import make_engine, make_sessionmaker, migrate, transaction
from hub.federation import service as federation
from hub.nodes import service as nodes
from hub.nodes.models import NodeState
from hub.settings import HubSettings
from hub.users import service as users
from hub.users.models import Role

hub_app = typer.Typer(
    help="The hub: run it, enroll nodes, manage users and projects, follow tasks.",
    no_args_is_help=True,
    add_completion=False,
)
node_app = typer.Typer(help="Nodes: create (enrollment token), list, revoke.", no_args_is_help=True)
user_app = typer.Typer(help="Hub users and their API tokens.", no_args_is_help=True)
project_app = typer.Typer(help="Projects and their members.", no_args_is_help=True)
member_app = typer.Typer(help="Members of a project.", no_args_is_help=True)
task_app = typer.Typer(help="Federated tasks.", no_args_is_help=True)
hub_app.add_typer(node_app, name="node")
hub_app.add_typer(user_app, name="user")
hub_app.add_typer(project_app, name="project")
project_app.add_typer(member_app, name="member")
hub_app.add_typer(task_app, name="task")

DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="The hub's data folder.", file_okay=False)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _settings(**overrides: Any) -> HubSettings:
    try:
        settings = hub_settings.load(**overrides)
        settings.secret_bytes()
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from None
    return settings


def _actor() -> str:
    try:
        return f"admin:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"admin:uid:{os.getuid()}"


@contextmanager
def _session(settings: HubSettings) -> Iterator[Session]:
    """One unit of work on the hub's database (brought to the newest schema first)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.database)
    engine = make_engine(settings.database)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            yield session
    except HavenetError as exc:
        raise _fail(str(exc)) from None
    finally:
        engine.dispose()


@hub_app.command()
def serve(
    data_dir: DataDirOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="HTTP port.")] = None,
) -> None:
    """Run the hub until SIGTERM or Ctrl-C."""
    from hub import main  # noqa: PLC0415 - the server stack loads only for this command

    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for name in ("hub", "uvicorn"):
        logging.getLogger(name).setLevel(logging.INFO)
    settings = _settings(data_dir=data_dir, host=host, port=port)
    try:
        main.serve(settings)
    except HavenetError as exc:
        raise _fail(str(exc)) from None


# -- nodes --------------------------------------------------------------------------------------


@node_app.command("add")
def node_add(
    name: Annotated[str, typer.Argument(help="The node's name, e.g. the hospital's short name.")],
    data_dir: DataDirOption = None,
) -> None:
    """Create a node entry; print its one-time enrollment token (shown only now)."""
    settings = _settings(data_dir=data_dir)
    with _session(settings) as session:
        _, token, expires = nodes.create(
            session=session,
            secret=settings.secret_bytes(),
            name=name,
            token_hours=settings.enrollment_token_hours,
            actor=_actor(),
        )
    typer.echo(token)
    typer.echo(
        f"node {name!r} created; the token above enrolls it once, until "
        f"{expires:%Y-%m-%d %H:%M} UTC: havenet node enroll HUB_URL TOKEN",
        err=True,
    )


@node_app.command("list")
def node_list(data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Every node with its state, software version and when it was last seen."""
    settings = _settings(data_dir=data_dir)
    with _session(settings) as session:
        rows = [
            {
                "name": node.name,
                "node_id": node.node_id,
                "state": NodeState(node.state).value,
                "software_version": node.software_version,
                "last_seen_at": node.last_seen_at.isoformat() if node.last_seen_at else None,
            }
            for node in nodes.get_all(session=session)
        ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("name", "state", "version", "last seen", title="havenet hub: nodes")
    for row in rows:
        table.add_row(row["name"], row["state"], row["software_version"], row["last_seen_at"] or "")
    Console().print(table)


@node_app.command("revoke")
def node_revoke(name: str, data_dir: DataDirOption = None) -> None:
    """Refuse the node from now on, whatever it signs."""
    settings = _settings(data_dir=data_dir)
    with _session(settings) as session:
        nodes.revoke(session=session, name=name, actor=_actor())
    typer.echo(f"node {name!r} revoked")


# -- users and projects -------------------------------------------------------------------------


@user_app.command("add")
def user_add(
    name: str,
    role: Annotated[Role, typer.Option("--role", help="researcher, curator or admin.")],
    data_dir: DataDirOption = None,
) -> None:
    """Create a user; print their API token (shown only now)."""
    settings = _settings(data_dir=data_dir)
    with _session(settings) as session:
        _, token = users.create(
            session=session, secret=settings.secret_bytes(), name=name, role=role, actor=_actor()
        )
    typer.echo(token)
    typer.echo(f"user {name!r} ({role.value}) created; the token above is shown once", err=True)


@project_app.command("add")
def project_add(name: str, data_dir: DataDirOption = None) -> None:
    """Create a project."""
    settings = _settings(data_dir=data_dir)
    with _session(settings) as session:
        users.create_project(session=session, name=name, actor=_actor())
    typer.echo(f"project {name!r} created")


@member_app.command("add")
def member_add(project: str, user: str, data_dir: DataDirOption = None) -> None:
    """Make a user a member of a project."""
    settings = _settings(data_dir=data_dir)
    with _session(settings) as session:
        users.add_member(session=session, project=project, user=user, actor=_actor())
    typer.echo(f"{user!r} is a member of project {project!r}")


# -- tasks --------------------------------------------------------------------------------------


@task_app.command("list")
def task_list(
    data_dir: DataDirOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonOption = False,
) -> None:
    """The newest tasks with how many nodes are pending, answered, refused, expired, failed."""
    settings = _settings(data_dir=data_dir)
    with _session(settings) as session:
        federation.expire_overdue(session=session)
        found = federation.latest(session=session, limit=limit)
        offline_after = dt.timedelta(seconds=settings.node_offline_after_seconds)
        rows = [
            federation.summary(session=session, task=task, offline_after=offline_after).model_dump(
                mode="json"
            )
            for task in found
        ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("id", "kind", "project", "by", "expires", "states", title="havenet hub: tasks")
    for row in rows:
        states = ", ".join(f"{state} {count}" for state, count in row["states"].items())
        table.add_row(
            str(row["id"]),
            row["kind"],
            row["project"] or "",
            row["created_by"],
            row["expires_at"],
            states,
        )
    Console().print(table)


def _mount_catalogue_commands() -> None:
    from hub.catalogue import cli as catalogue_cli  # noqa: PLC0415 - mounted like the node's jobs

    hub_app.command("search")(catalogue_cli.search_command)
    hub_app.command("ontology-load")(catalogue_cli.ontology_load)


_mount_catalogue_commands()


def _mount_query_commands() -> None:
    from hub.query import cli as query_cli  # noqa: PLC0415 - mounted like the catalogue's

    hub_app.command("query")(query_cli.query_command)


_mount_query_commands()


def _mount_curation_commands() -> None:
    from hub.curation import cli as curation_cli  # noqa: PLC0415 - mounted like the catalogue's

    hub_app.add_typer(curation_cli.curate_app, name="curate")
    hub_app.command("export")(curation_cli.export_command)
    hub_app.add_typer(curation_cli.storage_app, name="storage")


_mount_curation_commands()
