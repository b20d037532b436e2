"""Error roots shared by hub and node.

    HavenetError                      every error havenet raises on purpose
    ├── ConfigurationError            settings or files a user must fix before starting
    ├── DeidError                     common.deid: de-identification
    │   ├── ProfileError              a profile file is invalid (names file and line)
    │   ├── LookupTableError          a subject-key lookup table is invalid
    │   ├── SourceUnavailable         the input cannot be read now (I/O); try again later
    │   └── InstanceRejected          one instance cannot be released; carries a PHI-free reason
    │       ├── NotDicom              the input is not a DICOM file or is truncated
    │       ├── BurnedInRisk          pixel data may hold burned-in identifiers
    │       ├── PixelCleaningFailed   a region could not be blanked in this transfer syntax
    │       ├── SubjectNotInLookup    the patient is missing from the project's lookup table
    │       └── LeakDetected          an identifier survived; the file is not written
    ├── RetryableError                a later attempt may succeed (peer down, busy)
    └── PermanentError                retrying will not help

Messages never carry an identifier (name, patient ID, birth date, accession number,
original UID): they name the file, the attribute or the line instead.
"""

from __future__ import annotations


class HavenetError(Exception):
    """Root of every error havenet raises on purpose."""


class ConfigurationError(HavenetError):
    """Settings or files that a user must fix before havenet can start."""


class RetryableError(HavenetError):
    """A later attempt may succeed (peer unreachable, busy, timed out)."""


class PermanentError(HavenetError):
    """Retrying will not help; the input or the request must change."""
