"""`havenet node ontology-load`: the vocabularies into the node's database (queries expand
concepts with them; `serve` loads them at start unless ``ontology_at_start`` is off).

`havenet node queries list|show|approve|decline`: hospital IT decides on the federated
queries that wait for local approval (``query_auto_answer`` off). A decision is sent to the
hub at once; when the hub cannot be reached, the running node sends it later.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from common.errors import HavenetError
from node.federation.cli import ConfigOption, DataDirOption, _actor, _fail, _sessions, _settings
from node.query import approval as approvals
from node.query import delivery
from node.query.disclosure import Policy
from node.query.schemas import QueryApprovalRead
from node.settings import NodeSettings
from node.store.db import make_engine, migrate, transaction
from ontology import loader

queries_app = typer.Typer(
    help="Federated queries awaiting local approval: list, show, approve or decline.",
    no_args_is_help=True,
)

TaskId = Annotated[int, typer.Argument(help="The query's task number (as the hub gave it).")]


def ontology_load(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Load the vocabularies into the node's database (once)."""
    settings = _settings(config, data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.database)
    engine = make_engine(settings.database)
    try:
        loaded = loader.ensure_loaded(engine)
    finally:
        engine.dispose()
    typer.echo("vocabularies loaded" if loaded else "vocabularies already loaded")


def _reads(settings: NodeSettings, task_id: int | None, decided: bool) -> list[QueryApprovalRead]:
    policy = Policy.from_settings(settings)
    secret = settings.secret()
    with _sessions(settings) as sessions, transaction(sessions) as session:
        if task_id is not None:
            found = [approvals.require(session=session, task_id=task_id)]
        elif decided:
            found = approvals.listing(session=session)
        else:
            found = approvals.pending(session=session)
        return [approvals.read(a, session=session, policy=policy, secret=secret) for a in found]


def _answer_line(query: QueryApprovalRead) -> str:
    if query.answer is None:
        return f"refused: {query.refusal}" if query.refusal else "no answer"
    shown = []
    for name in ("patients", "studies", "series"):
        value = query.answer[name].get("value")
        shown.append(
            f"{value if value is not None else '<' + str(query.answer['min_cell'])} {name}"
        )
    return ", ".join(shown)


def _print(query: QueryApprovalRead) -> None:
    typer.echo(
        f"task {query.task_id}  {query.state.value}  project {query.project}  "
        f"asked by {query.requested_by}  received {query.received_at:%Y-%m-%d %H:%M}  "
        f"expires {query.expires_at:%Y-%m-%d %H:%M} UTC"
    )
    for line in query.cohort:
        typer.echo(f"    {line}")
    would = "would answer" if query.state.value == "awaiting" else "answered"
    typer.echo(f"  {would}: {_answer_line(query)}")
    if query.decided_by:
        sent = f"sent ({query.hub_reply})" if query.sent_at else "not sent to the hub yet"
        typer.echo(f"  decided by {query.decided_by}; {sent}")


@queries_app.command("list")
def list_queries(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    decided: Annotated[
        bool, typer.Option("--decided", help="Also decided and expired queries, newest first.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Queries awaiting approval, oldest first: the cohort in words, who asks, and the
    answer the node would give (each is evaluated now)."""
    settings = _settings(config, data_dir)
    try:
        found = _reads(settings, None, decided)
    except HavenetError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps([q.model_dump(mode="json") for q in found], indent=1))
        return
    if not found:
        typer.echo("no queries awaiting approval")
    for query in found:
        _print(query)


@queries_app.command("show")
def show(task_id: TaskId, config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """One query as JSON, with the answer the node would give (or gave)."""
    settings = _settings(config, data_dir)
    try:
        [found] = _reads(settings, task_id, False)
    except HavenetError as exc:
        raise _fail(str(exc)) from None
    typer.echo(found.model_dump_json(indent=1))


def _send(settings: NodeSettings) -> None:
    try:
        with _sessions(settings) as sessions:
            delivery.send_due(settings, sessions)
    except HavenetError as exc:
        typer.echo(f"not sent to the hub yet ({exc}); the running node sends it later")


@queries_app.command("approve")
def approve(task_id: TaskId, config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Answer the query under disclosure control (budget and differencing guard apply now)
    and send the answer to the hub."""
    settings = _settings(config, data_dir)
    try:
        with _sessions(settings) as sessions, transaction(sessions) as session:
            approvals.approve(
                task_id,
                session=session,
                policy=Policy.from_settings(settings),
                secret=settings.secret(),
                actor=_actor(),
            )
    except HavenetError as exc:
        raise _fail(str(exc)) from None
    _send(settings)
    [found] = _reads(settings, task_id, False)
    _print(found)


@queries_app.command("decline")
def decline(
    task_id: TaskId,
    reason: Annotated[str, typer.Option(help="Why (sent to the researcher; no patient data).")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Refuse the query, with a reason the hub and the researcher will see."""
    if not reason.strip():
        raise _fail("--reason: say why the query is declined", 2)
    settings = _settings(config, data_dir)
    try:
        with _sessions(settings) as sessions, transaction(sessions) as session:
            approvals.decline(task_id, session=session, reason=reason, actor=_actor())
    except HavenetError as exc:
        raise _fail(str(exc)) from None
    _send(settings)
    [found] = _reads(settings, task_id, False)
    _print(found)
