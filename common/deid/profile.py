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

The same file holds the rules for clinical records (FHIR R4 resources and OMOP CDM 5.4
columns) in a ``clinical`` section; see :class:`ClinicalRules`::

    clinical:
      patient_identifier: {type: MR}          # which Patient.identifier is the hospital ID
      omop_patient_column: person_source_value
      fhir:
        Patient: {id: keyed-hash, gender: keep, birthDate: {generalize: year}}
        Condition: {id: keyed-hash, subject: keyed-hash, code: keep, onsetDateTime: date-shift}
      omop:
        condition_occurrence: {condition_concept_id: keep, condition_start_date: date-shift}

An element or column without a rule is removed: a field nobody thought about never leaks.
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
    clinical: ClinicalRules | None = None


# --- clinical rules --------------------------------------------------------------------------


class ClinicalAction(str, Enum):
    """What happens to one FHIR element or OMOP column."""

    # Retain the value (a complex element whole).
    KEEP = "keep"
    # Remove it (what every element or column without a rule gets).
    REDACT = "redact"
    # Move every date in it by the patient's own offset, the DICOM engine's offset.
    DATE_SHIFT = "date-shift"
    # Replace identifiers by keyed pseudonyms: ids and identifier values by a keyed hash,
    # references by pseudonymous references (a patient by its subject key), DICOM UIDs by
    # the DICOM engine's UID mapping; other parts of the element are kept.
    KEYED_HASH = "keyed-hash"
    # Keep a date only to the year (or month): {generalize: year}.
    GENERALIZE = "generalize"


GENERALIZE_TO = ("year", "month")


def _elements(names: str) -> dict[str, bool]:
    """Element names, each with whether it holds dates (marked ``*``)."""
    return {name.rstrip("*"): name.endswith("*") for name in names.split()}


# The top-level elements of the FHIR R4 resources the node imports, as the fhir.resources
# R4B models define them (a test keeps the two in step); dates are marked. A table here
# rather than the models themselves: loading those costs every DICOM worker 0.13 s, 13 MiB.
FHIR_R4_ELEMENTS: dict[str, dict[str, bool]] = {
    "Patient": _elements(
        "id implicitRules language meta contained extension modifierExtension text active "
        "address birthDate* communication contact deceasedBoolean deceasedDateTime* gender "
        "generalPractitioner identifier link managingOrganization maritalStatus "
        "multipleBirthBoolean multipleBirthInteger name photo telecom"
    ),
    "Encounter": _elements(
        "id implicitRules language meta contained extension modifierExtension text account "
        "appointment basedOn classHistory class diagnosis episodeOfCare hospitalization "
        "identifier length location partOf participant period* priority reasonCode "
        "reasonReference serviceProvider serviceType status statusHistory subject type"
    ),
    "Condition": _elements(
        "id implicitRules language meta contained extension modifierExtension text abatementAge "
        "abatementDateTime* abatementPeriod* abatementRange abatementString asserter bodySite "
        "category clinicalStatus code encounter evidence identifier note onsetAge "
        "onsetDateTime* onsetPeriod* onsetRange onsetString recordedDate* recorder severity "
        "stage subject verificationStatus"
    ),
    "Observation": _elements(
        "id implicitRules language meta contained extension modifierExtension text basedOn "
        "bodySite category code component dataAbsentReason derivedFrom device "
        "effectiveDateTime* effectiveInstant* effectivePeriod* effectiveTiming encounter focus "
        "hasMember identifier interpretation issued* method note partOf performer "
        "referenceRange specimen status subject valueBoolean valueCodeableConcept "
        "valueDateTime* valueInteger valuePeriod* valueQuantity valueRange valueRatio "
        "valueSampledData valueString valueTime"
    ),
    "MedicationRequest": _elements(
        "id implicitRules language meta contained extension modifierExtension text authoredOn* "
        "basedOn category courseOfTherapyType detectedIssue dispenseRequest doNotPerform "
        "dosageInstruction encounter eventHistory groupIdentifier identifier "
        "instantiatesCanonical instantiatesUri insurance intent medicationCodeableConcept "
        "medicationReference note performer performerType priorPrescription priority reasonCode "
        "reasonReference recorder reportedBoolean reportedReference requester status "
        "statusReason subject substitution supportingInformation"
    ),
    "MedicationStatement": _elements(
        "id implicitRules language meta contained extension modifierExtension text basedOn "
        "category context dateAsserted* derivedFrom dosage effectiveDateTime* effectivePeriod* "
        "identifier informationSource medicationCodeableConcept medicationReference note partOf "
        "reasonCode reasonReference status statusReason subject"
    ),
    "Procedure": _elements(
        "id implicitRules language meta contained extension modifierExtension text asserter "
        "basedOn bodySite category code complication complicationDetail encounter focalDevice "
        "followUp identifier instantiatesCanonical instantiatesUri location note outcome partOf "
        "performedAge performedDateTime* performedPeriod* performedRange performedString "
        "performer reasonCode reasonReference recorder report status statusReason subject "
        "usedCode usedReference"
    ),
    "DiagnosticReport": _elements(
        "id implicitRules language meta contained extension modifierExtension text basedOn "
        "category code conclusion conclusionCode effectiveDateTime* effectivePeriod* encounter "
        "identifier imagingStudy issued* media performer presentedForm result "
        "resultsInterpreter specimen status subject"
    ),
    "ImagingStudy": _elements(
        "id implicitRules language meta contained extension modifierExtension text basedOn "
        "description encounter endpoint identifier interpreter location modality note "
        "numberOfInstances numberOfSeries procedureCode procedureReference reasonCode "
        "reasonReference referrer series started* status subject"
    ),
}
FHIR_RESOURCE_TYPES = tuple(FHIR_R4_ELEMENTS)


def _columns(names: str) -> tuple[str, ...]:
    return tuple(names.split())


# OMOP CDM 5.4 columns of the tables the node imports (ohdsi.github.io/CommonDataModel).
OMOP_COLUMNS: dict[str, tuple[str, ...]] = {
    "person": _columns(
        "person_id gender_concept_id year_of_birth month_of_birth day_of_birth birth_datetime "
        "race_concept_id ethnicity_concept_id location_id provider_id care_site_id "
        "person_source_value gender_source_value gender_source_concept_id race_source_value "
        "race_source_concept_id ethnicity_source_value ethnicity_source_concept_id"
    ),
    "visit_occurrence": _columns(
        "visit_occurrence_id person_id visit_concept_id visit_start_date visit_start_datetime "
        "visit_end_date visit_end_datetime visit_type_concept_id provider_id care_site_id "
        "visit_source_value visit_source_concept_id admitted_from_concept_id "
        "admitted_from_source_value discharged_to_concept_id discharged_to_source_value "
        "preceding_visit_occurrence_id"
    ),
    "condition_occurrence": _columns(
        "condition_occurrence_id person_id condition_concept_id condition_start_date "
        "condition_start_datetime condition_end_date condition_end_datetime "
        "condition_type_concept_id condition_status_concept_id stop_reason provider_id "
        "visit_occurrence_id visit_detail_id condition_source_value condition_source_concept_id "
        "condition_status_source_value"
    ),
    "drug_exposure": _columns(
        "drug_exposure_id person_id drug_concept_id drug_exposure_start_date "
        "drug_exposure_start_datetime drug_exposure_end_date drug_exposure_end_datetime "
        "verbatim_end_date drug_type_concept_id stop_reason refills quantity days_supply sig "
        "route_concept_id lot_number provider_id visit_occurrence_id visit_detail_id "
        "drug_source_value drug_source_concept_id route_source_value dose_unit_source_value"
    ),
    "measurement": _columns(
        "measurement_id person_id measurement_concept_id measurement_date measurement_datetime "
        "measurement_time measurement_type_concept_id operator_concept_id value_as_number "
        "value_as_concept_id unit_concept_id range_low range_high provider_id "
        "visit_occurrence_id visit_detail_id measurement_source_value "
        "measurement_source_concept_id unit_source_value unit_source_concept_id "
        "value_source_value measurement_event_id meas_event_field_concept_id"
    ),
    "observation": _columns(
        "observation_id person_id observation_concept_id observation_date observation_datetime "
        "observation_type_concept_id value_as_number value_as_string value_as_concept_id "
        "qualifier_concept_id unit_concept_id provider_id visit_occurrence_id visit_detail_id "
        "observation_source_value observation_source_concept_id unit_source_value "
        "qualifier_source_value value_source_value observation_event_id "
        "obs_event_field_concept_id"
    ),
    "procedure_occurrence": _columns(
        "procedure_occurrence_id person_id procedure_concept_id procedure_date "
        "procedure_datetime procedure_end_date procedure_end_datetime procedure_type_concept_id "
        "modifier_concept_id quantity provider_id visit_occurrence_id visit_detail_id "
        "procedure_source_value procedure_source_concept_id modifier_source_value"
    ),
    "death": _columns(
        "person_id death_date death_datetime death_type_concept_id cause_concept_id "
        "cause_source_value cause_source_concept_id"
    ),
}


@dataclass(frozen=True)
class FieldRule:
    action: ClinicalAction
    line: int
    to: str = ""  # generalize: "year" or "month"


@dataclass(frozen=True)
class ClinicalRules:
    """Rules per FHIR resource type (top-level element → rule) and per OMOP table (column →
    rule), and where the hospital patient ID (DICOM PatientID) is found in each format."""

    fhir: dict[str, dict[str, FieldRule]] = field(default_factory=dict)
    omop: dict[str, dict[str, FieldRule]] = field(default_factory=dict)
    patient_identifier_type: str = "MR"  # Patient.identifier.type code (v2-0203)
    patient_identifier_system: str = ""  # or: Patient.identifier.system
    omop_patient_column: str = "person_source_value"


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

_TOP_KEYS = {
    "name",
    "description",
    "options",
    "subject_key",
    "date_shift",
    "pixels",
    "attributes",
    "clinical",
}
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
            clinical=self.clinical(fields["clinical"]) if "clinical" in fields else None,
        )

    # -- clinical --

    def clinical(self, node: _Node) -> ClinicalRules:
        allowed = {"patient_identifier", "omop_patient_column", "fhir", "omop"}
        fields = self.mapping(node, "clinical", allowed)
        id_type, id_system = "MR", ""
        if "patient_identifier" in fields:
            ident = self.mapping(
                fields["patient_identifier"], "clinical.patient_identifier", {"type", "system"}
            )
            if len(ident) != 1:
                raise self.fail(
                    fields["patient_identifier"],
                    "clinical.patient_identifier: give one of type (e.g. MR) or system",
                )
            id_type = self.string(ident["type"], "type") if "type" in ident else ""
            id_system = self.string(ident["system"], "system") if "system" in ident else ""
        omop_column = "person_source_value"
        if "omop_patient_column" in fields:
            omop_column = self.string(fields["omop_patient_column"], "omop_patient_column")
            if omop_column not in OMOP_COLUMNS["person"]:
                raise self.fail(
                    fields["omop_patient_column"],
                    f"omop_patient_column: {omop_column!r} is not a column of person",
                )
        fhir_rules: dict[str, dict[str, FieldRule]] = {}
        if "fhir" in fields:
            types = self.mapping(fields["fhir"], "clinical.fhir", set(FHIR_RESOURCE_TYPES))
            for resource_type, rules in types.items():
                fhir_rules[resource_type] = self.fhir_rules(resource_type, rules)
        omop_rules: dict[str, dict[str, FieldRule]] = {}
        if "omop" in fields:
            tables = self.mapping(fields["omop"], "clinical.omop", set(OMOP_COLUMNS))
            for table, rules in tables.items():
                omop_rules[table] = self.omop_rules(table, rules)
        return ClinicalRules(
            fhir=fhir_rules,
            omop=omop_rules,
            patient_identifier_type=id_type,
            patient_identifier_system=id_system,
            omop_patient_column=omop_column,
        )

    def field_rule(self, where: str, node: _Node) -> FieldRule:
        known = {action.value: action for action in ClinicalAction}
        if isinstance(node.value, dict):
            if len(node.value) != 1:
                raise self.fail(node, f"{where}: give one action, e.g. {{generalize: year}}")
            ((name, argument),) = node.value.items()
        else:
            name, argument = self.string(node, f"the action for {where}"), None
        action = known.get(name)
        if action is None:
            raise self.fail(
                node, f"unknown action {name!r} for {where} (known: {', '.join(known)})"
            )
        if action is ClinicalAction.GENERALIZE:
            to = self.string(argument, f"{where}: generalize") if argument is not None else ""
            if to not in GENERALIZE_TO:
                raise self.fail(
                    node, f"{where}: generalize to year or month, e.g. {{generalize: year}}"
                )
            return FieldRule(action, node.line, to)
        if argument is not None:
            raise self.fail(node, f"{where}: {name} takes no value")
        return FieldRule(action, node.line)

    def fhir_rules(self, resource_type: str, node: _Node) -> dict[str, FieldRule]:
        elements = FHIR_R4_ELEMENTS[resource_type]
        if not isinstance(node.value, dict):
            raise self.fail(node, f"clinical.fhir.{resource_type} must map elements to actions")
        rules: dict[str, FieldRule] = {}
        for name, child in node.value.items():
            where = f"{resource_type}.{name}"
            if name not in elements:
                raise self.fail(child, f"{where}: {resource_type} has no element {name!r} in R4")
            rule = self.field_rule(where, child)
            dated = elements[name]
            if rule.action in (ClinicalAction.DATE_SHIFT, ClinicalAction.GENERALIZE) and not dated:
                raise self.fail(child, f"{where}: {rule.action.value} applies to dates only")
            rules[name] = rule
        if "resourceType" in rules:
            raise self.fail(node, f"{resource_type}: resourceType is always kept")
        return rules

    def omop_rules(self, table: str, node: _Node) -> dict[str, FieldRule]:
        columns = OMOP_COLUMNS[table]
        if not isinstance(node.value, dict):
            raise self.fail(node, f"clinical.omop.{table} must map columns to actions")
        rules: dict[str, FieldRule] = {}
        for name, child in node.value.items():
            where = f"{table}.{name}"
            if name not in columns:
                raise self.fail(child, f"{where}: {table} has no column {name!r} in CDM 5.4")
            rule = self.field_rule(where, child)
            if rule.action in (ClinicalAction.DATE_SHIFT, ClinicalAction.GENERALIZE) and not (
                is_omop_date_column(name)
            ):
                raise self.fail(child, f"{where}: {rule.action.value} applies to dates only")
            rules[name] = rule
        return rules


def is_omop_date_column(name: str) -> bool:
    return name.endswith(("_date", "_datetime"))


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
