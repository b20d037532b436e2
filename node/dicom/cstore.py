"""C-STORE requests read and answered without pynetdicom's DIMSE layer.

pynetdicom decodes a request's command set with pydicom into a data set, turns it into a
primitive (validating each attribute), runs its service class, and encodes the answer the
same way: about a millisecond of Python per instance on the thread every acknowledgement
waits for. A C-STORE-RQ command set is a handful of elements (PS3.7 9.3.1.1) and its answer
seven (9.3.1.2), always in implicit VR little endian: they are read and written here with
``struct``. The P-DATA primitives of one association pass through :meth:`FastStore.receive`
(in place of pynetdicom's ``DIMSEServiceProvider.receive_primitive``); anything else than a
plain C-STORE-RQ on an accepted context — another command, fragments out of the ordinary, a
command set that does not parse — is handed to pynetdicom exactly as it arrived, and
pynetdicom does what it always does.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom.pdu_primitives import P_DATA

from node.dicom.meta import encode_file_meta

C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
NO_DATA_SET = 0x0101
_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")
# Message control header (PS3.8 E.2): bit 0 command (else data set), bit 1 last fragment.
_COMMAND, _LAST = 0x01, 0x02
_PREAMBLE = b"\x00" * 128 + b"DICM"

# Command set elements (group 0000) read from a C-STORE-RQ.
_SOP_CLASS, _COMMAND_FIELD, _MESSAGE_ID = 0x0002, 0x0100, 0x0110
_DATA_SET_TYPE, _SOP_INSTANCE = 0x0800, 0x1000
_MOVE_ORIGINATOR_AE, _MOVE_ORIGINATOR_ID = 0x1030, 0x1031


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """A C-STORE-RQ and its data set, as the peer encoded it."""

    context_id: int
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    move_originator_ae: str | None
    move_originator_id: int | None
    fragments: tuple[bytes, ...]

    def encoded_file(self) -> bytes:
        """The instance as a DICOM file: preamble, file meta, the data set as received."""
        meta = encode_file_meta(self.sop_class_uid, self.sop_instance_uid, self.transfer_syntax_uid)
        return b"".join((_PREAMBLE, meta, *self.fragments))


def parse_command(data: bytes) -> dict[int, bytes] | None:
    """The elements of an implicit VR little endian command set, by element number; None if
    it does not parse as one."""
    elements: dict[int, bytes] = {}
    position, end = 0, len(data)
    while position + 8 <= end:
        group, element, length = _ELEMENT.unpack_from(data, position)
        position += 8
        if group != 0x0000 or position + length > end:
            return None
        elements[element] = data[position : position + length]
        position += length
    return elements if position == end else None


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace").strip(" \x00")


def store_request_command(elements: dict[int, bytes]) -> tuple[int, str, str] | None:
    """(message ID, SOP class, SOP instance) of a C-STORE-RQ with a data set; None for any
    other command set."""
    try:
        if _US.unpack(elements[_COMMAND_FIELD])[0] != C_STORE_RQ:
            return None
        if _US.unpack(elements[_DATA_SET_TYPE])[0] == NO_DATA_SET:
            return None
        message_id = _US.unpack(elements[_MESSAGE_ID])[0]
    except (KeyError, struct.error):
        return None
    try:  # UIDs are ASCII; anything else is pynetdicom's to judge
        sop_class = elements.get(_SOP_CLASS, b"").decode("ascii").strip(" \x00")
        sop_instance = elements.get(_SOP_INSTANCE, b"").decode("ascii").strip(" \x00")
    except UnicodeDecodeError:
        return None
    if not sop_class or not sop_instance:
        return None
    return message_id, sop_class, sop_instance


def _element(element: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00"  # UI padding; the US values are even already
    return _ELEMENT.pack(0x0000, element, len(value)) + value


def encode_store_response(request: StoreRequest, status: int) -> bytes:
    """The C-STORE-RSP command set (PS3.7 9.3.1.2), implicit VR little endian."""
    body = b"".join(
        (
            _element(_SOP_CLASS, request.sop_class_uid.encode("ascii")),
            _element(_COMMAND_FIELD, _US.pack(C_STORE_RSP)),
            _element(0x0120, _US.pack(request.message_id)),  # MessageIDBeingRespondedTo
            _element(_DATA_SET_TYPE, _US.pack(NO_DATA_SET)),
            _element(0x0900, _US.pack(status)),
            _element(_SOP_INSTANCE, request.sop_instance_uid.encode("ascii")),
        )
    )
    return _ELEMENT.pack(0x0000, 0x0000, 4) + struct.pack("<I", len(body)) + body


class FastStore:
    """Reads the P-DATA primitives of one association; C-STORE requests go to ``ready``."""

    def __init__(self, assoc: Any) -> None:
        self.assoc = assoc
        self.dimse = assoc.dimse
        self.original: Callable[[Any], None] = assoc.dimse.receive_primitive
        self.ready: deque[StoreRequest] = deque()
        self._held: list[Any] = []  # the primitives of the message being read
        self._command: list[bytes] = []
        self._request: tuple[int, int, str, str, dict[int, bytes]] | None = None
        self._fragments: list[bytes] = []

    def receive(self, primitive: Any) -> None:
        """In place of ``DIMSEServiceProvider.receive_primitive`` (called by the DUL)."""
        if self.dimse.message is not None:  # pynetdicom is reading a message: its to finish
            self.original(primitive)
            return
        self._held.append(primitive)
        outcome = self._read(primitive)
        if outcome is None:
            return  # more to come
        held, self._held = self._held, []
        request = self._take()
        if outcome and request is not None:
            self.ready.append(request)
            return
        for earlier in held:  # as it arrived, to pynetdicom
            self.original(earlier)

    def _read(self, primitive: Any) -> bool | None:
        """True: a whole C-STORE-RQ; False: for pynetdicom; None: not complete yet."""
        values = getattr(primitive, "presentation_data_value_list", None)
        if not isinstance(primitive, P_DATA) or not values:
            return False
        for index, (context_id, data) in enumerate(values):
            if not data:
                return False
            control, body = data[0], data[1:]
            if self._request is None:
                if not control & _COMMAND or not self._read_command(context_id, body, control):
                    return False
                continue
            if control & _COMMAND or context_id != self._request[0]:
                return False
            self._fragments.append(body)
            if control & _LAST:
                return index == len(values) - 1  # nothing may follow the message
        return None

    def _read_command(self, context_id: int, body: bytes, control: int) -> bool:
        self._command.append(body)
        if not control & _LAST:
            return True
        elements = parse_command(b"".join(self._command))
        command = None if elements is None else store_request_command(elements)
        if elements is None or command is None:
            return False
        if context_id not in self.assoc._accepted_cx:
            return False
        self._request = (context_id, *command, elements)
        return True

    def _take(self) -> StoreRequest | None:
        """The request read (if whole), and a clean slate for the next message."""
        request, fragments = self._request, self._fragments
        self._request, self._fragments, self._command = None, [], []
        if request is None:
            return None
        context_id, message_id, sop_class, sop_instance, elements = request
        context = self.assoc._accepted_cx[context_id]
        move_ae = _text(elements.get(_MOVE_ORIGINATOR_AE, b"")) or None
        move_id = elements.get(_MOVE_ORIGINATOR_ID, b"")
        return StoreRequest(
            context_id=context_id,
            message_id=message_id,
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            transfer_syntax_uid=str(context.transfer_syntax[0]),
            move_originator_ae=move_ae,
            move_originator_id=_US.unpack(move_id)[0] if len(move_id) == 2 else None,
            fragments=tuple(fragments),
        )

    def answer(self, request: StoreRequest, status: int) -> None:
        """Queue the C-STORE-RSP for the DUL to send."""
        command = bytes([_COMMAND | _LAST]) + encode_store_response(request, status)
        values: Any = [[request.context_id, command]]  # pynetdicom wants lists, types tuples
        response = P_DATA()
        response.presentation_data_value_list = values
        self.assoc.dul.send_pdu(response)
