"""What a curator looks at before deciding: a received study laid out as series of frames,
and any frame drawn as a PNG (``common.web.render``) — from the files the hub holds, in
quarantine while the study awaits review, in the project's workspace once accepted.

A series is named by its position in the study (1, 2, …) and a frame by its position in
the series, ordered by Instance Number; the layout is read from the files' headers once per
upload and kept in a small cache, so scrolling through a series reads one file per frame.
Nothing but pixels is drawn, and the layout keeps only project UIDs, coded values and paths
made of project keys.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from common.web import render
from hub.curation.models import ReceivedStudy, StudyState
from hub.curation.quarantine import quarantine_prefix
from hub.curation.service import workspace_prefix
from hub.exceptions import NotFound
from hub.storage.exceptions import ObjectNotFound
from hub.storage.service import Storage

logger = logging.getLogger(__name__)

THUMBNAIL_SIZE = 160
VIEWER_SIZE = render.PREVIEW_MAX_SIZE
_CACHED_LAYOUTS = 64
_DEFER_BYTES = 4096


class PreviewUnavailable(NotFound):
    """The study, series or frame cannot be shown; the message says which and why."""


@dataclass(frozen=True)
class Frame:
    path: str  # the file's path in the manifest: subject/study/series/instance.dcm
    index: int  # the frame within that file (0 for single-frame instances)


@dataclass(frozen=True)
class SeriesView:
    number: int  # 1-based position in the study
    series_uid: str  # the project's UID
    modality: str
    frames: tuple[Frame, ...]

    @property
    def middle(self) -> int:
        """The frame a thumbnail shows: the middle of the series (1-based)."""
        return (len(self.frames) + 1) // 2


def files_prefix(project: str, study: ReceivedStudy) -> str:
    """Where the study's files are now; a rejected study's files are gone."""
    state = StudyState(study.state)
    if state is StudyState.AWAITING_REVIEW:
        return quarantine_prefix(project, study.study_uid)
    if state is StudyState.ACCEPTED:
        return workspace_prefix(project, study.subject_key, study.study_uid)
    raise PreviewUnavailable(f"study {study.id} was rejected: its files were discarded")


class _Layouts:
    """Layouts by (files prefix, content digest): a new upload of a study is a new key."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._found: OrderedDict[tuple[str, str], list[SeriesView]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> list[SeriesView] | None:
        with self._lock:
            found = self._found.get(key)
            if found is not None:
                self._found.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], layout: list[SeriesView]) -> None:
        with self._lock:
            self._found[key] = layout
            while len(self._found) > self._size:
                self._found.popitem(last=False)


_layouts = _Layouts(_CACHED_LAYOUTS)


def layout(*, storage: Storage, project: str, study: ReceivedStudy) -> list[SeriesView]:
    """The study's series in order of Series Number, each with its frames in order."""
    prefix = files_prefix(project, study)
    key = (prefix, study.content_sha256)
    found = _layouts.get(key)
    if found is None:
        found = _read_layout(storage, prefix, study)
        _layouts.put(key, found)
    return found


def _read_layout(storage: Storage, prefix: str, study: ReceivedStudy) -> list[SeriesView]:
    by_series: dict[str, list[tuple[int, str, Dataset]]] = {}
    for entry in study.manifest.get("files", []):
        path = str(entry["path"])
        ds = _header(storage, prefix, path)
        number = _integer(ds.get("InstanceNumber"))
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((number, path, ds))
    ordered = sorted(
        by_series.items(),
        key=lambda item: (min(_integer(ds.get("SeriesNumber")) for _, _, ds in item[1]), item[0]),
    )
    views = []
    for position, (series_uid, instances) in enumerate(ordered, start=1):
        frames = [
            Frame(path, index)
            for _, path, ds in sorted(instances, key=lambda item: (item[0], item[1]))
            for index in range(render.frame_count(ds))
        ]
        modality = str(instances[0][2].get("Modality", "") or "")
        views.append(SeriesView(position, series_uid, modality, tuple(frames)))
    return views


def _integer(value: object) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def _read(storage: Storage, prefix: str, path: str) -> bytes:
    try:
        return storage.get(f"{prefix}/{path}")
    except ObjectNotFound:
        raise PreviewUnavailable(f"{path}: the file is not in storage") from None


def _header(storage: Storage, prefix: str, path: str, data: bytes | None = None) -> Dataset:
    raw = data if data is not None else _read(storage, prefix, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Large values (the pixels) stay unread, but their presence is known.
            return pydicom.dcmread(io.BytesIO(raw), defer_size=_DEFER_BYTES)
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError):
        raise PreviewUnavailable(f"{path}: not a readable DICOM file") from None


def series(*, storage: Storage, project: str, study: ReceivedStudy, number: int) -> SeriesView:
    views = layout(storage=storage, project=project, study=study)
    if not 1 <= number <= len(views):
        raise PreviewUnavailable(f"study {study.id} has no series {number}")
    return views[number - 1]


def frame_png(
    *,
    storage: Storage,
    project: str,
    study: ReceivedStudy,
    number: int,
    frame: int,
    max_size: int = VIEWER_SIZE,
) -> bytes:
    """Frame ``frame`` (1-based) of series ``number`` as a PNG, at most ``max_size`` a side."""
    view = series(storage=storage, project=project, study=study, number=number)
    if not 1 <= frame <= len(view.frames):
        raise PreviewUnavailable(f"series {number} of study {study.id} has no frame {frame}")
    wanted = view.frames[frame - 1]
    prefix = files_prefix(project, study)
    data = _read(storage, prefix, wanted.path)
    ds = _header(storage, prefix, wanted.path, data)
    syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "unknown"))
    try:
        pixels = render.decode_frame(io.BytesIO(data), wanted.index, syntax)
    except render.FrameUnreadable as exc:
        logger.warning("study %d series %d: %s", study.id, number, exc)
        raise PreviewUnavailable(f"{wanted.path}: {exc}") from None
    return render.png(pixels, ds, max_size=max_size)
