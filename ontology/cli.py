"""`havenet ontology ...`: load the vocabularies, expand a concept, search names, normalize text."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from ontology import expand as expansion
from ontology import loader
from ontology.exceptions import OntologyError
from ontology.normalize import SeriesText, normalize

logger = logging.getLogger(__name__)

ontology_app = typer.Typer(
    help="Code systems, hierarchies and cross-maps; normalization of DICOM free text.",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_DATABASE = "sqlite:///havenet-ontology.db"

DatabaseOption = Annotated[
    str,
    typer.Option(
        "--database",
        "-d",
        help="SQLAlchemy URL of the ontology database (env HAVENET_ONTOLOGY_DATABASE).",
    ),
]


def _database(url: str) -> str:
    return url or os.environ.get("HAVENET_ONTOLOGY_DATABASE", DEFAULT_DATABASE)


def _engine(url: str) -> Engine:
    """An engine on a database that holds the ontology, loading it on first use."""
    resolved = _database(url)
    engine = create_engine(resolved)
    if resolved.startswith("sqlite:///"):
        path = resolved.removeprefix("sqlite:///")
        if path and path != ":memory:" and not Path(path).exists():
            typer.echo(f"loading the vocabularies into {path} (once) ...", err=True)
            loader.load(engine)
            return engine
    loader.create_tables(engine)
    return engine


def _fail(error: OntologyError) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code=2)


@ontology_app.command("load")
def load_command(
    database: DatabaseOption = "",
    icd_root: Annotated[
        list[str] | None,
        typer.Option(help="Load only these ICD-10/-CM subtrees (repeat), e.g. --icd-root G30."),
    ] = None,
) -> None:
    """Load (or update) every vocabulary; loading unchanged content changes nothing."""
    report = loader.load(create_engine(_database(database)), icd_roots=icd_root or None)
    typer.echo(f"loaded: {', '.join(report.loaded) or '-'}")
    typer.echo(f"unchanged: {', '.join(report.unchanged) or '-'}")
    if report.mappings is not None:
        typer.echo(f"cross-maps: {report.mappings} ({report.unresolved_mappings} not loaded)")


@ontology_app.command("expand")
def expand_command(
    concept: Annotated[
        str, typer.Argument(help="SYSTEM:CODE, e.g. ICD10CM:G30 or SNOMED:52448006")
    ],
    database: DatabaseOption = "",
) -> None:
    """List a concept, its descendants and the concepts of other systems mapped inside it."""
    try:
        system, code = expansion.parse_reference(concept)
        with Session(_engine(database)) as session:
            found = expansion.expand(system, code, session=session)
    except OntologyError as error:
        raise _fail(error) from None
    for item in found:
        typer.echo(f"{item.system}:{item.code}\t{item.display}")


@ontology_app.command("search")
def search_command(
    text: Annotated[str, typer.Argument(help="Words of a concept's name, or a code")],
    limit: Annotated[int, typer.Option(min=1, max=200)] = 10,
    system: Annotated[list[str] | None, typer.Option(help="Only these systems (repeat)")] = None,
    database: DatabaseOption = "",
) -> None:
    """Typeahead over concept names."""
    with Session(_engine(database)) as session:
        found = expansion.search(text, limit, session=session, systems=system)
    for item in found:
        typer.echo(f"{item.system}:{item.code}\t{item.display}")


@ontology_app.command("normalize")
def normalize_command(
    description: Annotated[str, typer.Argument(help="Series Description (0008,103E)")],
    protocol: Annotated[str, typer.Option(help="Protocol Name (0018,1030)")] = "",
    modality: Annotated[str, typer.Option(help="Modality (0008,0060)")] = "MR",
    tr: Annotated[float | None, typer.Option(help="Repetition Time, ms")] = None,
    te: Annotated[float | None, typer.Option(help="Echo Time, ms")] = None,
    ti: Annotated[float | None, typer.Option(help="Inversion Time, ms")] = None,
    scanning_sequence: Annotated[str, typer.Option(help="e.g. 'SE\\IR'")] = "",
    sequence_variant: Annotated[str, typer.Option(help="e.g. 'SK\\SP\\MP'")] = "",
    contrast_agent: Annotated[str, typer.Option(help="Contrast/Bolus Agent (0018,0010)")] = "",
    body_part: Annotated[str, typer.Option(help="Body Part Examined (0018,0015)")] = "",
) -> None:
    """Canonical sequence type, contrast, contrast agent and body part of one series."""
    result = normalize(
        SeriesText.from_mapping(
            {
                "Modality": modality,
                "SeriesDescription": description,
                "ProtocolName": protocol,
                "RepetitionTime": tr,
                "EchoTime": te,
                "InversionTime": ti,
                "ScanningSequence": scanning_sequence,
                "SequenceVariant": sequence_variant,
                "ContrastBolusAgent": contrast_agent,
                "BodyPartExamined": body_part,
            }
        )
    )
    agent = result.contrast_agent
    part = result.body_part
    typer.echo(
        json.dumps(
            {
                "sequence_type": result.sequence_type.value,
                "contrast": result.contrast,
                "contrast_agent": None
                if agent is None
                else {
                    "substance": agent.substance,
                    "snomed": agent.snomed_code,
                    "atc": agent.atc_code,
                },
                "body_part": None
                if part is None
                else {"term": part.term, "snomed": part.snomed_code, "display": part.display},
                "rule": result.rule,
            },
            indent=2,
        )
    )
