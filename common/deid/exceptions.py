"""De-identification errors (see ``common.errors`` for the whole hierarchy)."""

from __future__ import annotations

from common.errors import HavenetError


class DeidError(HavenetError):
    """Root of de-identification errors."""


class ProfileError(DeidError):
    """A profile file is invalid; the message names the file and the line."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line


class LookupTableError(DeidError):
    """A subject-key lookup table is invalid; the message names the file and the line."""


class SourceUnavailable(DeidError):
    """The input could not be read now (I/O error, permissions, file vanished): not a verdict
    on the instance, so a receiver keeps it and tries again."""


class InstanceRejected(DeidError):
    """This instance cannot be de-identified safely. ``reason`` is PHI-free."""

    code = "rejected"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotDicom(InstanceRejected):
    code = "not-dicom"


class BurnedInRisk(InstanceRejected):
    code = "burned-in-risk"


class PixelCleaningFailed(InstanceRejected):
    code = "pixel-cleaning-failed"


class SubjectNotInLookup(InstanceRejected):
    code = "subject-not-in-lookup"


class LeakDetected(InstanceRejected):
    code = "leak-detected"
