"""``havenet node import fhir PATH...`` and ``havenet node import omop DIR``.

Each file is one transaction: imported whole, or — at the first invalid resource or row —
not at all, with an error naming the file, the entry or line and the field. The run goes on
with the next file and exits 1 if any file failed. Re-importing a file changes nothing.
Work on the node's own database (the node may be running); needs the site secret and the
correspondence key from the node's settings.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from common.errors import ConfigurationError, HavenetError
from node import settings as node_settings
from node.clinical import fhir, omop, service
from node.clinical.service import ImportContext, ImportResult
from node.settings import NodeSettings
from node.store.db import make_engine, make_sessionmaker, migrate, transaction

logger = logging.getLogger(__name__)

import_app = typer.Typer(
    help="Import clinical records (FHIR R4, OMOP CDM 5.4), pseudonymized on arrival.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Node settings file (YAML).", dir_okay=False)
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="The node's data folder.", file_okay=False)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON line per file.")]
FHIR_SUFFIXES = (".json", *fhir.NDJSON_SUFFIXES)


@import_app.command("fhir")
def import_fhir(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Bundle (.json) or NDJSON (.ndjson) files, or folders of them."),
    ],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import FHIR R4 Bundles (collection, transaction, batch) and NDJSON files."""
    files = _fhir_files(paths)
    if not files:
        raise _fail("no .json, .ndjson or .jsonl file in the paths given", 2)
    with _opened(config, data_dir) as (sessions, context):
        failed = 0
        for path in files:
            work = partial(service.import_fhir_file, context=context, path=path)
            ok = _import_one(sessions, path, as_json, work)
            failed += not ok
    if failed:
        raise typer.Exit(1)


@import_app.command("omop")
def import_omop(
    folder: Annotated[
        Path, typer.Argument(help="A folder of OMOP CDM 5.4 CSV tables.", file_okay=False)
    ],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import the person, death, visit_occurrence, condition_occurrence, drug_exposure,
    measurement, observation and procedure_occurrence tables found in FOLDER."""
    if not folder.is_dir():
        raise _fail(f"{folder}: not a folder", 2)
    tables = omop.table_files(folder)
    if not tables:
        raise _fail(f"{folder}: no OMOP table (person.csv, measurement.csv, ...) here", 2)
    with _opened(config, data_dir) as (sessions, context):
        failed = 0
        for table, path in tables:
            work = partial(service.import_omop_table, context=context, path=path, table=table)
            ok = _import_one(sessions, path, as_json, work)
            failed += not ok
            if not ok and table == "person":
                typer.echo("error: the other tables need their persons; stopping", err=True)
                break
    if failed:
        raise typer.Exit(1)


def _import_one(
    sessions: sessionmaker[Session],
    path: Path,
    as_json: bool,
    work: Callable[..., ImportResult],
) -> bool:
    try:
        with transaction(sessions) as session:
            result = work(session=session)
    except HavenetError as exc:
        typer.echo(f"error: {exc}", err=True)
        return False
    except OSError as exc:
        typer.echo(f"error: {path}: cannot read ({exc.strerror or type(exc).__name__})", err=True)
        return False
    if as_json:
        typer.echo(json.dumps({"file": str(path), **result.as_dict()}))
    else:
        facts = sum(result.facts.values())
        skipped = sum(result.skipped.values())
        typer.echo(
            f"{path}: {result.records} records, {result.patients} patients, {facts} facts"
            + (f", {skipped} skipped (unsupported types)" if skipped else "")
        )
    return True


def _fhir_files(paths: list[Path]) -> list[Path]:
    """The files to import, folders expanded; bulk-export ``Patient*`` files first, since the
    other files refer to their patients (otherwise in the order given)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FHIR_SUFFIXES
            )
        else:
            files.append(path)
    return sorted(files, key=lambda p: not p.name.lower().startswith("patient"))


@contextmanager
def _opened(
    config: Path | None, data_dir: Path | None
) -> Iterator[tuple[sessionmaker[Session], ImportContext]]:
    """The node's database (migrated to the newest schema) and the import context."""
    settings = _settings(config, data_dir)
    try:
        secret = settings.secret()
        keyring = settings.keyring()
        rules = service.build_rules(settings.profile, settings.site_project, secret.value)
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from None
    if not settings.database_url and not (settings.data_dir / "node.db").is_file():
        raise _fail(
            f"{settings.data_dir / 'node.db'}: no node database here; pass the node's "
            "--data-dir (or --config), or start the node once with `havenet node serve`"
        )
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    migrate(settings.database)
    engine = make_engine(settings.database)
    try:
        yield make_sessionmaker(engine), ImportContext(rules=rules, keyring=keyring, actor=_actor())
    finally:
        engine.dispose()


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


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
