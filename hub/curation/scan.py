"""The hub's own PHI scan of a received instance, independent of the node's leak check:
identifier attributes that should hold the project's subject key or nothing, identifier
patterns (e-mail, telephone, national-id-like digit runs) in text, and dates outside the
range a shifted date can take.

A finding names the file and the attribute, never the value found.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

_MUST_BE_SUBJECT_KEY = ("PatientName", "PatientID")
_MUST_BE_EMPTY = (
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "MedicalRecordLocator",
    "AccessionNumber",
)
_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "PN", "UC"})
_SCANNED_VRS = _TEXT_VRS | {"DA", "SQ"}
PATTERNS = (
    ("an e-mail address", re.compile(r"[\w.+-]+@[\w-]+\.[a-z]{2,}", re.IGNORECASE)),
    ("a telephone number", re.compile(r"(?<![\w.])\+?\d[\d ()-]{7,}\d(?![\w.])")),
)


def scan(ds: Dataset, *, path: str, subject_key: str, latest_date: dt.date) -> list[str]:
    """Findings for one instance; ``latest_date`` is the latest date a shifted date can be."""
    findings: list[str] = []
    for keyword in _MUST_BE_SUBJECT_KEY:
        value = str(ds.get(keyword, "") or "")
        if value not in {"", subject_key}:
            findings.append(f"{path}: {keyword} is not the project's subject key")
    for keyword in _MUST_BE_EMPTY:
        if str(ds.get(keyword, "") or "").strip():
            findings.append(f"{path}: {keyword} is not empty")
    for name, vr, value in _elements(ds):
        if vr in _TEXT_VRS:
            for label, pattern in PATTERNS:
                if pattern.search(value):
                    findings.append(f"{path}: {name} holds what looks like {label}")
        elif vr == "DA" and _after(value, latest_date):
            findings.append(f"{path}: {name} is a date outside the shifted range")
    return findings


def _elements(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(name, VR, value) of the text and date elements, converting only those: the raw
    elements' VRs are read first (a header's other values are never decoded)."""
    for raw in ds.elements():
        if raw.VR is not None and raw.VR not in _SCANNED_VRS:
            continue  # not text, a date or a sequence: its value is never looked at
        element = ds[raw.tag]
        name = f"{prefix}{element.keyword or str(element.tag)}"
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                yield from _elements(item, f"{name}[{index}].")
            continue
        if element.VR in _TEXT_VRS or element.VR == "DA":
            value = element.value
            values = list(value) if isinstance(value, MultiValue) else [value]
            for single in values:
                if single not in (None, ""):
                    yield name, element.VR, str(single)


def _after(value: str, latest: dt.date) -> bool:
    try:
        date = dt.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return False
    return date > latest
