"""Errors of the stage-1 ingest (``node.ingest``); none carries a hospital identifier.

HavenetError
└── IngestError               node.ingest
    ├── InstanceUnreadable    the arrived bytes are not a complete DICOM instance → 0xC210
    ├── SpoolUnavailable      the arrival could not be made durable (disk full …) → 0xA700
    └── IngestStopped         the ingest is not running: send again later        → 0xA700
"""

from __future__ import annotations

from common.errors import HavenetError, RetryableError


class IngestError(HavenetError):
    """Root of the errors of ``node.ingest``."""


class InstanceUnreadable(IngestError):
    """The bytes are corrupt or truncated; ``code`` and ``reason`` are PHI-free."""

    code = "unreadable"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SpoolUnavailable(IngestError, RetryableError):
    """The spool could not take the arrival (no space, no permission): nothing was kept."""


class IngestStopped(IngestError, RetryableError):
    """The ingest is stopping or not started: nothing was kept."""
