"""`havenet hub curate list|show|accept|reject`, `havenet hub export PROJECT DIR` and
`havenet hub storage collect`, on the hub's database and storage (the hub's own machine),
audited as the OS user."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hub.cli import DataDirOption, JsonOption, _actor, _session, _settings
from hub.curation import collect as collector
from hub.curation import service as curation
from hub.curation.models import StudyState
from hub.storage.service import LocalStorage
from hub.users import service as users

curate_app = typer.Typer(
    help="Curation: studies in quarantine, accept or reject them.", no_args_is_help=True
)
storage_app = typer.Typer(
    help="Central storage: collect chunks no received study needs.", no_args_is_help=True
)
StudyId = Annotated[int, typer.Argument(help="The received study's number.")]


@curate_app.command("list")
def list_studies(
    data_dir: DataDirOption = None,
    state: Annotated[
        StudyState, typer.Option(help="Which studies to list.")
    ] = StudyState.AWAITING_REVIEW,
    as_json: JsonOption = False,
) -> None:
    """Received studies (those awaiting review unless --state says otherwise)."""
    settings = _settings(data_dir=data_dir)
    with _session(settings) as session:
        rows = [
            curation.summary(session=session, study=study).model_dump(mode="json")
            for study in curation.queue(session=session, state=state)
        ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(
        "id", "project", "node", "subject", "study", "files", "records", "findings", "state"
    )
    for row in rows:
        table.add_row(
            *(str(row[k]) for k in ("id", "project", "node", "subject_key", "study_uid")),
            str(row["files"]),
            str(row["records"]),
            str(row["findings"]),
            row["state"],
        )
    Console().print(table)


@curate_app.command("show")
def show(study_id: StudyId, data_dir: DataDirOption = None) -> None:
    """A study's header summary, de-identification report and scan findings (JSON)."""
    settings = _settings(data_dir=data_dir)
    with _session(settings) as session:
        typer.echo(curation.show(session=session, study_id=study_id).model_dump_json(indent=1))


@curate_app.command("accept")
def accept(study_id: StudyId, data_dir: DataDirOption = None) -> None:
    """Accept: the study's files move into the project's workspace."""
    settings = _settings(data_dir=data_dir)
    with _session(settings) as session:
        curation.accept(
            session=session,
            storage=LocalStorage(settings.storage_root),
            reviewer=_actor(),
            study_id=study_id,
        )
    typer.echo(f"study {study_id} accepted")


@curate_app.command("reject")
def reject(
    study_id: StudyId,
    reason: Annotated[str, typer.Option(help="Why; the node is told (no patient data).")],
    data_dir: DataDirOption = None,
) -> None:
    """Reject: the quarantined files are discarded and the node gets a task with the reason."""
    settings = _settings(data_dir=data_dir)
    with _session(settings) as session:
        task = curation.reject(
            session=session,
            storage=LocalStorage(settings.storage_root),
            reviewer=_actor(),
            study_id=study_id,
            reason=reason,
            ttl_seconds=settings.default_task_ttl_seconds,
        )
        task_id = task.id
    typer.echo(f"study {study_id} rejected; task {task_id} tells the node")


def export_command(
    project: Annotated[str, typer.Argument(help="The project to export.")],
    folder: Annotated[Path, typer.Argument(help="Where to write the zips.", file_okay=False)],
    data_dir: DataDirOption = None,
) -> None:
    """Write the project's accepted studies, one zip each, with manifest.json and README.md."""
    settings = _settings(data_dir=data_dir)
    with _session(settings) as session:
        found = users.require_project(session=session, name=project)
        written = curation.export(
            session=session,
            storage=LocalStorage(settings.storage_root),
            project=found,
            folder=folder,
        )
    typer.echo(f"{len(written)} studies exported to {folder}")


@storage_app.command("collect")
def collect(
    data_dir: DataDirOption = None,
    grace_hours: Annotated[
        float,
        typer.Option(
            min=0,
            help="Keep anything younger: an upload whose manifest has not come yet.",
        ),
    ] = collector.DEFAULT_GRACE.total_seconds() / 3600,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count, delete nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete chunks no study in quarantine or accepted names (a rejected study's, an
    abandoned upload's) and what an interrupted verification left, once old enough."""
    settings = _settings(data_dir=data_dir)
    with _session(settings) as session:
        collected = collector.collect(
            session=session,
            storage=LocalStorage(settings.storage_root),
            actor=_actor(),
            grace=dt.timedelta(hours=grace_hours),
            dry_run=dry_run,
        )
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(collected)))
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{verb} {collected.chunks} chunks ({collected.bytes / 1e6:.1f} MB) and "
        f"{collected.files} incoming files"
    )
