"""The QA preview: what stage 1 did to one instance, for a person to check.

Two views of one stored instance, both built from what the node already holds (the
pseudonymized file and its de-identification report), so neither can show more than the
store does:

* :func:`preview` lists every attribute with the action stage 1 took: kept, removed,
  emptied, UID-mapped, cleaned, …. Identifiers show their action only, never a value; other
  attributes show the value of the stored file, which is already pseudonymized.
* :func:`render_png` draws the first frame of the pseudonymized pixels (windowed, at most
  512 pixels a side) so a person can spot text burned into the image.

The correspondence table is not read here: a preview never re-identifies.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels.utils import pixel_array
from pydicom.tag import BaseTag
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from common.deid.leak import IDENTIFYING_KEYWORDS
from common.web.render import PREVIEW_MAX_SIZE, png
from node.exceptions import NotFound, PreviewUnavailable
from node.store.models import Instance, Series, Study

logger = logging.getLogger(__name__)

KEPT = "kept"
MAX_VALUE_LENGTH = 200

# Attributes whose value is withheld whatever stage 1 did to them: the patient's
# identifiers (PS3.15 E.1-1 names them), and any attribute the engine replaced by something
# standing for the patient.
_IDENTIFYING = frozenset(
    {
        *IDENTIFYING_KEYWORDS,
        "IssuerOfPatientID",
        "OtherPatientIDsSequence",
        "PatientBirthTime",
        "PersonName",
    }
)
_IDENTIFYING_ACTIONS = frozenset({"subject-key", "hashed", "looked-up"})
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_DEFER_SIZE = 65536  # bigger values (pixel data) stay on disk
_ITEM_INDEX = re.compile(r"\[\d+\]$")


@dataclass(frozen=True)
class AttributeChange:
    path: str
    action: str
    value: str | None
    withheld: bool


@dataclass(frozen=True)
class Preview:
    sop_uid: str
    series_uid: str
    study_uid: str
    subject_key: str
    profile: str
    pixels: str
    burned_in_annotation: str | None
    transfer_syntax_uid: str
    summary: dict[str, int]
    attributes: list[AttributeChange]


# -- the store --------------------------------------------------------------------------------


def get_instance(*, session: Session, sop_uid: str) -> Instance:
    """The stored instance with this stage-1 SOP Instance UID, its report and its places."""
    instance = session.execute(
        select(Instance)
        .where(Instance.sop_uid == sop_uid)
        .options(
            joinedload(Instance.report),
            joinedload(Instance.series).joinedload(Series.study).joinedload(Study.patient),
        )
    ).scalar_one_or_none()
    if instance is None:
        raise NotFound("instance", sop_uid)
    return instance


def stored_file(instance: Instance, data_dir: Path) -> Path:
    """The file of ``instance``; it must lie inside the node's data folder and exist."""
    root = data_dir.resolve()
    path = (root / instance.path).resolve()
    if not path.is_relative_to(root):
        raise PreviewUnavailable(instance.sop_uid, "the stored path lies outside the data folder")
    if not path.is_file():
        raise PreviewUnavailable(instance.sop_uid, "the stored file is missing")
    return path


def preview(*, session: Session, data_dir: Path, sop_uid: str) -> Preview:
    """The attribute-by-attribute before/after of stage 1 for one stored instance."""
    instance = get_instance(session=session, sop_uid=sop_uid)
    if instance.report is None:
        raise PreviewUnavailable(sop_uid, "no de-identification report was stored")
    ds = _read(instance, stored_file(instance, data_dir), defer_size=_DEFER_SIZE)
    changes = attributes(ds, instance.report.actions)
    summary: dict[str, int] = {}
    for change in changes:
        summary[change.action] = summary.get(change.action, 0) + 1
    burned_in = ds.get("BurnedInAnnotation")
    return Preview(
        sop_uid=instance.sop_uid,
        series_uid=instance.series.series_uid,
        study_uid=instance.series.study.study_uid,
        subject_key=instance.series.study.patient.subject_key,
        profile=instance.report.profile,
        pixels=instance.report.pixels,
        burned_in_annotation=str(burned_in) if burned_in is not None else None,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        summary=dict(sorted(summary.items())),
        attributes=changes,
    )


def render_png(
    *, session: Session, data_dir: Path, sop_uid: str, max_size: int = PREVIEW_MAX_SIZE
) -> bytes:
    """The first frame of the stored instance's pixels as a PNG, at most ``max_size`` a side."""
    instance = get_instance(session=session, sop_uid=sop_uid)
    path = stored_file(instance, data_dir)
    ds = _read(instance, path, defer_size=_DEFER_SIZE)
    if "PixelData" not in ds:
        raise PreviewUnavailable(sop_uid, "the instance has no pixel data")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = pixel_array(str(path), index=0)
    except Exception as exc:  # decoders raise many kinds; the type is enough to say why
        logger.warning("instance %s: pixels do not decode (%s)", sop_uid, type(exc).__name__)
        raise PreviewUnavailable(
            sop_uid, f"the pixels do not decode ({instance.transfer_syntax_uid})"
        ) from None
    return render(frame, ds, max_size=max_size)


def _read(instance: Instance, path: Path, *, defer_size: int | None) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, defer_size=defer_size)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        raise PreviewUnavailable(instance.sop_uid, "the stored file does not read") from None


# -- the attribute table ---------------------------------------------------------------------


def attributes(ds: Dataset, actions: dict[str, list[str]]) -> list[AttributeChange]:
    """Each attribute of the report and of the stored dataset ``ds``, with its action.

    ``actions`` is the stored report (action → attribute paths). An attribute the report
    does not name was kept as it was; one it names but ``ds`` lacks was removed.
    """
    action_of: dict[str, str] = {}
    for action, paths in actions.items():
        for path in paths:
            action_of[path] = f"{action_of[path]}, {action}" if path in action_of else action
    rows: dict[str, AttributeChange] = {}
    _walk(ds, "", action_of, rows)
    for path, action in action_of.items():
        if path not in rows:  # removed, or an element of the file meta
            rows[path] = AttributeChange(path, action, None, _identifying(path, action, None))
    return sorted(rows.values(), key=lambda row: row.path)


def _walk(
    ds: Dataset, prefix: str, action_of: dict[str, str], rows: dict[str, AttributeChange]
) -> None:
    for tag in list(ds.keys()):
        if tag.group == 0x0002:
            continue  # the file meta: the report says "rewritten" for all of it
        path = f"{prefix}{_tag_name(tag)}"
        action = action_of.get(path, KEPT)
        # pydicom types get_item as a DataElement; a deferred value is a RawDataElement.
        raw: object = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
            # A value left on disk (pixel data, mostly): its size is all a person needs.
            withheld = _identifying(path, action, raw.VR)
            value = None if withheld else f"({raw.length} bytes)"
            rows[path] = AttributeChange(path, action, value, withheld)
            continue
        element = ds[tag]
        withheld = _identifying(path, action, element.VR)
        if element.VR == "SQ":
            items = len(element.value or [])
            rows[path] = AttributeChange(path, action, f"{items} item(s)", withheld)
            if action in (KEPT, "cleaned", "uid-mapped"):  # items were de-identified one by one
                for index, item in enumerate(element.value or []):
                    _walk(item, f"{path}[{index}].", action_of, rows)
            continue
        value = None if withheld else _shown(element.VR, element.value)
        rows[path] = AttributeChange(path, action, value, withheld)


def _tag_name(tag: BaseTag) -> str:
    """The engine's name for a tag: the keyword, or (GGGG,EEEE) for private and unknown."""
    keyword = "" if tag.is_private else keyword_for_tag(tag)
    return keyword or f"({tag.group:04X},{tag.element:04X})"


def _identifying(path: str, action: str, vr: str | None) -> bool:
    keyword = _ITEM_INDEX.sub("", path.rsplit(".", 1)[-1])
    return (
        keyword in _IDENTIFYING
        or vr == "PN"
        or any(part in _IDENTIFYING_ACTIONS for part in action.split(", "))
    )


def _shown(vr: str, value: object) -> str | None:
    if value is None or value == "":
        return ""
    if vr in _BINARY_VRS or isinstance(value, bytes | bytearray):
        return f"({len(value) if isinstance(value, bytes | bytearray) else '?'} bytes)"
    if isinstance(value, MultiValue | list | tuple):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    return text if len(text) <= MAX_VALUE_LENGTH else text[:MAX_VALUE_LENGTH] + "…"


# -- the picture ------------------------------------------------------------------------------


render = png  # the pages' renderer, shared with the hub's curator viewer
