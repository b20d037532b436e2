"""What the hub's routes need: the running hub, a unit of work per request, the signed node
and the authenticated user (FastAPI dependencies)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from common.signing import SignedHeaders
from hub.db import transaction, utcnow
from hub.federation.signal import TaskSignal
from hub.nodes import service as nodes
from hub.nodes.models import Node
from hub.settings import HubSettings
from hub.users import service as users
from hub.users.models import Role, User

NONCE_PRUNE_SECONDS = 60.0


@dataclass
class Runtime:
    """The running hub; built by ``hub.main`` at start-up."""

    settings: HubSettings
    engine: Engine
    sessions: sessionmaker[Session]
    secret: bytes = field(repr=False)
    signal: TaskSignal = field(default_factory=TaskSignal)
    _pruned_at: dt.datetime | None = None
    _prune_lock: threading.Lock = field(default_factory=threading.Lock)

    def nonces_due_for_pruning(self, now: dt.datetime) -> bool:
        with self._prune_lock:
            if self._pruned_at and (now - self._pruned_at).total_seconds() < NONCE_PRUNE_SECONDS:
                return False
            self._pruned_at = now
            return True


def runtime(request: Request) -> Runtime:
    hub: Runtime = request.app.state.hub
    return hub


def db_session(request: Request) -> Iterator[Session]:
    """One unit of work per request: committed when the route returns, else rolled back."""
    with transaction(runtime(request).sessions) as session:
        yield session


RuntimeDep = Annotated[Runtime, Depends(runtime)]
SessionDep = Annotated[Session, Depends(db_session, scope="function")]


# -- nodes: signed requests -------------------------------------------------------------------


def request_target(request: Request) -> str:
    """The path and query exactly as the node sent (and signed) them."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    target = raw.decode("latin-1")
    return f"{target}?{query.decode('latin-1')}" if query else target


async def signed_node(request: Request) -> Node:
    """The node whose signature this request carries; 401/403 naming the failed check.

    The nonce is spent in its own transaction, so a replay is refused even when the route
    itself fails afterwards.
    """
    hub = runtime(request)
    body = await request.body()
    check = partial(
        _authenticate,
        hub,
        SignedHeaders.from_headers(request.headers),
        request.method,
        request_target(request),
        body,
    )
    return await anyio.to_thread.run_sync(check)


def _authenticate(
    hub: Runtime, headers: SignedHeaders | None, method: str, target: str, body: bytes
) -> Node:
    now = utcnow()
    with transaction(hub.sessions) as session:
        if hub.nonces_due_for_pruning(now):
            nodes.prune_nonces(session=session, now=now)
        return nodes.authenticate(
            session=session,
            headers=headers,
            method=method,
            target=target,
            body=body,
            skew_seconds=hub.settings.clock_skew_seconds,
            now=now,
        )


SignedNode = Annotated[Node, Depends(signed_node)]


# -- users: bearer tokens and roles -----------------------------------------------------------

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="hub user token",
    description="A token from `havenet hub user add`.",
)


def current_user(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> User:
    token = credentials.credentials if credentials is not None else ""
    return users.authenticate(session=session, secret=runtime(request).secret, token=token)


CurrentUser = Annotated[User, Depends(current_user)]


def admin(user: CurrentUser) -> User:
    users.require_role(user, Role.ADMIN)
    return user


AdminUser = Annotated[User, Depends(admin)]
