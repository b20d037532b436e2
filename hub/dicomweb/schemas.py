"""What a DICOMweb request asks for: a QIDO-RS search (matching keys, includefield, limit,
offset) and the media types its Accept header allows, parsed and checked (PS3.18 8.3).

A parameter that cannot be understood is a 400 naming it; a DICOM attribute the hub does
not match on is ignored with a ``Warning: 299`` (PS3.18 8.3.4.1), as is ``fuzzymatching``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from hub.dicomweb.exceptions import BadQuery, NotAcceptable

#: Results per search when the client asks for none, or for more (PS3.18 8.3.4.4).
MAX_RESULTS = 1000

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
ANY_TRANSFER_SYNTAX = "*"


class Level(IntEnum):
    """The QIDO-RS search levels, outermost first (a key applies at its level and below)."""

    STUDY = 1
    SERIES = 2
    INSTANCE = 3


class MatchKind(str, Enum):
    """How a matching key's value is compared (PS3.4 C.2.2.2)."""

    # A list of UIDs, comma- or backslash-separated.
    UIDS = "uids"
    # Code strings such as modalities, also as a list.
    CODES = "codes"
    # Literal text, with * and ? wildcards; case-sensitive.
    TEXT = "text"
    # A person name: as TEXT, but insensitive to case (PS3.4 C.2.2.2.1 allows it).
    NAME = "name"
    # A date, or a range ``A-B``, ``-B``, ``A-`` (YYYYMMDD).
    DATE = "date"
    # A time, or a range of them (HHMMSS with optional precision).
    TIME = "time"
    # An integer, matched exactly.
    NUMBER = "number"


#: The keys the hub matches on: keyword -> (level, how).
MATCHING_KEYS: dict[str, tuple[Level, MatchKind]] = {
    "StudyInstanceUID": (Level.STUDY, MatchKind.UIDS),
    "PatientID": (Level.STUDY, MatchKind.TEXT),
    "PatientName": (Level.STUDY, MatchKind.NAME),
    "StudyDate": (Level.STUDY, MatchKind.DATE),
    "StudyTime": (Level.STUDY, MatchKind.TIME),
    "AccessionNumber": (Level.STUDY, MatchKind.TEXT),
    "StudyID": (Level.STUDY, MatchKind.TEXT),
    "StudyDescription": (Level.STUDY, MatchKind.TEXT),
    "ModalitiesInStudy": (Level.STUDY, MatchKind.CODES),
    "SeriesInstanceUID": (Level.SERIES, MatchKind.UIDS),
    "Modality": (Level.SERIES, MatchKind.CODES),
    "SeriesNumber": (Level.SERIES, MatchKind.NUMBER),
    "SeriesDescription": (Level.SERIES, MatchKind.TEXT),
    "SOPInstanceUID": (Level.INSTANCE, MatchKind.UIDS),
    "SOPClassUID": (Level.INSTANCE, MatchKind.UIDS),
    "InstanceNumber": (Level.INSTANCE, MatchKind.NUMBER),
}

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE = re.compile(r"^[0-9]{8}$")
_TIME = re.compile(r"^[0-9]{2,6}(\.[0-9]{1,6})?$")
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_CODE = re.compile(r"^[A-Z0-9 _]{1,16}$")


@dataclass(frozen=True)
class Match:
    """One matching key: a list of values, a pattern or a range, per its kind."""

    keyword: str
    kind: MatchKind
    values: tuple[str, ...] = ()
    low: str = ""
    high: str = ""

    @property
    def has_wildcards(self) -> bool:
        return any("*" in value or "?" in value for value in self.values)


@dataclass(frozen=True)
class QidoQuery:
    level: Level
    matches: tuple[Match, ...] = ()
    include: frozenset[str] = frozenset()  # tags as 8 hex digits, upper case
    include_all: bool = False
    limit: int = MAX_RESULTS
    offset: int = 0
    warnings: tuple[str, ...] = ()

    def matching(self, level: Level) -> tuple[Match, ...]:
        return tuple(m for m in self.matches if MATCHING_KEYS[m.keyword][0] == level)


@dataclass
class _Parsed:
    matches: list[Match] = field(default_factory=list)
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    ignored: list[str] = field(default_factory=list)
    fuzzy: bool = False


def parse_qido(level: Level, params: list[tuple[str, str]]) -> QidoQuery:
    """A search from its query parameters, in the order sent (repeats allowed where legal)."""
    parsed = _Parsed()
    seen: set[str] = set()
    for name, value in params:
        if name == "includefield":
            _include(parsed, value)
        elif name in {"limit", "offset", "fuzzymatching"}:
            _control(parsed, name, value, seen)
        else:
            _matching_key(parsed, level, name, value, seen)
    warnings = []
    if parsed.fuzzy:
        warnings.append("The fuzzymatching parameter is not supported. Only literal matching.")
    if parsed.ignored:
        warnings.append(
            "The following query attributes were not supported and were ignored: "
            + ", ".join(parsed.ignored)
        )
    return QidoQuery(
        level=level,
        matches=tuple(parsed.matches),
        include=frozenset(parsed.include | {tag_of(m.keyword) for m in parsed.matches}),
        include_all=parsed.include_all,
        limit=min(parsed.limit or MAX_RESULTS, MAX_RESULTS),
        offset=parsed.offset,
        warnings=tuple(warnings),
    )


def _include(parsed: _Parsed, value: str) -> None:
    for item in filter(None, (part.strip() for part in value.split(","))):
        if item == "all":
            parsed.include_all = True
        elif "." in item:  # a sequence path: the nested value comes with its sequence
            parsed.include.add(_attribute("includefield", item.split(".", 1)[0]))
        else:
            parsed.include.add(_attribute("includefield", item))


def _control(parsed: _Parsed, name: str, value: str, seen: set[str]) -> None:
    if name in seen:
        raise BadQuery(name, "given more than once")
    seen.add(name)
    if name == "fuzzymatching":
        if value not in {"true", "false"}:
            raise BadQuery(name, "use true or false")
        parsed.fuzzy = value == "true"
        return
    if not value.isdigit():
        raise BadQuery(name, "use a whole number")
    number = int(value)
    if name == "limit":
        if number == 0:
            raise BadQuery(name, "use a number above 0")
        parsed.limit = number
    else:
        parsed.offset = number


def _matching_key(parsed: _Parsed, level: Level, name: str, value: str, seen: set[str]) -> None:
    if "." in name:  # sequence matching (PS3.18 8.3.4.1.1): not supported
        _attribute(name, name.split(".", 1)[0])
        parsed.ignored.append(name)
        return
    keyword = keyword_for_tag(int(_attribute(name, name), 16)) or name
    if keyword not in MATCHING_KEYS or MATCHING_KEYS[keyword][0] > level:
        parsed.ignored.append(keyword)
        return
    if keyword in seen:
        raise BadQuery(name, f"{keyword} is given more than once")
    seen.add(keyword)
    if value == "":
        parsed.include.add(tag_of(keyword))  # universal matching: return the attribute
        return
    parsed.matches.append(_match(name, keyword, MATCHING_KEYS[keyword][1], value))


def _match(name: str, keyword: str, kind: MatchKind, value: str) -> Match:
    if kind in {MatchKind.UIDS, MatchKind.CODES}:
        values = tuple(filter(None, re.split(r"[,\\]", value)))
        pattern = _UID if kind == MatchKind.UIDS else _CODE
        if not values or not all(pattern.match(item) and len(item) <= 64 for item in values):
            what = "UIDs (digits and dots)" if kind == MatchKind.UIDS else "code strings"
            raise BadQuery(name, f"use one or more {what}, separated by commas")
        return Match(keyword, kind, values)
    if kind in {MatchKind.DATE, MatchKind.TIME}:
        low, dash, high = value.partition("-")
        pattern = _DATE if kind == MatchKind.DATE else _TIME
        if not (low or high) or not all(pattern.match(part) for part in (low, high) if part):
            shape = "YYYYMMDD" if kind == MatchKind.DATE else "HHMMSS"
            raise BadQuery(name, f"use {shape}, or a range {shape}-{shape} with either end open")
        return Match(keyword, kind, low=low, high=high if dash else low)
    if kind == MatchKind.NUMBER:
        if not value.lstrip("-").isdigit():
            raise BadQuery(name, "use a whole number")
        return Match(keyword, kind, (str(int(value)),))
    if "\\" in value:
        raise BadQuery(name, "one value only (no backslash)")
    return Match(keyword, kind, (value,))


def _attribute(parameter: str, name: str) -> str:
    """An attribute keyword or tag as 8 upper-case hex digits; 400 if neither."""
    if _TAG.match(name):
        return name.upper()
    tag = tag_for_keyword(name)
    if tag is None:
        raise BadQuery(parameter, f"{name!r} is neither a DICOM attribute keyword nor a tag")
    return f"{tag:08X}"


def tag_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return f"{tag:08X}"


def vr_of(tag: str) -> str | None:
    """The dictionary VR of a tag, or None for private and unknown tags."""
    try:
        return str(dictionary_VR(int(tag, 16)))
    except KeyError:
        return None


# -- Accept ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: ``type/subtype`` with its parameters and weight."""

    media_type: str
    params: dict[str, str]
    quality: float


def parse_accept(header: str | None) -> list[MediaRange]:
    """The Accept header's ranges, best first; ``*/*`` when there is none."""
    if not header or not header.strip():
        return [MediaRange("*/*", {}, 1.0)]
    ranges = [_media_range(part) for part in _split_outside_quotes(header, ",")]
    found = [r for r in ranges if r is not None and r.quality > 0]
    return sorted(found, key=lambda r: -r.quality)


def _media_range(text: str) -> MediaRange | None:
    parts = _split_outside_quotes(text, ";")
    media_type = parts[0].strip().lower()
    if not media_type:
        return None
    params: dict[str, str] = {}
    quality = 1.0
    for part in parts[1:]:
        name, _, value = part.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if name == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
        elif name:
            params[name] = value
    return MediaRange(media_type, params, quality)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


_JSON_TYPES = {"application/dicom+json", "application/json", "application/*", "*/*"}


def require_json(header: str | None) -> None:
    """QIDO-RS results and metadata are sent as application/dicom+json only."""
    if not any(r.media_type in _JSON_TYPES for r in parse_accept(header)):
        raise NotAcceptable("this resource is sent as application/dicom+json (XML is not offered)")


def retrieve_syntax(header: str | None) -> str:
    """The transfer syntax a WADO-RS retrieve asked for: a UID, or ``*`` for as stored.

    No transfer-syntax parameter is read as ``*``: the hub sends files as they were
    released and names each part's syntax in its Content-Type.
    """
    for accepted in parse_accept(header):
        if accepted.media_type in {"*/*", "multipart/*"}:
            return ANY_TRANSFER_SYNTAX
        if accepted.media_type == "multipart/related" and accepted.params.get(
            "type", "application/dicom"
        ).lower() in {"application/dicom", "application/*", "*/*"}:
            return accepted.params.get("transfer-syntax", ANY_TRANSFER_SYNTAX)
    raise NotAcceptable('instances are sent as multipart/related; type="application/dicom" only')


def require_octet_stream(header: str | None) -> None:
    """Bulk data is sent as multipart/related; type="application/octet-stream"."""
    for accepted in parse_accept(header):
        if accepted.media_type in {"*/*", "multipart/*"}:
            return
        if accepted.media_type == "multipart/related" and accepted.params.get(
            "type", "application/octet-stream"
        ).lower() in {"application/octet-stream", "application/*", "*/*"}:
            return
    raise NotAcceptable(
        'bulk data is sent as multipart/related; type="application/octet-stream" only'
    )
