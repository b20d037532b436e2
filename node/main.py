"""The node process: HTTP API, DICOM server and scheduler in one process.

:func:`create_app` builds the FastAPI application from settings made by the entry point;
its lifespan migrates the database, then starts the stage-1 ingest, the DICOM storage
server and the scheduler (selection jobs), and stops them again in the reverse order.
:func:`serve` runs it under uvicorn until SIGTERM or SIGINT, and returns after a clean stop.

Domain errors become HTTP responses here, once: services never raise ``HTTPException``, and
no response or log line carries an exception's unexpected text.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import socket
import threading
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from types import FrameType

import anyio.to_thread
import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import __version__
from common import web as web_assets
from common.errors import ConfigurationError, HavenetError, PermanentError, RetryableError
from node import api
from node.catalogue import scheduled as catalogue_scheduled
from node.clinical import api as clinical_api
from node.dicom.scp import StorageServer
from node.exceptions import Conflict, NodeError, NotAuthenticated, NotFound, PreviewUnavailable
from node.federation import agent as federation_agent
from node.ingest.service import Ingest
from node.jobs import scheduled
from node.jobs.exceptions import InvalidSelection, JobFinished, JobNotFound
from node.query import api as query_api
from node.query import scheduled as query_scheduled
from node.release import api as release_api
from node.release import upload as release_upload
from node.release import workflow as release_workflow
from node.settings import NodeSettings
from node.store.db import make_engine, make_sessionmaker, migrate
from node.web import pages as web_pages
from ontology import loader

logger = logging.getLogger(__name__)

GRACEFUL_SECONDS = 5  # at stop, how long open HTTP requests may take


class StartFailed(NodeError):
    """The node could not start (the log above says why)."""


# -- the application --------------------------------------------------------------------------


def create_app(settings: NodeSettings) -> FastAPI:
    """The node's API; its lifespan runs the ingest, DICOM server and scheduler."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        node = await anyio.to_thread.run_sync(start, settings)
        app.state.node = node
        agent = None
        uploader = None
        try:
            # The hub channel, when the node is enrolled: outbound long polls only.
            agent = await federation_agent.start(settings, node.sessions)
            # Data release: the outbox of decisions and studies, sent to the hub.
            uploader = await anyio.to_thread.run_sync(release_upload.start, settings, node.sessions)
            yield
        finally:
            if uploader is not None:
                await anyio.to_thread.run_sync(uploader.stop)
            if agent is not None:
                await agent.stop()
            await anyio.to_thread.run_sync(stop, node)

    app = FastAPI(
        title="havenet node",
        version=__version__,
        summary="A hospital's havenet node: pseudonymized store, PACS jobs and QA previews.",
        description=(
            "For hospital IT. Every route but `/health` needs `Authorization: Bearer TOKEN` "
            "with the node's `api_token`. Everything shown is pseudonymized; the "
            "correspondence table (hospital identifiers) is never reachable from this API."
        ),
        lifespan=lifespan,
    )
    app.include_router(api.public)
    app.include_router(api.router)
    app.include_router(web_pages.router)
    app.mount("/ui/assets", StaticFiles(directory=web_assets.STATIC), name="assets")
    app.include_router(
        release_api.router,
        dependencies=[Depends(api.require_token)],
        responses={401: {"description": "No bearer token, or not the node's token."}},
    )
    app.include_router(
        clinical_api.router,
        dependencies=[Depends(api.require_token)],
        responses={401: {"description": "No bearer token, or not the node's token."}},
    )
    app.include_router(
        query_api.router,
        dependencies=[Depends(api.require_token)],
        responses={401: {"description": "No bearer token, or not the node's token."}},
    )
    _map_errors(app)
    app.add_middleware(_UnexpectedErrors)
    return app


def _resume_interrupted_releases(settings: NodeSettings, sessions: sessionmaker[Session]) -> None:
    """Stage 2 again, in the background, for requests approved before this start whose
    stage 2 did not finish (listed now, so an approval after the start is not among them).
    A daemon thread, like the ontology's: a stop cuts it off, and the next start resumes."""
    cut_off = release_workflow.interrupted(sessions)
    if cut_off:
        threading.Thread(
            target=release_workflow.resume,
            args=(sessions, settings, cut_off),
            name="release-resume",
            daemon=True,
        ).start()


def _load_ontology(engine: Engine) -> None:
    try:
        loader.ensure_loaded(engine)
    except Exception as exc:  # the node serves on; a query concept matches its own code only
        logger.error("the ontology could not be loaded (%s)", type(exc).__name__)


def start(settings: NodeSettings) -> api.Runtime:
    """Migrate, then start ingest, DICOM server and scheduler; undo what started on failure."""
    settings.validate_secrets()
    keyring = settings.keyring()
    token = settings.check_api_token().encode()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.database)
    engine = make_engine(settings.database)
    with ExitStack() as undo:
        undo.callback(engine.dispose)
        sessions = make_sessionmaker(engine)
        ingest = Ingest(settings, sessions)
        ingest.start()
        undo.callback(ingest.stop)
        scp = StorageServer(settings, ingest)
        scp.start()
        undo.callback(scp.stop)
        scheduler = BackgroundScheduler(
            timezone=dt.UTC, job_defaults={"coalesce": True, "max_instances": 1}
        )
        scheduled.register(scheduler, settings, sessions, ingest)
        catalogue_scheduled.register(scheduler, settings, sessions)
        query_scheduled.register(scheduler, sessions)
        scheduler.start()
        if settings.ontology_at_start:
            # A daemon thread, not a scheduler job: stopping the node never waits for it (an
            # interrupted load rolls back and runs again at the next start).
            threading.Thread(
                target=_load_ontology, args=(engine,), name="ontology", daemon=True
            ).start()
        undo.callback(scheduler.shutdown, wait=False)
        _resume_interrupted_releases(settings, sessions)
        undo.pop_all()
    logger.info(
        "node started: DICOM %s on %s:%d, API on %s:%d",
        settings.ae_title,
        settings.dicom_host,
        settings.dicom_port,
        settings.api_host,
        settings.api_port,
    )
    return api.Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        ingest=ingest,
        scp=scp,
        scheduler=scheduler,
        keyring=keyring,
        api_token=token,
    )


def stop(node: api.Runtime) -> None:
    """Stop taking images, let a running job notice and give up its step, stop the ingest
    (it finishes what its workers hold; the rest waits in the spool), close the database.

    Each step runs even if one before it fails, so the process always gets to exit.
    """
    _step("DICOM server", node.scp.stop)
    _step("scheduler", lambda: node.scheduler.shutdown(wait=True))
    _step("ingest", node.ingest.stop)
    _step("database", node.engine.dispose)
    logger.info("node stopped")


def _step(name: str, action: Callable[[], object]) -> None:
    try:
        action()
    except Exception as exc:
        logger.error("stopping the %s failed: %s", name, type(exc).__name__)


# -- errors -> HTTP -----------------------------------------------------------------------------

# Most specific first; an exception takes the status of the first class it is an instance of.
_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotAuthenticated, 401),
    (NotFound, 404),
    (JobNotFound, 404),
    (Conflict, 409),
    (JobFinished, 409),
    (PreviewUnavailable, 422),
    (InvalidSelection, 422),
    (PermanentError, 422),
    (RetryableError, 503),
    (HavenetError, 500),
)


def _map_errors(app: FastAPI) -> None:
    for cls, _ in _STATUS:
        app.add_exception_handler(cls, _domain_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    code = next(code for cls, code in _STATUS if isinstance(exc, cls))
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    if code == 500:
        # Messages are PHI-free by contract, but a server fault is the log's business.
        logger.error(
            "%s %s failed: %s: %s", request.method, _route(request), type(exc).__name__, exc
        )
        return JSONResponse({"detail": "internal error; the node's log says why"}, 500)
    return JSONResponse({"detail": str(exc)}, code, headers=headers)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, without echoing the values sent (they may be identifiers)."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": errors}, 422)


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "?"))


class _UnexpectedErrors:
    """Answer 500 to an exception nothing else handled; log its type and place, not its text.

    An unexpected exception's message may hold anything (a value from a file, say), so it
    never reaches the client or the log.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:
            frames = traceback.extract_tb(exc.__traceback__)
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            route = getattr(scope.get("route"), "path", "?")
            logger.error(
                "unexpected %s at %s answering %s %s",
                type(exc).__name__,
                where,
                scope.get("method"),
                route,
            )
            if started:
                return  # the response is under way: all that can be done is to end it
            response = JSONResponse({"detail": "internal error; the node's log says where"}, 500)
            await response(scope, receive, send)


# -- the process ------------------------------------------------------------------------------


def serve(settings: NodeSettings) -> None:
    """Run the node until SIGTERM or SIGINT; return after the lifespan has stopped it all."""
    settings.validate_secrets()
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"data_dir (--data-dir): cannot use {settings.data_dir} as the node's data folder "
            f"({exc.strerror})"
        ) from None
    _check_free(settings.api_host, settings.api_port, "api_port (--api-port)")
    _check_free(settings.dicom_host, settings.dicom_port, "dicom_port (--dicom-port)")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        lifespan="on",
        log_config=None,  # the entry point configured logging
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        server_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM/SIGINT while it runs, then raises the signal again against the
    # handlers it found: with these in place that is a no-op, and a clean stop exits 0.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _stopped_by) for sig in _SIGNALS} if main_thread else {}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise StartFailed("the node did not start; the log above says why")


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _stopped_by(signum: int, _frame: FrameType | None) -> None:
    logger.info("stopped by %s", signal.Signals(signum).name)


def _check_free(host: str, port: int, setting: str) -> None:
    """Say plainly that a port is taken, before anything starts."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigurationError(
                f"{setting}: cannot listen on {host}:{port} ({exc.strerror}); "
                "stop what uses it or choose another port"
            ) from None
