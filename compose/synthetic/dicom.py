"""Synthetic DICOM corpora with fake PHI, and an answer key saying where the PHI is.

Two users:

* ``make demo`` builds "synthetic hospitals" with ``phi="realistic"``: several patients, each
  with CT and MR studies (brain, chest, abdomen) whose headers look like what a hospital PACS
  holds (names, IDs, accession numbers, dates, physicians, station names, references between
  series, now and then a free-text descriptor quoting the patient's name or ID) and whose
  pixels show a simple phantom.
* the de-identification leak test uses ``phi="exhaustive"``: the same realistic corpus plus
  fake PHI in every attribute of PS3.15 Annex E Table E.1-1 that pydicom's dictionary knows,
  at the top level and two sequences deep, in overlays and a curve, and in private attributes
  (vendor attributes that are safe to keep, carrying non-PHI markers, and unsafe ones).

The answer key (:class:`AnswerKey`) holds the truth about each patient and one
:class:`Injected` record per PHI value written. Every recorded value is unique in the key, at
least 6 characters long, and present in the bytes of the file it names, so a byte search for
it is unambiguous. A value the realistic header repeats by design (a study's date and UIDs in
every file of the study, the patient's name in every file of the patient) is recorded once, at
its first occurrence; values too short to search for (sex "F", age "045Y", weight "72") are
written but not recorded. Exhaustive-mode values are all fresh and each is written exactly
once in the corpus:

* text: a marker such as ``PHI7F3A9C`` (``KEEP…`` for safe private attributes);
* dates, times and datetimes: valid, unique, and chosen so that no date is a substring of a
  datetime; UIDs ``1.2.826.0.1.3680043.10.999.<seed>.<n>``; numbers ``-1.000123``;
* binary attributes (OB, OW, UN): the ASCII marker embedded in the bytes.

Every person (patient, physician, operator) has a made-up surname and given name of their own
(up to 180 people), so a name part found in de-identified output points to one person.

Output paths carry no identifier: ``p001/s1/se1/0001.dcm`` (patient, study, series, instance).
Files are Explicit VR Little Endian with a full File Meta Information, encoded here rather than
by ``pydicom.dcmwrite`` for speed; the bytes are those pydicom writes for the same dataset.
"""

from __future__ import annotations

import json
import random
import re
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import date, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.datadict import get_entry
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from compose.synthetic import names

__all__ = ["UID_ROOT", "AnswerKey", "Injected", "PatientTruth", "generate_corpus"]

UID_ROOT = "1.2.826.0.1.3680043.10.999"

# ---------------------------------------------------------------------------------------------
# Public records


@dataclass(frozen=True, slots=True)
class Injected:
    """One PHI value written into one file.

    ``path`` names the attribute: ``(0010,0010)``, ``(0008,1110)[0]/(0008,1155)`` inside a
    sequence, ``(0019,GEMS_ACQU_01,10)`` for a private attribute. ``table_tag`` is the row of
    Annex E Table E.1-1 that governs it: the attribute's own row if it has one, else the row
    of the innermost enclosing sequence that has one (``"private"`` for anything in or under a
    private attribute, ``""`` when no row applies). ``kind`` is one of ``identifier``,
    ``date``, ``time``, ``uid``, ``text``, ``other``, ``private-unsafe``, ``private-safe``,
    ``graphics``.
    """

    file: str
    path: str
    table_tag: str
    vr: str
    value: str
    kind: str


@dataclass(frozen=True)
class PatientTruth:
    patient_id: str
    name: str
    birth_date: str
    sex: str
    other_ids: tuple[str, ...]
    accession_numbers: tuple[str, ...]
    study_dates: tuple[str, ...]


@dataclass(frozen=True)
class AnswerKey:
    patients: tuple[PatientTruth, ...]
    injected: tuple[Injected, ...]
    files: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AnswerKey:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("an answer key is a JSON object")
        patients = tuple(
            PatientTruth(
                patient_id=_str(p, "patient_id"),
                name=_str(p, "name"),
                birth_date=_str(p, "birth_date"),
                sex=_str(p, "sex"),
                other_ids=_strs(p, "other_ids"),
                accession_numbers=_strs(p, "accession_numbers"),
                study_dates=_strs(p, "study_dates"),
            )
            for p in _list(data, "patients")
        )
        names_ = [f.name for f in fields(Injected)]
        injected = tuple(
            Injected(**{n: _str(i, n) for n in names_}) for i in _list(data, "injected")
        )
        return cls(patients=patients, injected=injected, files=_strs(data, "files"))


def _list(data: Any, key: str) -> list[Any]:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        raise ValueError(f"answer key: {key!r} must be a list")
    return value


def _str(data: Any, key: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise ValueError(f"answer key: {key!r} must be a string")
    return value


def _strs(data: Any, key: str) -> tuple[str, ...]:
    values = _list(data, key)
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"answer key: {key!r} must be a list of strings")
    return tuple(values)


# ---------------------------------------------------------------------------------------------
# Annex E table and the safe private list (read from common.deid.data)


@dataclass(frozen=True)
class _Row:
    tag: int
    key: str
    vr: str
    vm: str


_HEX8 = re.compile(r"[0-9A-F]{8}")


def _load_table() -> tuple[frozenset[str], tuple[_Row, ...]]:
    source = resources.files("common.deid.data").joinpath("annex_e.json")
    keys = frozenset(str(r["tag"]) for r in json.loads(source.read_text("utf-8"))["rows"])
    known: list[_Row] = []
    for key in sorted(keys):
        if not _HEX8.fullmatch(key):
            continue  # "50XXXXXX", "60XX3000", "60XX4000", "private": handled apart
        try:
            vr, vm, *_ = get_entry(int(key, 16))
        except KeyError:
            continue  # unknown to pydicom's dictionary: skipped
        known.append(_Row(int(key, 16), key, vr.split(" or ")[0], vm))
    return keys, tuple(known)


_TABLE_KEYS, _KNOWN_ROWS = _load_table()

_PrivateSpec = tuple[int, str, int, str]  # group, creator, element offset, VR


def _load_safe_private() -> dict[tuple[int, str, int], set[str]]:
    """(group, creator, element) → actions listed in ``safe_private.tsv`` (any VR)."""
    source = resources.files("common.deid.data").joinpath("safe_private.tsv")
    listed: dict[tuple[int, str, int], set[str]] = {}
    for line in source.read_text("utf-8").splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) != 5:
            continue
        group, creator, element, vr, action = parts
        try:
            key = (int(group, 16), creator, int(element, 16))
        except ValueError:
            continue
        listed.setdefault(key, set()).add(f"{vr}:{action}")
    return listed


_SAFE_LISTED = _load_safe_private()

# Vendor attributes the TCIA knowledge base lists as "keep", by modality (GE CT, Siemens MR).
_SAFE_CHOICES: dict[str, tuple[_PrivateSpec, ...]] = {
    "CT": (
        (0x0019, "GEMS_ACQU_01", 0x18, "LO"),
        (0x0019, "GEMS_ACQU_01", 0x1A, "LO"),
        (0x0043, "GEMS_PARM_01", 0x27, "SH"),
        (0x0043, "GEMS_PARM_01", 0x64, "CS"),
        (0x0043, "GEMS_PARM_01", 0x01, "OB"),
    ),
    "MR": (
        (0x0051, "SIEMENS MR HEADER", 0x09, "LO"),
        (0x0051, "SIEMENS MR HEADER", 0x0B, "SH"),
        (0x0051, "SIEMENS MR HEADER", 0x08, "CS"),
        (0x0019, "SIEMENS MR HEADER", 0x0F, "LO"),
        (0x0019, "SIEMENS MR HEADER", 0x0A, "OB"),
    ),
}
_SAFE_PRIVATE: dict[str, tuple[_PrivateSpec, ...]] = {
    modality: tuple(
        s for s in specs if f"{s[3]}:keep" in _SAFE_LISTED.get((s[0], s[1], s[2]), set())
    )
    for modality, specs in _SAFE_CHOICES.items()
}


def _unlisted_element(group: int, creator: str) -> int:
    """An element of a known vendor block that the safe list does not mention: unsafe."""
    for element in range(0xF0, 0x00, -1):
        if (group, creator, element) not in _SAFE_LISTED:
            return element
    raise RuntimeError(f"every element of ({group:04X},{creator}) is listed")  # pragma: no cover


_UNSAFE_KNOWN: dict[str, tuple[tuple[int, str, int], ...]] = {
    modality: tuple(
        (group, creator, _unlisted_element(group, creator))
        for group, creator in dict.fromkeys((s[0], s[1]) for s in specs)
    )
    for modality, specs in _SAFE_CHOICES.items()
}
_ACME_GROUP, _ACME = 0x0033, "ACME HOSPITAL 1"


@cache
def _row_key(tag: int) -> str:
    """The Annex E row of an attribute itself, or ""."""
    group, element = tag >> 16, tag & 0xFFFF
    if 0x5000 <= group <= 0x501E and group % 2 == 0:
        return "50XXXXXX" if "50XXXXXX" in _TABLE_KEYS else ""
    if 0x6000 <= group <= 0x601E and group % 2 == 0:
        pattern = f"60XX{element:04X}"
        return pattern if pattern in _TABLE_KEYS else ""
    key = f"{tag:08X}"
    return key if key in _TABLE_KEYS else ""


# The patient's own identifiers (kind "identifier").
_IDENTIFIERS = frozenset(
    {
        "00080050",  # Accession Number
        "00100010",  # Patient's Name
        "00100020",  # Patient ID
        "00100030",  # Patient's Birth Date
        "00100032",  # Patient's Birth Time
        "00101000",  # Other Patient IDs
        "00101001",  # Other Patient Names
        "00101002",  # Other Patient IDs Sequence
        "00101005",  # Patient's Birth Name
        "00101040",  # Patient's Address
        "00101060",  # Patient's Mother's Birth Name
        "00101090",  # Medical Record Locator
        "00102154",  # Patient's Telephone Numbers
        "00102155",  # Patient's Telecom Information
        "00120040",  # Clinical Trial Subject ID
        "00120042",  # Clinical Trial Subject Reading ID
        "00380010",  # Admission ID
        "00380060",  # Service Episode ID
    }
)


def _kind(key: str, vr: str) -> str:
    if key in _IDENTIFIERS:
        return "identifier"
    if vr in ("DA", "DT"):
        return "date"
    if vr == "TM":
        return "time"
    if vr == "UI":
        return "uid"
    return "other"


# ---------------------------------------------------------------------------------------------
# Unique values

_EPOCH = date(1900, 1, 1)
_BLOCK = 1 << 16  # dates are handed out in blocks of 65,536 days (1900-01-01 .. 2079-06-06)


class _Values:
    """Hands out values that are unique across the corpus.

    Realistic values are drawn first (from the planning random generator, so that a realistic
    corpus and an exhaustive one with the same seed share them), exhaustive ones after.
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"havenet-synthetic-phi-{seed}")  # noqa: S311 (fake data)
        self._seed_part = seed % 100_000  # ≤ 5 digits: no 8-digit run (a date) in a UID
        self._marker_salt = self._rng.getrandbits(24)
        self._date_salt = self._rng.getrandbits(16)
        self._markers = 0
        self._uids = 0
        self._pool_dates = 0
        self._numbers = 0
        self.taken: set[str] = set()
        self._dates: set[str] = set()
        self._windows: set[str] = set()  # 8-digit runs inside datetimes: never a date

    def _claim(self, value: str) -> str:
        self.taken.add(value)
        return value

    def marker(self, prefix: str = "PHI") -> str:
        n = self._markers
        self._markers += 1
        if n >= 1 << 24:
            raise ValueError("corpus too large: out of 24-bit markers")
        # n ↦ n·odd + salt (mod 2^24) is a bijection: markers never repeat.
        return self._claim(f"{prefix}{(n * 0x9E3779 + self._marker_salt) & 0xFFFFFF:06X}")

    def uid(self) -> str:
        n = self._uids
        self._uids += 1
        if n >= 9_000_000:
            raise ValueError("corpus too large: out of UIDs")
        return self._claim(f"{UID_ROOT}.{self._seed_part}.{1_000_000 + n}")

    def _date_free(self, text: str) -> bool:
        return text not in self.taken and text not in self._windows

    def _take_date(self, text: str) -> str:
        self._dates.add(text)
        return self._claim(text)

    def date_between(self, rng: random.Random, low: date, high: date) -> str:
        span = (high - low).days + 1
        while True:
            text = (low + timedelta(days=rng.randrange(span))).strftime("%Y%m%d")
            if self._date_free(text):
                return self._take_date(text)

    def date_after(self, rng: random.Random, after: str, low: int, high: int) -> str:
        start = date(int(after[:4]), int(after[4:6]), int(after[6:]))
        while True:
            text = (start + timedelta(days=rng.randint(low, high))).strftime("%Y%m%d")
            if self._date_free(text):
                return self._take_date(text)

    def pool_date(self) -> str:
        while True:
            n = self._pool_dates
            self._pool_dates += 1
            block, index = divmod(n, _BLOCK)
            offset = block * _BLOCK + (index * 40503 + self._date_salt) % _BLOCK
            text = (_EPOCH + timedelta(days=offset)).strftime("%Y%m%d")
            if self._date_free(text):
                return self._take_date(text)

    @staticmethod
    def _time_text(seconds: int, micro: int) -> str:
        seconds %= 86_400
        return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}.{micro:06d}"

    def time_at(self, rng: random.Random, seconds: int) -> str:
        while True:
            text = self._time_text(seconds, rng.randrange(1_000_000))
            if text not in self.taken:
                return self._claim(text)

    def pool_time(self) -> str:
        return self.time_at(self._rng, self._rng.randrange(86_400))

    def pool_datetime(self) -> str:
        while True:
            day = self.pool_date()
            for _ in range(50):  # some days leave no time free: "21991021" + "0…" ⊃ "19910210"
                time = self._time_text(self._rng.randrange(86_400), self._rng.randrange(10**6))
                text = day + time
                windows = {text[i : i + 8] for i in range(1, 7)}
                if time not in self.taken and windows.isdisjoint(self._dates):
                    self._claim(time)
                    self._windows |= windows
                    return self._claim(text)

    def decimal(self) -> str:
        n = self._numbers
        self._numbers += 1
        whole, fraction = divmod(n, 1_000_000)
        return self._claim(f"-{whole + 1}.{fraction:06d}")

    def integer(self) -> str:
        n = self._numbers
        self._numbers += 1
        return self._claim(f"-{1_000_000 + n % 9_000_000}")

    def ages(self) -> list[str]:
        while True:
            pair = [f"{self._rng.randrange(1, 1000):03d}{self._rng.choice('DWMY')}" for _ in "ab"]
            if "\\".join(pair) not in self.taken:
                self._claim("\\".join(pair))
                return pair

    def identifier(self, rng: random.Random, prefix: str, digits: int) -> str:
        while True:
            text = f"{prefix}{rng.randrange(10**digits):0{digits}d}"
            if text not in self.taken:
                return self._claim(text)


# ---------------------------------------------------------------------------------------------
# Answer-key bookkeeping


class _Answers:
    def __init__(self) -> None:
        self.injected: list[Injected] = []
        self._seen: set[str] = set()

    def add(self, record: Injected, *, fresh: bool) -> None:
        """Record a value at its first occurrence; ``fresh`` values must be new."""
        if len(record.value) < 6 or record.value in self._seen:
            if fresh:
                raise RuntimeError(f"internal error: {record.value!r} is not a fresh value")
            return
        self._seen.add(record.value)
        self.injected.append(record)


@dataclass(frozen=True)
class _Where:
    """Where a dataset sits in its file: for attribute paths and Annex E rows."""

    file: str
    prefix: str = ""
    table: str = ""
    private: bool = False

    def path(self, tag: int) -> str:
        return f"{self.prefix}({tag >> 16:04X},{tag & 0xFFFF:04X})"

    def table_for(self, tag: int) -> str:
        return "private" if self.private else _row_key(tag) or self.table

    def item(self, tag: int, index: int) -> _Where:
        return _Where(self.file, f"{self.path(tag)}[{index}]/", self.table_for(tag), self.private)

    def private_item(self, label: str, index: int) -> _Where:
        return _Where(self.file, f"{self.prefix}{label}[{index}]/", "private", True)


def _binary(marker: str) -> bytes:
    data = b"\x00" + marker.encode("ascii") + b"\x00"
    return data + b"\x00" * (len(data) % 2)


# ---------------------------------------------------------------------------------------------
# Encoding: Explicit VR Little Endian, written directly. pydicom's writer took 60 ms a file for
# an exhaustive header; this takes a few. The tests read every file back with pydicom, with
# its value validation turned into errors.

_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_HEAD = struct.Struct("<HH2s")
_ITEM = struct.Struct("<HHI")
_IMPLEMENTATION_UID = f"{UID_ROOT}.0.0"  # pool UIDs end in 7 digits: never this one
_IMPLEMENTATION_VERSION = "HAVENET_SYNTH_1"


class _Node:
    """A dataset: attributes by tag, each a VR and a value (a list of _Node for SQ)."""

    __slots__ = ("_creators", "elements")

    def __init__(self) -> None:
        self.elements: dict[int, tuple[str, Any]] = {}
        self._creators: dict[tuple[int, str], int] = {}

    def __contains__(self, tag: int) -> bool:
        return tag in self.elements

    def add(self, tag: int, vr: str, value: Any) -> None:
        self.elements[tag] = (vr, value)

    def private_tag(self, group: int, creator: str, offset: int) -> int:
        """The tag of element ``offset`` in the block reserved for ``creator`` in ``group``."""
        block = self._creators.get((group, creator))
        if block is None:
            used = {b for (g, _), b in self._creators.items() if g == group}
            block = next(b for b in range(0x10, 0x100) if b not in used)
            self._creators[(group, creator)] = block
            self.add((group << 16) | block, "LO", creator)
        return (group << 16) | (block << 8) | offset

    def encode(self) -> bytes:
        return b"".join(_element(tag, *self.elements[tag]) for tag in sorted(self.elements))


def _element(tag: int, vr: str, value: Any) -> bytes:
    if vr == "SQ":
        items = [item.encode() for item in value]
        data = b"".join(_ITEM.pack(0xFFFE, 0xE000, len(item)) + item for item in items)
    elif vr in _NUMBER_FORMATS:
        numbers = value if isinstance(value, list) else [value]
        data = struct.pack(f"<{len(numbers)}{_NUMBER_FORMATS[vr]}", *numbers)
    elif isinstance(value, bytes):
        data = value + b"\x00" * (len(value) % 2)
    else:
        data = (value if isinstance(value, str) else "\\".join(value)).encode("ascii")
        if len(data) % 2:
            data += b"\x00" if vr == "UI" else b" "
    head = _HEAD.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"))
    if vr in _LONG_VRS:
        return head + struct.pack("<HI", 0, len(data)) + data
    if len(data) > 0xFFFF:
        raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr}: value too long")
    return head + struct.pack("<H", len(data)) + data


def _file_meta(sop_class: str, sop_instance: str) -> bytes:
    """Preamble, "DICM" and the File Meta Information of an Explicit VR Little Endian file."""
    meta = _Node()
    meta.add(0x00020001, "OB", b"\x00\x01")
    meta.add(0x00020002, "UI", sop_class)
    meta.add(0x00020003, "UI", sop_instance)
    meta.add(0x00020010, "UI", ExplicitVRLittleEndian)
    meta.add(0x00020012, "UI", _IMPLEMENTATION_UID)
    meta.add(0x00020013, "SH", _IMPLEMENTATION_VERSION)
    body = meta.encode()
    return b"\x00" * 128 + b"DICM" + _element(0x00020000, "UL", len(body)) + body


# ---------------------------------------------------------------------------------------------
# What the synthetic hospital scans


@dataclass(frozen=True)
class _Protocol:
    description: str  # Series Description
    name: str  # Protocol Name
    plane: str  # AX, SAG or COR
    thickness: float
    window: tuple[int, int]  # centre, width
    derived: bool = False
    kernel: str = ""  # CT
    # MR: scanning sequence, variant, 2D/3D, TR, TE, flip angle
    mr: tuple[str, str, str, str, str, str] = ("", "", "", "", "", "")


@dataclass(frozen=True)
class _StudyType:
    modality: str
    body_part: str
    description: str
    short: str  # in descriptors that quote the patient: "MR BRAIN for BRANELLO MARANE"
    phantom: str
    fov: float
    protocols: tuple[_Protocol, ...]


_BRAIN, _LUNG, _SOFT, _MR_WINDOW = (40, 80), (-600, 1500), (50, 400), (600, 1200)


def _ct(
    description: str, name: str, plane: str, thickness: float, window: tuple[int, int],
    kernel: str, derived: bool = False,
) -> _Protocol:  # fmt: skip
    return _Protocol(description, name, plane, thickness, window, derived, kernel)


def _mr(
    description: str, name: str, plane: str, thickness: float, parameters: str,
    derived: bool = False,
) -> _Protocol:  # fmt: skip
    """``parameters``: scanning sequence|variant|2D or 3D|TR|TE|flip angle."""
    seq, variant, dims, tr, te, flip = parameters.split("|")
    return _Protocol(
        description,
        name,
        plane,
        thickness,
        _MR_WINDOW,
        derived,
        mr=(seq, variant, dims, tr, te, flip),
    )


_MPRAGE = "GR\\IR|SK\\SP\\MP|3D|2300|2.98|9"
_HASTE = "SE|SK\\SP|2D|1400|92|160"
_STUDY_TYPES: tuple[_StudyType, ...] = (
    _StudyType("CT", "HEAD", "CT HEAD W/O CONTRAST", "CT HEAD", "HEAD", 240.0, (
        _ct("AX 5mm BRAIN", "5.1 ROUTINE HEAD", "AX", 5.0, _BRAIN, "STANDARD"),
        _ct("AX 0.625mm BONE", "5.1 ROUTINE HEAD", "AX", 0.625, (500, 2500), "BONEPLUS"),
        _ct("COR 3mm BRAIN MPR", "5.1 ROUTINE HEAD", "COR", 3.0, _BRAIN, "STANDARD", True),
        _ct("SAG 3mm BRAIN MPR", "5.1 ROUTINE HEAD", "SAG", 3.0, _BRAIN, "STANDARD", True),
    )),
    _StudyType("CT", "CHEST", "CT CHEST W CONTRAST", "CT CHEST", "CHEST", 360.0, (
        _ct("AX 1.25mm LUNG", "6.1 CHEST ROUTINE", "AX", 1.25, _LUNG, "LUNG"),
        _ct("AX 2.5mm MEDIASTINUM", "6.1 CHEST ROUTINE", "AX", 2.5, (40, 400), "STANDARD"),
        _ct("COR 2mm LUNG MPR", "6.1 CHEST ROUTINE", "COR", 2.0, _LUNG, "LUNG", True),
    )),
    _StudyType("CT", "ABDOMEN", "CT ABDOMEN PELVIS W CONTRAST", "CT ABDOMEN", "ABDOMEN", 400.0, (
        _ct("PORTAL VENOUS 5mm", "8.2 ABD PELVIS PV", "AX", 5.0, _SOFT, "STANDARD"),
        _ct("ARTERIAL 1.25mm", "8.2 ABD PELVIS PV", "AX", 1.25, _SOFT, "STANDARD"),
        _ct("COR 3mm PV MPR", "8.2 ABD PELVIS PV", "COR", 3.0, _SOFT, "STANDARD", True),
    )),
    _StudyType("MR", "HEAD", "MR BRAIN W/O CONTRAST", "MR BRAIN", "HEAD", 240.0, (
        _mr("T1 MPRAGE SAG", "t1_mprage_sag_p2_iso", "SAG", 1.0, _MPRAGE),
        _mr("AX T2 FLAIR", "t2_tirm_tra_dark-fluid", "AX", 5.0, "SE\\IR|SK\\SP\\MP|2D|9000|81|150"),
        _mr("DWI b1000", "ep2d_diff_b1000_tra", "AX", 5.0, "EP|SK\\SP|2D|5000|89|90"),
        _mr("AX T2 TSE", "t2_tse_tra_p2", "AX", 5.0, "SE|SK\\SP\\OSP|2D|6000|100|150"),
        _mr("COR T1 MPR", "t1_mprage_sag_p2_iso", "COR", 1.0, _MPRAGE, True),
    )),
    _StudyType("MR", "ABDOMEN", "MR ABDOMEN W/WO CONTRAST", "MR ABDOMEN", "ABDOMEN", 380.0, (
        _mr("AX T2 HASTE", "t2_haste_tra_mbh", "AX", 6.0, _HASTE),
        _mr("AX T1 VIBE DIXON", "t1_vibe_dixon_tra_bh", "AX", 3.0, "GR|SP|3D|4|2.39|9"),
        _mr("DWI b800", "ep2d_diff_b50_800_tra", "AX", 6.0, "EP|SK\\SP|2D|6500|58|90"),
        _mr("COR T2 HASTE", "t2_haste_cor_mbh", "COR", 6.0, _HASTE),
    )),
)  # fmt: skip

# Ellipses (centre x, centre y, half-axis x, half-axis y, CT value in HU, MR signal), painted
# in order on air, in coordinates where the field of view spans -1..1.
_PHANTOMS: dict[str, tuple[tuple[float, float, float, float, float, float], ...]] = {
    "HEAD": (
        (0.0, 0.0, 0.72, 0.90, 1000, 250),
        (0.0, 0.0, 0.66, 0.84, 35, 700),
        (-0.14, -0.05, 0.07, 0.22, 5, 150),
        (0.14, -0.05, 0.07, 0.22, 5, 150),
        (0.30, -0.40, 0.06, 0.06, 70, 1100),
    ),
    "CHEST": (
        (0.0, 0.0, 0.90, 0.62, 40, 400),
        (-0.42, -0.05, 0.30, 0.45, -850, 40),
        (0.42, -0.05, 0.30, 0.45, -850, 40),
        (0.08, 0.05, 0.20, 0.22, 45, 520),
        (0.0, 0.48, 0.10, 0.10, 700, 160),
        (0.50, -0.20, 0.04, 0.04, 30, 600),
    ),
    "ABDOMEN": (
        (0.0, 0.0, 0.92, 0.70, 20, 350),
        (-0.38, -0.12, 0.34, 0.30, 60, 520),
        (0.46, -0.10, 0.15, 0.20, 50, 470),
        (-0.30, 0.32, 0.10, 0.14, 150, 640),
        (0.30, 0.32, 0.10, 0.14, 150, 640),
        (0.0, 0.45, 0.12, 0.12, 700, 160),
        (0.05, 0.20, 0.05, 0.05, 200, 820),
    ),
}

_ORIENTATION = {
    "AX": ["1", "0", "0", "0", "1", "0"],
    "SAG": ["0", "1", "0", "0", "0", "-1"],
    "COR": ["1", "0", "0", "0", "0", "-1"],
}


@dataclass(frozen=True)
class _Equipment:
    manufacturer: str
    model: str
    software: str
    station: str
    serial: str
    operators: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# The plan: every realistic value, drawn before any file is written


@dataclass
class _InstancePlan:
    number: int
    file: str
    sop_uid: str
    acquisition_time: str
    content_time: str
    creation_time: str
    position: float  # mm along the slice normal
    depth: float  # -1 .. 1 through the series, shapes the phantom


@dataclass
class _SeriesPlan:
    number: int
    protocol: _Protocol
    uid: str
    frame_uid: str
    time: str
    operator: str
    comment: str  # "" or a free-text comment quoting the patient
    references: list[str] = field(default_factory=list)  # Referenced Image Sequence
    sources: list[str] = field(default_factory=list)  # Source Image Sequence
    instances: list[_InstancePlan] = field(default_factory=list)


@dataclass
class _StudyPlan:
    type: _StudyType
    uid: str
    date: str
    time: str
    accession: str
    study_id: str
    requested_procedure_id: str
    scheduled_step_id: str
    performed_step_id: str
    description: str
    named: bool
    referring: str
    age: str
    prior_uid: str
    series: list[_SeriesPlan] = field(default_factory=list)


@dataclass
class _PatientPlan:
    surname: str
    given: str
    patient_id: str
    other_id: str
    birth_date: str
    sex: str
    size: str
    weight: str
    studies: list[_StudyPlan] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.surname}^{self.given}"


def _age(birth: str, on: str) -> str:
    years = int(on[:4]) - int(birth[:4]) - ((on[4:]) < (birth[4:]))
    return f"{years:03d}Y"


class _Corpus:
    def __init__(self, out_dir: Path, *, seed: int, rows: int, columns: int, exhaustive: bool):
        self.out_dir = out_dir
        self.seed = seed
        self.rows = rows
        self.columns = columns
        self.exhaustive = exhaustive
        self.rng = random.Random(seed)  # noqa: S311 (fake data, not secrets)
        self.values = _Values(seed)
        self.answers = _Answers()
        self.files: list[str] = []
        self._surnames, self._given = list(names.SURNAMES), list(names.GIVEN_NAMES)
        self.rng.shuffle(self._surnames)
        self.rng.shuffle(self._given)
        self._persons: set[tuple[str, str]] = set()
        self._spare: list[tuple[str, str]] = []
        self.hospital, self.hospital_short, self.address = self.rng.choice(names.HOSPITALS)
        self.referrers = tuple(self._person(doctor=True) for _ in range(4))
        self.equipment = {
            "CT": _Equipment(
                "GE MEDICAL SYSTEMS", "Revolution CT", "revo_ct_22mw.40",
                self.values.identifier(self.rng, "CTAWP", 5),
                self.values.identifier(self.rng, "SN", 6),
                (self._person(), self._person()),
            ),
            "MR": _Equipment(
                "SIEMENS", "MAGNETOM Skyra", "syngo MR E11",
                self.values.identifier(self.rng, "MRC", 5),
                self.values.identifier(self.rng, "SN", 6),
                (self._person(), self._person()),
            ),
        }  # fmt: skip

    def _person(self, *, doctor: bool = False) -> str:
        """A made-up name: each person has name parts of their own while there are enough."""
        n, surnames, given = len(self._persons), self._surnames, self._given
        if n < min(len(surnames), len(given)):
            pair = (surnames[n], given[n])
        else:  # a larger corpus: parts repeat, pairs never do
            if not self._spare:
                self._spare = [(s, g) for s in surnames for g in given]
                self.rng.shuffle(self._spare)
            while self._spare and self._spare[-1] in self._persons:
                self._spare.pop()
            if not self._spare:
                raise ValueError("corpus too large: out of made-up names")
            pair = self._spare.pop()
        self._persons.add(pair)
        return f"{pair[0]}^{pair[1]}^^DR" if doctor else f"{pair[0]}^{pair[1]}"

    # -- planning ------------------------------------------------------------------------------

    def plan(self, patients: int, studies: int, series: int, instances: int) -> list[_PatientPlan]:
        rng, values = self.rng, self.values
        plans: list[_PatientPlan] = []
        for p in range(1, patients + 1):
            surname, given = self._person().split("^")
            patient = _PatientPlan(
                surname=surname,
                given=given,
                patient_id=values.identifier(rng, "MRN", 7),
                other_id=values.identifier(rng, "NHI", 7),
                birth_date=values.date_between(rng, date(1935, 1, 1), date(2005, 12, 31)),
                sex=rng.choice("FM"),
                size=f"{rng.uniform(1.50, 1.95):.2f}",
                weight=str(rng.randrange(45, 111)),
            )
            previous = ""
            for s in range(1, studies + 1):
                study_date = (
                    values.date_after(rng, previous, 20, 400)
                    if previous
                    else values.date_between(rng, date(2015, 1, 1), date(2023, 6, 30))
                )
                previous = study_date
                patient.studies.append(
                    self._plan_study(patient, p, s, study_date, series, instances)
                )
            plans.append(patient)
        return plans

    def _plan_study(
        self, patient: _PatientPlan, p: int, s: int, study_date: str, series: int, instances: int
    ) -> _StudyPlan:
        rng, values = self.rng, self.values
        kind = rng.choice(_STUDY_TYPES)
        named = (p == 1 and s == 1) or rng.random() < 0.3
        start = rng.randrange(7 * 3600, 17 * 3600)
        prior = patient.studies[-1].uid if patient.studies else ""
        study = _StudyPlan(
            type=kind,
            uid=values.uid(),
            date=study_date,
            time=values.time_at(rng, start),
            accession=values.identifier(rng, "ACC", 7),
            study_id=values.identifier(rng, "ST", 6),
            requested_procedure_id=values.identifier(rng, "RP", 7),
            scheduled_step_id=values.identifier(rng, "SPS", 7),
            performed_step_id=values.identifier(rng, "PPS", 7),
            description=(
                f"{kind.short} for {patient.surname} {patient.given}" if named else kind.description
            ),
            named=named,
            referring=rng.choice(self.referrers),
            age=_age(patient.birth_date, study_date),
            prior_uid=prior,
        )
        equipment = self.equipment[kind.modality]
        clock = start + 60
        for k in range(1, series + 1):
            protocol = kind.protocols[(k - 1) % len(kind.protocols)]
            comment = ""
            if k > 1 and rng.random() < 0.25:
                comment = (
                    f"{patient.given} {patient.surname} ({patient.patient_id}) moved, repeated"
                )
            plan = _SeriesPlan(
                number=k,
                protocol=protocol,
                uid=values.uid(),
                frame_uid=values.uid(),
                time=values.time_at(rng, clock),
                operator=rng.choice(equipment.operators),
                comment=comment,
            )
            for i in range(1, instances + 1):
                seconds = clock + 2 * i
                half = (instances - 1) / 2
                plan.instances.append(
                    _InstancePlan(
                        number=i,
                        file=f"p{p:03d}/s{s}/se{k}/{i:04d}.dcm",
                        sop_uid=values.uid(),
                        acquisition_time=values.time_at(rng, seconds),
                        content_time=values.time_at(rng, seconds + 1),
                        creation_time=values.time_at(rng, seconds + 30),
                        position=(i - 1 - half) * protocol.thickness,
                        depth=(i - 1 - half) / half if half else 0.0,
                    )
                )
            if k > 1:
                first = study.series[0].instances
                picked = [first[j].sop_uid for j in sorted({0, len(first) // 2, len(first) - 1})]
                if protocol.derived:
                    plan.sources = [x.sop_uid for x in first]
                else:
                    plan.references = picked
            clock += rng.randrange(180, 420)
            study.series.append(plan)
        return study

    # -- writing ---------------------------------------------------------------------------------

    def put(
        self,
        ds: _Node,
        where: _Where,
        tag: int,
        vr: str,
        value: Any,
        *,
        record: bool | None = None,
        kind: str = "",
        fresh: bool = False,
        text: str = "",
    ) -> None:
        """Add an attribute and, if it is PHI, record it in the answer key.

        Attributes with their own Annex E row are recorded unless ``record`` is False; others
        only when ``record`` is True. ``text`` is what to record for binary values.
        """
        ds.add(tag, vr, value)
        if record is None:
            record = bool(_row_key(tag)) or where.private
        if not record:
            return
        if not text:
            text = value if isinstance(value, str) else "\\".join(value)
        key = where.table_for(tag)
        injected = Injected(where.file, where.path(tag), key, vr, text, kind or _kind(key, vr))
        self.answers.add(injected, fresh=fresh)

    def write(self, patients: list[_PatientPlan]) -> None:
        number = 0
        for patient in patients:
            for study in patient.studies:
                for series in study.series:
                    for instance in series.instances:
                        number += 1
                        ds = self._realistic(patient, study, series, instance, number)
                        if self.exhaustive:
                            self._exhaustive(ds, _Where(instance.file), patient, study, number)
                        path = self.out_dir / instance.file
                        path.parent.mkdir(parents=True, exist_ok=True)
                        meta = _file_meta(self._sop_class(study), instance.sop_uid)
                        path.write_bytes(meta + ds.encode())
                        self.files.append(instance.file)

    def _realistic(
        self,
        patient: _PatientPlan,
        study: _StudyPlan,
        series: _SeriesPlan,
        instance: _InstancePlan,
        number: int,
    ) -> _Node:
        ds = _Node()
        put = _Header(self, ds, _Where(instance.file))
        self._general(put, study, series, instance)
        self._patient(put, patient, study)
        self._acquisition(put, study, series)
        self._image(put, study, series, instance)
        ds.add(0x7FE00010, "OW", self._pixels(study.type, instance.depth, number))
        return ds

    @staticmethod
    def _sop_class(study: _StudyPlan) -> str:
        return CTImageStorage if study.type.modality == "CT" else MRImageStorage

    def _general(
        self, put: _Header, study: _StudyPlan, series: _SeriesPlan, instance: _InstancePlan
    ) -> None:
        kind, protocol = study.type, series.protocol
        ct = kind.modality == "CT"
        equipment = self.equipment[kind.modality]
        sop_class = self._sop_class(study)
        if protocol.derived:
            image_type = ["DERIVED", "SECONDARY", "REFORMATTED" if ct else "MPR"]
        else:
            image_type = ["ORIGINAL", "PRIMARY", "AXIAL" if ct else "M"]
        put(0x00080005, "CS", "ISO_IR 100")
        put(0x00080008, "CS", image_type)
        put(0x00080020, "DA", study.date)  # first, so the key names the study date
        put(0x00080012, "DA", study.date)
        put(0x00080013, "TM", instance.creation_time)
        put(0x00080016, "UI", sop_class)
        put(0x00080018, "UI", instance.sop_uid)
        put(0x00080021, "DA", study.date)
        put(0x00080022, "DA", study.date)
        put(0x00080023, "DA", study.date)
        put(0x00080030, "TM", study.time)
        put(0x00080031, "TM", series.time)
        put(0x00080032, "TM", instance.acquisition_time)
        put(0x00080033, "TM", instance.content_time)
        put(0x00080050, "SH", study.accession)
        put(0x00080060, "CS", kind.modality)
        put(0x00080070, "LO", equipment.manufacturer)
        put(0x00080080, "LO", self.hospital)
        put(0x00080081, "ST", self.address)
        put(0x00080090, "PN", study.referring)
        put(0x00081010, "SH", equipment.station)
        put(0x00081030, "LO", study.description, "text" if study.named else "")
        put(0x0008103E, "LO", protocol.description)
        put(0x00081040, "LO", "RADIOLOGY")
        put(0x00081070, "PN", series.operator)
        put(0x00081090, "LO", equipment.model)
        if study.prior_uid:  # the patient's previous study
            put.references(0x00081110, "1.2.840.10008.3.1.2.3.1", [study.prior_uid])
        if series.references:
            put.references(0x00081140, sop_class, series.references)
        if series.sources:
            put.references(0x00082112, sop_class, series.sources)

    def _patient(self, put: _Header, patient: _PatientPlan, study: _StudyPlan) -> None:
        put(0x00100010, "PN", patient.name)
        put(0x00100020, "LO", patient.patient_id)
        put(0x00100021, "LO", f"{self.hospital_short}_MRN")
        put(0x00100030, "DA", patient.birth_date)
        put(0x00100040, "CS", patient.sex)
        put(0x00101000, "LO", patient.other_id)
        other = _Node()
        self.put(other, put.where.item(0x00101002, 0), 0x00100020, "LO", patient.other_id)
        other.add(0x00100022, "CS", "TEXT")
        put.ds.add(0x00101002, "SQ", [other])
        put(0x00101010, "AS", study.age)
        if study.type.modality == "MR":
            put(0x00101020, "DS", patient.size)
            put(0x00101030, "DS", patient.weight)

    def _acquisition(self, put: _Header, study: _StudyPlan, series: _SeriesPlan) -> None:
        kind, protocol = study.type, series.protocol
        equipment = self.equipment[kind.modality]
        put(0x00180015, "CS", kind.body_part)
        put(0x00180050, "DS", f"{protocol.thickness:g}")
        if kind.modality == "CT":
            put(0x00180060, "DS", "120")
            put(0x00181100, "DS", f"{kind.fov:g}")
            put(0x00181150, "IS", "700")
            put(0x00181151, "IS", str(180 + 20 * series.number))
            put(0x00181210, "SH", protocol.kernel)
        else:
            sequence, variant, dimension, tr, te, flip = protocol.mr
            put(0x00180020, "CS", sequence.split("\\"))
            put(0x00180021, "CS", variant.split("\\"))
            put(0x00180023, "CS", dimension)
            put(0x00180080, "DS", tr)
            put(0x00180081, "DS", te)
            put(0x00180084, "DS", "123.2")
            put(0x00180087, "DS", "3")
            put(0x00181314, "DS", flip)
        put(0x00181000, "LO", equipment.serial)
        put(0x00181020, "LO", equipment.software)
        put(0x00181030, "LO", protocol.name)
        put(0x00185100, "CS", "HFS")
        put(0x00321060, "LO", kind.description)
        put(0x00400244, "DA", study.date)
        put(0x00400245, "TM", study.time)
        put(0x00400253, "SH", study.performed_step_id)
        put(0x00400254, "LO", kind.description)
        request = _Node()
        where = put.where.item(0x00400275, 0)
        self.put(request, where, 0x00080050, "SH", study.accession)
        self.put(request, where, 0x00400009, "SH", study.scheduled_step_id)
        self.put(request, where, 0x00401001, "SH", study.requested_procedure_id)
        put.ds.add(0x00400275, "SQ", [request])

    def _image(
        self, put: _Header, study: _StudyPlan, series: _SeriesPlan, instance: _InstancePlan
    ) -> None:
        kind, protocol = study.type, series.protocol
        put(0x0020000D, "UI", study.uid)
        put(0x0020000E, "UI", series.uid)
        put(0x00200010, "SH", study.study_id)
        put(0x00200011, "IS", str(series.number))
        put(0x00200012, "IS", "1")
        put(0x00200013, "IS", str(instance.number))
        put(0x00200032, "DS", self._position(kind.fov, protocol.plane, instance.position))
        put(0x00200037, "DS", _ORIENTATION[protocol.plane])
        put(0x00200052, "UI", series.frame_uid)
        put(0x00201040, "LO", "")
        put(0x00201041, "DS", f"{instance.position:.3f}")
        if series.comment:
            put(0x00204000, "LT", series.comment, "text")
        put(0x00280002, "US", 1)
        put(0x00280004, "CS", "MONOCHROME2")
        put(0x00280010, "US", self.rows)
        put(0x00280011, "US", self.columns)
        put(0x00280030, "DS", [f"{kind.fov / self.rows:.6g}", f"{kind.fov / self.columns:.6g}"])
        put(0x00280100, "US", 16)
        put(0x00280101, "US", 12)
        put(0x00280102, "US", 11)
        put(0x00280103, "US", 0)
        put(0x00281050, "DS", str(protocol.window[0]))
        put(0x00281051, "DS", str(protocol.window[1]))
        if kind.modality == "CT":
            put(0x00281052, "DS", "-1024")
            put(0x00281053, "DS", "1")
            put(0x00281054, "LO", "HU")

    @staticmethod
    def _position(fov: float, plane: str, position: float) -> list[str]:
        corner = -fov / 2
        xyz = {
            "AX": (corner, corner, position),
            "SAG": (position, corner, -corner),
            "COR": (corner, position, -corner),
        }[plane]
        return [f"{v:.3f}" for v in xyz]

    def _pixels(self, kind: _StudyType, depth: float, number: int) -> bytes:
        rows, columns = self.rows, self.columns
        y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
        x = np.linspace(-1.0, 1.0, columns, dtype=np.float32)[None, :]
        ct = kind.modality == "CT"
        image = np.full((rows, columns), -1000.0 if ct else 0.0, dtype=np.float32)
        scale = 1.0 - 0.3 * depth * depth
        for cx, cy, ax, ay, hu, signal in _PHANTOMS[kind.phantom]:
            inside = ((x - cx) / (ax * scale)) ** 2 + ((y - cy) / (ay * scale)) ** 2 <= 1.0
            image[inside] = hu if ct else signal
        noise = np.random.default_rng([self.seed & 0xFFFF_FFFF_FFFF_FFFF, number])
        image += noise.standard_normal((rows, columns), dtype=np.float32) * (8.0 if ct else 12.0)
        if ct:
            image += 1024.0
        return np.clip(np.rint(image), 0, 4095).astype("<u2").tobytes()

    # -- exhaustive PHI --------------------------------------------------------------------------

    def _fake(self, vr: str, vm: str) -> tuple[Any, str] | None:
        """A fresh value for a VR (and its recorded text), or None if none can be searched."""
        values = self.values
        count = int(vm) if vm.isdigit() else 1
        if vr in ("AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT"):
            marker = values.marker()
            return marker, marker
        if vr == "PN":
            name = f"{values.marker()}^SYNTHETIC"
            return name, name
        if vr == "UR":
            url = f"https://phi.invalid/{values.marker()}"
            return url, url
        if vr in ("DA", "DT", "TM", "UI", "DS", "IS"):
            make = {
                "DA": values.pool_date,
                "DT": values.pool_datetime,
                "TM": values.pool_time,
                "UI": values.uid,
                "DS": values.decimal,
                "IS": values.integer,
            }[vr]
            items = [make() for _ in range(count)]
            return (items[0] if count == 1 else items), "\\".join(items)
        if vr == "AS" and vm != "1":
            ages = values.ages()
            return ages, "\\".join(ages)
        if vr in ("OB", "OW", "UN"):
            marker = values.marker()
            return _binary(marker), marker
        return None  # US, and a single AS: too short to search for

    def _inject(self, ds: _Node, where: _Where, row: _Row, patient: _PatientPlan) -> None:
        if row.vr == "SQ":
            item = _Node()
            index = self._append(ds, row.tag, item)
            self._fill_item(item, where.item(row.tag, index), row.tag, patient)
            return
        if row.tag in ds:
            return  # the realistic header already holds it
        fake = self._fake(row.vr, row.vm)
        if fake is None:
            return
        value, text = fake
        self.put(ds, where, row.tag, row.vr, value, record=True, fresh=True, text=text)

    @staticmethod
    def _append(ds: _Node, tag: int, item: _Node) -> int:
        if tag not in ds:
            ds.add(tag, "SQ", [])
        items: list[_Node] = ds.elements[tag][1]
        items.append(item)
        return len(items) - 1

    def _fill_item(self, item: _Node, where: _Where, tag: int, patient: _PatientPlan) -> None:
        """One item of an Annex E sequence: a PHI-carrying text and a UID reference."""
        key = where.table
        if tag == 0x0040A730:  # Content Sequence: an SR text content item
            self._sr_text(item, where, patient)
            self.put(item, where, 0x0040A124, "UI", self.values.uid(), fresh=True)
            return
        marker = self.values.marker()
        self.put(
            item, where, 0x00080104, "LO", marker, record=True, kind=_kind(key, "LO"), fresh=True
        )
        item.add(0x00081150, "UI", CTImageStorage)
        self.put(item, where, 0x00081155, "UI", self.values.uid(), fresh=True)

    def _sr_text(self, item: _Node, where: _Where, patient: _PatientPlan) -> None:
        item.add(0x0040A010, "CS", "CONTAINS")
        item.add(0x0040A040, "CS", "TEXT")
        item.add(0x0040A043, "SQ", [_code("121071", "DCM", "Finding")])
        text = (
            f"Discussed with {patient.given} {patient.surname} ({patient.patient_id}), "
            f"note {self.values.marker()}"
        )
        self.put(item, where, 0x0040A160, "UT", text, record=True, kind="text", fresh=True)

    def _exhaustive(
        self, ds: _Node, top: _Where, patient: _PatientPlan, study: _StudyPlan, number: int
    ) -> None:
        nested_only = (0x0000, 0x0002)  # command and file meta groups: not allowed at top level
        for row in _KNOWN_ROWS:
            if row.tag >> 16 not in nested_only:
                self._inject(ds, top, row, patient)
        nestable = [r for r in _KNOWN_ROWS if r.tag != 0xFFFCFFFC]  # padding: top level only
        containers: dict[int, tuple[_Node, _Where]] = {}
        for index, row in enumerate(nestable):
            if row.tag >> 16 in nested_only or (index + number) % 2 == 0:
                which = index % 3
                if which not in containers:
                    containers[which] = self._container(ds, top, which, patient)
                self._inject(*containers[which], row, patient)
        self._overlays_and_curve(ds, top)
        self._private(ds, top, study.type.modality)

    def _container(
        self, ds: _Node, top: _Where, which: int, patient: _PatientPlan
    ) -> tuple[_Node, _Where]:
        """A dataset two sequences deep, to receive nested PHI."""
        outer, inner, level1 = {
            0: (0x00400275, 0x00081110, _Node()),  # Request Attributes → Referenced Study
            1: (0x0040A730, 0x0040A730, _Node()),  # SR content tree
            2: (0x04000561, 0x04000550, _Node()),  # Original → Modified Attributes
        }[which]
        level2 = _Node()
        index = self._append(ds, outer, level1)
        where = top.item(outer, index).item(inner, 0)
        if which == 1:
            level1.add(0x0040A010, "CS", "CONTAINS")
            level1.add(0x0040A040, "CS", "CONTAINER")
            level1.add(0x0040A043, "SQ", [_code("121070", "DCM", "Findings")])
            level1.add(0x0040A050, "CS", "SEPARATE")
            self._sr_text(level2, where, patient)
        level1.add(inner, "SQ", [level2])
        return level2, where

    def _graphics(
        self, ds: _Node, top: _Where, tag: int, vr: str, value: Any, text: str = ""
    ) -> None:
        self.put(ds, top, tag, vr, value, record=True, kind="graphics", fresh=True, text=text)

    def _overlays_and_curve(self, ds: _Node, top: _Where) -> None:
        rows, columns, values = self.rows, self.columns, self.values
        bits = np.zeros((rows, columns), dtype=bool)
        bits[rows // 8, columns // 8 : columns - columns // 8] = True
        bits[rows - rows // 8, columns // 8 : columns - columns // 8] = True
        packed = np.packbits(bits.ravel(), bitorder="little").tobytes()
        for group in (0x6000, 0x6002):
            tag = group << 16
            ds.add(tag | 0x0010, "US", rows)
            ds.add(tag | 0x0011, "US", columns)
            self._graphics(ds, top, tag | 0x0022, "LO", values.marker())
            ds.add(tag | 0x0040, "CS", "G")
            ds.add(tag | 0x0050, "SS", [1, 1])
            ds.add(tag | 0x0100, "US", 1)
            ds.add(tag | 0x0102, "US", 0)
            self._graphics(ds, top, tag | 0x1500, "LO", values.marker())
            marker = values.marker()
            data = bytearray(packed + b"\x00" * (len(packed) % 2))
            data[2 : 2 + len(marker)] = marker.encode("ascii")
            self._graphics(ds, top, tag | 0x3000, "OW", bytes(data), marker)
            self._graphics(ds, top, tag | 0x4000, "LT", values.marker())
        curve = 0x5000 << 16
        ds.add(curve | 0x0005, "US", 1)
        ds.add(curve | 0x0010, "US", 8)
        ds.add(curve | 0x0020, "CS", "TAC")
        self._graphics(ds, top, curve | 0x0022, "LO", values.marker())
        ds.add(curve | 0x0030, "SH", "SEC")
        ds.add(curve | 0x0103, "US", 0)
        self._graphics(ds, top, curve | 0x2500, "LO", values.marker())
        marker = values.marker()
        self._graphics(ds, top, curve | 0x3000, "OB", _binary(marker) + bytes(16), marker)

    def _put_private(
        self,
        ds: _Node,
        where: _Where,
        spec: _PrivateSpec,
        value: Any,
        text: str,
        kind: str,
    ) -> None:
        group, creator, element, vr = spec
        ds.add(ds.private_tag(group, creator, element), vr, value)
        path = f"{where.prefix}({group:04X},{creator},{element:02X})"
        self.answers.add(Injected(where.file, path, "private", vr, text, kind), fresh=True)

    def _private(self, ds: _Node, top: _Where, modality: str) -> None:
        values = self.values
        for spec in _SAFE_PRIVATE[modality]:
            marker = values.marker("KEEP")
            value = _binary(marker) if spec[3] == "OB" else marker
            self._put_private(ds, top, spec, value, marker, "private-safe")
        for group, creator, element in _UNSAFE_KNOWN[modality]:
            marker = values.marker()
            self._put_private(
                ds, top, (group, creator, element, "LO"), marker, marker, "private-unsafe"
            )
        for element, vr in ((0x10, "LO"), (0x11, "PN"), (0x12, "DA"), (0x13, "UI"), (0x14, "OB")):
            value, text = self._fake(vr, "1") or ("", "")
            self._put_private(
                ds, top, (_ACME_GROUP, _ACME, element, vr), value, text, "private-unsafe"
            )
        # A private sequence whose item holds standard and private PHI.
        label = f"({_ACME_GROUP:04X},{_ACME},20)"
        where = top.private_item(label, 0)
        item = _Node()
        self.put(
            item,
            where,
            0x00100010,
            "PN",
            f"{values.marker()}^SYNTHETIC",
            kind="private-unsafe",
            fresh=True,
        )
        self.put(item, where, 0x00100020, "LO", values.marker(), kind="private-unsafe", fresh=True)
        self.put(item, where, 0x00081155, "UI", values.uid(), kind="private-unsafe", fresh=True)
        marker = values.marker()
        self._put_private(
            item, where, (_ACME_GROUP, _ACME, 0x16, "LO"), marker, marker, "private-unsafe"
        )
        ds.add(ds.private_tag(_ACME_GROUP, _ACME, 0x20), "SQ", [item])


@dataclass(frozen=True)
class _Header:
    """Adds attributes to one dataset of one file, recording PHI in the answer key."""

    corpus: _Corpus
    ds: _Node
    where: _Where

    def __call__(self, tag: int, vr: str, value: Any, kind: str = "") -> None:
        self.corpus.put(self.ds, self.where, tag, vr, value, kind=kind)

    def references(self, tag: int, sop_class: str, uids: Sequence[str]) -> None:
        items = []
        for index, uid in enumerate(uids):
            item = _Node()
            item.add(0x00081150, "UI", sop_class)
            self.corpus.put(item, self.where.item(tag, index), 0x00081155, "UI", uid)
            items.append(item)
        self.ds.add(tag, "SQ", items)


def _code(value: str, scheme: str, meaning: str) -> _Node:
    code = _Node()
    code.add(0x00080100, "SH", value)
    code.add(0x00080102, "SH", scheme)
    code.add(0x00080104, "LO", meaning)
    return code


# ---------------------------------------------------------------------------------------------
# Entry point


def generate_corpus(
    out_dir: Path,
    *,
    patients: int = 3,
    studies_per_patient: int = 2,
    series_per_study: int = 2,
    instances_per_series: int = 3,
    rows: int = 64,
    columns: int = 64,
    phi: Literal["realistic", "exhaustive"] = "realistic",
    seed: int = 0,
) -> AnswerKey:
    """Write a synthetic corpus under ``out_dir`` and return its answer key.

    The same arguments give the same bytes. Files are Explicit VR Little Endian CT or MR Image
    Storage instances with 16-bit pixels (12 bits stored) showing a phantom.
    """
    counts = {
        "patients": patients,
        "studies_per_patient": studies_per_patient,
        "series_per_study": series_per_study,
        "instances_per_series": instances_per_series,
    }
    for argument, count in counts.items():
        if count < 1:
            raise ValueError(f"{argument} must be at least 1, not {count}")
    if not (16 <= rows <= 4096 and 16 <= columns <= 4096):
        raise ValueError(f"rows and columns must be within 16..4096, not {rows}x{columns}")
    if phi not in ("realistic", "exhaustive"):
        raise ValueError(f"phi must be 'realistic' or 'exhaustive', not {phi!r}")
    corpus = _Corpus(
        Path(out_dir), seed=seed, rows=rows, columns=columns, exhaustive=phi == "exhaustive"
    )
    plans = corpus.plan(patients, studies_per_patient, series_per_study, instances_per_series)
    corpus.write(plans)
    truths = tuple(
        PatientTruth(
            patient_id=p.patient_id,
            name=p.name,
            birth_date=p.birth_date,
            sex=p.sex,
            other_ids=(p.other_id,),
            accession_numbers=tuple(s.accession for s in p.studies),
            study_dates=tuple(s.date for s in p.studies),
        )
        for p in plans
    )
    return AnswerKey(
        patients=truths, injected=tuple(corpus.answers.injected), files=tuple(corpus.files)
    )
