"""`havenet hub query COHORT.json`: a federated cohort count through the hub's API."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from common.schemas.cohort import COHORT_COUNT, CohortCountRequest
from hub.query.schemas import QueryResult

TOKEN_VARIABLE = "HAVENET_HUB_TOKEN"  # noqa: S105 (the name of a variable, not a token)
POLL_SECONDS = 1.0


def query_command(
    cohort: Annotated[Path, typer.Argument(help="The cohort definition (JSON).", dir_okay=False)],
    project: Annotated[str, typer.Option("--project", help="The project asking.")],
    hub: Annotated[str, typer.Option("--hub", help=f"The hub; the token from ${TOKEN_VARIABLE}.")],
    breakdown: Annotated[
        str, typer.Option("--breakdown", help="e.g. sex,age_band,sequence_type")
    ] = "",
    stat: Annotated[str, typer.Option("--stat", help="A measurement, e.g. LOINC:xxxx.")] = "",
    by: Annotated[
        str, typer.Option("--by", help="A breakdown name, or @FILE.json: a criterion to split on.")
    ] = "",
    bins: Annotated[
        str, typer.Option("--bins", help="Histogram edges, e.g. 0,500,1000,1500.")
    ] = "",
    nodes: Annotated[str, typer.Option("--nodes", help="Only these nodes (comma-separated).")] = "",
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for answers.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Ask every node (or --nodes) how many patients meet the cohort, with breakdowns and a
    statistic under each node's disclosure control; print the network's combined answer."""
    token = os.environ.get(TOKEN_VARIABLE, "")
    if not token:
        _fail(f"set {TOKEN_VARIABLE} to your hub token", 2)
    payload = _payload(cohort, project, breakdown, stat, by, bins)
    body: dict[str, Any] = {"kind": COHORT_COUNT, "project": project, "payload": payload}
    if nodes:
        body["nodes"] = [n.strip() for n in nodes.split(",") if n.strip()]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=hub.rstrip("/"), headers=headers, timeout=30) as client:
        created = _checked(client.post("/api/v1/tasks", json=body))
        task_id = int(created["id"])
        deadline = time.monotonic() + wait
        while True:
            result = QueryResult.model_validate(
                _checked(client.get(f"/api/v1/tasks/{task_id}/cohort"))
            )
            if result.complete or time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    _print(result)


def _payload(cohort: Path, project: str, breakdown: str, stat: str, by: str, bins: str) -> Any:
    try:
        definition = json.loads(cohort.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        _fail(f"{cohort}: not a readable JSON file ({type(exc).__name__})", 2)
    payload: dict[str, Any] = {
        "project": project,
        "cohort": definition,
        "breakdowns": [b.strip() for b in breakdown.split(",") if b.strip()],
    }
    if stat:
        statistic: dict[str, Any] = {"measurement": stat, "bin_edges": _edges(bins)}
        if by.startswith("@"):
            try:
                statistic["split"] = json.loads(Path(by[1:]).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                _fail(f"{by[1:]}: not a readable JSON file ({type(exc).__name__})", 2)
        elif by:
            statistic["by"] = by
        payload["statistic"] = statistic
    try:
        CohortCountRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "$"
        _fail(f"{cohort}: {where}: {first['msg']}", 2)
    return payload


def _edges(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        _fail("--bins: numbers separated by commas", 2)


def _checked(response: httpx.Response) -> Any:
    if not response.is_success:
        _fail(f"the hub answered {response.status_code}: {response.text[:300]}")
    return response.json()


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _print(result: QueryResult) -> None:
    console = Console()
    console.print(
        f"[bold]{result.patients.display()}[/] patients, {result.studies.display()} studies, "
        f"{result.series.display()} series ({result.answered} of {len(result.nodes)} nodes "
        "answered; >= : some node withheld a count below its threshold)"
    )
    states = Table("node", "state")
    for node, state in sorted(result.nodes.items()):
        states.add_row(node, state)
    console.print(states)
    for name, cells in result.breakdowns.items():
        shown = ", ".join(
            f"{value or 'unknown'} {figure.display()}" for value, figure in cells.items()
        )
        console.print(f"{name}: {shown}")
    for group in result.groups:
        console.print(
            f"{group.group}: n={group.n} mean={group.mean} sd={group.sd} median={group.median}"
        )
    if result.welch is not None:
        w = result.welch
        console.print(
            f"Welch's t-test {w.groups[0]} vs {w.groups[1]}: t={w.t:.3f} df={w.df:.1f} "
            f"p={w.p:.4f} (difference of means {w.mean_difference:.3f})"
        )
