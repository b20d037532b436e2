"""DICOM free text → canonical fields: sequence type, contrast, contrast agent, body part.

``normalize`` is a pure function of a small typed record (:class:`SeriesText`), so the node
(which reads DICOM headers) and the hub (which only sees catalogue values) use the same rules.
The rules read the series description and protocol name first, because that is what scanners
and technologists use to say what a series is, then fall back on the sequence attributes
(ScanningSequence, SequenceVariant, TR, TE, TI, ImageType) when the text says nothing.

Measured on a labelled set of real-world series descriptions in
``tests/data/series_descriptions/labelled.csv``; ``tests/unit/ontology/test_normalize_accuracy.py``
prints the accuracy and enforces a floor.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cache

from ontology.sources import DATA_DIR, read_tsv

logger = logging.getLogger(__name__)

# The DICOM keywords ``SeriesText.from_mapping`` reads: what a node copies out of a header.
SERIES_KEYWORDS = (
    "Modality",
    "SeriesDescription",
    "ProtocolName",
    "SequenceName",
    "StudyDescription",
    "BodyPartExamined",
    "ScanningSequence",
    "SequenceVariant",
    "ImageType",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "ContrastBolusAgent",
    "ContrastBolusIngredient",
    "ContrastBolusVolume",
)


class SequenceType(str, Enum):
    """The canonical kind of a series."""

    T1W = "T1w"  # T1-weighted (SE, MPRAGE, SPGR/BRAVO, TFE, VIBE, T1 FLAIR)
    T2W = "T2w"  # T2-weighted (FSE/TSE, SPACE/CUBE, HASTE, STIR)
    FLAIR = "FLAIR"  # T2-weighted fluid-attenuated inversion recovery
    PD = "PD"  # proton-density weighted, including dual-echo PD/T2
    T2STAR = "T2starw"  # T2*-weighted gradient echo
    DWI = "DWI"  # diffusion-weighted, DTI, trace
    ADC = "ADC"  # apparent diffusion coefficient map
    SWI = "SWI"  # susceptibility-weighted imaging and its minimum-intensity projections
    DSC = "DSC perfusion"  # dynamic susceptibility contrast (T2*) perfusion
    DCE = "DCE perfusion"  # dynamic contrast-enhanced (T1) perfusion
    ASL = "ASL perfusion"  # arterial spin labelling
    BOLD = "BOLD"  # functional MRI
    MRA = "MRA"  # MR angiography (TOF, phase contrast, contrast-enhanced)
    FIELDMAP = "fieldmap"  # B0 / spin-echo field maps
    LOCALIZER = "localizer"  # scouts, surveys, topograms
    CT = "CT"  # a CT series that is none of the below
    CTA = "CTA"  # CT angiography
    CT_PERFUSION = "CT perfusion"  # CT perfusion source data and maps
    OTHER = "other"  # recognised modality, no canonical type (or not MR/CT)


CONTRAST_BY_DEFINITION = {
    SequenceType.DSC,
    SequenceType.DCE,
    SequenceType.CTA,
    SequenceType.CT_PERFUSION,
}


@dataclass(frozen=True)
class SeriesText:
    """What normalization reads of a series: DICOM attribute values, already decoded."""

    modality: str = ""
    series_description: str = ""
    protocol_name: str = ""
    sequence_name: str = ""
    study_description: str = ""
    body_part_examined: str = ""
    scanning_sequence: tuple[str, ...] = ()
    sequence_variant: tuple[str, ...] = ()
    image_type: tuple[str, ...] = ()
    repetition_time: float | None = None  # ms
    echo_time: float | None = None  # ms
    inversion_time: float | None = None  # ms
    contrast_bolus_agent: str = ""
    contrast_bolus_ingredient: str = ""
    contrast_bolus_volume: float | None = None  # ml

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> SeriesText:
        """From DICOM keywords (``SeriesDescription``, ``RepetitionTime`` …) to their values;
        multi-valued attributes may be sequences or backslash-separated strings."""

        def text(keyword: str) -> str:
            value = values.get(keyword)
            return "" if value is None else str(value).strip()

        def multi(keyword: str) -> tuple[str, ...]:
            value = values.get(keyword)
            if value is None or value == "":
                return ()
            items: Iterable[object] = (
                value.split("\\") if isinstance(value, str) else value  # type: ignore[assignment]
            )
            return tuple(str(v).strip().upper() for v in items if str(v).strip())

        def number(keyword: str) -> float | None:
            value = values.get(keyword)
            try:
                return None if value in (None, "") else float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return None

        return cls(
            modality=text("Modality").upper(),
            series_description=text("SeriesDescription"),
            protocol_name=text("ProtocolName"),
            sequence_name=text("SequenceName"),
            study_description=text("StudyDescription"),
            body_part_examined=text("BodyPartExamined"),
            scanning_sequence=multi("ScanningSequence"),
            sequence_variant=multi("SequenceVariant"),
            image_type=multi("ImageType"),
            repetition_time=number("RepetitionTime"),
            echo_time=number("EchoTime"),
            inversion_time=number("InversionTime"),
            contrast_bolus_agent=text("ContrastBolusAgent"),
            contrast_bolus_ingredient=text("ContrastBolusIngredient"),
            contrast_bolus_volume=number("ContrastBolusVolume"),
        )


@dataclass(frozen=True)
class ContrastAgent:
    substance: str
    snomed_code: str
    atc_code: str
    kind: str  # gadolinium, iodinated, barium


@dataclass(frozen=True)
class BodyPart:
    term: str  # Body Part Examined defined term (PS3.16 Annex L)
    snomed_code: str
    display: str


@dataclass(frozen=True)
class NormalizedSeries:
    sequence_type: SequenceType
    contrast: bool  # contrast was given before or during this series
    contrast_agent: ContrastAgent | None
    body_part: BodyPart | None
    rule: str  # which rule decided the sequence type (for review and debugging)


# --- text preparation ---------------------------------------------------------------------

_SEPARATORS = re.compile(r"[_\s/\\,;:|()\[\]<>{}=\"']+")


def fold(text: str) -> str:
    """Lower-case, separators to single spaces, padded with spaces so `` t1 `` finds a word.

    ``*`` and ``+`` are kept (T2*, C+, PD+T2); ``-`` and ``.`` are kept inside words."""
    return " " + _SEPARATORS.sub(" ", text.lower()).strip() + " "


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# A "word" here is bounded by anything that is not a letter or digit.
W = r"(?<![a-z0-9])"
E = r"(?![a-z0-9])"

LOCALIZER = _rx(
    rf"locali[sz]er|{W}loc{E}|scout|survey|{W}pilot{E}|topogram|scanogram|surview|"
    rf"{W}3[ -]?pl(ane)?{E}|tri[ -]?pilot|{W}scano"
)
ADC = _rx(rf"{W}adc{E}|apparent diffusion|{W}e?adc|_adc{E}|{W}dadc{E}")
ASL = _rx(rf"{W}(p|pc)?asl{E}|arterial spin|{W}pcasl|{W}pasl")
PERFUSION = _rx(
    rf"{W}dsc{E}|ep2d[ _-]?perf|perfusion|{W}perf{E}|{W}pwi{E}|{W}r?cbv{E}|{W}r?cbf{E}|"
    rf"{W}mtt{E}|{W}tmax{E}|{W}ttp{E}|vpct|{W}ctp{E}"
)
DCE = _rx(rf"{W}dce{E}|{W}twist{E}|{W}ktrans{E}|{W}dyn(amic)?{E}|{W}dyna")
SWI = _rx(rf"{W}swi|{W}swan{E}|{W}sw{E}|susceptib|{W}swip{E}|venobold|{W}sw[ -]?images")
T2STAR = _rx(rf"t2\*|t2 ?star|{W}t2s{E}|{W}hemo{E}|{W}merge{E}|{W}medic{E}|{W}gre{E}|{W}fl2d")
FIELDMAP = _rx(rf"field ?map|fieldmap|{W}fmap{E}|{W}b0 ?(rf )?map|{W}b0rf|{W}topup{E}|{W}gre b0{E}")
DWI = _rx(
    rf"{W}dwi|{W}ddwi{E}|{W}dti{E}|{W}dti|diff|{W}dmri|trace|{W}b ?1000{E}|tensor|{W}hardi{E}|"
    rf"resolve|{W}isodwi"
)
BOLD = _rx(rf"{W}bold{E}|fmri|{W}rest(ing)?{E}|resting|{W}task{E}|{W}pace{E}|ep2d_pace|{W}rsfmri")
MRA = _rx(rf"{W}tof{E}|{W}tof|angio|{W}mra{E}|{W}mrv{E}|{W}pca{E}|{W}inflow{E}|{W}ce-?mra{E}")
FLAIR = _rx(rf"flair|dark[ -]?fluid|{W}darkfluid|{W}t2 ?df{E}")
PD = _rx(rf"{W}pd|proton density|{W}pdw|pdt2|{W}pd ?[-+/&] ?t2|{W}dp{E}")
DUAL_ECHO = _rx(rf"{W}dual|double|{W}de{E}|{W}de ")
T1_WORD = _rx(rf"{W}t1|t1w|{W}t1[a-z]")
T2_WORD = _rx(rf"{W}t2|t2w|{W}t2[a-z]")
T1_SEQUENCE = _rx(
    rf"mp ?-?rage|{W}mpr{E}|spgr|bravo|{W}tfe{E}|{W}s?t1w|{W}ffe{E}|3d[ _-]?ffe|flash|vibe|"
    rf"mp2rage|{W}tfl|volumetric|{W}volum|{W}ir[ -]?fspgr|{W}lava|{W}thrive|{W}quick ?3d|"
    rf"{W}star ?vibe"
)
T2_SEQUENCE = _rx(
    rf"fse{E}|{W}tse{E}|{W}t?fse|tse{E}|{W}space{E}|{W}spc{E}|{W}cube{E}|haste|{W}ssfse|grase|"
    rf"{W}stir{E}|{W}tirm{E}|{W}vista{E}|{W}blade{E}|propeller|{W}frfse|{W}t2w|{W}qtse"
)
BOLD_EPI = _rx(rf"ep2d|{W}epi{E}|{W}mb ?ep|cmrr|{W}sbref")
CT_ANGIO = _rx(rf"angio|{W}cta{E}|{W}ct ?angio")
CT_NON_IMAGE = _rx(rf"dose ?report|dose info|patient protocol|{W}report{E}|screen ?save")

# contrast cues: a negative cue wins over a positive one
CONTRAST_NEGATIVE = _rx(
    rf"{W}pre(?!ss|sto|scan|p)|{W}w ?/? ?o{E}|{W}wo{E}|without|non ?-?contrast|noncontrast|"
    rf"{W}native|{W}nativ{E}|{W}plain{E}|{W}nc{E}|{W}no ?contrast|{W}sans|{W}ohne{E}|{W}unenh"
)
CONTRAST_POSITIVE = _rx(
    rf"{W}post|\+ ?c{E}|{W}c ?\+|gd{E}|{W}gd[ -]|gado|{W}gad|contrast|{W}ce{E}|{W}t1c|"
    rf"{W}t[12]w?(ax|sag|cor|tra)c{E}|(ax|sag|cor|tra)c{E}|"
    rf"{W}cont{E}|{W}w ?/? ?c{E}|{W}with{E}|enhanc|{W}km{E}|{W}mdc{E}|{W}kontrast|{W}mit km|"
    # contrast phases of CT and MR
    rf"arterial(?! spin)|{W}art(eriell)?{E}|portal|{W}venous{E}|{W}pv{E}|nephrogr|{W}delayed{E}|"
    rf"excretory|{W}equilibrium{E}"
)
# "ax t1 c", "cor mprage c": a lone "c" right after a sequence or plane word
LONE_C = _rx(rf"{W}(t1|t1w|t2|mprage|spgr|fspgr|bravo|vibe|flair|se|fse|tse|ax|axial|sag|cor) c{E}")

NO_AGENT = {"", "none", "no", "n/a", "na", "-", "0", "nein", "non"}


@dataclass(frozen=True)
class _Agents:
    specific: tuple[tuple[re.Pattern[str], ContrastAgent], ...]


@cache
def _agents() -> _Agents:
    specific: list[tuple[re.Pattern[str], ContrastAgent]] = []
    generic: list[tuple[re.Pattern[str], ContrastAgent]] = []
    for row in read_tsv(DATA_DIR / "contrast_agents.tsv"):
        agent = ContrastAgent(row["substance"], row["snomed_code"], row["atc_code"], row["kind"])
        names = {row["substance"].lower(), row["substance"].lower().split()[0]}
        names.update(s for s in row["synonyms"].split("|") if s)
        alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        pattern = re.compile(rf"{W}(?:{alternatives})")
        (generic if not row["atc_code"] else specific).append((pattern, agent))
    return _Agents(tuple(specific + generic))


@cache
def _body_parts() -> dict[str, BodyPart]:
    """Body Part Examined term → body part; a legacy term (``THORAX``) → its current term."""
    rows = read_tsv(DATA_DIR / "dicom_body_parts.tsv")
    parts = {
        row["body_part_examined"]: BodyPart(
            row["body_part_examined"], row["snomed_code"], row["display"]
        )
        for row in rows
        if row["cid"] != "alias"
    }
    by_code = {part.snomed_code: part for part in parts.values()}
    for row in rows:
        if row["cid"] == "alias":
            parts[row["body_part_examined"]] = by_code[row["snomed_code"]]
    return parts


# free-text cues for the body part, most specific first; values are Annex L defined terms
BODY_PART_WORDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (_rx(pattern), term)
    for pattern, term in (
        (r"abd(omen|o)?[ -&+]*(and )?pelv", "ABDOMENPELVIS"),
        (r"chest[ -&+]*(and )?abd", "CHESTABDOMEN"),
        (rf"{W}c[ -]?spine|cervical spine|{W}hws{E}", "CSPINE"),
        (rf"{W}t[ -]?spine|thoracic spine|{W}bws{E}", "TSPINE"),
        (rf"{W}l[ -]?spine|lumbar|{W}lws{E}", "LSPINE"),
        (rf"{W}spine|{W}spinal{E}|wirbels", "SPINE"),
        (rf"{W}brain|cerebr|{W}neuro|{W}encef|{W}cran|{W}hirn|{W}sch(a|ae|ä)del", "BRAIN"),
        (rf"{W}head{E}|{W}kopf{E}|{W}skull{E}", "HEAD"),
        (rf"{W}neck{E}|{W}hals{E}", "NECK"),
        (rf"{W}breast|{W}mamm|{W}brust{E}", "BREAST"),
        (rf"{W}chest{E}|thorax|{W}thx{E}|{W}lung|pulmo", "CHEST"),
        (r"prostat", "PROSTATE"),
        (rf"{W}liver|hepat|{W}leber{E}", "LIVER"),
        (rf"{W}pancrea", "PANCREAS"),
        (rf"{W}kidney|{W}renal{E}|{W}niere", "KIDNEY"),
        (rf"{W}colon|colorect", "COLON"),
        (rf"{W}rect(um|al){E}", "RECTUM"),
        (rf"{W}abd(omen|o)?{E}|{W}abdom", "ABDOMEN"),
        (rf"{W}pelvi|{W}becken{E}", "PELVIS"),
        (rf"{W}knee|{W}knie{E}", "KNEE"),
        (rf"{W}shoulder|{W}schulter", "SHOULDER"),
        (rf"{W}heart{E}|cardiac|{W}cardio|{W}herz{E}", "HEART"),
        (rf"whole ?-?body|{W}wb{E}|{W}ganzk", "WHOLEBODY"),
    )
)


def _contrast_agent(series: SeriesText, text: str) -> ContrastAgent | None:
    field_text = fold(f"{series.contrast_bolus_agent} {series.contrast_bolus_ingredient}")
    for haystack in (field_text, text):
        for pattern, agent in _agents().specific:
            if pattern.search(haystack):
                return agent
    return None


def body_part(series: SeriesText) -> BodyPart | None:
    """From Body Part Examined when it holds a defined term, else from the descriptions."""
    parts = _body_parts()
    term = re.sub(r"[^A-Z]", "", series.body_part_examined.upper())
    if term in parts:
        return parts[term]
    text = fold(
        " ".join((series.series_description, series.protocol_name, series.study_description))
    )
    text += fold(series.body_part_examined)
    for pattern, candidate in BODY_PART_WORDS:
        if pattern.search(text) and candidate in parts:
            return parts[candidate]
    return None


def _has_contrast(series: SeriesText, text: str, kind: SequenceType) -> bool:
    if CONTRAST_NEGATIVE.search(text):  # also the pre-contrast phase of a dynamic series
        return False
    if kind in CONTRAST_BY_DEFINITION:
        return True
    agent = fold(f"{series.contrast_bolus_agent} {series.contrast_bolus_ingredient}").strip()
    if agent and agent not in NO_AGENT and not CONTRAST_NEGATIVE.search(fold(agent)):
        return True
    if series.contrast_bolus_volume:
        return True
    squashed = text.replace(" ", "")
    return bool(CONTRAST_POSITIVE.search(text) or LONE_C.search(text) or "gad" in squashed)


def _from_attributes(series: SeriesText) -> tuple[SequenceType, str] | None:
    """Sequence type from ScanningSequence/SequenceVariant/TR/TE/TI when the text is silent."""
    scanning = set(series.scanning_sequence)
    variant = set(series.sequence_variant)
    tr, te, ti = series.repetition_time, series.echo_time, series.inversion_time
    if "EP" in scanning and "SE" in scanning and tr and tr > 2000 and te and te > 50:
        return SequenceType.DWI, "attributes: spin-echo EPI, long TR/TE"
    if "EP" in scanning and "GR" in scanning and tr and tr < 4000:
        return SequenceType.BOLD, "attributes: gradient-echo EPI"
    if "IR" in scanning and ti:
        if ti > 1500 and tr and tr > 4000:
            return SequenceType.FLAIR, "attributes: inversion recovery, long TI"
        if "GR" in scanning or ti < 1500:
            return SequenceType.T1W, "attributes: inversion-prepared, short TI"
    if tr is None or te is None:
        return None
    if "GR" in scanning and te > 15 and tr > 25:
        return SequenceType.T2STAR, "attributes: gradient echo, long TE"
    if tr < 800 and te < 30:
        return SequenceType.T1W, "attributes: short TR, short TE"
    if tr > 2000 and te >= 60:
        return SequenceType.T2W, "attributes: long TR, long TE"
    if (tr > 1500 and te < 40 and "SE" in scanning | variant) or (tr > 1500 and te < 40):
        return SequenceType.PD, "attributes: long TR, short TE"
    return None


@dataclass(frozen=True)
class _Words:
    """What the rules look at: the folded text and a few facts derived from it once."""

    text: str
    squashed: str  # without spaces: finds "t1" inside "BRAINSTRYKERT1AXIAL"
    image_type: frozenset[str]
    t1: bool  # "t1" as (the start of) a word
    t2: bool

    @classmethod
    def of(cls, text: str, series: SeriesText) -> _Words:
        return cls(
            text,
            text.replace(" ", ""),
            frozenset(series.image_type),
            bool(T1_WORD.search(text)),
            bool(T2_WORD.search(text)),
        )

    def has(self, pattern: re.Pattern[str]) -> bool:
        return bool(pattern.search(self.text))


BREATH_HOLD = _rx(rf"{W}bh{E}|breath")
T2_GRADIENT_ECHO = _rx(rf"t2w?(ffe|gre|{W}ffe|{W}gre)|t2 ?\*")
T2STAR_NAMED = _rx(r"t2\*|t2 ?star|t2s")

_Rule = tuple[SequenceType, str, Callable[[_Words], bool]]

# In order: the first rule whose test holds decides. Derived and special-purpose series first
# (their names often also contain "t1"/"t2"), then FLAIR and T2*, then plain weightings.
MR_RULES: tuple[_Rule, ...] = (
    (
        SequenceType.LOCALIZER,
        "localizer words",
        lambda w: "LOCALIZER" in w.image_type or w.has(LOCALIZER),
    ),
    (SequenceType.ADC, "ADC words", lambda w: "ADC" in w.image_type or w.has(ADC)),
    (SequenceType.FIELDMAP, "field map words", lambda w: w.has(FIELDMAP)),
    (SequenceType.ASL, "ASL words", lambda w: w.has(ASL)),
    (SequenceType.DSC, "perfusion words", lambda w: w.has(PERFUSION)),
    (SequenceType.DCE, "dynamic contrast words", lambda w: w.has(DCE) and not w.has(BREATH_HOLD)),
    (SequenceType.SWI, "SWI words", lambda w: w.has(SWI)),
    (SequenceType.DWI, "diffusion words", lambda w: w.has(DWI)),
    (SequenceType.BOLD, "fMRI words", lambda w: w.has(BOLD)),
    (
        SequenceType.MRA,
        "angiography words",
        lambda w: w.has(MRA) or ("PROJECTION IMAGE" in w.image_type and "angio" in w.text),
    ),
    (SequenceType.T1W, "T1 FLAIR", lambda w: w.has(FLAIR) and w.t1 and not w.t2),
    (SequenceType.FLAIR, "FLAIR words", lambda w: w.has(FLAIR)),
    (SequenceType.T2STAR, "T2-weighted gradient echo", lambda w: w.has(T2_GRADIENT_ECHO)),
    (
        SequenceType.T2STAR,
        "T2* words",
        lambda w: w.has(T2STAR) and not (w.t1 or (w.t2 and not w.has(T2STAR_NAMED))),
    ),
    (SequenceType.PD, "proton density words", lambda w: w.has(PD)),
    (SequenceType.T1W, "T1 words", lambda w: w.t1 and not w.t2),
    (SequenceType.T2W, "T2 words", lambda w: w.t2 and not w.t1),
    (SequenceType.PD, "dual-echo words", lambda w: w.has(DUAL_ECHO) and "t2" not in w.squashed),
    (SequenceType.T1W, "T1 sequence words", lambda w: w.has(T1_SEQUENCE)),
    (SequenceType.T2W, "T2 sequence words", lambda w: w.has(T2_SEQUENCE)),
    (SequenceType.BOLD, "EPI words", lambda w: w.has(BOLD_EPI)),
    (SequenceType.T1W, "T1 inside a word", lambda w: "t1" in w.squashed and "t2" not in w.squashed),
    (SequenceType.T2W, "T2 inside a word", lambda w: "t2" in w.squashed and "t1" not in w.squashed),
)


def _mr_type(text: str, series: SeriesText) -> tuple[SequenceType, str]:
    words = _Words.of(text, series)
    for kind, rule, test in MR_RULES:
        if test(words):
            return kind, rule
    found = _from_attributes(series)
    if found is not None:
        return found
    return SequenceType.OTHER, "no rule matched"


def _ct_type(text: str, series: SeriesText) -> tuple[SequenceType, str]:
    image_type = set(series.image_type)
    if "LOCALIZER" in image_type or LOCALIZER.search(text):
        return SequenceType.LOCALIZER, "localizer words"
    if CT_NON_IMAGE.search(text):
        return SequenceType.OTHER, "dose report or protocol page"
    if PERFUSION.search(text):
        return SequenceType.CT_PERFUSION, "perfusion words"
    if CT_ANGIO.search(text):
        return SequenceType.CTA, "angiography words"
    return SequenceType.CT, "CT series"


MR_HINTS = _rx(rf"{W}t1|{W}t2|flair|{W}dwi|{W}mprage|{W}fse|{W}tse|{W}epi|{W}swi|{W}adc")


def sequence_type(series: SeriesText) -> tuple[SequenceType, str]:
    text = fold(f"{series.series_description} {series.protocol_name} {series.sequence_name}")
    modality = series.modality.upper()
    if modality == "CT":
        return _ct_type(text, series)
    if modality in ("MR", "MRI") or (not modality and MR_HINTS.search(text)):
        return _mr_type(text, series)
    if not modality and re.search(rf"{W}ct{E}|topogram|{W}kernel", text):
        return _ct_type(text, series)
    return SequenceType.OTHER, f"modality {modality or 'unknown'}"


def normalize(series: SeriesText) -> NormalizedSeries:
    """The canonical fields of one series."""
    kind, rule = sequence_type(series)
    text = fold(f"{series.series_description} {series.protocol_name}")
    contrast = _has_contrast(series, text, kind) if kind is not SequenceType.LOCALIZER else False
    agent = _contrast_agent(series, text) if contrast else None
    return NormalizedSeries(kind, contrast, agent, body_part(series), rule)


def normalize_many(records: Iterable[SeriesText]) -> list[NormalizedSeries]:
    return [normalize(record) for record in records]
