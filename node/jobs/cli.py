"""``havenet node pacs ...`` and ``havenet node jobs ...``: query the PACS, queue selection
jobs, follow and cancel them.

``pacs find`` asks the PACS directly and prints what matched. It shows no patient IDs or
accession numbers unless ``--show-identifiers`` is given: the console is hospital IT's own,
but a selection is usually judged by counts, dates and descriptions, and a terminal's
scroll-back or a pasted screenshot should not carry identifiers by default. Nothing printed
here goes to a log.

``pacs retrieve``, ``pacs cleanup`` and ``pacs restore`` only queue a job; the running node
(``havenet node serve``) picks it up within seconds, and ``--wait`` follows it to its end.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from common.errors import HavenetError
from node import settings as node_settings
from node.dicom.scu import (
    PacsClient,
    SeriesMatch,
    SeriesQuery,
    StudyMatch,
    StudyQuery,
    parse_date,
)
from node.jobs import service
from node.jobs.exceptions import InvalidSelection
from node.jobs.runner import study_queries
from node.jobs.service import IdentifierKind, JobKind, Method, RetrieveCreate
from node.settings import NodeSettings, Pacs
from node.store import db
from node.store.models import JobStatus

pacs_app = typer.Typer(
    help="Query the hospital PACS and queue retrievals, clean-ups and restores.",
    no_args_is_help=True,
)
jobs_app = typer.Typer(help="Follow and cancel selection jobs.", no_args_is_help=True)

console = Console()
POLL_SECONDS = 1.0  # how often --wait looks at the job

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Node settings file (YAML).", dir_okay=False)
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="The node's data folder.", file_okay=False)
]
PacsOption = Annotated[
    str | None, typer.Option("--pacs", help="Name of the PACS in the settings (default: first).")
]
PatientIdOption = Annotated[
    list[str] | None, typer.Option("--patient-id", help="A patient ID (repeatable).")
]
AccessionOption = Annotated[
    list[str] | None, typer.Option("--accession", help="An accession number (repeatable).")
]
CsvOption = Annotated[
    Path | None,
    typer.Option("--csv", help="CSV file of identifiers, with a header.", dir_okay=False),
]
ColumnOption = Annotated[
    IdentifierKind,
    typer.Option("--column", help="What the CSV column holds: accession or patient_id."),
]
ModalityOption = Annotated[str, typer.Option("--modality", help="e.g. MR (ModalitiesInStudy).")]
DateFromOption = Annotated[
    str | None, typer.Option("--date-from", help="First study date, YYYYMMDD or YYYY-MM-DD.")
]
DateToOption = Annotated[
    str | None, typer.Option("--date-to", help="Last study date, YYYYMMDD or YYYY-MM-DD.")
]
DescriptionOption = Annotated[
    str, typer.Option("--description", help="Study description; wildcards: '*BRAIN*'.")
]
ProtocolOption = Annotated[
    str, typer.Option("--protocol", help="Protocol name (series level); wildcards allowed.")
]
WaitOption = Annotated[bool, typer.Option("--wait", help="Follow the job until it ends.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


# -- plumbing -----------------------------------------------------------------------------


@contextmanager
def _user_errors() -> Iterator[None]:
    """A havenet error becomes its message and exit status 1 (never a traceback)."""
    try:
        yield
    except HavenetError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _settings(config: Path | None, data_dir: Path | None) -> NodeSettings:
    return node_settings.load(config, data_dir=data_dir)


def _sessions(settings: NodeSettings) -> sessionmaker[Session]:
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db.migrate(settings.database)
    return db.make_sessionmaker(db.make_engine(settings.database))


def _pacs(settings: NodeSettings, name: str | None) -> Pacs:
    if not settings.pacs:
        raise InvalidSelection(
            "no PACS is configured: add one under `pacs:` in the settings file "
            "(name, ae_title, host, port)"
        )
    if name is None:
        return settings.pacs[0]
    for pacs in settings.pacs:
        if pacs.name == name:
            return pacs
    names = ", ".join(p.name for p in settings.pacs)
    raise InvalidSelection(f"--pacs: no PACS named {name!r} (configured: {names})")


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _date_option(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return parse_date(value, name=name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from None


def _request(
    *,
    pacs: str | None,
    method: Method,
    patient_ids: list[str] | None,
    accessions: list[str] | None,
    csv_file: Path | None,
    column: IdentifierKind,
    modality: str,
    date_from: str | None,
    date_to: str | None,
    description: str,
    protocol: str,
) -> RetrieveCreate:
    ids = list(patient_ids or [])
    accs = list(accessions or [])
    if csv_file is not None:
        values = service.identifiers_from_csv(csv_file, column)
        (accs if column is IdentifierKind.ACCESSION else ids).extend(values)
    return RetrieveCreate(
        pacs=pacs,
        method=method,
        patient_ids=tuple(ids),
        accession_numbers=tuple(accs),
        modality=modality,
        date_from=_date_option(date_from, "--date-from"),
        date_to=_date_option(date_to, "--date-to"),
        study_description=description,
        protocol_name=protocol,
    )


def _follow(sessions: sessionmaker[Session], job_id: int) -> int:
    """Print the job's progress until it ends; exit status 0 when done, 1 otherwise."""
    last = ""
    while True:
        with db.transaction(sessions) as session:
            job = service.get(session=session, job_id=job_id)
            view = service.describe(job)
        line = _progress_line(view)
        if line != last:
            typer.echo(line)
            last = line
        if view["status"] in (s.value for s in service.FINISHED):
            if view["error"]:
                typer.echo(f"  {view['error']}")
            return 0 if view["status"] == JobStatus.DONE.value else 1
        time.sleep(POLL_SECONDS)


def _progress_line(view: dict[str, Any]) -> str:
    if view["kind"] == JobKind.DELETE.value:
        return (
            f"job {view['id']} {view['status']}: {view['done_items']}/{view['total']} subjects, "
            f"{view['stored']} instances removed"
        )
    return (
        f"job {view['id']} {view['status']}: {view['done_items']}/{view['total']} studies, "
        f"{view['found']} instances found, {view['retrieved']} retrieved, "
        f"{view['stored']} stored, {view['rejected']} rejected"
    )


def _queued(sessions: sessionmaker[Session], job_id: int, wait: bool) -> None:
    typer.echo(
        f"queued as job {job_id}; the running node picks it up within seconds "
        f"(`havenet node jobs show {job_id}`)"
    )
    if wait:
        raise typer.Exit(_follow(sessions, job_id))


# -- pacs ---------------------------------------------------------------------------------


@pacs_app.command("echo")
def echo_command(
    config: ConfigOption = None, data_dir: DataDirOption = None, pacs: PacsOption = None
) -> None:
    """Check that the PACS answers the node (C-ECHO)."""
    with _user_errors():
        settings = _settings(config, data_dir)
        target = _pacs(settings, pacs)
        PacsClient(target, ae_title=settings.ae_title).echo()
    typer.echo(f"{target.name} answers")


@pacs_app.command("find")
def find_command(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    pacs: PacsOption = None,
    patient_id: PatientIdOption = None,
    accession: AccessionOption = None,
    csv_file: CsvOption = None,
    column: ColumnOption = IdentifierKind.ACCESSION,
    modality: ModalityOption = "",
    date_from: DateFromOption = None,
    date_to: DateToOption = None,
    description: DescriptionOption = "",
    protocol: ProtocolOption = "",
    series: Annotated[
        bool, typer.Option("--series", help="List the matching series of each study.")
    ] = False,
    show_identifiers: Annotated[
        bool,
        typer.Option("--show-identifiers", help="Also print patient IDs and accession numbers."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Ask the PACS which studies match (C-FIND); prints counts per study."""
    with _user_errors():
        settings = _settings(config, data_dir)
        target = _pacs(settings, pacs)
        request = _request(
            pacs=pacs,
            method=Method.MOVE,
            patient_ids=patient_id,
            accessions=accession,
            csv_file=csv_file,
            column=column,
            modality=modality,
            date_from=date_from,
            date_to=date_to,
            description=description,
            protocol=protocol,
        )
        client = PacsClient(target, ae_title=settings.ae_title)
        base = StudyQuery(
            modality=request.modality,
            study_description=request.study_description,
            date_from=request.date_from,
            date_to=request.date_to,
        )
        studies = client.find_studies(
            study_queries(base, request.patient_ids, request.accession_numbers)
        )
        found_series: dict[str, list[SeriesMatch]] = {}
        if studies and (series or request.protocol_name):
            queries = [
                SeriesQuery(
                    s.study_uid,
                    modality=request.modality if request.protocol_name else "",
                    protocol_name=request.protocol_name,
                )
                for s in studies
            ]
            for match in client.find_series(queries):
                found_series.setdefault(match.study_uid, []).append(match)
            if request.protocol_name:
                studies = [s for s in studies if s.study_uid in found_series]
    if as_json:
        rows = [_study_json(s, found_series, show_identifiers, series) for s in studies]
        typer.echo(json.dumps(rows, indent=2))
        return
    _print_studies(studies, found_series, show_identifiers=show_identifiers, series=series)


def _study_json(
    study: StudyMatch,
    found_series: dict[str, list[SeriesMatch]],
    show_identifiers: bool,
    series: bool,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "study_date": study.study_date,
        "modalities": list(study.modalities),
        "description": study.description,
        "series": study.series_count,
        "instances": study.instance_count,
    }
    if show_identifiers:
        row["patient_id"] = study.patient_id
        row["accession_number"] = study.accession_number
        row["study_uid"] = study.study_uid
    if series:
        row["matching_series"] = [
            {
                "modality": s.modality,
                "number": s.series_number,
                "description": s.description,
                "protocol": s.protocol_name,
                "instances": s.instance_count,
            }
            for s in found_series.get(study.study_uid, [])
        ]
    return row


def _print_studies(
    studies: list[StudyMatch],
    found_series: dict[str, list[SeriesMatch]],
    *,
    show_identifiers: bool,
    series: bool,
) -> None:
    table = Table(title=_plural(len(studies), "study", "studies"), title_justify="left")
    table.add_column("#", justify="right")
    if show_identifiers:
        table.add_column("patient ID")
        table.add_column("accession")
    table.add_column("date")
    table.add_column("modalities")
    table.add_column("description")
    table.add_column("series", justify="right")
    table.add_column("instances", justify="right")
    for number, study in enumerate(sorted(studies, key=lambda s: s.study_date), start=1):
        cells = [str(number)]
        if show_identifiers:
            cells += [study.patient_id, study.accession_number]
        chosen = found_series.get(study.study_uid)
        cells += [
            _pretty_date(study.study_date),
            "/".join(study.modalities),
            study.description,
            _count(study.series_count) if chosen is None else f"{len(chosen)} matching",
            _count(study.instance_count)
            if chosen is None
            else str(sum(s.instance_count or 0 for s in chosen)),
        ]
        table.add_row(*cells)
        if series and chosen:
            for match in sorted(chosen, key=lambda s: s.series_number or 0):
                table.add_row(
                    *([""] * (3 if show_identifiers else 1)),
                    "",
                    f"  {match.modality} #{_count(match.series_number)}",
                    f"  {match.description} [{match.protocol_name}]",
                    "",
                    _count(match.instance_count),
                )
    console.print(table, markup=False, highlight=False)
    patients = len({s.patient_id for s in studies if s.patient_id})
    instances = sum(s.instance_count or 0 for s in studies)
    typer.echo(
        f"{_plural(len(studies), 'study', 'studies')} of {_plural(patients, 'patient')}, "
        f"{_plural(instances, 'instance')}"
    )


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def _pretty_date(value: str) -> str:
    if len(value) >= 8 and value[:8].isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:8]}"
    return value


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


@pacs_app.command("retrieve")
def retrieve_command(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    pacs: PacsOption = None,
    patient_id: PatientIdOption = None,
    accession: AccessionOption = None,
    csv_file: CsvOption = None,
    column: ColumnOption = IdentifierKind.ACCESSION,
    modality: ModalityOption = "",
    date_from: DateFromOption = None,
    date_to: DateToOption = None,
    description: DescriptionOption = "",
    protocol: ProtocolOption = "",
    method: Annotated[
        Method,
        typer.Option(
            "--method",
            help="move: C-MOVE to the node's AE title (the PACS must know it); "
            "get: C-GET on the node's own association.",
        ),
    ] = Method.MOVE,
    wait: WaitOption = False,
) -> None:
    """Queue a retrieval job: identifiers (flags or CSV) and/or a query become one job."""
    with _user_errors():
        settings = _settings(config, data_dir)
        _pacs(settings, pacs)
        request = _request(
            pacs=pacs,
            method=method,
            patient_ids=patient_id,
            accessions=accession,
            csv_file=csv_file,
            column=column,
            modality=modality,
            date_from=date_from,
            date_to=date_to,
            description=description,
            protocol=protocol,
        )
        keyring = settings.keyring()
        sessions = _sessions(settings)
        with db.transaction(sessions) as session:
            job = service.create_retrieve(
                session=session, keyring=keyring, request=request, actor=_actor()
            )
            job_id = job.id
        _queued(sessions, job_id, wait)


@pacs_app.command("cleanup")
def cleanup_command(
    subject_key: Annotated[
        list[str] | None, typer.Option("--subject-key", help="A subject key (repeatable).")
    ] = None,
    subjects_file: Annotated[
        Path | None,
        typer.Option(
            "--subjects-file", help="A file of subject keys, one per line.", dir_okay=False
        ),
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", help="The project these subjects belong to.")
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    wait: WaitOption = False,
) -> None:
    """Queue removing subjects' data from the node; `pacs restore` brings it back.

    The correspondence table stays, so a restore gives the same pseudonyms and UIDs.
    """
    with _user_errors():
        keys = list(subject_key or [])
        if subjects_file is not None:
            keys += _lines(subjects_file)
        settings = _settings(config, data_dir)
        sessions = _sessions(settings)
        with db.transaction(sessions) as session:
            job = service.create_delete(
                session=session, subject_keys=keys, actor=_actor(), project=project
            )
            job_id = job.id
        _queued(sessions, job_id, wait)


@pacs_app.command("restore")
def restore_command(
    subject_key: Annotated[
        list[str] | None, typer.Option("--subject-key", help="A subject key (repeatable).")
    ] = None,
    study_uid: Annotated[
        list[str] | None,
        typer.Option("--study-uid", help="A stage-1 study UID to restore (repeatable)."),
    ] = None,
    from_job: Annotated[
        int | None, typer.Option("--from-job", help="Restore what this clean-up job removed.")
    ] = None,
    pacs: PacsOption = None,
    method: Annotated[Method, typer.Option("--method", help="move or get.")] = Method.MOVE,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    wait: WaitOption = False,
) -> None:
    """Queue fetching again from the PACS what a clean-up removed."""
    with _user_errors():
        settings = _settings(config, data_dir)
        _pacs(settings, pacs)
        sessions = _sessions(settings)
        with db.transaction(sessions) as session:
            job = service.create_restore(
                session=session,
                actor=_actor(),
                subject_keys=subject_key or [],
                study_uids=study_uid or [],
                restore_of=from_job,
                pacs=pacs,
                method=method,
            )
            job_id = job.id
        _queued(sessions, job_id, wait)


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidSelection(f"{path}: cannot read the file ({exc.strerror})") from None
    return [line.split(",")[0].strip() for line in text.splitlines() if line.strip()]


# -- jobs ---------------------------------------------------------------------------------


@jobs_app.command("list")
def list_command(
    status: Annotated[
        JobStatus | None, typer.Option("--status", help="Only jobs in this state.")
    ] = None,
    kind: Annotated[JobKind | None, typer.Option("--kind", help="Only jobs of this kind.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """The newest jobs first, with their counters."""
    with _user_errors():
        sessions = _sessions(_settings(config, data_dir))
        with db.transaction(sessions) as session:
            views = [
                service.describe(job)
                for job in service.get_all(session=session, status=status, kind=kind, limit=limit)
            ]
    if as_json:
        typer.echo(json.dumps(views, indent=2))
        return
    table = Table(title=f"{len(views)} jobs", title_justify="left")
    for name in ("id", "kind", "status", "items", "found", "retrieved", "stored", "rejected"):
        table.add_column(name, justify="left" if name in ("kind", "status") else "right")
    table.add_column("created")
    for view in views:
        table.add_row(
            str(view["id"]),
            view["kind"],
            view["status"],
            f"{view['done_items']}/{view['total']}",
            str(view["found"]),
            str(view["retrieved"]),
            str(view["stored"]),
            str(view["rejected"]),
            (view["created_at"] or "")[:19],
        )
    console.print(table, markup=False, highlight=False)


@jobs_app.command("show")
def show_command(
    job_id: Annotated[int, typer.Argument(help="The job's number.")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """A job's spec (identifiers left out), counters and report."""
    with _user_errors():
        sessions = _sessions(_settings(config, data_dir))
        with db.transaction(sessions) as session:
            view = service.describe(service.get(session=session, job_id=job_id))
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    out = [_progress_line(view), f"  attempts: {view['attempts']}"]
    if view["next_attempt_at"]:
        out.append(f"  next attempt: {view['next_attempt_at']}")
    if view["error"]:
        out.append(f"  error: {view['error']}")
    spec = {k: v for k, v in view["spec"].items() if v not in (None, "", 0, [])}
    out.append(f"  spec: {json.dumps(spec)}")
    summary = view["report"].get("summary")
    if summary:
        out.append(f"  summary: {json.dumps(summary)}")
    for reason in view["report"].get("rejected", []):
        out.append(f"  rejected {reason['count']}: {reason['code']} - {reason['reason']}")
    unmatched = view["report"].get("unmatched")
    if unmatched and any(unmatched.values()):
        out.append(f"  not in the PACS: {json.dumps(unmatched)}")
    for key in ("unresolved_subjects", "missing_studies"):
        if view["report"].get(key):
            out.append(f"  {key.replace('_', ' ')}: {', '.join(view['report'][key])}")
    for uid, entry in view["report"].get("studies", {}).items():
        if entry["state"] != "retrieved":
            out.append(f"  study {uid}: {entry['state']} {entry.get('error', '')}".rstrip())
    for key, entry in view["report"].get("subjects", {}).items():
        out.append(f"  subject {key}: {entry['state']} ({entry['instances']} instances)")
    typer.echo("\n".join(out))


@jobs_app.command("cancel")
def cancel_command(
    job_id: Annotated[int, typer.Argument(help="The job's number.")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Stop a job: a waiting one now, a running one at its next check (C-CANCEL to the PACS)."""
    with _user_errors():
        sessions = _sessions(_settings(config, data_dir))
        with db.transaction(sessions) as session:
            service.cancel(session=session, job_id=job_id, actor=_actor())
    typer.echo(f"job {job_id} cancelled")
