"""Errors of the clinical import (see ``common.errors`` for the whole hierarchy).

    PermanentError                 (common.errors)
    └── ClinicalError              root of the clinical import's errors
        ├── InvalidClinicalInput   a file, entry, line or field is wrong: names where, never
        │                          the value
        └── UnknownPatient         a record refers to a patient not imported (yet)

Both mean the file was not imported at all (one transaction per file); fix it and import
it again.
"""

from __future__ import annotations

from common.errors import PermanentError


class ClinicalError(PermanentError):
    """Root of the clinical import's errors."""


class InvalidClinicalInput(ClinicalError):
    """``where`` names the file and the entry or line; ``field`` the element or column."""

    def __init__(self, where: str, problem: str, field: str = "") -> None:
        at = f"{where}: {field}" if field else where
        super().__init__(f"{at}: {problem}; nothing from this file was imported")
        self.where = where
        self.field = field
        self.problem = problem


class UnknownPatient(InvalidClinicalInput):
    """A record's patient is neither in the same file nor imported before."""

    def __init__(self, where: str, field: str) -> None:
        super().__init__(
            where,
            "refers to a patient that is not in this file and was not imported before "
            "(import the patients first)",
            field,
        )
