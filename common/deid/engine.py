"""The DICOM de-identification engine: one profile, one project, any number of instances.

:class:`Engine` compiles a :class:`~common.deid.profile.Profile` into a rule per tag once,
then de-identifies datasets in place. It touches only the elements a rule changes: the
others stay raw (undecoded) and are written back byte for byte, which is what makes it fast.

For each instance it:

1. decides on the pixels (reject risky instances, or blank configured regions);
2. collects the patient's identifiers (the needles) before changing anything;
3. walks every element, nested sequences included, applying the rule for its tag;
4. writes the de-identification attributes (PS3.15 E.1: PatientIdentityRemoved,
   DeidentificationMethod, DeidentificationMethodCodeSequence) and new file meta;
5. encodes the file and checks that no needle survived (fail closed).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, ImplicitVRLittleEndian

from common import __version__
from common.crypto import Pseudonymizer
from common.deid import pixels
from common.deid.encode import encode, file_meta, raw_sequence
from common.deid.exceptions import BurnedInRisk, InstanceRejected, SubjectNotInLookup
from common.deid.leak import IDENTIFYING_KEYWORDS, Needles, collect_identifiers
from common.deid.profile import Action, Override, Profile, dictionary_vr
from common.deid.table import BASIC_PROFILE_CODE, OPTION_CODES, Option, rows, safe_private

logger = logging.getLogger(__name__)

PIXEL_DATA = 0x7FE00010
_SOP_CLASS_UID, _SOP_INSTANCE_UID = 0x00080016, 0x00080018
_STUDY_INSTANCE_UID, _SERIES_INSTANCE_UID = 0x0020000D, 0x0020000E
BURNED_IN_ANNOTATION = 0x00280301
IMPLEMENTATION_CLASS_UID = "2.25.186516733948339061346237453516104873212"
IMPLEMENTATION_VERSION = f"HAVENET_{__version__.replace('.', '_')}"[:16]

_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN", "CS", "AE", "UR"})
_STRING_VRS = _TEXT_VRS | frozenset({"DA", "DT", "TM", "AS", "DS", "IS", "UI"})
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240}
_DUMMY = {
    "AS": "000D",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "UR": "",
}
_DUMMY_TEXT = "ANONYMIZED"
_CACHED_PATIENTS, _CACHED_UIDS = 256, 4096
_OVERLAY, _CURVE = 0x6000, 0x5000
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
_SINGLE_VALUED_VRS = frozenset({"LT", "ST", "UT", "UR"})
# Specific Character Sets that are one plain codec (no ISO 2022 code extensions).
_SIMPLE_CHARSETS = {"ISO_IR 6": "ascii", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    origin: str  # "E.1-1 X/Z", "retain_uids", "profile line 12": where the rule came from
    override: Override | None = None


@dataclass
class InstanceReport:
    """What was done to one instance: attribute paths and actions, never values."""

    profile: str
    subject_key: str
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    modality: str = ""
    pixels: str = "accepted"
    actions: dict[str, list[str]] = field(default_factory=dict)

    def record(self, path: str, action: str) -> None:
        self.actions.setdefault(action, []).append(path)

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "subject_key": self.subject_key,
            "sop_instance_uid": self.sop_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "modality": self.modality,
            "pixels": self.pixels,
            "leak_check": "passed",
            "actions": {k: sorted(v) for k, v in sorted(self.actions.items())},
        }


@dataclass
class Deidentified:
    """One de-identified instance, encoded and leak-checked."""

    data: bytes
    relative_path: str  # subject/study/series/instance.dcm — pseudonyms and UIDs only
    report: InstanceReport


@dataclass
class _Instance:
    """Per-instance state while the walk runs."""

    patient_id: str
    subject_key: str
    offset_days: int | None
    needles: Needles
    report: InstanceReport
    codec: str | None = "ascii"  # None: text is decoded by pydicom (ISO 2022 and others)
    encoding: tuple[bool, bool] = (False, True)  # (implicit VR, little endian) of the file


@lru_cache(maxsize=8192)
def _tag_name(tag: int) -> str:
    keyword = keyword_for_tag(tag) if not BaseTag(tag).is_private else ""
    return keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class Engine:
    """De-identifies instances with one profile for one project."""

    def __init__(
        self,
        profile: Profile,
        pseudonymizer: Pseudonymizer,
        subject_keys: dict[str, str] | None = None,
    ) -> None:
        self.profile = profile
        self.mapper = pseudonymizer
        self.subject_keys = subject_keys
        # An HMAC per value is ~25 µs (a subject key ~150 µs: base32 is pure Python), and the
        # instances of a series share the patient, study, series and frame of reference: the
        # mappings of recent values are kept (in this process's memory only).
        self._subject_key = lru_cache(maxsize=_CACHED_PATIENTS)(pseudonymizer.subject_key)
        self._offset_days = lru_cache(maxsize=_CACHED_PATIENTS)(pseudonymizer.date_offset_days)
        self._uid = lru_cache(maxsize=_CACHED_UIDS)(pseudonymizer.uid)
        self.options = profile.options
        self._rules, self._patterns = self._compile()
        self._safe_private = (
            self._load_safe_private() if Option.RETAIN_SAFE_PRIVATE in self.options else None
        )
        self._keeps_identifier = {
            keyword
            for keyword, tag in ((k, Tag(k)) for k in IDENTIFYING_KEYWORDS)
            if (rule := self._rules.get(int(tag))) is not None and rule.action is Action.KEEP
        }
        self._shifts_dates = Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options or any(
            o.action is Action.SHIFT for o in profile.overrides.values()
        )
        self._retain_uids = Option.RETAIN_UIDS in self.options
        self._modifies_dates = Option.RETAIN_LONGITUDINAL_FULL_DATES not in self.options
        self._method = [
            f"havenet {__version__} profile {profile.name}"[:64],
            "PS3.15 Annex E Basic Profile with the options coded",
        ]
        # DeidentificationMethodCodeSequence, encoded once per encoding and copied as is.
        self._method_codes: dict[tuple[bool, bool], RawDataElement] = {}

    # -- compilation -----------------------------------------------------------------------

    def _compile(self) -> tuple[dict[int, Rule], dict[str, Rule]]:
        rules: dict[int, Rule] = {}
        patterns: dict[str, Rule] = {}
        for row in rows():
            code, option = row.action(self.options)
            origin = option.value if option else f"E.1-1 {row.basic}"
            if row.tag == "private":
                continue  # handled by _walk_private
            if "X" in row.tag:
                patterns[row.tag] = Rule(self._resolve(code, 0, option), origin)
                continue
            tag = int(row.tag, 16)
            rules[tag] = Rule(self._resolve(code, tag, option), origin)
        for tag, override in self.profile.overrides.items():
            rules[tag] = Rule(override.action, f"profile line {override.line}", override)
        return rules, patterns

    @staticmethod
    def _resolve(code: str, tag: int, option: Option | None) -> Action:
        code = resolve_compound(code, tag)
        if code == "C":
            if option is Option.RETAIN_LONGITUDINAL_MODIFIED_DATES:
                return Action.SHIFT
            return Action.CLEAN
        return {
            "K": Action.KEEP,
            "X": Action.REMOVE,
            "Z": Action.EMPTY,
            "D": Action.DUMMY,
            "U": Action.UID,
        }[code]

    @staticmethod
    def _load_safe_private() -> dict[tuple[int, str, int], str]:
        return {key: entry.action for key, entry in safe_private().items()}

    # -- public API ------------------------------------------------------------------------

    def subject_key_for(self, patient_id: str) -> str:
        if self.subject_keys is not None:
            key = self.subject_keys.get(patient_id)
            if key is None:
                raise SubjectNotInLookup("PatientID is not in the project's lookup table")
            return key
        return self._subject_key(patient_id)

    def deidentify(self, ds: Dataset) -> Deidentified:
        """De-identify ``ds`` in place and encode it; raises InstanceRejected with a reason."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._deidentify(ds)

    def _deidentify(self, ds: Dataset) -> Deidentified:
        decision = pixels.assess(ds, self.profile.pixels)
        if decision.action == "reject":
            raise BurnedInRisk(decision.reason)
        patient_id = str(ds.get("PatientID", "") or "").strip()
        if not patient_id:
            raise InstanceRejected("PatientID is empty: no subject key can be assigned")
        subject_key = self.subject_key_for(patient_id)
        report = InstanceReport(profile=self.profile.name, subject_key=subject_key)
        instance = _Instance(
            patient_id=patient_id,
            subject_key=subject_key,
            offset_days=self._offset_days(patient_id) if self._shifts_dates else None,
            needles=Needles(),
            report=report,
            codec=_codec(ds),
            encoding=_encoding(ds),
        )
        collect_identifiers(ds, instance.needles, self._keeps_identifier)
        instance.needles.written.append(subject_key)
        original_sop_uid = _uid_text(ds, _SOP_INSTANCE_UID)
        self._walk(ds, instance, "")
        if decision.action == "blank" and decision.rule is not None:
            pixels.blank(ds, decision.rule)
            ds.BurnedInAnnotation = "NO"
            report.pixels = f"blanked by the rule on line {decision.rule.line}"
        self._new_file_meta(ds, original_sop_uid, instance)
        self._mark_deidentified(ds, instance)
        report.sop_instance_uid = _uid_text(ds, _SOP_INSTANCE_UID)
        report.study_instance_uid = _uid_text(ds, _STUDY_INSTANCE_UID)
        report.series_instance_uid = _uid_text(ds, _SERIES_INSTANCE_UID)
        report.modality = str(ds.get("Modality", ""))
        data, skip = encode(ds)
        instance.needles.check(data[: skip[0]] + data[skip[1] :], lambda n: _locate(ds, n))
        return Deidentified(data=data, relative_path=self._relative_path(report), report=report)

    def _relative_path(self, report: InstanceReport) -> str:
        parts = [
            report.subject_key,
            report.study_instance_uid or "study",
            report.series_instance_uid or "series",
            f"{report.sop_instance_uid or 'instance'}.dcm",
        ]
        return "/".join(p.replace("/", "_") for p in parts)

    # -- the walk --------------------------------------------------------------------------

    def _rule_for(self, tag: int, vr: str | None) -> Rule | None:
        rule = self._rules.get(tag)
        if rule is not None:
            return rule
        group = tag >> 16
        if group & 0xFF01 == _OVERLAY and group <= 0x601E:
            data = self._patterns["60XX3000"]
            element = tag & 0xFFFF
            if element == 0x4000:
                return self._patterns["60XX4000"]
            if element == 0x3000 or data.action is Action.REMOVE:
                return data
            return None
        if group & 0xFF01 == _CURVE and group <= 0x501E:
            return self._patterns["50XXXXXX"]
        if vr == "UI" and not self._retain_uids:
            return _UNLISTED_UID
        return None

    def _walk(
        self, ds: Dataset, instance: _Instance, prefix: str, clean_text: bool = False
    ) -> None:
        """Apply the rules to every element of ``ds``; ``clean_text`` inside cleaned content.

        Structured content (SR) carries its text in attributes the table does not list
        (TextValue, ...): inside a sequence kept by a Clean option, such text is scrubbed.
        """
        private: list[BaseTag] = []
        elements = ds._dict  # direct: pydicom's accessors re-normalise every key (slow)
        for tag in list(elements):
            if (tag >> 16) & 1:  # an odd group: private
                private.append(tag)
                continue
            raw = elements[tag]
            vr = raw.VR if raw.VR else dictionary_vr(tag)
            rule = self._rule_for(int(tag), vr)
            if rule is None and clean_text and vr in _TEXT_VRS:
                rule = _CLEAN_TEXT
            if rule is None:
                if vr == "SQ":
                    self._recurse(ds, tag, instance, prefix, clean_text)
                continue
            self._apply(ds, tag, vr, rule, instance, prefix, clean_text)
        if private:
            self._walk_private(ds, private, instance, prefix)

    def _recurse(
        self, ds: Dataset, tag: BaseTag, instance: _Instance, prefix: str, clean_text: bool
    ) -> None:
        sequence = ds[tag].value
        name = f"{prefix}{_tag_name(tag)}"
        outer = instance.codec
        for index, item in enumerate(sequence or []):
            if 0x00080005 in item:  # an item may declare its own character set
                instance.codec = _codec(item)
            self._walk(item, instance, f"{name}[{index}].", clean_text)
            instance.codec = outer

    def _apply(
        self,
        ds: Dataset,
        tag: BaseTag,
        vr: str,
        rule: Rule,
        instance: _Instance,
        prefix: str,
        clean_text: bool = False,
    ) -> None:
        action = rule.action
        if vr == "SQ":
            self._apply_sequence(ds, tag, action, instance, prefix, clean_text)
            return
        if action is Action.KEEP:
            return
        path = f"{prefix}{_tag_name(tag)}"
        if action is Action.REMOVE:
            del ds[tag]
            instance.report.record(path, "removed")
            return
        element = ds.get_item(tag)
        if action is Action.EMPTY:
            ds[tag] = _raw(tag, vr, b"", element, instance)
            instance.report.record(path, "emptied")
            return
        if vr not in _STRING_VRS:
            if action is Action.DUMMY:  # numbers and bytes: a zero of the right kind
                ds[tag].value = b"\x00\x00" if vr in _BINARY_VRS else 0
                instance.report.record(path, "dummy")
            return  # no other action means anything for numbers and bytes
        values = _decoded(element, vr, instance.codec)
        if values is None:  # deferred, or a character set with code extensions
            values = _values(ds[tag].value)
        new = self._new_values(values, tag, vr, rule, instance)
        if new is None or new == values:
            return
        instance.needles.written.extend(new)
        self._store(ds, tag, vr, new, instance)
        instance.report.record(path, _ACTION_WORD[action])

    def _store(
        self, ds: Dataset, tag: BaseTag, vr: str, values: list[str], instance: _Instance
    ) -> None:
        """Write ``values`` back raw where the character set allows; through pydicom else."""
        codec = "ascii" if vr in _ASCII_VRS else instance.codec
        if codec is not None:
            text = "\\".join(values)
            try:
                data = text.encode(codec)
            except UnicodeEncodeError:
                pass
            else:
                if len(data) % 2:
                    data += b"\x00" if vr == "UI" else b" "
                ds[tag] = _raw(tag, vr, data, ds.get_item(tag), instance)
                return
        ds[tag].value = values[0] if len(values) == 1 else values

    def _apply_sequence(
        self,
        ds: Dataset,
        tag: BaseTag,
        action: Action,
        instance: _Instance,
        prefix: str,
        clean_text: bool,
    ) -> None:
        path = f"{prefix}{_tag_name(tag)}"
        if action is Action.REMOVE:
            del ds[tag]
            instance.report.record(path, "removed")
        elif action in (
            Action.EMPTY,
            Action.DUMMY,
            Action.REPLACE,
            Action.HASH,
            Action.LOOKUP,
            Action.SUBJECT_KEY,
            Action.SHIFT,
        ):
            ds[tag].value = Sequence()
            instance.report.record(path, "emptied")
        else:  # keep, clean, uid: the items are de-identified one by one
            self._recurse(ds, tag, instance, prefix, clean_text or action is Action.CLEAN)

    def _new_values(
        self, values: list[str], tag: int, vr: str, rule: Rule, instance: _Instance
    ) -> list[str] | None:
        """The replacement values, or None to leave the element as it is."""
        action = rule.action
        if action is Action.DUMMY:
            return self._map_uids(values, instance) if vr == "UI" else [_dummy(vr)]
        if action is Action.UID:
            return self._map_uids(values, instance) if vr == "UI" else None
        if action is Action.SHIFT:
            return self._shift(values, vr, instance)
        if action is Action.CLEAN:
            return self._clean(values, vr, instance)
        if action is Action.SUBJECT_KEY:
            return [instance.subject_key]
        if action is Action.HASH:
            if vr == "UI":
                return self._map_uids(values, instance)
            length = min(_MAX_LENGTH.get(vr, 16), 16)
            return [self.mapper.hash_value(v, length) for v in values]
        assert rule.override is not None
        if action is Action.REPLACE:
            return [rule.override.value or ""]
        table = rule.override.table or {}  # Action.LOOKUP
        missing = [v for v in values if v not in table]
        if missing:
            raise InstanceRejected(
                f"{_tag_name(tag)} has a value missing from its lookup table "
                f"(profile line {rule.override.line})"
            )
        return [table[v] for v in values]

    def _map_uids(self, values: list[str], instance: _Instance) -> list[str]:
        mapped = []
        for uid in values:
            if not uid or uid in UID_dictionary:
                mapped.append(uid)  # empty, or a registered DICOM UID (SOP class, syntax)
                continue
            instance.needles.add_original(uid)
            mapped.append(self._uid(uid))
        return mapped

    def _shift(self, values: list[str], vr: str, instance: _Instance) -> list[str] | None:
        if vr not in ("DA", "DT") or instance.offset_days is None:
            return None  # times of day carry no identity once dates are shifted
        shifted = []
        for text in values:
            if text:
                instance.needles.add_original(text[:8])
            shifted.append(_shift_date(text, instance.offset_days) if text else text)
        return shifted

    def _clean(self, values: list[str], vr: str, instance: _Instance) -> list[str] | None:
        if vr not in _TEXT_VRS or vr == "UR":
            return None
        limit = _MAX_LENGTH.get(vr, 65536)
        return [instance.needles.scrub(v, dates=self._modifies_dates)[:limit] for v in values]

    # -- private attributes ----------------------------------------------------------------

    def _walk_private(
        self, ds: Dataset, tags: list[BaseTag], instance: _Instance, prefix: str
    ) -> None:
        safe = self._safe_private
        creators: dict[tuple[int, int], str] = {}
        if safe is not None:
            for tag in tags:
                if 0x0010 <= tag.element <= 0x00FF:
                    creators[(tag.group, tag.element)] = str(ds[tag].value).strip()
        used_blocks: set[tuple[int, int]] = set()
        for tag in tags:
            if 0x0010 <= tag.element <= 0x00FF:
                continue  # creators are decided once their block is known
            block = (tag.group, tag.element >> 8)
            creator = creators.get(block)
            action = None
            if safe is not None and creator is not None:
                action = safe.get((tag.group, creator, tag.element & 0xFF))
            path = f"{prefix}({tag.group:04X},{tag.element:04X})"
            element = ds.get_item(tag)
            vr = element.VR if element is not None and element.VR else "UN"
            if action is not None:
                action = self._private_action(action, vr)
            if action is None:
                del ds[tag]
                instance.report.record(path, "removed")
                continue
            used_blocks.add(block)
            rule = _PRIVATE_RULES[action]
            self._apply(ds, tag, vr, rule, instance, prefix)
        for tag in tags:
            if 0x0010 <= tag.element <= 0x00FF and (tag.group, tag.element) not in used_blocks:
                del ds[tag]
                instance.report.record(f"{prefix}({tag.group:04X},{tag.element:04X})", "removed")

    def _private_action(self, action: str, vr: str) -> str | None:
        """The knowledge base's action, or None (remove) where it cannot apply to this VR."""
        if action == "hash" and vr not in _TEXT_VRS and vr != "UI":
            return None  # a keyed hash of binary or numbers means nothing: drop it
        if action == "shift" and vr not in ("DA", "DT"):
            # A date kept in another VR cannot be shifted reliably: keep it only when the
            # profile keeps every date anyway.
            return "keep" if Option.RETAIN_LONGITUDINAL_FULL_DATES in self.options else None
        return action

    # -- marking ---------------------------------------------------------------------------

    def _mark_deidentified(self, ds: Dataset, instance: _Instance) -> None:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self._method
        syntax = ds.file_meta.TransferSyntaxUID
        key = (syntax.is_implicit_VR, syntax.is_little_endian)
        if key not in self._method_codes:
            self._method_codes[key] = raw_sequence(
                0x00120064, _method_codes(self.options), implicit=key[0], little=key[1]
            )
        ds[0x00120064] = self._method_codes[key]
        if Option.RETAIN_LONGITUDINAL_FULL_DATES in self.options:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        elif self._shifts_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"
        instance.report.record("PatientIdentityRemoved", "set")
        instance.report.record("DeidentificationMethodCodeSequence", "set")

    def _new_file_meta(self, ds: Dataset, original_sop_uid: str, instance: _Instance) -> None:
        old = getattr(ds, "file_meta", None)
        syntax = (
            UID(old.get("TransferSyntaxUID", ImplicitVRLittleEndian))
            if old is not None
            else ImplicitVRLittleEndian
        )
        sop_class_uid = _uid_text(ds, _SOP_CLASS_UID)
        sop_instance_uid = _uid_text(ds, _SOP_INSTANCE_UID)
        meta = file_meta(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax_uid=str(syntax),
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION,
        )
        if meta is None:  # a value that needs pydicom's rules (empty, several values...)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = UID(sop_class_uid)
            meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
            meta.TransferSyntaxUID = syntax
            meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
            meta.ImplementationVersionName = IMPLEMENTATION_VERSION
        ds.file_meta = meta
        if original_sop_uid and original_sop_uid != sop_instance_uid:
            instance.needles.add_original(original_sop_uid)
        instance.report.record("FileMetaInformation", "rewritten")


# Attributes that are Type 1 in common IODs (SR documents, enhanced multi-frame images):
# a compound action that allows D gives them a dummy value, the others are emptied.
_TYPE1_IN_COMMON_IODS = frozenset(
    {
        0x00080023,  # Content Date
        0x00080033,  # Content Time
        0x0008002A,  # Acquisition DateTime
        0x0040A075,  # Verifying Observer Name
        0x0040A123,  # Person Name (SR content item)
        0x0040A030,  # Verification DateTime
        0x0040A032,  # Observation DateTime
    }
)


def resolve_compound(code: str, tag: int) -> str:
    """One action for a compound Basic Profile code (PS3.15 E.1-1, "X/Z" and friends).

    X/Z keeps the attribute present but empty (conformant for Type 2 and 3); Z/D and X/Z/D
    empty it too unless it is Type 1 in a common IOD, where a dummy is needed; X/D always
    needs the dummy; X/Z/U* keeps a sequence and maps the UIDs it holds.
    """
    if code == "X/Z":
        return "Z"
    if code in ("Z/D", "X/Z/D"):
        return "D" if tag in _TYPE1_IN_COMMON_IODS else "Z"
    if code == "X/D":
        return "D"
    if code == "X/Z/U*":
        return "U"
    return code


_CLEAN_TEXT = Rule(Action.CLEAN, "text inside content kept by a Clean option")
_UNLISTED_UID = Rule(Action.UID, "UID outside E.1-1, not a registered DICOM UID")
_PRIVATE_RULES = {
    "keep": Rule(Action.KEEP, "retain_safe_private"),
    "hash": Rule(Action.HASH, "retain_safe_private"),
    "shift": Rule(Action.SHIFT, "retain_safe_private"),
}
_ACTION_WORD = {
    Action.DUMMY: "dummy",
    Action.UID: "uid-mapped",
    Action.SHIFT: "date-shifted",
    Action.CLEAN: "cleaned",
    Action.SUBJECT_KEY: "subject-key",
    Action.HASH: "hashed",
    Action.REPLACE: "replaced",
    Action.LOOKUP: "looked-up",
}


def _locate(ds: Dataset, needle: str) -> list[tuple[str, str]]:
    """Paths and VRs of the elements whose value holds ``needle`` as a word."""
    word = re.compile(rf"(?<![0-9a-z]){re.escape(needle.lower())}(?![0-9a-z])")
    places = []
    for element in ds.iterall():
        if element.VR == "SQ" or element.tag == PIXEL_DATA:
            continue
        value = element.value
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        if word.search(text.lower()):
            places.append((_tag_name(element.tag), str(element.VR)))
    return places


def _method_codes(options: frozenset[Option]) -> list[Dataset]:
    """DeidentificationMethodCodeSequence: CID 7050 codes of the profile and its options."""
    codes = [BASIC_PROFILE_CODE, *sorted(OPTION_CODES[o] for o in options)]
    sequence: list[Dataset] = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        sequence.append(item)
    return sequence


def _raw(tag: int, vr: str, data: bytes, like: Any, instance: _Instance) -> RawDataElement:
    """A raw element in the encoding of the element it replaces (or of the file)."""
    if isinstance(like, RawDataElement):
        implicit, little = like.is_implicit_VR, like.is_little_endian
    else:
        implicit, little = instance.encoding
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, implicit, little, True, False)


def _decoded(element: Any, vr: str, codec: str | None) -> list[str] | None:
    """A text element's values, straight from its raw bytes where that is safe."""
    if isinstance(element, DataElement):
        return _values(element.value)
    if not isinstance(element, RawDataElement) or element.value is None:
        return None
    try:
        text = element.value.decode("ascii" if vr in _ASCII_VRS else codec or "")
    except (UnicodeDecodeError, LookupError):
        return None
    text = text.rstrip("\x00 ")
    if not text:
        return []
    return [text] if vr in _SINGLE_VALUED_VRS else text.split("\\")


def _uid_text(ds: Dataset, tag: int) -> str:
    """The value of a UI element as ``str(ds.get(keyword, ""))`` gives it. Read from its
    raw bytes when decoding them would give them back as they are (one ASCII value, padded
    as pydicom pads): the element then stays raw, where pydicom would decode it (~10 µs)
    and the writer encode it again."""
    element = ds._dict.get(BaseTag(tag))
    if isinstance(element, RawDataElement) and element.VR in ("UI", None):
        raw = element.value
        if raw is not None and raw.isascii() and b"\\" not in raw:
            text = raw.decode("ascii").rstrip("\x00 ")
            encoded = text.encode("ascii")
            if raw == (encoded + b"\x00" if len(encoded) % 2 else encoded):
                return text
    return str(ds[tag].value) if element is not None else ""


def _encoding(ds: Dataset) -> tuple[bool, bool]:
    meta = getattr(ds, "file_meta", None)
    syntax = UID(meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)) if meta else None
    if syntax is None or not syntax.is_transfer_syntax:
        return (True, True)
    return (syntax.is_implicit_VR, syntax.is_little_endian)


def _codec(ds: Dataset) -> str | None:
    """The one codec of the dataset's character set, or None if it needs pydicom."""
    if 0x00080005 not in ds:
        return "ascii"
    element: DataElement | RawDataElement = ds.get_item(0x00080005)
    if isinstance(element, RawDataElement):
        raw = element.value or b""
        names = [n.strip() for n in raw.decode("ascii", "replace").split("\\") if n.strip()]
    else:
        names = [str(n).strip() for n in _values(element.value) if str(n).strip()]
    if not names:
        return "ascii"
    return _SIMPLE_CHARSETS.get(names[0]) if len(names) == 1 else None


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value.decode("latin-1") if isinstance(value, bytes) else value]
    try:
        return [str(v) for v in value]
    except TypeError:
        return [str(value)]


def _dummy(vr: str) -> str:
    dummy = _DUMMY.get(vr, _DUMMY_TEXT)
    return dummy[: _MAX_LENGTH.get(vr, 64)]


def _shift_date(text: str, days: int) -> str:
    """Shift a DA or DT by ``days``, keeping its precision; unparseable dates become dummies."""
    digits = text[:8]
    try:
        if len(digits) == 8 and digits.isdigit():
            day = dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
            return (day + dt.timedelta(days=days)).strftime("%Y%m%d") + text[8:]
        if len(text) >= 4 and text[:4].isdigit():  # DT with year or month precision
            year = dt.date(int(text[:4]), 7, 1) + dt.timedelta(days=days)
            return f"{year.year:04d}" + text[4:]
    except ValueError:
        pass
    return _DUMMY["DA"]
