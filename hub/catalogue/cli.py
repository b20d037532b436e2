"""`havenet hub search`: the catalogue from the command line, through the hub's API
(``--hub URL`` with a user token) or, on the hub's own machine, on its database."""

from __future__ import annotations

import os
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from common.errors import ConfigurationError
from hub import settings as hub_settings
from hub.catalogue import service as catalogue
from hub.catalogue.ontology import concept_expander, ensure_loaded
from hub.catalogue.schemas import CatalogueQuery, SearchResult
from hub.db import make_engine, make_sessionmaker, migrate, transaction

TOKEN_VARIABLE = "HAVENET_HUB_TOKEN"  # noqa: S105 (the name of a variable, not a token)

ListOption = Annotated[list[str] | None, typer.Option(help="Repeat for alternatives.")]


def search_command(
    modality: ListOption = None,
    body_part: Annotated[list[str] | None, typer.Option("--body-part")] = None,
    sequence: Annotated[
        list[str] | None,
        typer.Option("--sequence", help="T1w, FLAIR, DWI … or a family: perfusion, diffusion."),
    ] = None,
    contrast: Annotated[bool | None, typer.Option("--contrast/--no-contrast")] = None,
    manufacturer: ListOption = None,
    field_strength: Annotated[list[float] | None, typer.Option("--field-strength")] = None,
    max_slice_thickness: Annotated[
        float | None, typer.Option("--max-slice-thickness", help="mm")
    ] = None,
    year_from: Annotated[int | None, typer.Option("--from-year")] = None,
    year_to: Annotated[int | None, typer.Option("--to-year")] = None,
    concept: Annotated[
        list[str] | None, typer.Option("--concept", help="SYSTEM:CODE, e.g. ICD10CM:G30.")
    ] = None,
    hub: Annotated[
        str, typer.Option("--hub", help=f"The hub's address; the token from ${TOKEN_VARIABLE}.")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Search the catalogue: counts per node and facet counts (aggregates only)."""
    query = CatalogueQuery(
        modality=modality or [],
        body_part=body_part or [],
        sequence_type=sequence or [],
        contrast=contrast,
        manufacturer=manufacturer or [],
        field_strength=field_strength or [],
        slice_thickness_max=max_slice_thickness,
        year_from=year_from,
        year_to=year_to,
        concepts=concept or [],
    )
    result = _remote(hub, query) if hub else _local(query)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    _print(result)


def _remote(hub: str, query: CatalogueQuery) -> SearchResult:
    token = os.environ.get(TOKEN_VARIABLE, "")
    if not token:
        typer.echo(f"error: set {TOKEN_VARIABLE} to your hub token", err=True)
        raise typer.Exit(2)
    try:
        response = httpx.post(
            f"{hub.rstrip('/')}/api/v1/catalogue/search",
            json=query.model_dump(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        typer.echo(f"error: the hub cannot be reached ({type(exc).__name__})", err=True)
        raise typer.Exit(1) from None
    if not response.is_success:
        typer.echo(f"error: the hub answered {response.status_code}: {response.text}", err=True)
        raise typer.Exit(1)
    return SearchResult.model_validate(response.json())


def _local(query: CatalogueQuery) -> SearchResult:
    """On the hub's machine: its database, with the settings ``havenet hub serve`` uses."""
    try:
        settings = hub_settings.load()
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    migrate(settings.database)
    engine = make_engine(settings.database)
    try:
        if ensure_loaded(engine):
            typer.echo("the vocabularies were loaded into the hub database (once)", err=True)
        with transaction(make_sessionmaker(engine)) as session:
            return catalogue.search(query, session=session, expand=concept_expander(session))
    finally:
        engine.dispose()


def _print(result: SearchResult) -> None:
    console = Console()
    total = result.total
    console.print(
        f"[bold]{total.series}[/] series, {total.studies} studies, at most {total.patients} "
        f"patients (view {result.view}; withheld cells are in no count)"
    )
    nodes = Table("node", "patients (at most)", "studies", "series")
    for node in result.nodes:
        nodes.add_row(node.node, str(node.patients), str(node.studies), str(node.series))
    console.print(nodes)
    for name, values in result.facets.items():
        if values:
            shown = ", ".join(f"{v.value} {v.series}" for v in values[:8])
            console.print(f"{name}: {shown}")
    for found in result.concepts:
        per_node = ", ".join(f"{n} {c}" for n, c in sorted(found.nodes.items())) or "none"
        console.print(f"{found.concept} ({found.codes} codes): {per_node}")
    if result.note:
        console.print(f"[yellow]{result.note}[/]")


def ontology_load() -> None:
    """Load the vocabularies into the hub's database (once; `serve` does it by default)."""
    try:
        settings = hub_settings.load()
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    migrate(settings.database)
    engine = make_engine(settings.database)
    try:
        loaded = ensure_loaded(engine)
    finally:
        engine.dispose()
    typer.echo("vocabularies loaded" if loaded else "vocabularies already loaded")
