"""`havenet node`: run the node, and the local commands of hospital IT.

``serve`` runs the node; ``status`` counts what it holds; ``reidentify``, ``audit`` and
``keys`` work on the local database only and are the one way back from a pseudonym to the
hospital's identifiers (never through the network API). ``pacs`` and ``jobs`` drive
selection jobs (``node.jobs.cli``).
"""

from __future__ import annotations

import getpass
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from common import audit
from common.errors import ConfigurationError, HavenetError
from node import settings as node_settings
from node.clinical import cli as clinical_cli
from node.settings import NodeSettings
from node.store import correspondence
from node.store.db import make_engine, make_sessionmaker, transaction
from node.store.models import AuditRecord, Correspondence

logger = logging.getLogger(__name__)

node_app = typer.Typer(
    help="The hospital node: run it, check it, and the local-only admin commands.",
    no_args_is_help=True,
    add_completion=False,
)
audit_app = typer.Typer(help="The node's hash-chained audit log.", no_args_is_help=True)
keys_app = typer.Typer(help="The correspondence table's encryption key.", no_args_is_help=True)
node_app.add_typer(audit_app, name="audit")
node_app.add_typer(keys_app, name="keys")
node_app.add_typer(clinical_cli.import_app, name="import")

COUNTS = ("patients", "studies", "series", "instances", "rejected", "queued_jobs")
SECRETS = (
    ("site_secret", "HAVENET_NODE_SITE_SECRET or site_secret_file", "secret"),
    ("correspondence_key", "HAVENET_NODE_CORRESPONDENCE_KEY", "keyring"),
    ("api_token", "HAVENET_NODE_API_TOKEN", "check_api_token"),
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Settings file (YAML).", dir_okay=False)
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="The node's data folder.", file_okay=False)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _settings(config: Path | None, **overrides: Any) -> NodeSettings:
    try:
        return node_settings.load(config, **overrides)
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from None


def _actor() -> str:
    """The OS user running the command (audit records name who re-identified whom)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return f"uid:{os.getuid()}"


def _database(settings: NodeSettings) -> Engine:
    """The node's existing database; a local command never creates one."""
    if not settings.database_url:
        path = settings.data_dir / "node.db"
        if not path.is_file():
            raise _fail(
                f"{path}: no node database here; pass the node's --data-dir (or --config), "
                "or start the node once with `havenet node serve`"
            )
    return make_engine(settings.database)


# -- serve and status -------------------------------------------------------------------------


@node_app.command()
def serve(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    ae_title: Annotated[str | None, typer.Option(help="The node's DICOM AE title.")] = None,
    dicom_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port of the DICOM server.")
    ] = None,
    api_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port of the HTTP API.")
    ] = None,
) -> None:
    """Run the node (API, DICOM server, scheduler) until SIGTERM or Ctrl-C."""
    from node import main  # noqa: PLC0415 - the server stack loads only for this command

    _log_info()
    settings = _settings(
        config, data_dir=data_dir, ae_title=ae_title, dicom_port=dicom_port, api_port=api_port
    )
    problems = []
    for name, where, check in SECRETS:
        try:
            getattr(settings, check)()
        except ConfigurationError as exc:
            problems.append(f"{name} ({where}): {exc}")
    if problems:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    try:
        main.serve(settings)
    except HavenetError as exc:
        raise _fail(str(exc)) from None


def _log_info() -> None:
    """The node's own loggers and uvicorn's say what they do; libraries stay at warnings."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for name in ("node", "uvicorn"):
        logging.getLogger(name).setLevel(logging.INFO)


@node_app.command()
def status(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Count patients, studies, series, instances, rejected instances and queued jobs."""
    from node.store import service as store  # noqa: PLC0415 - only this command needs it

    settings = _settings(config, data_dir=data_dir)
    engine = _database(settings)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            counts = store.status_counts(session=session)
    except SQLAlchemyError as exc:
        raise _fail(f"the node database does not answer ({type(exc).__name__})") from None
    finally:
        engine.dispose()
    counts = {name: int(counts.get(name, 0)) for name in COUNTS}
    if as_json:
        typer.echo(json.dumps(counts))
        return
    table = Table("", "count", title=f"havenet node ({settings.ae_title})")
    for name in COUNTS:
        table.add_row(name.replace("_", " "), str(counts[name]))
    Console().print(table)


# -- re-identification ------------------------------------------------------------------------


@node_app.command()
def reidentify(
    pseudonym: Annotated[str, typer.Argument(help="A subject key or a stage-1 UID.")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the hospital identifiers behind a pseudonym (local only; audited).

    Needs the correspondence key from the settings. Every use is written to the audit
    log with the OS user, before anything is printed.
    """
    settings = _settings(config, data_dir=data_dir)
    try:
        keyring = settings.keyring()
    except ConfigurationError as exc:
        raise _fail(f"correspondence_key (HAVENET_NODE_CORRESPONDENCE_KEY): {exc}", 2) from None
    engine = _database(settings)
    sessions = make_sessionmaker(engine)
    actor = _actor()
    found: dict[str, list[str]] = {}
    try:
        with transaction(sessions) as session:
            kinds = session.execute(
                select(Correspondence.kind)
                .where(Correspondence.pseudonym == pseudonym)
                .distinct()
                .order_by(Correspondence.kind)
            ).scalars()
            for kind in kinds:
                found[kind] = correspondence.originals_for(
                    session=session, keyring=keyring, kind=kind, pseudonym=pseudonym
                )
            audit.append(
                session,
                AuditRecord,
                actor=actor,
                action="reidentify",
                subject=pseudonym,
                details={"kinds": sorted(found), "identifiers": sum(map(len, found.values()))},
            )
    except correspondence.CorrespondenceError as exc:
        with transaction(sessions) as session:
            audit.append(
                session,
                AuditRecord,
                actor=actor,
                action="reidentify",
                subject=pseudonym,
                details={"failed": str(exc)},
            )
        raise _fail(f"{exc}; is correspondence_key the key this table was written with?") from None
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(found))
    else:
        for kind, originals in found.items():
            for original in originals:
                typer.echo(f"{kind}\t{original}")
    if not found:
        typer.echo(f"{pseudonym}: not in the correspondence table", err=True)
        raise typer.Exit(1)


# -- audit log ----------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Check the hash chain; exit 1 and name the first record that does not hold."""
    settings = _settings(config, data_dir=data_dir)
    engine = _database(settings)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            result = audit.verify(session, AuditRecord)
    finally:
        engine.dispose()
    if not result.ok:
        raise _fail(
            f"the audit log is broken at record {result.first_broken_id}: it {result.problem} "
            f"({result.records} records read)"
        )
    typer.echo(f"audit log intact: {result.records} records, chain verified")


# -- keys -----------------------------------------------------------------------------------------


@keys_app.command("new")
def keys_new() -> None:
    """Print a new correspondence key (32 random bytes, base64)."""
    typer.echo(correspondence.new_key())


@keys_app.command("rotate")
def keys_rotate(
    new_key: Annotated[
        str,
        typer.Option(
            "--new-key", help="The new key (`havenet node keys new`); - reads it from stdin."
        ),
    ],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Re-encrypt the correspondence table under a new key (audited). Stop the node first."""
    settings = _settings(config, data_dir=data_dir)
    try:
        keyring = settings.keyring()
    except ConfigurationError as exc:
        raise _fail(f"correspondence_key (HAVENET_NODE_CORRESPONDENCE_KEY): {exc}", 2) from None
    text = sys.stdin.readline() if new_key == "-" else new_key
    try:
        key = correspondence.parse_key(text)
    except ConfigurationError as exc:
        raise _fail(f"--new-key: {exc}", 2) from None
    new_id, old_id = correspondence.key_id(key), keyring.current_id
    if new_id == old_id:
        raise _fail("--new-key is the current key; make a new one with `havenet node keys new`", 2)
    engine = _database(settings)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            moved = correspondence.rotate(session=session, keyring=keyring, new=key)
            audit.append(
                session,
                AuditRecord,
                actor=_actor(),
                action="keys.rotate",
                subject=f"key {new_id}",
                details={"rows": moved, "from": old_id, "to": new_id},
            )
    except correspondence.CorrespondenceError as exc:
        raise _fail(f"nothing was changed: {exc}") from None
    finally:
        engine.dispose()
    typer.echo(f"re-encrypted {moved} correspondence rows: key {old_id} -> key {new_id}")
    typer.echo(
        "now put the new key in the settings (correspondence_key, or "
        "HAVENET_NODE_CORRESPONDENCE_KEY) and move the old one to correspondence_old_keys; "
        "keep the old key there until the node runs with the new one and every queued job "
        "has finished (their selections stay encrypted under the old key)"
    )


# -- the PACS and jobs commands, from node.jobs --------------------------------------------------


def _mount_jobs_commands() -> None:
    try:
        jobs_cli = importlib.import_module("node.jobs.cli")
    except ModuleNotFoundError as exc:
        if exc.name != "node.jobs.cli":
            raise
        return
    node_app.add_typer(jobs_cli.pacs_app, name="pacs")
    node_app.add_typer(jobs_cli.jobs_app, name="jobs")


_mount_jobs_commands()


def _mount_federation_commands() -> None:
    from node.federation import cli as federation_cli  # noqa: PLC0415 - mounted like jobs

    node_app.command("enroll")(federation_cli.enroll)
    node_app.add_typer(federation_cli.federation_app, name="federation")


_mount_federation_commands()


def _mount_catalogue_commands() -> None:
    from node.catalogue import cli as catalogue_cli  # noqa: PLC0415 - mounted like jobs

    node_app.add_typer(catalogue_cli.catalogue_app, name="catalogue")


_mount_catalogue_commands()


def _mount_query_commands() -> None:
    from node.query import cli as query_cli  # noqa: PLC0415 - mounted like jobs

    node_app.command("ontology-load")(query_cli.ontology_load)
    node_app.add_typer(query_cli.queries_app, name="queries")


_mount_query_commands()


def _mount_release_commands() -> None:
    from node.release import cli as release_cli  # noqa: PLC0415 - mounted like jobs

    node_app.add_typer(release_cli.requests_app, name="requests")


_mount_release_commands()
