"""`havenet demo`: the whole network on one machine, as local processes, no containers.

A hub and two nodes (`havenet hub serve`, `havenet node serve`) on SQLite and local files in
the demo's folder, fed by two synthetic hospitals, go through enrollment, catalogue
publication, a federated query, a data request, hospital IT's approval, the release, curation
and an export (``compose.scenario``). Each step is printed with the addresses of the APIs
and pages; then the network keeps running until Ctrl-C. With ``--once`` everything stops at
the end, ``--json`` prints the summary as JSON, and the exit status is 1 if any step failed.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from compose.scenario import Scenario, Summary

MARKER = ".havenet-demo"  # the folder is the demo's own: a new run may empty it
# What the first demo (offline de-identification only) left, without a marker.
EARLIER_DEMO = frozenset({"hospital", "stage1", "stage2", "site-secret"})
STEPS = 9  # the steps of compose.scenario.Scenario.run


class Reporter:
    """Numbered step headings and the lines under them (on stderr when stdout is JSON)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.step = 0
        self.started = time.monotonic()

    def __call__(self, text: str, *, step: bool = False) -> None:
        if step:
            self.step += 1
            elapsed = time.monotonic() - self.started
            self.console.print(
                f"\n[bold][{self.step}/{STEPS}] {text}[/] [dim]({elapsed:.0f} s)[/]",
                highlight=False,
            )
        else:
            self.console.print(f"  {text}", highlight=False, markup=False)


def demo(
    workdir: Annotated[
        Path, typer.Option(help="The demo's folder (emptied first if a demo made it).")
    ] = Path("demo-output"),
    patients: Annotated[
        int, typer.Option(min=12, max=150, help="Patients of each synthetic hospital.")
    ] = 50,
    once: Annotated[
        bool, typer.Option("--once", help="Stop everything after the last step.")
    ] = False,
    json_summary: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON (steps go to stderr).")
    ] = False,
    orthanc: Annotated[
        bool,
        typer.Option(
            "--orthanc/--no-orthanc",
            help="Feed hospital-2 from a local Orthanc PACS when Orthanc is installed.",
        ),
    ] = True,
    ontology: Annotated[
        bool,
        typer.Option(
            "--ontology",
            help="Load the vocabularies into the hub and the nodes at start, in the background "
            "(concept typeahead and expansion; about a minute more on two cores).",
        ),
    ] = False,
) -> None:
    """Run a hub and two hospital nodes with synthetic data through every step."""
    console = Console(stderr=json_summary, soft_wrap=True)
    workdir = workdir.resolve()
    _prepare(workdir)
    scenario = Scenario(
        workdir,
        patients=patients,
        say=Reporter(console),
        use_orthanc=orthanc,
        load_ontology=ontology,
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = scenario.run()
        _write_summary(workdir, summary)
        if summary.ok and not once:
            _print_addresses(console, scenario)
            stopped = _keep_running(console, scenario)
            if stopped:
                summary.ok, summary.failed_step, summary.error = False, "running", stopped
    except KeyboardInterrupt:
        console.print("\nstopping the network …")
        raise typer.Exit(130) from None
    finally:
        scenario.stop()
        signal.signal(signal.SIGTERM, previous)
    _report(console, summary, json_summary)
    if not summary.ok:
        raise typer.Exit(1)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _prepare(workdir: Path) -> None:
    """An empty folder for this run; a folder the demo did not make is left alone."""
    if workdir.exists() and any(workdir.iterdir()):
        names = {path.name for path in workdir.iterdir()}
        if not (workdir / MARKER).is_file() and not names <= EARLIER_DEMO:
            typer.echo(
                f"error: {workdir} holds files the demo did not write; "
                "remove it or choose another --workdir",
                err=True,
            )
            raise typer.Exit(2)
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by `havenet demo`; emptied by the next run\n")


def _write_summary(workdir: Path, summary: Summary) -> None:
    (workdir / "summary.json").write_text(json.dumps(summary.as_dict(), indent=1) + "\n")


def _print_addresses(console: Console, scenario: Scenario) -> None:
    hub, users = scenario.hub, scenario.users
    say = console.print
    say("\n[bold]The network is running.[/] Ctrl-C stops it.", highlight=False)
    say(f"  hub     API {hub.url}/docs   pages {hub.url}/ui/", highlight=False)
    for name, token in (
        ("ada (researcher)", users.researcher),
        ("cora (curator)", users.curator),
        ("demo-admin (admin)", users.admin),
    ):
        say(f"          log in as {name} with the token {token}", highlight=False)
    for hospital in scenario.hospitals:
        node = hospital.node
        say(
            f"  {hospital.name}  API {node.api_url}/docs   pages {node.api_url}/ui/   "
            f"token {node.api_token}",
            highlight=False,
        )
        say(
            f"          DICOM {node.ae_title}@127.0.0.1:{node.dicom_port}; hospital IT's "
            f"commands: havenet node ... --config {node.config_path}",
            highlight=False,
        )
        if hospital.pacs is not None:
            say(f"          its PACS (Orthanc): {hospital.pacs.url}", highlight=False)
    say(
        f"  the hub's commands: set -a; . {hub.folder / 'hub.env'}; set +a; havenet hub ...",
        highlight=False,
    )
    say(f"  the query again (ada's token): {scenario.query_command()}", highlight=False)


def _keep_running(console: Console, scenario: Scenario) -> str:
    """Until Ctrl-C or SIGTERM (""), or until a process stops by itself (which one)."""
    try:
        while True:
            time.sleep(1.0)
            stopped = scenario.processes_running()
            if stopped:
                console.print(f"\n{stopped}; stopping the network", highlight=False)
                return stopped
    except KeyboardInterrupt:
        console.print("\nstopping the network …")
        return ""


def _report(console: Console, summary: Summary, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary.as_dict(), indent=1))
        return
    console.print("")
    for name, node in summary.nodes.items():
        console.print(
            f"{name}: {node.instances_ingested} instances ingested, "
            f"{node.instances_rejected} rejected; {node.catalogue_cells} catalogue cells; "
            f"query {node.query_state} ({_shown(node.query_patients)} patients); "
            f"{node.studies_released} imaging studies released, {node.studies_accepted} "
            f"accepted, {node.studies_exported} exported; {node.clinical_exported} patients' "
            "clinical records exported",
            highlight=False,
        )
    if summary.ok:
        console.print(f"[bold green]done[/] in {summary.seconds:.0f} s", highlight=False)
    else:
        where = summary.failed_step or "start"
        console.print(f"[bold red]failed[/] at {where}: {escape(summary.error)}", highlight=False)


def _shown(value: Any) -> str:
    return "withheld" if value is None else str(value)
