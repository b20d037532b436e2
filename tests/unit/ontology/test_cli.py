from __future__ import annotations

import json

from sqlalchemy import Engine
from typer.testing import CliRunner

from ontology.cli import ontology_app

runner = CliRunner()


def database_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_expand_lists_the_g30_family(ontology_engine: Engine) -> None:
    result = runner.invoke(
        ontology_app, ["expand", "ICD10CM:G30", "-d", database_of(ontology_engine)]
    )

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split("\t")[0] for line in lines[:5]] == [
        "ICD10CM:G30", "ICD10CM:G30.0", "ICD10CM:G30.1", "ICD10CM:G30.8", "ICD10CM:G30.9",
    ]  # fmt: skip
    assert "SNOMED:26929004\tAlzheimer's disease" in lines


def test_expand_of_an_unknown_code_fails_with_a_message(ontology_engine: Engine) -> None:
    result = runner.invoke(
        ontology_app, ["expand", "ICD10CM:XX", "-d", database_of(ontology_engine)]
    )

    assert result.exit_code == 2
    assert "ICD10CM:XX is not in the ontology" in result.output


def test_search_prints_matching_concepts(ontology_engine: Engine) -> None:
    result = runner.invoke(
        ontology_app, ["search", "multiple sclerosis", "-d", database_of(ontology_engine)]
    )

    assert result.exit_code == 0, result.output
    assert "SNOMED:24700007\tMultiple sclerosis" in result.output.splitlines()


def test_normalize_prints_the_canonical_fields() -> None:
    result = runner.invoke(ontology_app, ["normalize", "AX T1 POST", "--protocol", "BRAIN ROUTINE"])

    assert result.exit_code == 0, result.output
    fields = json.loads(result.output)
    assert fields["sequence_type"] == "T1w"
    assert fields["contrast"] is True
    assert fields["body_part"]["term"] == "BRAIN"


def test_normalize_reads_tr_te_ti() -> None:
    result = runner.invoke(
        ontology_app,
        ["normalize", "series 4", "--tr", "9000", "--te", "120", "--ti", "2500",
         "--scanning-sequence", "SE\\IR"],
    )  # fmt: skip

    assert json.loads(result.output)["sequence_type"] == "FLAIR"
