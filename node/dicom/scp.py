"""The node's DICOM storage server: C-ECHO, and C-STORE of every storage SOP class.

A PACS, a modality or a C-MOVE the node asked for sends here. The C-STORE handler only makes
the bytes durable (:meth:`node.ingest.service.Ingest.accept`) and answers; stage 1 runs in
the ingest's worker processes, off the association's thread. It never lets an association
die: whatever goes wrong is logged without identifiers and answered with a DIMSE status —
``0xC210`` (cannot understand) for corrupt or truncated data, ``0xA700`` (out of resources)
when the instance cannot be kept now.

Who may connect: ``settings.allowed_peers`` lists calling AE titles and addresses
(``"AE"``, ``"AE@host"``, ``"@host"``); anyone else's association is rejected ("calling AE
title not recognised"). An empty list lets anyone in, with a warning at start. At most
``settings.max_associations`` associations run at once; more are rejected as "local limit
exceeded" (transient), and the server keeps serving.

Speed. pynetdicom 3.0's acceptor polls: its association thread sleeps 1 ms between looks at
the DIMSE queue, and its DUL thread 1 ms between idle looks at the socket and at the queue of
PDUs to send, so each C-STORE waits on both — about 350 stores/s with one sender, whatever
the handler does. And each request crosses threads twice (the DUL thread decodes it, the
association thread serves it, the DUL thread sends the answer): on a busy machine every
crossing waits for the other thread to be scheduled and to get the GIL. The server gives
each association it accepts a DUL that waits in ``select`` on its socket and on a wake-up
socket written whenever a PDU is queued for sending (the same checks, in the same order, as
pynetdicom's loop), and that serves each request as soon as it is decoded, on its own thread;
the association thread only watches for a release, an abort or silence. C-STORE requests are
read and answered by :mod:`node.dicom.cstore` rather than by pynetdicom's DIMSE layer (a
millisecond of Python per instance less); everything else goes through pynetdicom. Applied
when the association opens, on plain TCP and on the pynetdicom versions they were written
for only; otherwise pynetdicom runs as it is. (pynetdicom negotiates no asynchronous
operations: a peer has one request outstanding at a time, so serving it on the DUL thread
keeps the order. A request may come before the association thread has marked the
association established; the DUL thread waits for that, as pynetdicom would drop it.)
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import queue
import select
import socket
import ssl
import threading
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pynetdicom
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import (
    AE,
    AllStoragePresentationContexts,
    _config,
    evt,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import InvalidEventError
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from common.errors import ConfigurationError
from node.dicom import scu
from node.dicom.cstore import FastStore, StoreRequest
from node.dicom.meta import encode_file_meta
from node.ingest.exceptions import IngestStopped, InstanceUnreadable, SpoolUnavailable
from node.ingest.service import Ingest
from node.settings import NodeSettings

logger = logging.getLogger(__name__)

# How long stop() waits, in all, for the aborted associations' threads to end.
ASSOCIATION_STOP_SECONDS = 1.0

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC210
OUT_OF_RESOURCES = 0xA700

TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
MAX_PDU = 1_048_576  # what a peer may send per PDU: fewer, larger PDUs cost less to parse
NETWORK_TIMEOUT = 60.0  # seconds an association may stay silent before it is released
_REACTOR_POLL = 0.002  # the association loop's wait on its DIMSE queue, seconds
_WATCH_POLL = 0.05  # how often the association thread looks when nothing woke it, seconds
_DUL_WAIT, _DUL_IDLE_DELAY = 0.005, 0.001  # seconds
_TUNED_VERSIONS = ("3.0.",)

# A-ASSOCIATE-RJ: rejected permanent, by the service user, calling AE title not recognised.
_REJECT_CALLING_AE = (0x01, 0x01, 0x03)


@dataclass(frozen=True, slots=True)
class Peer:
    """One allow-list entry: an AE title, a host, or both."""

    ae_title: str | None
    addresses: frozenset[str] | None  # resolved at start; None: any address

    @classmethod
    def parse(cls, text: str) -> Peer:
        ae_title, _, host = text.strip().partition("@")
        if not ae_title and not host:
            raise ConfigurationError(
                f"allowed_peers entry {text!r}: expected 'AE', 'AE@host' or '@host'"
            )
        return cls(ae_title=ae_title.strip() or None, addresses=_resolve(host) if host else None)

    def admits(self, ae_title: str, address: str) -> bool:
        if self.ae_title is not None and ae_title != self.ae_title:
            return False
        return self.addresses is None or _normal(address) in self.addresses


def _resolve(host: str) -> frozenset[str]:
    host = host.strip().strip("[]")
    try:
        return frozenset({str(ipaddress.ip_address(host))})
    except ValueError:
        pass
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        logger.warning("allowed peer host %s does not resolve; it admits nobody", host)
        return frozenset()
    return frozenset(_normal(a) for a in found)


def _normal(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


class StorageServer:
    """pynetdicom storage SCP feeding the stage-1 ingest."""

    def __init__(self, settings: NodeSettings, ingest: Ingest) -> None:
        self.settings = settings
        self.ingest = ingest
        self.peers: list[Peer] = [Peer.parse(p) for p in settings.allowed_peers]
        self._server: ThreadedAssociationServer | None = None
        self._tuned = pynetdicom.__version__.startswith(_TUNED_VERSIONS)

    def build_ae(self) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, TRANSFER_SYNTAXES[:4])
        ae.maximum_associations = self.settings.max_associations
        ae.maximum_pdu_size = MAX_PDU
        ae.network_timeout = NETWORK_TIMEOUT
        return ae

    def start(self) -> None:
        """Listen on ``settings.dicom_host:dicom_port``; returns at once."""
        if self._server is not None:
            return
        # pynetdicom's own handlers would log each DIMSE message, UIDs included: identifiers
        # must not reach the node's logs, and the logging costs a third of a store's time.
        _config.LOG_HANDLER_LEVEL = "none"
        if not self.peers:
            logger.warning(
                "DICOM server: no allowed_peers configured, any AE title from any address may "
                "send; list the PACS and modalities in allowed_peers"
            )
        ae = self.build_ae()
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self.handle_open),
            (evt.EVT_ESTABLISHED, self.handle_established),
            (evt.EVT_REQUESTED, self.handle_requested),
            (evt.EVT_C_STORE, self.handle_store),
        ]
        self._server = ae.start_server(
            (self.settings.dicom_host, self.settings.dicom_port),
            block=False,
            evt_handlers=handlers,
        )
        logger.info(
            "DICOM server %s listening on %s:%d (at most %d associations)",
            self.settings.ae_title,
            self.settings.dicom_host,
            self.port,
            self.settings.max_associations,
        )

    @property
    def port(self) -> int:
        """The port listened on (the configured one; the real one when that was 0)."""
        if self._server is None:
            return self.settings.dicom_port
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop listening and end the associations in progress.

        An instance whose C-STORE was cut off before its acknowledgement is sent again by
        its sender; one already in the spool is stored once (duplicates are found).
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # no new associations from here on
        server.server_close()
        running = list(server.active_associations)
        for association in running:
            _end(association)
        # A short, shared wait: a connection that never sent its request may not notice the
        # abort at once, and its thread is a daemon that ends with the process anyway.
        deadline = time.monotonic() + ASSOCIATION_STOP_SECONDS
        for association in running:
            association.join(timeout=max(0.0, deadline - time.monotonic()))
        logger.info("DICOM server stopped (%d association(s) ended)", len(running))

    # -- handlers ----------------------------------------------------------------------------

    def handle_open(self, event: evt.Event) -> None:
        if self._tuned:
            _tune(event.assoc, self)

    def handle_established(self, event: evt.Event) -> None:
        established = getattr(event.assoc.dul, "_established", None)
        if established is not None:
            established.set()

    def handle_requested(self, event: evt.Event) -> None:
        """Reject an association whose calling AE title and address are not allowed."""
        assoc = event.assoc
        ae_title = _calling_ae(event)
        address = str(assoc.requestor.address)
        if allowed(self.peers, ae_title, address):
            return
        logger.warning(
            "DICOM server: association from %s at %s rejected: not in allowed_peers",
            ae_title,
            address,
        )
        assoc.acse.send_reject(*_REJECT_CALLING_AE)
        assoc.kill()  # waits for the rejection to go out, as pynetdicom's own rejections do

    def handle_store(self, event: evt.Event) -> int:
        """A C-STORE that pynetdicom decoded (a tuned association reads its own: see
        :mod:`node.dicom.cstore` and :meth:`store`)."""
        request = event.request
        return self.store(
            lambda: encoded_file(event),
            calling_ae=_calling_ae(event),
            move_originator=(
                getattr(request, "MoveOriginatorApplicationEntityTitle", None),
                getattr(request, "MoveOriginatorMessageID", None),
            ),
        )

    def store(
        self,
        encoded: Callable[[], bytes],
        *,
        calling_ae: str,
        move_originator: tuple[str | None, int | None],
    ) -> int:
        """Hand an arrival to the ingest; the DIMSE status to answer with."""
        ae_title = calling_ae
        try:
            job_id = scu.MOVES.job_for(*move_originator)
            source = f"c-store {ae_title}" if job_id is None else f"c-move job {job_id}"
            self.ingest.accept(encoded(), source=source[:64], job_id=job_id)
        except InstanceUnreadable as exc:
            logger.warning("C-STORE from %s refused: %s", ae_title, exc.reason)
            return CANNOT_UNDERSTAND
        except (SpoolUnavailable, IngestStopped) as exc:
            logger.warning("C-STORE from %s not kept: %s", ae_title, exc)
            return OUT_OF_RESOURCES
        except Exception as exc:
            # The type only: an exception's message may quote a value of the data set.
            logger.error("C-STORE from %s failed (%s)", ae_title, type(exc).__name__)
            return CANNOT_UNDERSTAND
        return SUCCESS


def encoded_file(event: evt.Event) -> bytes:
    """The arrived instance as a DICOM file: what ``event.encoded_dataset()`` gives, with
    the file meta encoded here (pydicom takes ~0.4 ms to build and encode it per instance)."""
    request = cast(C_STORE, event.request)
    syntax = str(event.context.transfer_syntax)
    meta = encode_file_meta(
        str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID), syntax
    )
    return b"".join((b"\x00" * 128, b"DICM", meta, event.encoded_dataset(include_meta=False)))


def _end(association: Any) -> None:
    """Abort an established association; drop the connection of one still negotiating.

    PS3.8 defines no A-ABORT before the peer's A-ASSOCIATE-RQ arrived (Sta2), so such a
    connection is closed instead (Evt17, valid in every state with a connection).
    """
    if association.is_established:
        # Not pynetdicom's blocking abort: it would wait for a handler in progress (one
        # waiting for room in the ingest, say) to return.
        getattr(association, "_abort_nonblocking", association.abort)()
        return
    transport = association.dul.socket
    if transport is not None:
        with contextlib.suppress(OSError):
            transport.close()


def _calling_ae(event: evt.Event) -> str:
    return _requestor_ae(event.assoc)


def _requestor_ae(assoc: Any) -> str:
    primitive = assoc.requestor.primitive
    if primitive is not None:
        return str(primitive.calling_ae_title).strip()
    return str(assoc.requestor.ae_title).strip()


# -- a responsive acceptor (see the module's docstring) -------------------------------------


class _WakingQueue(queue.Queue[Any]):
    """The DUL's queue of primitives to send, waking the DUL when one is put (by another
    thread: the DUL looks at the queue before it waits again anyway)."""

    def __init__(self, wake: socket.socket, owner: threading.Thread) -> None:
        super().__init__()
        self.wake = wake
        self.owner = owner

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        if threading.current_thread() is self.owner:
            return
        with contextlib.suppress(OSError):  # full (it is awake anyway) or closed
            self.wake.send(b"\0")


class _ResponsiveDUL(DULServiceProvider):
    """pynetdicom 3.0's DUL loop, waiting in ``select`` on the socket and on a wake-up
    socket instead of sleeping between polls."""

    _wake_r: socket.socket
    _wake_w: socket.socket
    _serve_inline: bool  # serve DIMSE requests on this thread
    _user_event: threading.Event  # something for the association thread to look at
    _established: threading.Event  # the association thread has finished negotiating
    _fast: FastStore | None  # reads this association's C-STOREs (node.dicom.cstore)
    _server: StorageServer

    def run_reactor(self) -> None:
        try:
            self._run_reactor()
        finally:
            self._wake_r.close()
            self._wake_w.close()
            self._user_event.set()

    def _serve_requests(self) -> None:
        """Serve the requests the last event completed (pynetdicom's association loop does
        this on its own thread)."""
        messages = self.assoc.dimse.msg_queue
        fast = self._fast
        if messages.empty() and (fast is None or not fast.ready):
            return
        # The peer may send its first request as soon as it has the A-ASSOCIATE-AC, before
        # the association thread has marked the association established (pynetdicom's
        # service classes drop a request on an association that is not).
        if not self._established.wait(timeout=NETWORK_TIMEOUT):
            logger.error("DICOM server: a request came before the association was established")
            self.assoc.abort()
            return
        while fast is not None and fast.ready:
            self._store(fast, fast.ready.popleft())
        while True:
            try:
                context_id, message = messages.get_nowait()
            except queue.Empty:
                return
            if message is None or context_id is None:
                continue  # what an abort leaves; the association thread acts on the abort
            try:
                self.assoc._serve_request(message, context_id)
            except Exception as exc:  # pynetdicom answers what it can; this is the rest
                logger.error("DICOM server: a request failed (%s); aborted", type(exc).__name__)
                self.assoc.abort()

    def _wait(self) -> None:
        watched: list[Any] = [self._wake_r]
        transport = self.socket
        if transport is not None and transport.socket is not None and transport._is_connected:
            watched.append(transport.socket)
        try:
            ready, _, _ = select.select(watched, [], [], _DUL_WAIT)
        except (OSError, ValueError):  # the socket closed meanwhile: the loop will notice
            time.sleep(_DUL_IDLE_DELAY)
            return
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass

    def _run_reactor(self) -> None:
        """``DULServiceProvider.run_reactor`` of pynetdicom 3.0.4, but for the wait."""
        self._idle_timer.start()
        sleep = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True
            if sleep:
                self._wait()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                self._connection_failed()
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue
            try:
                self.state_machine.do_action(event)
            except InvalidEventError:  # e.g. a local abort racing the peer's close
                self._out_of_order()
                return
            if self._serve_inline:
                self._serve_requests()
            if not self.to_user_queue.empty():  # a release or an abort to act upon
                self._user_event.set()
            sleep = False

    def _store(self, fast: FastStore, request: StoreRequest) -> None:
        status = self._server.store(
            request.encoded_file,
            calling_ae=_requestor_ae(self.assoc),
            move_originator=(request.move_originator_ae, request.move_originator_id),
        )
        try:
            fast.answer(request, status)
        except Exception as exc:  # the association's end, never the DUL thread's
            logger.error("DICOM server: a C-STORE could not be answered (%s)", type(exc).__name__)
            self.assoc.abort()

    def _connection_failed(self) -> None:
        logger.error("DICOM server: the connection failed; the association is aborted")
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        if self.socket is not None:
            with contextlib.suppress(Exception):
                self.socket.send(abort_pdu.encode())
        self._end_association()

    def _out_of_order(self) -> None:
        logger.warning("DICOM server: an association event out of order; it is closed")
        self._end_association()
        if self.socket is not None:
            with contextlib.suppress(Exception):
                self.socket.close()

    def _end_association(self) -> None:
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


def _tune(assoc: Any, server: StorageServer) -> None:
    dul = assoc.dul
    transport = getattr(dul, "socket", None)
    plain = transport is not None and not isinstance(
        getattr(transport, "socket", None), ssl.SSLSocket
    )
    responsive = False
    if type(dul) is DULServiceProvider and plain and dul.to_provider_queue.empty():
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        dul.__class__ = _ResponsiveDUL
        assert isinstance(dul, _ResponsiveDUL)
        dul._wake_r, dul._wake_w = wake_r, wake_w
        dul._serve_inline = False
        dul._user_event = threading.Event()
        dul._established = threading.Event()
        dul._fast = None
        dul._server = server
        dul.to_provider_queue = _WakingQueue(wake_w, dul)
        setattr(dul, "_target", dul.run_reactor)  # noqa: B010 - the thread was given the base loop
        transport.recv = types.MethodType(_recv, transport)  # type: ignore[union-attr]
        responsive = True
    if not (hasattr(assoc, "_run_reactor") and hasattr(assoc.dimse, "msg_queue")):
        return
    if responsive and _plain(assoc) and hasattr(assoc, "_serve_request"):
        dul._serve_inline = True
        if hasattr(assoc.dimse, "receive_primitive") and hasattr(assoc, "_accepted_cx"):
            dul._fast = FastStore(assoc)
            assoc.dimse.receive_primitive = dul._fast.receive
        assoc.__class__ = _InlineAssociation
        assoc._run_reactor = types.MethodType(_watch, assoc)
    else:
        assoc._run_reactor = types.MethodType(_run_reactor, assoc)


def _recv(self: Any, nr_bytes: int) -> bytearray:
    """``AssociationSocket.recv`` of pynetdicom 3.0 (``nr_bytes``, or what came before the
    connection broke), read into one buffer rather than 4 KiB at a time and appended: a
    512x512 slice took ~130 reads and as many copies."""
    buffer = bytearray(nr_bytes)
    read = 0
    with memoryview(buffer) as view:
        while read < nr_bytes:
            count = self.socket.recv_into(view[read:])
            if not count:
                break
            read += count
    del buffer[read:]
    return buffer


def _plain(assoc: Any) -> bool:
    return type(assoc) is Association


class _InlineAssociation(Association):
    """An association whose requests its DUL thread serves. pynetdicom makes ``abort``
    blocking or not around its handlers, for a handler that runs on the association thread;
    here the thread decides: on the DUL thread a blocking abort would wait for that very
    thread to end."""

    @property
    def abort(self) -> Callable[..., None]:
        if threading.current_thread() is self.dul:
            return self._abort_nonblocking
        return self._abort_blocking

    @abort.setter
    def abort(self, _value: Callable[..., None]) -> None:
        return  # see the class docstring


def _watch(self: Any) -> None:
    """The association loop when its DUL serves the requests: act on a release, an abort, a
    dead DUL or silence (the checks of pynetdicom 3.0's loop, in its order)."""
    self._is_paused = False
    wake: threading.Event = self.dul._user_event
    while not self._kill:
        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False
        wake.wait(timeout=_WATCH_POLL)
        wake.clear()
        if _ended(self):
            return


def _ended(self: Any) -> bool:
    """Release, abort or silence: end the association (pynetdicom 3.0's checks)."""
    if self.is_established and self.acse.is_release_requested():
        self.acse.send_release(is_response=True)
        self.is_released = True
        self.is_established = False
        evt.trigger(self, evt.EVT_RELEASED, {})
        self.kill()
        return True

    if self.acse.is_aborted():
        self.dul.receive_pdu(wait=False)
        self.is_aborted = True
        self.is_established = False
        evt.trigger(self, evt.EVT_ABORTED, {})
        self.kill()
        return True

    if not self.dul.is_alive():
        self.kill()
        return True

    if self.dul.idle_timer_expired():
        logger.warning("DICOM server: an association was silent too long and is released")
        if self.network_timeout_response == "A-RELEASE":
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self.release()
            self._is_paused = False
        else:
            self.abort()
        self.kill()
        return True
    return False


def _run_reactor(self: Any) -> None:
    """pynetdicom 3.0's acceptor loop, waiting on the DIMSE queue instead of sleeping."""
    self._is_paused = False
    while not self._kill:
        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False

        try:
            context_id, msg = self.dimse.msg_queue.get(timeout=_REACTOR_POLL)
        except queue.Empty:
            context_id, msg = None, None
        if msg:
            self._serve_request(msg, context_id)
        if _ended(self):
            return


def allowed(peers: Sequence[Peer], ae_title: str, address: str) -> bool:
    """Whether an association from ``ae_title`` at ``address`` is let in."""
    return not peers or any(peer.admits(ae_title, address) for peer in peers)
