"""De-identification profiles: declarative files, validated on load.

A profile chooses Annex E options, per-attribute overrides, the subject-key and date-shift
settings and the burned-in pixel policy. Every mistake is reported with the file and line::

    name: anonymize
    options: [retain_longitudinal_modified_dates, retain_patient_characteristics]
    subject_key: {prefix: "SUBJ-"}
    date_shift: {min_days: -1095, max_days: -30}
    pixels:
      reject_burned_in: true
      reject_modalities: [US]
      blank:
        - {manufacturer: "ACME", rows: 480, columns: 640, boxes: [[0, 0, 640, 40]]}
    attributes:
      PatientName: subject_key
      InstitutionName: {replace: "HOSPITAL"}
      AccessionNumber: hash

Built-in profiles live in ``profiles/``: ``basic``, ``pseudonymize`` (stage 1) and
``anonymize`` (stage 2).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydicom._dicom_dict import DicomDictionary
from pydicom.datadict import tag_for_keyword
from pydicom.tag import BaseTag, Tag

from common.deid.exceptions import LookupTableError, ProfileError
from common.deid.pixels import BlankingRule, PixelPolicy
from common.deid.table import Option

BUILTIN_PROFILES = ("basic", "pseudonymize", "anonymize")


class Action(str, Enum):
    """What happens to one attribute."""

    # Retain the value; a sequence's items are de-identified one by one.
    KEEP = "keep"
    # Remove the attribute (Annex E: X).
    REMOVE = "remove"
    # Keep the attribute with a zero-length value (Z).
    EMPTY = "empty"
    # Replace with a dummy value valid for the VR (D).
    DUMMY = "dummy"
    # Replace the UID by its keyed 2.25 mapping (U).
    UID = "uid"
    # Move dates by the patient's own offset (C under Modified Dates).
    SHIFT = "shift"
    # Keep free text with the patient's identifiers scrubbed out (C).
    CLEAN = "clean"
    # Replace with a fixed value from the profile.
    REPLACE = "replace"
    # Replace with a keyed hash of the value.
    HASH = "hash"
    # Replace through a table in the profile (original → replacement).
    LOOKUP = "lookup"
    # Replace with the patient's subject key (keyed, or from the project's lookup table).
    SUBJECT_KEY = "subject_key"


# Actions that write a text value, and the VRs that hold text.
_TEXT_ONLY = frozenset(
    {Action.REPLACE, Action.HASH, Action.LOOKUP, Action.SUBJECT_KEY, Action.CLEAN, Action.UID}
)
_TEXT_VRS = frozenset(
    {
        "AE",
        "AS",
        "CS",
        "DA",
        "DS",
        "DT",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "ST",
        "TM",
        "UC",
        "UI",
        "UR",
        "UT",
    }
)

# Override actions that need an argument, and the key that carries it.
_ARGUMENT_OF = {Action.REPLACE: "replace", Action.LOOKUP: "lookup"}


@dataclass(frozen=True)
class Override:
    action: Action
    line: int
    value: str | None = None
    table: dict[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    description: str = ""
    options: frozenset[Option] = frozenset()
    overrides: dict[int, Override] = field(default_factory=dict)
    subject_key_prefix: str = ""
    subject_key_lookup: Path | None = None
    min_offset_days: int = -1095
    max_offset_days: int = -1
    pixels: PixelPolicy = field(default_factory=PixelPolicy)


# --- YAML with line numbers ---------------------------------------------------------------


@dataclass
class _Node:
    value: Any
    line: int


def _located(node: yaml.Node, loader: yaml.SafeLoader) -> _Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        mapping: dict[str, _Node] = {}
        for key_node, value_node in node.value:
            # Keys as written: "00100010" must not become the number 100010.
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else key_node
            mapping[str(key)] = _located(value_node, loader)
        return _Node(mapping, line)
    if isinstance(node, yaml.SequenceNode):
        return _Node([_located(item, loader) for item in node.value], line)
    return _Node(loader.construct_object(node), line)


def _parse_yaml(text: str, source: str) -> _Node:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ProfileError(source, None, "the profile is empty")
        return _located(node, loader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ProfileError(source, line, f"not valid YAML: {exc.problem}") from exc
    finally:
        loader.dispose()


# --- validation ----------------------------------------------------------------------------

_TOP_KEYS = {"name", "description", "options", "subject_key", "date_shift", "pixels", "attributes"}
_TAG_FORMS = (
    re.compile(r"^\(([0-9A-Fa-f]{4}),\s*([0-9A-Fa-f]{4})\)$"),
    re.compile(r"^([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})$"),
    re.compile(r"^([0-9A-Fa-f]{4})([0-9A-Fa-f]{4})$"),
)


class _Reader:
    """Validates one profile file; every error names ``source`` and the line."""

    def __init__(self, source: str, base: Path | None) -> None:
        self.source = source
        self.base = base

    def fail(self, node: _Node, message: str) -> ProfileError:
        return ProfileError(self.source, node.line, message)

    def mapping(self, node: _Node, what: str, allowed: set[str]) -> dict[str, _Node]:
        if not isinstance(node.value, dict):
            raise self.fail(node, f"{what} must be a mapping")
        for key, child in node.value.items():
            if key not in allowed:
                raise self.fail(
                    child,
                    f"unknown key {key!r} in {what} (allowed: " + ", ".join(sorted(allowed)) + ")",
                )
        return node.value

    def string(self, node: _Node, what: str) -> str:
        if not isinstance(node.value, str | int | float) or isinstance(node.value, bool):
            raise self.fail(node, f"{what} must be a string")
        return str(node.value)

    def integer(self, node: _Node, what: str) -> int:
        if not isinstance(node.value, int) or isinstance(node.value, bool):
            raise self.fail(node, f"{what} must be a whole number")
        return node.value

    def boolean(self, node: _Node, what: str) -> bool:
        if not isinstance(node.value, bool):
            raise self.fail(node, f"{what} must be true or false")
        return node.value

    def strings(self, node: _Node, what: str) -> list[str]:
        if not isinstance(node.value, list):
            raise self.fail(node, f"{what} must be a list")
        return [self.string(item, f"each entry of {what}") for item in node.value]

    def path(self, node: _Node, what: str) -> Path:
        path = Path(self.string(node, what))
        if not path.is_absolute() and self.base is not None:
            path = self.base / path
        if not path.is_file():
            raise self.fail(node, f"{what}: no such file {path}")
        return path

    # -- sections --

    def options(self, node: _Node) -> frozenset[Option]:
        known = {option.value: option for option in Option}
        chosen: set[Option] = set()
        if not isinstance(node.value, list):
            raise self.fail(node, "options must be a list")
        for item in node.value:
            name = self.string(item, "an option")
            if name not in known:
                raise self.fail(item, f"unknown option {name!r} (known: {', '.join(known)})")
            chosen.add(known[name])
        dates = {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}
        if dates <= chosen:
            raise self.fail(
                node,
                "retain_longitudinal_full_dates and "
                "retain_longitudinal_modified_dates exclude each other: choose one",
            )
        return frozenset(chosen)

    def tag(self, key: str, node: _Node) -> BaseTag:
        for form in _TAG_FORMS:
            match = form.match(key)
            if match:
                return Tag(int(match.group(1), 16), int(match.group(2), 16))
        number = tag_for_keyword(key)
        if number is None:
            raise self.fail(
                node,
                f"unknown attribute {key!r}: use a DICOM keyword such as "
                "PatientName or a tag such as (0010,0010)",
            )
        return Tag(number)

    def override(self, key: str, node: _Node) -> Override:
        known = {action.value: action for action in Action}
        if isinstance(node.value, dict):
            if len(node.value) != 1:
                raise self.fail(node, f"{key}: give one action, e.g. {{replace: VALUE}}")
            ((name, argument),) = node.value.items()
        else:
            name, argument = self.string(node, f"the action for {key}"), None
        action = known.get(name)
        if action is None:
            raise self.fail(node, f"unknown action {name!r} for {key} (known: {', '.join(known)})")
        if action in _ARGUMENT_OF and argument is None:
            raise self.fail(node, f"{key}: {name} needs a value, e.g. {{{name}: ...}}")
        if action not in _ARGUMENT_OF and argument is not None:
            raise self.fail(node, f"{key}: {name} takes no value")
        if action is Action.LOOKUP:
            assert argument is not None
            path = self.path(argument, f"{key}: lookup")
            return Override(action, node.line, table=read_lookup_table(path))
        value = self.string(argument, f"{key}: {name}") if argument is not None else None
        return Override(action, node.line, value=value)

    def attributes(self, node: _Node) -> dict[int, Override]:
        if not isinstance(node.value, dict):
            raise self.fail(node, "attributes must be a mapping of attribute → action")
        overrides: dict[int, Override] = {}
        for key, child in node.value.items():
            overrides[int(self.tag(key, child))] = self.override(key, child)
        return overrides

    def blanking_rule(self, node: _Node) -> BlankingRule:
        allowed = {"manufacturer", "model", "modality", "rows", "columns", "boxes"}
        fields = self.mapping(node, "a blanking rule", allowed)
        if "boxes" not in fields:
            raise self.fail(node, "a blanking rule needs boxes: [[left, top, right, bottom]]")
        boxes: list[tuple[int, int, int, int]] = []
        boxes_node = fields["boxes"]
        if not isinstance(boxes_node.value, list) or not boxes_node.value:
            raise self.fail(
                boxes_node, "boxes must be a non-empty list of [left, top, right, bottom]"
            )
        for box in boxes_node.value:
            if not isinstance(box.value, list) or len(box.value) != 4:
                raise self.fail(box, "each box is [left, top, right, bottom]")
            left, top, right, bottom = (self.integer(v, "a box corner") for v in box.value)
            if left < 0 or top < 0 or right <= left or bottom <= top:
                raise self.fail(box, "a box needs 0 <= left < right and 0 <= top < bottom")
            boxes.append((left, top, right, bottom))
        text = {
            k: self.string(fields[k], k)
            for k in ("manufacturer", "model", "modality")
            if k in fields
        }
        for key in ("manufacturer", "model"):
            if key in text:
                try:
                    re.compile(text[key])
                except re.error as exc:
                    raise self.fail(fields[key], f"{key} is not a valid pattern: {exc}") from exc
        size = {k: self.integer(fields[k], k) for k in ("rows", "columns") if k in fields}
        return BlankingRule(
            boxes=tuple(boxes),
            manufacturer=text.get("manufacturer"),
            model=text.get("model"),
            modality=text.get("modality"),
            rows=size.get("rows"),
            columns=size.get("columns"),
            line=node.line,
        )

    def pixels(self, node: _Node, options: frozenset[Option]) -> PixelPolicy:
        allowed = {
            "reject_burned_in",
            "reject_modalities",
            "reject_sop_classes",
            "reject_image_types",
            "blank",
        }
        fields = self.mapping(node, "pixels", allowed)
        rules: tuple[BlankingRule, ...] = ()
        if "blank" in fields:
            if Option.CLEAN_PIXEL_DATA not in options:
                raise self.fail(fields["blank"], "blanking rules need the clean_pixel_data option")
            if not isinstance(fields["blank"].value, list):
                raise self.fail(fields["blank"], "blank must be a list of rules")
            rules = tuple(self.blanking_rule(rule) for rule in fields["blank"].value)
        return PixelPolicy(
            reject_burned_in=self.boolean(fields["reject_burned_in"], "reject_burned_in")
            if "reject_burned_in" in fields
            else True,
            reject_modalities=frozenset(
                self.strings(fields["reject_modalities"], "reject_modalities")
            )
            if "reject_modalities" in fields
            else frozenset(),
            reject_sop_classes=frozenset(
                self.strings(fields["reject_sop_classes"], "reject_sop_classes")
            )
            if "reject_sop_classes" in fields
            else frozenset(),
            reject_image_types=frozenset(
                self.strings(fields["reject_image_types"], "reject_image_types")
            )
            if "reject_image_types" in fields
            else frozenset(),
            rules=rules,
        )

    def check_override_fits(self, tag: int, override: Override) -> None:
        vr = dictionary_vr(tag)
        if override.action is Action.SHIFT and vr not in {"DA", "DT"}:
            raise ProfileError(
                self.source, override.line, f"shift applies to dates (DA, DT), not to {Tag(tag)}"
            )
        if override.action in _TEXT_ONLY and vr not in _TEXT_VRS:
            raise ProfileError(
                self.source,
                override.line,
                f"{override.action.value} writes text; {Tag(tag)} holds {vr} values: "
                "use keep, remove, empty or dummy",
            )

    def profile(self, root: _Node) -> Profile:
        fields = self.mapping(root, "the profile", _TOP_KEYS)
        if "name" not in fields:
            raise self.fail(root, "the profile needs a name")
        options = self.options(fields["options"]) if "options" in fields else frozenset()
        prefix, lookup = "", None
        if "subject_key" in fields:
            key = self.mapping(fields["subject_key"], "subject_key", {"prefix", "lookup"})
            prefix = self.string(key["prefix"], "subject_key.prefix") if "prefix" in key else ""
            lookup = self.path(key["lookup"], "subject_key.lookup") if "lookup" in key else None
        low, high = -1095, -1
        if "date_shift" in fields:
            shift = self.mapping(fields["date_shift"], "date_shift", {"min_days", "max_days"})
            low = self.integer(shift["min_days"], "min_days") if "min_days" in shift else low
            high = self.integer(shift["max_days"], "max_days") if "max_days" in shift else high
            if low > high:
                raise self.fail(fields["date_shift"], "date_shift: min_days exceeds max_days")
        overrides = self.attributes(fields["attributes"]) if "attributes" in fields else {}
        for tag, override in overrides.items():
            self.check_override_fits(tag, override)
        return Profile(
            name=self.string(fields["name"], "name"),
            source=self.source,
            description=self.string(fields["description"], "description")
            if "description" in fields
            else "",
            options=options,
            overrides=overrides,
            subject_key_prefix=prefix,
            subject_key_lookup=lookup,
            min_offset_days=low,
            max_offset_days=high,
            pixels=self.pixels(fields["pixels"], options) if "pixels" in fields else PixelPolicy(),
        )


def dictionary_vr(tag: int) -> str:
    """The VR the data dictionary gives ``tag`` ("UN" when it does not know it)."""
    entry = DicomDictionary.get(tag)
    return entry[0] if entry else "UN"


def parse_profile(text: str, source: str, base: Path | None = None) -> Profile:
    return _Reader(source, base).profile(_parse_yaml(text, source))


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name, or a profile file by path."""
    if name_or_path in BUILTIN_PROFILES:
        text = resources.files("common.deid.profiles").joinpath(f"{name_or_path}.yaml")
        return parse_profile(text.read_text(), f"{name_or_path}.yaml (built-in)")
    path = Path(name_or_path)
    if not path.is_file():
        raise ProfileError(
            name_or_path,
            None,
            f"no such profile: give a file or one of {', '.join(BUILTIN_PROFILES)}",
        )
    return parse_profile(path.read_text(encoding="utf-8"), str(path), path.parent)


def read_lookup_table(path: Path) -> dict[str, str]:
    """A two-column CSV (original → replacement); an optional header row is skipped.

    Errors name the file and line, never the values (they are identifiers).
    """
    table: dict[str, str] = {}
    seen_targets: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            for number, record in enumerate(csv.reader(f), start=1):
                if not record or all(not cell.strip() for cell in record):
                    continue
                if number == 1 and _looks_like_header(record):
                    continue
                if len(record) < 2 or not record[0].strip() or not record[1].strip():
                    raise LookupTableError(
                        f"{path}:{number}: expected two non-empty columns "
                        "(hospital patient ID, subject key)"
                    )
                original, target = record[0].strip(), record[1].strip()
                if original in table and table[original] != target:
                    raise LookupTableError(
                        f"{path}:{number}: this ID was given another value on an earlier line"
                    )
                if target in seen_targets and table.get(original) != target:
                    raise LookupTableError(
                        f"{path}:{number}: this subject key is already used "
                        f"on line {seen_targets[target]} for another ID"
                    )
                table[original] = target
                seen_targets.setdefault(target, number)
    except (OSError, UnicodeDecodeError) as exc:
        raise LookupTableError(f"{path}: cannot read the lookup table ({exc})") from exc
    if not table:
        raise LookupTableError(f"{path}: the lookup table has no rows")
    return table


def _looks_like_header(record: list[str]) -> bool:
    words = {cell.strip().lower().replace(" ", "_") for cell in record}
    return bool(
        words
        & {
            "patient_id",
            "patientid",
            "hospital_id",
            "subject_key",
            "original",
            "replacement",
            "mrn",
            "subject",
        }
    )
