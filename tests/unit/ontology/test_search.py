from __future__ import annotations

from sqlalchemy.orm import Session

from ontology.expand import search


def test_typeahead_finds_concepts_by_the_start_of_a_word(session: Session) -> None:
    found = search("alzh", 20, session=session)

    assert {"SNOMED:26929004", "ICD10CM:G30", "ICD10:G30"} <= {str(c) for c in found}


def test_every_word_of_the_query_must_match(session: Session) -> None:
    found = search("dementia lewy", 10, session=session)

    assert [str(c) for c in found] == ["SNOMED:312991009"]


def test_an_exact_code_comes_first(session: Session) -> None:
    assert str(search("G30.9", 5, session=session)[0]) in {"ICD10CM:G30.9", "ICD10:G30.9"}


def test_search_can_be_limited_to_systems_and_to_a_number_of_results(session: Session) -> None:
    found = search("carcinoma", 3, session=session, systems=["snomed"])

    assert len(found) == 3
    assert {c.system for c in found} == {"SNOMED"}


def test_an_empty_query_finds_nothing(session: Session) -> None:
    assert search("  ", 10, session=session) == []
