"""What every node page shares: the templates, the log-in check and the page frame.

The node has one user — whoever holds its API token — so a log-in is a signed session
cookie under a key derived from that token; changing the token ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from common import __version__
from common.web import session as web_session
from node.api import Runtime

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

NODE_USER = 0  # the node has one user: whoever holds its API token


def runtime(request: Request) -> Runtime:
    node: Runtime = request.app.state.node
    return node


def session_key(node: Runtime) -> bytes:
    return hmac.new(node.api_token, b"node web session", hashlib.sha256).digest()


def logged_in(request: Request) -> bool:
    cookie = request.cookies.get(web_session.COOKIE, "")
    return web_session.verify(session_key(runtime(request)), cookie) == NODE_USER


def to_login(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/ui/login?next={quote(request.url.path)}", status_code=303)


def page(request: Request, name: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    node = runtime(request)
    response = templates.TemplateResponse(
        request,
        name,
        {"ae_title": node.settings.ae_title, "version": __version__, **context},
    )
    response.status_code = status_code
    return response


def see_other(target: str) -> RedirectResponse:
    """After a form is posted: the browser loads ``target``, so a reload posts nothing again."""
    return RedirectResponse(target, status_code=303)


def actor(request: Request) -> str:
    """Who decided, for the node's audit log: the pages' user, from this address."""
    host = request.client.host if request.client is not None else "unknown"
    return f"ui@{host}"
