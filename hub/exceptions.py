"""Errors of the hub, mapped to HTTP once, in ``hub.main``.

    HavenetError                          (common.errors)
    └── HubError                          root of the errors the hub reports
        ├── NotAuthenticated              who is asking is unknown or unproven       → 401
        │   ├── users: TokenRejected      no bearer token, or not a user's
        │   └── nodes: NotSigned, UnknownNode, BadSignature, StaleTimestamp,
        │              ReplayedRequest, EnrollmentRefused
        ├── Forbidden                     known, but not allowed to do this          → 403
        │   └── nodes: NodeRevoked; users: RoleRequired, NotAMember
        ├── NotFound                      no node, user, project or task so named    → 404
        ├── Conflict                      clashes with the current state             → 409
        └── InvalidRequest                well-formed but not acceptable             → 422

Messages name the check that failed, the field, or the thing asked for (a node's or a
project's name, a task number) — never a token, a key or a value from a hospital.
"""

from __future__ import annotations

from common.errors import HavenetError


class HubError(HavenetError):
    """Root of the errors the hub reports."""


class NotAuthenticated(HubError):
    """The caller is unknown, or did not prove who it is."""


class Forbidden(HubError):
    """The caller is known, but may not do this."""


class NotFound(HubError):
    """Nothing of this kind goes by that name or number."""


class Conflict(HubError):
    """The request clashes with the current state (a name taken, a task answered)."""


class InvalidRequest(HubError):
    """The request is well-formed but cannot be accepted; the message names the field."""
