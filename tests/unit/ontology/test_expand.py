from __future__ import annotations

import re

import pytest
from sqlalchemy.orm import Session

from ontology.exceptions import BadConceptReference, UnknownConcept
from ontology.expand import expand, expand_codes, parse_reference


def test_icd10cm_g30_expands_to_its_subcodes_and_the_snomed_concepts_mapped_to_them(
    session: Session,
) -> None:
    codes = expand_codes("ICD10CM", "G30", session=session)

    assert codes["ICD10CM"] == {"G30", "G30.0", "G30.1", "G30.8", "G30.9"}
    assert codes["SNOMED"] == {"26929004", "230265002"}  # Alzheimer's disease, familial early onset


def test_expansion_lists_the_query_system_first(session: Session) -> None:
    found = expand("ICD10CM", "G30", session=session)

    assert [str(c) for c in found[:5]] == [
        "ICD10CM:G30",
        "ICD10CM:G30.0",
        "ICD10CM:G30.1",
        "ICD10CM:G30.8",
        "ICD10CM:G30.9",
    ]


def test_a_snomed_dementia_expands_to_its_children_and_maps_to_icd10(session: Session) -> None:
    codes = expand_codes("SNOMED", "52448006", session=session)  # Dementia

    assert {"26929004", "429998004", "230270009", "312991009"} <= codes["SNOMED"]
    assert {"G30", "G30.0", "F01", "F00", "F03"} <= codes["ICD10"]
    assert {"G30.9", "F01.50", "F03.90", "G31.0", "G31.01", "G31.83"} <= codes["ICD10CM"]


def test_a_map_to_a_broader_code_is_not_followed_downwards(session: Session) -> None:
    # Lewy body dementia is classified in WHO ICD-10 G31.8, which also holds other diseases
    codes = expand_codes("SNOMED", "312991009", session=session)

    assert "ICD10" not in codes
    assert codes["ICD10CM"] == {"G31.83"}


def test_a_broader_code_pulls_in_the_concepts_classified_under_it(session: Session) -> None:
    codes = expand_codes("ICD10", "G31.8", session=session)

    assert "312991009" in codes["SNOMED"]


def test_multiple_sclerosis_expands_to_its_courses_in_every_system(session: Session) -> None:
    codes = expand_codes("SNOMED", "24700007", session=session)

    assert {"426373005", "428700003", "425500002"} <= codes["SNOMED"]
    assert {"G35.A", "G35.B0", "G35.C1", "G35.D"} <= codes["ICD10CM"]
    assert codes["ICD10"] == {"G35"}


def test_omop_concepts_come_with_the_concepts_they_stand_for(session: Session) -> None:
    codes = expand_codes("ICD10", "C34", session=session)

    assert {"4115276", "4110591"} <= codes["OMOP"]  # NSCLC, small cell carcinoma of lung


def test_an_atc_class_expands_to_the_drugs_classified_under_it(session: Session) -> None:
    codes = expand_codes("ATC", "N06D", session=session)

    assert {"N06DA02", "N06DX01"} <= codes["ATC"]
    assert {"40223768", "40222846"} <= codes["OMOP"]  # donepezil, memantine products


def test_icd_codes_may_be_written_without_the_dot(session: Session) -> None:
    assert expand_codes("icd-10-cm", "G300", session=session)["ICD10CM"] == {"G30.0"}


def test_an_unknown_code_names_itself_in_the_error(session: Session) -> None:
    with pytest.raises(UnknownConcept, match=re.escape("ICD10CM:Z99.999")):
        expand("ICD10CM", "Z99.999", session=session)


def test_a_reference_needs_a_system_and_a_code() -> None:
    assert parse_reference("sct:52448006") == ("SNOMED", "52448006")
    with pytest.raises(BadConceptReference):
        parse_reference("G30")
