"""The patient's own identifiers: scrubbed out of kept free text, and searched for in output.

Both uses share one list of *needles*, taken from the instance before it is changed:
names, IDs, accession numbers, address, telephone, birth date — only those the profile
does not deliberately keep — plus original dates and UIDs when the profile replaces them.

The leak check runs on the encoded output bytes (everything but native pixel samples,
which hold numbers, not text) and fails closed: any needle found that the engine did not
itself write rejects the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.valuerep import PersonName

from common.deid.exceptions import LeakDetected

# Shorter needles match by chance in numbers and codes; the scrubber still removes them from
# free text, where it matches whole words only.
MIN_NEEDLE_LENGTH = 4
REDACTED = "[REDACTED]"

# The patient's direct identifiers (PS3.15 E.1-1 names them; these are the ones whose
# values a person would recognise as theirs).
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "AccessionNumber",
    "MilitaryRank",
    "PatientInsurancePlanCodeSequence",
)

_IDENTIFYING_TAGS = tuple((keyword, Tag(keyword)) for keyword in IDENTIFYING_KEYWORDS)


def date_forms(value: str) -> list[str]:
    """A DICOM date as people also write it: 20240131 → 2024-01-31, 31/01/2024, 31.01.2024."""
    digits = value[:8]
    if len(digits) != 8 or not digits.isdigit():
        return [value]
    y, m, d = digits[:4], digits[4:6], digits[6:8]
    return [
        digits,
        f"{y}-{m}-{d}",
        f"{y}.{m}.{d}",
        f"{y}/{m}/{d}",
        f"{d}/{m}/{y}",
        f"{d}-{m}-{y}",
        f"{d}.{m}.{y}",
        f"{m}/{d}/{y}",
    ]


def name_forms(value: str) -> list[str]:
    """A person name's whole forms and its components ("DOE^JANE" → "DOE JANE", "DOE", "JANE")."""
    name = PersonName(value)
    parts = [p for p in (name.family_name, name.given_name, name.middle_name) if p]
    forms = [str(value), " ".join(parts), " ".join(reversed(parts)), ", ".join(parts)]
    forms += [p.strip() for part in parts for p in part.split()]
    return forms


@dataclass
class Needles:
    """What must not remain; ``written`` is what the engine itself wrote (it may coincide)."""

    identifiers: set[str] = field(default_factory=set, repr=False)
    originals: set[str] = field(default_factory=set, repr=False)  # replaced dates and UIDs
    written: list[str] = field(default_factory=list, repr=False)
    # Single name components ("DOE"): also English words, so a CS defined term that holds
    # one ("PERFUSION" in ImageType) is not a leak; everywhere else it is.
    components: set[str] = field(default_factory=set, repr=False)
    _scrubber: re.Pattern[str] | None = field(default=None, repr=False)

    def add_identifier(self, keyword: str, value: object) -> None:
        for raw in _strings(value):
            text = raw.strip()
            if not text:
                continue
            if keyword == "PatientBirthDate":
                self.identifiers.update(date_forms(text))
            elif isinstance(value, PersonName) or "Name" in keyword:
                forms = [f for f in name_forms(text) if len(f) >= 2]
                self.identifiers.update(forms)
                self.components.update(f.lower() for f in forms if " " not in f and "^" not in f)
            else:
                self.identifiers.add(text)
        self._scrubber = None

    def add_original(self, text: str) -> None:
        if len(text) >= MIN_NEEDLE_LENGTH:
            self.originals.add(text)

    def scrub(self, text: str, *, dates: bool) -> str:
        """Free text without the patient's identifiers (whole words), nor any date if
        ``dates`` (the profile shifts or removes them, so a date in text would undo that)."""
        if self._scrubber is None:
            self._scrubber = _scrubber(frozenset(self.identifiers))
        cleaned = self._scrubber.sub(REDACTED, text)
        return _DATE_IN_TEXT.sub(REDACTED, cleaned) if dates else cleaned

    def check(
        self, haystack: bytes, locate: Callable[[str], list[tuple[str, str]]] | None = None
    ) -> None:
        """Raise LeakDetected if a needle occurs, as a whole word, more often than written.

        A substring test (fast, memchr-based) screens every needle; only the few that hit
        are counted again with word boundaries, so "ANNE" does not match "Scanner".
        """
        lowered = haystack.lower()
        written: bytes | None = None
        for needle in self._all():
            key = needle.lower().encode("utf-8", "replace")
            if key not in lowered:
                continue
            pattern = re.compile(rb"(?<![a-z0-9])" + re.escape(key) + rb"(?![a-z0-9])")
            found = len(pattern.findall(lowered))
            if not found:
                continue
            if written is None:
                written = "\n".join(self.written).lower().encode("utf-8", "replace")
            if found <= len(pattern.findall(written)):
                continue
            places = locate(needle) if locate is not None else []
            if needle.lower() in self.components and places and all(vr == "CS" for _, vr in places):
                continue
            where = f" in {places[0][0]}" if places else ""
            raise LeakDetected(f"leak check: {self._kind(needle)} survived{where}")

    def _all(self) -> Iterable[str]:
        for needle in self.identifiers | self.originals:
            if len(needle) >= MIN_NEEDLE_LENGTH:
                yield needle

    def _kind(self, needle: str) -> str:
        if needle in self.identifiers:
            return "an identifier of the patient"
        return "an original date or UID"


# Dates as people write them in free text: 20240131, 2024-01-31, 31/01/2024, 31.01.24 ...
_DATE_IN_TEXT = re.compile(
    r"(?<![0-9])(?:(?:19|20)[0-9]{2}[-./]?[01][0-9][-./]?[0-3][0-9]"
    r"|[0-3]?[0-9][-./][01]?[0-9][-./](?:19|20)?[0-9]{2})(?![0-9])"
)


@lru_cache(maxsize=256)
def _scrubber(words: frozenset[str]) -> re.Pattern[str]:
    """One pattern per patient: compiling costs far more than matching, so it is cached."""
    if not words:
        return re.compile(r"(?!x)x")  # matches nothing
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True) if w)
    return re.compile(rf"(?<![0-9A-Za-z])(?:{alternatives})(?![0-9A-Za-z])", re.IGNORECASE)


def collect_identifiers(ds: Dataset, needles: Needles, kept: set[str]) -> None:
    """The patient's identifiers from the top level of ``ds``, except the kept ones."""
    elements = ds._dict  # by tag: a keyword lookup costs more than the membership test
    for keyword, tag in _IDENTIFYING_TAGS:
        if keyword in kept or tag not in elements:
            continue
        value = ds[tag].value
        if keyword == "PatientInsurancePlanCodeSequence":
            continue  # codes, not a person's own strings
        needles.add_identifier(keyword, value)
    for item in ds.get("OtherPatientIDsSequence", []) or []:
        if "PatientID" in item:
            needles.add_identifier("PatientID", item.PatientID)


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | PersonName):
        return [str(value)]
    if isinstance(value, bytes):
        return [value.decode("latin-1")]
    try:
        return [str(v) for v in value]  # type: ignore[attr-defined]
    except TypeError:
        return [str(value)]
