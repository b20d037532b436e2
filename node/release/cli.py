"""`havenet node requests list|show|approve|decline|retry|rejections`: hospital IT decides on
the hub's data requests; approval runs stage 2 at once and queues the studies for upload (the
running node sends them); a failed release can be retried."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from common.errors import HavenetError
from common.schemas.release import ReleaseState
from node.federation.cli import ConfigOption, DataDirOption, _actor, _fail, _sessions, _settings
from node.release import service as releases
from node.release import workflow
from node.release.stage2 import Stage2Result
from node.store.db import transaction

requests_app = typer.Typer(
    help="Data requests from the hub: list, approve (stage 2 and upload), decline or retry.",
    no_args_is_help=True,
)

RequestId = Annotated[int, typer.Argument(help="The request's number (as the hub gave it).")]


@requests_app.command("list")
def list_requests(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    state: Annotated[ReleaseState | None, typer.Option(help="Only requests in this state.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The hub's data requests, oldest first."""
    settings = _settings(config, data_dir)
    with _sessions(settings) as sessions, transaction(sessions) as session:
        found = [releases.read(r) for r in releases.listing(session=session, state=state)]
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in found], indent=1))
        return
    if not found:
        typer.echo("no data requests")
    for r in found:
        named = len(r.selection.get("study_uids", [])) + len(r.selection.get("subject_keys", []))
        selected = (
            ("a cohort" + (f" + {named} named" if named else ""))
            if r.selection.get("cohort")
            else f"{named} named"
        )
        typer.echo(
            f"{r.id}\t{r.state.value}\tproject {r.project}\tprofile {r.profile}\t"
            f"by {r.requested_by}\t{selected}\t{r.studies} released\t{len(r.held)} held"
            + (f"\t{r.reason}" if r.reason else "")
        )


@requests_app.command("show")
def show(
    request_id: RequestId, config: ConfigOption = None, data_dir: DataDirOption = None
) -> None:
    """One request as JSON: what it selects here today (patients, studies, instances — counts
    only), and once released the files held back and why."""
    settings = _settings(config, data_dir)
    try:
        with _sessions(settings) as sessions, transaction(sessions) as session:
            request = releases.require(session=session, hub_request_id=request_id)
            found = releases.read(request, releases.selects(session=session, request=request))
    except HavenetError as exc:
        raise _fail(str(exc)) from None
    typer.echo(found.model_dump_json(indent=1))


@requests_app.command("approve")
def approve(
    request_id: RequestId, config: ConfigOption = None, data_dir: DataDirOption = None
) -> None:
    """Approve: run stage 2 now; studies that pass the leak check are queued for upload."""
    settings = _settings(config, data_dir)
    try:
        with _sessions(settings) as sessions:
            result = workflow.approve_and_release(sessions, settings, request_id, _actor())
    except HavenetError as exc:
        raise _fail(str(exc)) from None
    _print_queued("approved", result)


def _print_queued(done: str, result: Stage2Result) -> None:
    studies = [m for m in result.manifests if m.files]
    files = sum(len(m.files) for m in studies)
    records = len(result.manifests) - len(studies)
    typer.echo(
        f"{done}: {len(studies)} studies ({files} files) and {records} patients' clinical "
        f"records queued for upload, {len(result.held)} held"
    )
    for held in result.held:
        typer.echo(f"  held {held.sop_uid}: {held.reason}")


@requests_app.command("retry")
def retry(
    request_id: RequestId, config: ConfigOption = None, data_dir: DataDirOption = None
) -> None:
    """Retry a failed release (stage 2 failed, or the hub refused a study): stage 2 runs
    again and every study is queued again; the hub keeps what it has."""
    settings = _settings(config, data_dir)
    try:
        with _sessions(settings) as sessions:
            result = workflow.retry_and_release(sessions, settings, request_id, _actor())
    except HavenetError as exc:
        raise _fail(str(exc)) from None
    _print_queued("retried", result)


@requests_app.command("decline")
def decline(
    request_id: RequestId,
    reason: Annotated[str, typer.Option(help="Why (sent to the hub; no patient data).")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Decline, with a reason the hub and the researcher will see."""
    settings = _settings(config, data_dir)
    try:
        with _sessions(settings) as sessions, transaction(sessions) as session:
            releases.decline(
                session=session, hub_request_id=request_id, reason=reason, actor=_actor()
            )
    except HavenetError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"declined data request {request_id}")


@requests_app.command("rejections")
def rejections(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Studies a curator at the hub rejected, and why."""
    settings = _settings(config, data_dir)
    with _sessions(settings) as sessions, transaction(sessions) as session:
        found = [releases.read_rejection(r) for r in releases.rejections(session=session)]
    for r in found:
        typer.echo(f"request {r.request_id}\tstudy {r.study_uid}\t{r.reason}")
