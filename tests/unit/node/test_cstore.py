"""C-STORE requests read and answered without pynetdicom's DIMSE layer (node.dicom.cstore):
the same bytes pynetdicom would read and write, and anything else left to pynetdicom."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu_primitives import P_DATA

from node.dicom.cstore import (
    FastStore,
    StoreRequest,
    encode_store_response,
    parse_command,
    store_request_command,
)
from tests.conftest import ct_dataset

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


@dataclass
class Context:
    transfer_syntax: list[str]


@dataclass
class Dimse:
    message: Any = None
    handed: list[Any] = field(default_factory=list)

    def receive_primitive(self, primitive: Any) -> None:
        self.handed.append(primitive)


@dataclass
class Dul:
    sent: list[Any] = field(default_factory=list)

    def send_pdu(self, primitive: Any) -> None:
        self.sent.append(primitive)


@dataclass
class Assoc:
    dimse: Dimse = field(default_factory=Dimse)
    dul: Dul = field(default_factory=Dul)
    _accepted_cx: dict[int, Context] = field(default_factory=lambda: {1: Context([EXPLICIT])})


def data_set() -> bytes:
    """A CT data set in explicit VR little endian, as a C-STORE carries it."""
    buffer = io.BytesIO()
    ct_dataset().save_as(buffer, enforce_file_format=True)
    encoded = buffer.getvalue()
    meta_length = int.from_bytes(encoded[140:144], "little")  # (0002,0000) group length
    return encoded[144 + meta_length :]


def store_message(move: bool = False) -> C_STORE_RQ:
    request = C_STORE()
    request.MessageID = 7
    request.AffectedSOPClassUID = CT
    request.AffectedSOPInstanceUID = "1.2.3.4.5"
    request.Priority = 0x0000
    if move:
        request.MoveOriginatorApplicationEntityTitle = "PACS"
        request.MoveOriginatorMessageID = 42
    request.DataSet = io.BytesIO(data_set())
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return message


def primitives(message: Any, max_pdu: int = 0, per_primitive: int = 100) -> list[P_DATA]:
    """The P-DATA primitives pynetdicom would send, regrouped ``per_primitive`` PDVs each."""
    values: Any = [
        list(v) for p in message.encode_msg(1, max_pdu) for v in p.presentation_data_value_list
    ]
    grouped = []
    for start in range(0, len(values), per_primitive):
        primitive = P_DATA()
        primitive.presentation_data_value_list = values[start : start + per_primitive]
        grouped.append(primitive)
    return grouped


def test_a_store_request_is_read_whole_with_its_move_originator() -> None:
    assoc = Assoc()
    fast = FastStore(assoc)
    for primitive in primitives(store_message(move=True)):
        fast.receive(primitive)
    [request] = fast.ready
    assert (request.message_id, request.sop_class_uid, request.sop_instance_uid) == (
        7,
        CT,
        "1.2.3.4.5",
    )
    assert (request.move_originator_ae, request.move_originator_id) == ("PACS", 42)
    assert b"".join(request.fragments) == data_set()
    assert assoc.dimse.handed == []


@pytest.mark.parametrize(("max_pdu", "per_primitive"), [(0, 100), (1024, 1), (1024, 3)])
def test_a_data_set_in_many_fragments_and_primitives_is_read_in_order(
    max_pdu: int, per_primitive: int
) -> None:
    fast = FastStore(Assoc())
    for primitive in primitives(store_message(), max_pdu, per_primitive):
        fast.receive(primitive)
    [request] = fast.ready
    assert b"".join(request.fragments) == data_set()
    assert request.move_originator_ae is None and request.move_originator_id is None


def test_the_file_made_of_a_request_reads_as_the_instance() -> None:
    fast = FastStore(Assoc())
    for primitive in primitives(store_message()):
        fast.receive(primitive)
    ds = dcmread(io.BytesIO(fast.ready[0].encoded_file()))
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4.5"


def test_other_commands_go_to_pynetdicom_as_they_came() -> None:
    echo = C_ECHO()
    echo.MessageID = 3
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(echo)
    assoc = Assoc()
    fast = FastStore(assoc)
    sent = primitives(message)
    for primitive in sent:
        fast.receive(primitive)
    assert assoc.dimse.handed == sent and not fast.ready


def test_a_store_on_a_context_not_accepted_goes_to_pynetdicom() -> None:
    assoc = Assoc(_accepted_cx={})
    fast = FastStore(assoc)
    sent = primitives(store_message(), 1024, 1)
    for primitive in sent:
        fast.receive(primitive)
    assert assoc.dimse.handed[0] is sent[0] and not fast.ready


def test_a_message_pynetdicom_is_reading_stays_with_it() -> None:
    assoc = Assoc()
    assoc.dimse.message = object()  # pynetdicom took the start of it
    fast = FastStore(assoc)
    sent = primitives(store_message())
    for primitive in sent:
        fast.receive(primitive)
    assert assoc.dimse.handed == sent and not fast.ready


def test_something_after_the_last_fragment_hands_the_whole_message_over() -> None:
    assoc = Assoc()
    fast = FastStore(assoc)
    [whole] = primitives(store_message())
    extended: Any = [*whole.presentation_data_value_list, [1, b"\x02x"]]
    whole.presentation_data_value_list = extended
    fast.receive(whole)
    assert assoc.dimse.handed == [whole] and not fast.ready


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC210])
def test_the_answer_is_the_command_set_pynetdicom_encodes(status: int) -> None:
    request = StoreRequest(1, 7, CT, "1.2.3.4.5", EXPLICIT, None, None, ())
    response = C_STORE()  # as pynetdicom's storage service class fills it
    response.MessageID = 7
    response.MessageIDBeingRespondedTo = 7
    response.AffectedSOPClassUID = CT
    response.AffectedSOPInstanceUID = "1.2.3.4.5"
    response.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(response)
    [expected] = [v for p in message.encode_msg(1, 0) for v in p.presentation_data_value_list]
    assert encode_store_response(request, status) == expected[1][1:]
    assert parse_command(encode_store_response(request, status)) is not None


def test_a_command_set_that_does_not_parse_is_none() -> None:
    assert parse_command(b"\x00\x00\x00\x00\x04\x00\x00\x00ab") is None  # value too short
    assert parse_command(b"\x08\x00\x18\x00\x00\x00\x00\x00") is None  # not group 0000


def test_a_store_command_with_a_uid_that_is_not_ascii_is_left_to_pynetdicom() -> None:
    command = {0x0100: b"\x01\x00", 0x0800: b"\x00\x00", 0x0110: b"\x07\x00"}
    assert store_request_command({**command, 0x0002: CT.encode(), 0x1000: b"1.2"}) is not None
    assert store_request_command({**command, 0x0002: CT.encode(), 0x1000: b"1.\xff"}) is None
