"""Errors of the local launcher (``compose.network``) and the demo (``compose.demo``).

    HavenetError
    └── DemoError                 the demo network could not do a step
        ├── ProcessFailed         a hub, node or PACS process exited or never became ready
        ├── CommandFailed         a `havenet` command exited with an error
        ├── AssociationRefused    a DICOM server refused the images' association
        └── StepTimedOut          a step did not finish in its time

Messages name the step, the command (never a token) and the log file to read; the processes'
own messages carry no patient identifier, and neither do these.
"""

from __future__ import annotations

from pathlib import Path

from common.errors import HavenetError


class DemoError(HavenetError):
    """The demo network could not do a step."""


class ProcessFailed(DemoError):
    """A hub, node or PACS process exited, or did not become ready."""

    def __init__(self, what: str, problem: str, log: Path) -> None:
        super().__init__(f"{what} {problem}; its log: {log}")
        self.log = log


class CommandFailed(DemoError):
    """A `havenet` command exited with an error (its last error line is kept)."""

    def __init__(self, command: str, status: int, error: str) -> None:
        last = error.strip().splitlines()[-1] if error.strip() else "no message"
        super().__init__(f"`{command}` exited with status {status}: {last}")


class StepTimedOut(DemoError):
    """A step did not finish in its time."""

    def __init__(self, step: str, seconds: float, log: Path | None = None) -> None:
        where = f"; see {log}" if log is not None else ""
        super().__init__(f"{step}: not done after {seconds:.0f} s{where}")


class AssociationRefused(DemoError):
    """A DICOM server refused the association the images were to be sent on."""

    def __init__(self, called_ae: str, host: str, port: int) -> None:
        super().__init__(f"the DICOM server {called_ae} at {host}:{port} refused the association")
