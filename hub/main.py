"""The hub process: the node registry, the federation broker and the users' API.

:func:`create_app` builds the FastAPI application from settings made by the entry point; its
lifespan migrates the database and opens the engine. :func:`serve` runs it under uvicorn
until SIGTERM or SIGINT. The hub never opens a connection to a node: nodes poll it.

Domain errors become HTTP responses here, once; services never raise ``HTTPException``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import anyio.to_thread
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from common import __version__
from common import web as web_assets
from common.errors import ConfigurationError, HavenetError
from hub import deps
from hub.catalogue import api as catalogue_api
from hub.catalogue import ontology
from hub.curation import api as curation_api
from hub.db import make_engine, make_sessionmaker, migrate
from hub.dicomweb import api as dicomweb_api
from hub.exceptions import Conflict, Forbidden, InvalidRequest, NotAuthenticated, NotFound
from hub.federation import api as federation_api
from hub.nodes import api as nodes_api
from hub.query import api as query_api
from hub.release import allocator
from hub.release import api as release_api
from hub.settings import HubSettings
from hub.users import api as users_api
from hub.web import pages as web_pages

logger = logging.getLogger(__name__)

GRACEFUL_SECONDS = 5


def create_app(settings: HubSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = await anyio.to_thread.run_sync(start, settings)
        hub.signal.bind(asyncio.get_running_loop())
        app.state.hub = hub
        try:
            yield
        finally:
            hub.engine.dispose()
            logger.info("hub stopped")

    app = FastAPI(
        title="havenet hub",
        version=__version__,
        summary="Enrolled nodes, federated tasks and the researchers who send them.",
        description=(
            "Users authenticate with `Authorization: Bearer TOKEN` (`havenet hub user add`). "
            "Nodes sign every request under `/api/v1/channel` with their enrolled key; the hub "
            "never connects to a node."
        ),
        lifespan=lifespan,
    )

    @app.get("/health", tags=["hub"], summary="Is the hub up?")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    app.include_router(nodes_api.channel)
    app.include_router(federation_api.channel)
    app.include_router(catalogue_api.channel)
    app.include_router(catalogue_api.router)
    app.include_router(web_pages.router)
    app.mount("/ui/static", StaticFiles(directory=web_pages.HERE / "static"), name="static")
    app.mount("/ui/assets", StaticFiles(directory=web_assets.STATIC), name="assets")
    app.include_router(nodes_api.admin)
    app.include_router(query_api.router)
    app.include_router(federation_api.router)
    app.include_router(users_api.router)
    app.include_router(release_api.channel)
    app.include_router(release_api.router)
    app.include_router(curation_api.router)
    app.include_router(curation_api.exports)
    app.include_router(dicomweb_api.router)
    _map_errors(app)
    dicomweb_api.map_errors(app)
    return app


def start(settings: HubSettings) -> deps.Runtime:
    secret = settings.secret_bytes()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.database)
    engine = make_engine(settings.database)
    if settings.ontology_at_start:
        threading.Thread(
            target=_load_ontology, args=(engine,), name="ontology", daemon=True
        ).start()
    logger.info("hub started on %s:%d", settings.host, settings.port)
    return deps.Runtime(
        settings=settings, engine=engine, sessions=make_sessionmaker(engine), secret=secret
    )


def _load_ontology(engine: Engine) -> None:
    try:
        ontology.ensure_loaded(engine)
    except Exception as exc:  # the hub serves on; searches match codes as given
        logger.error("the ontology could not be loaded (%s)", type(exc).__name__)


# -- errors -> HTTP -----------------------------------------------------------------------------

_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotAuthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidRequest, 422),
    (HavenetError, 500),
)


def _map_errors(app: FastAPI) -> None:
    for cls, _ in _STATUS:
        app.add_exception_handler(cls, _domain_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    code = next(code for cls, code in _STATUS if isinstance(exc, cls))
    if code == 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return JSONResponse({"detail": "internal error; the hub's log says why"}, 500)
    if code in {401, 403}:
        logger.warning("%s %s refused: %s", request.method, request.url.path, exc)
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    return JSONResponse({"detail": str(exc)}, code, headers=headers)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, without echoing the values sent."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": errors}, 422)


# -- the process ------------------------------------------------------------------------------


def serve(settings: HubSettings) -> None:
    """Run the hub until SIGTERM or SIGINT."""
    settings.secret_bytes()
    _check_free(settings.host, settings.port)
    allocator.keep_big_buffers()  # release uploads: bodies of megabytes, many a second
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        server_header=False,
    )
    server = uvicorn.Server(config)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _stopped_by) for sig in _SIGNALS} if main_thread else {}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise ConfigurationError("the hub did not start; the log above says why")


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _stopped_by(signum: int, _frame: FrameType | None) -> None:
    logger.info("stopped by %s", signal.Signals(signum).name)


def _check_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigurationError(
                f"port (--port): cannot listen on {host}:{port} ({exc.strerror}); "
                "stop what uses it or choose another port"
            ) from None
