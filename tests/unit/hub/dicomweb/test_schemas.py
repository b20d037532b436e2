"""Reading a DICOMweb request: its Accept header and its search parameters."""

from __future__ import annotations

import pytest

from hub.dicomweb.exceptions import BadQuery, NotAcceptable
from hub.dicomweb.schemas import (
    MAX_RESULTS,
    Level,
    parse_qido,
    require_json,
    retrieve_syntax,
)


def test_a_retrieve_without_a_transfer_syntax_gets_the_files_as_released() -> None:
    assert retrieve_syntax(None) == "*"
    assert retrieve_syntax('multipart/related; type="application/dicom"') == "*"
    assert retrieve_syntax("multipart/related; type=application/dicom") == "*"


def test_the_best_weighted_acceptable_range_decides_the_transfer_syntax() -> None:
    header = (
        "application/zip;q=1, "
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1;q=0.9,'
        'multipart/related; type="application/dicom"; transfer-syntax=*;q=0.5'
    )

    assert retrieve_syntax(header) == "1.2.840.10008.1.2.1"


def test_a_retrieve_that_accepts_no_dicom_parts_is_refused() -> None:
    with pytest.raises(NotAcceptable):
        retrieve_syntax('multipart/related; type="image/jpeg"')


def test_json_results_go_to_any_client_that_takes_json() -> None:
    for header in (None, "application/dicom+json", "application/json", "*/*", "application/*"):
        require_json(header)
    with pytest.raises(NotAcceptable):
        require_json("application/dicom+xml, multipart/related")


def test_keywords_and_tags_name_the_same_attribute_in_includefield() -> None:
    by_keyword = parse_qido(Level.STUDY, [("includefield", "PatientAge,StudyDescription")])
    by_tag = parse_qido(Level.STUDY, [("includefield", "00101010"), ("includefield", "00081030")])

    assert by_keyword.include == by_tag.include == {"00101010", "00081030"}


def test_a_matching_key_is_returned_in_the_results() -> None:
    query = parse_qido(Level.STUDY, [("PatientID", "BV-*"), ("StudyDate", "")])

    assert {"00100020", "00080020"} <= query.include
    assert [m.keyword for m in query.matches] == ["PatientID"]  # empty: universal matching


def test_a_key_below_the_search_level_is_ignored_with_a_warning() -> None:
    query = parse_qido(Level.STUDY, [("SOPInstanceUID", "2.25.1")])

    assert query.matches == ()
    assert "SOPInstanceUID" in query.warnings[0]


def test_the_limit_is_capped_at_the_hubs_maximum() -> None:
    assert parse_qido(Level.STUDY, [("limit", "999999")]).limit == MAX_RESULTS
    assert parse_qido(Level.STUDY, []).limit == MAX_RESULTS


def test_a_key_given_twice_is_refused() -> None:
    with pytest.raises(BadQuery, match="PatientID"):
        parse_qido(Level.STUDY, [("PatientID", "A"), ("00100020", "B")])
