"""`havenet node catalogue show|publish`: what the node would publish, and publishing it."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from common.errors import HavenetError
from node.catalogue import publish as publishing
from node.federation.cli import ConfigOption, DataDirOption, _actor, _fail, _sessions, _settings

catalogue_app = typer.Typer(
    help="The node's catalogue: aggregates of its store, small cells withheld.",
    no_args_is_help=True,
)


@catalogue_app.command("show")
def show(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the publication as JSON.")] = False,
) -> None:
    """Build the catalogue and print it, exactly as it would leave the node."""
    settings = _settings(config, data_dir)
    with _sessions(settings) as sessions:
        publication = publishing.build(sessions, settings)
    if as_json:
        typer.echo(publication.model_dump_json(indent=2))
        return
    views: dict[str, int] = {}
    for cell in publication.cells:
        views[cell.view] = views.get(cell.view, 0) + 1
    typer.echo(
        f"threshold {publication.threshold}, counts rounded to {publication.rounding}; "
        f"{len(publication.cells)} cells ({publication.suppressed_cells} withheld), "
        f"{len(publication.marginals)} marginals ({publication.suppressed_marginals} withheld)"
    )
    for view, count in sorted(views.items()):
        typer.echo(f"  view {view}: {count} cells")


@catalogue_app.command("publish")
def publish(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Build the catalogue and send it to the hub now (it replaces the last one there)."""
    settings = _settings(config, data_dir)
    try:
        with _sessions(settings) as sessions:
            receipt = publishing.publish(sessions, settings, actor=_actor())
    except HavenetError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"published: {json.dumps(receipt)}")
