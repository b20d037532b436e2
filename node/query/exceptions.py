"""Errors of the query engine. Reasons are PHI-free: they name rules and counts of queries."""

from __future__ import annotations

from common.errors import HavenetError


class QueryError(HavenetError):
    """Root of the query engine's errors."""


class QueryRefused(QueryError):
    """The node's disclosure policy does not allow this query; ``reason`` says which rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
