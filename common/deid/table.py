"""PS3.15 Annex E Table E.1-1 as data, and the options that change it.

The table ships in ``data/annex_e.json``, generated from the standard (see ``data/README.md``).
Each row has a Basic Profile action and, per option, the action that replaces it when the
option is on. :func:`resolve_action` turns a row and a set of options into one action code.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import resources


class Option(str, Enum):
    """Annex E options (E.3), as profiles name them."""

    # Keep private attributes known to be safe (TCIA knowledge base); remove the rest.
    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    # Keep UIDs instead of replacing them.
    RETAIN_UIDS = "retain_uids"
    # Keep device identifiers (serial numbers, station names).
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    # Keep institution names and addresses.
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    # Keep sex, age, size, weight and similar.
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    # Keep every date and time as it is.
    RETAIN_LONGITUDINAL_FULL_DATES = "retain_longitudinal_full_dates"
    # Shift every date by the patient's own offset, keeping intervals.
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain_longitudinal_modified_dates"
    # Keep free-text descriptors, with the patient's identifiers scrubbed out.
    CLEAN_DESCRIPTORS = "clean_descriptors"
    # Keep structured content (SR), de-identified item by item.
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    # Keep overlays, curves and graphic annotations, with their text scrubbed.
    CLEAN_GRAPHICS = "clean_graphics"
    # Blank burned-in text in configured regions of the pixels (profile `pixels.blank`).
    CLEAN_PIXEL_DATA = "clean_pixel_data"


# CID 7050 "De-identification Method": the code for each option (DCM coding scheme).
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES: dict[Option, tuple[str, str]] = {
    Option.CLEAN_PIXEL_DATA: ("113101", "Clean Pixel Data Option"),
    Option.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    Option.RETAIN_LONGITUDINAL_FULL_DATES: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}

# Compound Basic Profile actions (X/Z, Z/D, X/Z/D, X/D, X/Z/U*) are resolved by the engine,
# which knows the attribute: see ``common.deid.engine.resolve_compound``.


@dataclass(frozen=True)
class Row:
    tag: str  # "GGGGEEEE", "50XXXXXX", "60XX3000", "60XX4000" or "private"
    name: str
    basic: str
    options: dict[str, str]

    def action(self, options: frozenset[Option]) -> tuple[str, Option | None]:
        """The action for this row under ``options``, and the option that decided it.

        A retaining option (K) wins over a cleaning one (C); where no enabled option names
        the row, the Basic Profile action applies. In the 2024b table the options never
        disagree on a row beyond that order.
        """
        chosen: tuple[str, Option | None] | None = None
        for option in options:
            action = self.options.get(option.value)
            if action == "K":
                return "K", option
            if action is not None and chosen is None:
                chosen = (action, option)
        if chosen is not None:
            return chosen
        return self.basic, None


@cache
def rows() -> tuple[Row, ...]:
    text = resources.files("common.deid.data").joinpath("annex_e.json").read_text()
    return tuple(
        Row(tag=r["tag"], name=r["name"], basic=r["basic"], options=r["options"])
        for r in json.loads(text)["rows"]
    )


@dataclass(frozen=True)
class SafePrivate:
    vr: str
    action: str  # keep, hash or shift


# When the knowledge base lists one element twice (one VR each), the stricter action wins.
_STRICTNESS = {"keep": 0, "hash": 1, "shift": 2}


@cache
def safe_private() -> dict[tuple[int, str, int], SafePrivate]:
    """(group, private creator, element offset) → what the Retain Safe Private option keeps."""
    table: dict[tuple[int, str, int], SafePrivate] = {}
    text = resources.files("common.deid.data").joinpath("safe_private.tsv").read_text()
    for record in csv.DictReader(text.splitlines(), delimiter="\t"):
        key = (int(record["group"], 16), record["creator"], int(record["element"], 16))
        known = table.get(key)
        if known is None or _STRICTNESS[record["action"]] > _STRICTNESS[known.action]:
            table[key] = SafePrivate(vr=record["vr"], action=record["action"])
    return table
