"""An httpx client that signs every request with the node's key (``common.signing``), and
the mapping of the hub's answers to the node's errors.

The signature covers the method, the path with its query as sent, a timestamp, a fresh
nonce, the SHA-256 of the body and the node id; the hub refuses anything else.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import signing
from node.federation.enrollment import Enrollment
from node.federation.exceptions import HubRefused, HubUnreachable, ResultNotTaken
from node.federation.keys import KeyFile

logger = logging.getLogger(__name__)

USER_AGENT = "havenet-node"


class SigningAuth(httpx.Auth):
    requires_request_body = True

    def __init__(self, node_id: str, key: KeyFile | Ed25519PrivateKey) -> None:
        self.node_id = node_id
        self.key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        key = self.key.get() if isinstance(self.key, KeyFile) else self.key
        headers = signing.sign_request(
            key,
            node_id=self.node_id,
            method=request.method,
            target=request.url.raw_path.decode("ascii"),
            body=request.content,
        )
        request.headers.update(headers.as_dict())
        yield request


def async_client(
    enrollment: Enrollment, key: KeyFile | Ed25519PrivateKey, *, timeout: float
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=enrollment.hub_url,
        auth=SigningAuth(enrollment.node_id, key),
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
    )


def client(
    enrollment: Enrollment, key: KeyFile | Ed25519PrivateKey, *, timeout: float
) -> httpx.Client:
    return httpx.Client(
        base_url=enrollment.hub_url,
        auth=SigningAuth(enrollment.node_id, key),
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
    )


def unreachable(exc: httpx.HTTPError) -> HubUnreachable:
    return HubUnreachable(f"the hub cannot be reached ({type(exc).__name__})")


def checked(response: httpx.Response) -> Any:
    """The JSON body of a successful answer, or the error that says what the hub said."""
    if response.is_success:
        return response.json()
    detail = _detail(response)
    if response.status_code >= 500:
        raise HubUnreachable(f"the hub failed ({response.status_code}): {detail}")
    if response.status_code == 409:
        raise ResultNotTaken(response.status_code, detail)
    raise HubRefused(response.status_code, detail)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", "")
    except (ValueError, AttributeError):
        return response.reason_phrase
    return detail if isinstance(detail, str) else str(detail)[:300]
