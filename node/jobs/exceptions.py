"""Errors of selection jobs (``node.jobs``); none carries a hospital identifier.

HavenetError
└── JobError                 node.jobs
    ├── JobNotFound          no job with that id
    ├── JobFinished          the job already ended; it cannot be cancelled
    ├── InvalidSelection     a user's selection (flags, CSV file) is wrong; says where
    └── SpecUnreadable       the encrypted part of a job's spec does not decrypt
"""

from __future__ import annotations

from common.errors import HavenetError


class JobError(HavenetError):
    """Root of the errors of ``node.jobs``."""


class JobNotFound(JobError):
    """No job has the id asked for."""


class JobFinished(JobError):
    """The job has already ended (done, failed or cancelled)."""


class InvalidSelection(JobError, ValueError):
    """The selection is wrong: the message names the option, file or line to fix."""


class SpecUnreadable(JobError):
    """The identifying part of a job's spec does not decrypt with the configured keys."""
