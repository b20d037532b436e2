"""A lean reader for the common case: a Part 10 file in a little-endian transfer syntax.

pydicom's reader is general (deferred reads, big endian, broken files, callbacks) and costs
about a millisecond per file; most of a PACS's files need none of that. This reader parses
the file in one pass over its bytes into the same raw elements pydicom would make, so the
engine cannot tell the difference (a test compares both readers on every sample file).
Anything unusual — big endian, deflate, a malformed length — returns None, and the caller
uses pydicom.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_TAG = struct.Struct("<HH")
_EXPLICIT = struct.Struct("<HH2sH")  # tag, VR, and the length of a VR with a short one
_IMPLICIT = struct.Struct("<HHI")
_SHORT_LENGTH = struct.Struct("<H")
_LONG_LENGTH = struct.Struct("<I")
_IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"


class _Malformed(Exception):
    """The bytes do not parse cleanly: let pydicom decide what to make of them."""


def read_fast(path: Path) -> FileDataset | None:
    """The file as pydicom would read it, or None when it needs pydicom's general reader."""
    data = path.read_bytes()
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    try:
        meta, position = _Parser(data, explicit=True).elements(132, len(data), group=0x0002)
        syntax = _text(meta.get(BaseTag(0x00020010)))
        if not syntax:
            return None
        uid = UID(syntax)
        if not uid.is_transfer_syntax or not uid.is_little_endian or uid.is_deflated:
            return None
        implicit = syntax == _IMPLICIT_VR_LITTLE_ENDIAN
        elements, end = _Parser(data, explicit=not implicit).elements(position, len(data))
    except (_Malformed, struct.error, IndexError, ValueError, RecursionError):
        return None
    if end != len(data):
        return None
    ds = FileDataset(
        str(path),
        elements,
        preamble=data[:128],
        file_meta=FileMetaDataset(meta),
        is_implicit_VR=implicit,
        is_little_endian=True,
    )
    ds.set_original_encoding(implicit, True, _charset(elements, default_encoding))
    return ds


Elements = dict[BaseTag, RawDataElement | DataElement]


class _Parser:
    """One pass over a file's bytes in one encoding (little endian, explicit or implicit)."""

    def __init__(self, data: bytes, *, explicit: bool) -> None:
        self.data = data
        self.explicit = explicit

    def elements(  # noqa: PLR0912 - the hot loop, inlined (~95 elements a file)
        self,
        position: int,
        end: int,
        *,
        group: int | None = None,
        encoding: str | list[str] = default_encoding,
        item: bool = False,
    ) -> tuple[Elements, int]:
        """Elements from ``position`` up to ``end`` (or, in an undefined-length ``item``,
        up to its delimiter); with ``group``, only while the elements are of that group."""
        data = self.data
        explicit = self.explicit
        implicit = not explicit
        found: Elements = {}
        while position < end:
            # One unpack for the tag and what follows it: the VR and a short length in
            # explicit VR, the length in implicit VR (~95 elements a file: it adds up).
            if explicit:
                number_group, number, vr_code, length = _EXPLICIT.unpack_from(data, position)
            else:
                number_group, number, length = _IMPLICIT.unpack_from(data, position)
            tag = (number_group << 16) | number
            if tag == _ITEM_END and item:
                return found, position + 8
            if group is not None and number_group != group:
                break
            if tag in (_ITEM_END, _SEQUENCE_END, _ITEM):
                raise _Malformed
            vr: str | None = None
            start = position + 8
            if explicit:
                vr = _vr_name(vr_code)
                if vr_code in _LONG_VRS:
                    length = _LONG_LENGTH.unpack_from(data, position + 8)[0]
                    start = position + 12
            key = BaseTag(tag)
            if tag == 0x00080005:
                value = data[start : start + length]
                encoding = _charset({key: _raw(key, vr, length, value, start, self)}, encoding)
            if length == _UNDEFINED:
                position = self._undefined_length(found, key, vr, start, end, encoding)
                continue
            stop = start + length
            if stop > end:
                raise _Malformed
            if vr == "SQ":
                items, _ = self.sequence(start, stop, encoding, defined=True)
                found[key] = DataElement(key, "SQ", items)
            else:
                found[key] = RawDataElement(
                    key, vr, length, data[start:stop], start, implicit, True, True, False
                )
            position = stop
        if item:
            raise _Malformed  # an undefined-length item without its delimiter
        return found, position

    def _undefined_length(
        self,
        found: Elements,
        key: BaseTag,
        vr: str | None,
        start: int,
        end: int,
        encoding: str | list[str],
    ) -> int:
        """Read an element of undefined length (encapsulated pixel data, or a sequence)
        into ``found``; where the next element starts."""
        if key == 0x7FE00010:
            stop = _end_of_fragments(self.data, start, end)
            found[key] = _raw(key, vr, _UNDEFINED, self.data[start : stop - 8], start, self)
            return stop
        if vr not in (None, "SQ", "UN"):
            raise _Malformed
        items, position = self.sequence(start, end, encoding, defined=False)
        found[key] = DataElement(key, "SQ", items, is_undefined_length=True)
        return position

    def sequence(
        self, position: int, end: int, encoding: str | list[str], *, defined: bool
    ) -> tuple[Sequence, int]:
        items: list[Dataset] = []
        data = self.data
        while position < end:
            group, number = _TAG.unpack_from(data, position)
            (length,) = _LONG_LENGTH.unpack_from(data, position + 4)
            tag = (group << 16) | number
            position += 8
            if tag == _SEQUENCE_END and not defined:
                return Sequence(items), position
            if tag != _ITEM:
                raise _Malformed
            if length == _UNDEFINED:
                elements, position = self.elements(position, end, encoding=encoding, item=True)
            else:
                elements, stop = self.elements(position, position + length, encoding=encoding)
                if stop != position + length:
                    raise _Malformed
                position = stop
            dataset = Dataset(elements, parent_encoding=encoding)
            dataset.set_original_encoding(not self.explicit, True, _charset(elements, encoding))
            items.append(dataset)
        if not defined:
            raise _Malformed
        return Sequence(items), position


_VR_NAMES: dict[bytes, str] = {}


def _vr_name(code: bytes) -> str:
    """A VR's two bytes as text; two upper-case letters, or the bytes are not an element."""
    name = _VR_NAMES.get(code)
    if name is None:
        if code not in _LONG_VRS and (not code.isalpha() or not code.isupper()):
            raise _Malformed
        name = _VR_NAMES[code] = code.decode("ascii")
    return name


def _raw(
    key: BaseTag, vr: str | None, length: int, value: bytes, start: int, parser: _Parser
) -> RawDataElement:
    return RawDataElement(key, vr, length, value, start, not parser.explicit, True, True, False)


def _end_of_fragments(data: bytes, position: int, end: int) -> int:
    """The position just after the Sequence Delimitation Item of encapsulated pixel data."""
    while position + 8 <= end:
        group, number = _TAG.unpack_from(data, position)
        (length,) = _LONG_LENGTH.unpack_from(data, position + 4)
        tag = (group << 16) | number
        position += 8
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM or length == _UNDEFINED:
            raise _Malformed
        position += length
    raise _Malformed


def _text(element: RawDataElement | DataElement | None) -> str:
    if element is None:
        return ""
    value = element.value
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00 ")
    return str(value or "")


def _charset(elements: Elements, inherited: str | list[str]) -> str | list[str]:
    """The character set in effect for ``elements`` (their own, else the parent's)."""
    element = elements.get(BaseTag(0x00080005))
    text = _text(element) if element is not None else ""
    if not text:
        return inherited
    return convert_encodings([part.strip() for part in text.split("\\")])
