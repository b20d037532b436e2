from __future__ import annotations

import pytest

from ontology.normalize import SERIES_KEYWORDS, SequenceType, SeriesText, normalize


def mr(description: str, protocol: str = "", **attributes: object) -> SeriesText:
    return SeriesText.from_mapping(
        {"Modality": "MR", "SeriesDescription": description, "ProtocolName": protocol, **attributes}
    )


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("t1_mprage_sag_p2_iso", SequenceType.T1W),
        ("AX T2 FSE", SequenceType.T2W),
        ("t2_tirm_tra_dark-fluid", SequenceType.FLAIR),
        ("AX T1 FLAIR", SequenceType.T1W),  # a T1-weighted inversion recovery, not a FLAIR
        ("Axial PD-T2 TSE", SequenceType.PD),
        ("Ax T2* GRE", SequenceType.T2STAR),
        ("ep2d_diff_mddw_20_p2", SequenceType.DWI),
        ("ep2d_diff_4scan_trace_p2_ADC", SequenceType.ADC),
        ("SWI_Images", SequenceType.SWI),
        ("ep2d_perf", SequenceType.DSC),
        ("t1_twist_tra_dyn", SequenceType.DCE),
        ("rfMRI_REST_AP", SequenceType.BOLD),
        ("TOF_3D_multi-slab", SequenceType.MRA),
        ("SpinEchoFieldMap_AP", SequenceType.FIELDMAP),
        ("AAHead_Scout_64ch-head-coil", SequenceType.LOCALIZER),
    ],
)
def test_series_descriptions_map_to_their_sequence_type(
    description: str, expected: SequenceType
) -> None:
    assert normalize(mr(description)).sequence_type is expected


def test_the_protocol_name_speaks_when_the_description_is_silent() -> None:
    assert normalize(mr("", "T1W/SE/1024")).sequence_type is SequenceType.T1W


def test_sequence_attributes_decide_when_the_text_says_nothing() -> None:
    flair = mr("series 7", ScanningSequence="SE\\IR", RepetitionTime=9000, InversionTime=2500)
    t2 = mr("series 8", ScanningSequence="SE", RepetitionTime=4000, EchoTime=100)
    t1 = mr("series 9", ScanningSequence="SE", RepetitionTime=500, EchoTime=12)

    assert normalize(flair).sequence_type is SequenceType.FLAIR
    assert normalize(t2).sequence_type is SequenceType.T2W
    assert normalize(t1).sequence_type is SequenceType.T1W


@pytest.mark.parametrize(
    ("description", "contrast"),
    [
        ("AX T1 POST GD", True),
        ("SAG T1 +C", True),
        ("AX T1 SE C+", True),
        ("T1AXgado", True),
        ("ax t1 c", True),
        ("AX T1 pre gd", False),
        ("BRAINNONCONTRASTFLAIR", False),
        ("AX T1", False),
    ],
)
def test_contrast_is_read_from_the_text(description: str, contrast: bool) -> None:
    assert normalize(mr(description)).contrast is contrast


def test_the_contrast_agent_attribute_names_the_substance() -> None:
    result = normalize(mr("t1_vibe_fs_tra", ContrastBolusAgent="11 ml Omniscan"))

    assert result.contrast
    assert result.contrast_agent is not None
    assert (result.contrast_agent.substance, result.contrast_agent.atc_code) == (
        "Gadodiamide",
        "V08CA03",
    )


@pytest.mark.parametrize(
    ("agent", "substance"),
    [
        ("GADOVIST 7.5ML", "Gadobutrol"),
        ("Dotarem", "Gadoterate meglumine"),
        ("gadoteric acid", "Gadoterate meglumine"),
        ("MAGNEVIST", "Gadopentetate dimeglumine"),
        ("Omnipaque 350", "Iohexol"),
        ("ISOVUE-370", "Iopamidol"),
        ("Visipaque 320", "Iodixanol"),
    ],
)
def test_brand_names_normalize_to_the_substance(agent: str, substance: str) -> None:
    result = normalize(SeriesText(modality="CT", contrast_bolus_agent=agent))

    assert result.contrast_agent is not None
    assert result.contrast_agent.substance == substance


def test_a_contrast_agent_of_none_means_no_contrast() -> None:
    assert not normalize(mr("AX T1", ContrastBolusAgent="NONE")).contrast


def test_perfusion_and_angiography_are_with_contrast_by_definition() -> None:
    assert normalize(mr("ep2d_perf")).contrast
    assert normalize(SeriesText(modality="CT", series_description="CTA Head")).contrast


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("Topogram 0.6 T20s", SequenceType.LOCALIZER),
        ("VPCT Perfusion 4D 5.0 Hr36", SequenceType.CT_PERFUSION),
        ("Angio CT 0.75 Qr40", SequenceType.CTA),
        ("Dose Report", SequenceType.OTHER),
        ("Thorax 1.0 B70f", SequenceType.CT),
    ],
)
def test_ct_series_map_to_ct_types(description: str, expected: SequenceType) -> None:
    assert (
        normalize(SeriesText(modality="CT", series_description=description)).sequence_type
        is expected
    )


def test_other_modalities_get_no_sequence_type() -> None:
    assert normalize(SeriesText(modality="CR", series_description="Chest PA")).sequence_type is (
        SequenceType.OTHER
    )


@pytest.mark.parametrize(
    ("body_part", "description", "term", "snomed"),
    [
        ("CSPINE", "", "CSPINE", "122494005"),
        ("THORAX", "", "CHEST", "816094009"),  # a legacy term
        ("", "MRI BRAIN WWO", "BRAIN", "12738006"),
        ("", "CT Abd/Pelvis w contrast", "ABDOMENPELVIS", "818982008"),
        ("", "prostate t2_tse_tra", "PROSTATE", "41216001"),
    ],
)
def test_body_parts_normalize_to_their_cid_4031_code(
    body_part: str, description: str, term: str, snomed: str
) -> None:
    result = normalize(
        SeriesText(modality="MR", series_description=description, body_part_examined=body_part)
    )

    assert result.body_part is not None
    assert (result.body_part.term, result.body_part.snomed_code) == (term, snomed)


def test_normalization_is_a_pure_function_of_the_record() -> None:
    record = mr("AX T1 POST GD", BodyPartExamined="HEAD")

    assert normalize(record) == normalize(record)


@pytest.mark.parametrize(
    ("modality", "description", "contrast"),
    [
        ("CT", "PORTAL VENOUS 3mm", True),
        ("CT", "Arterial phase 1.0", True),
        ("CT", "ABD/PEL W/O CONTRAST", False),
        ("MR", "ax dyn pre", False),  # the pre-contrast phase of a dynamic series
        ("MR", "ax dyn 1st pass", True),
        ("MR", "pCASL arterial spin labeling", False),
    ],
)
def test_contrast_phases_and_negations(modality: str, description: str, contrast: bool) -> None:
    assert (
        normalize(SeriesText(modality=modality, series_description=description)).contrast
        is contrast
    )


def test_a_contrast_volume_means_contrast() -> None:
    assert normalize(mr("t1_vibe_fs_tra", ContrastBolusVolume="15")).contrast


def test_the_record_reads_every_keyword_it_lists() -> None:
    values = {keyword: "1" for keyword in SERIES_KEYWORDS}
    record = SeriesText.from_mapping(values)

    assert all(value not in ("", (), None) for value in vars(record).values())
