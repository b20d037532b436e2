"""Why a DICOMweb request is refused, with the PS3.18 status each maps to.

    HubError
    ├── InvalidRequest
    │   └── DicomwebError           carries its PS3.18 status (``status_code``)
    │       ├── BadQuery            400: a query parameter that cannot be understood
    │       └── NotAcceptable       406: no media type or transfer syntax the hub can send
    ├── NotFound
    │   └── ResourceNotFound        404: no such study, series, instance or bulk data here
    └── MissingFromStorage          500: the index names a file that storage does not hold

Messages name the parameter or the level asked for; UIDs in a project's workspace are the
project's own (stage 2), yet they stay out of messages all the same.
"""

from __future__ import annotations

from hub.exceptions import HubError, InvalidRequest, NotFound


class DicomwebError(InvalidRequest):
    status_code = 400


class BadQuery(DicomwebError):
    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"query parameter {parameter!r}: {problem}")


class NotAcceptable(DicomwebError):
    status_code = 406


class ResourceNotFound(NotFound):
    def __init__(self, level: str) -> None:
        super().__init__(f"no such {level} in this project's workspace")


class MissingFromStorage(HubError):
    def __init__(self, count: int) -> None:
        super().__init__(f"{count} indexed file(s) are missing from central storage")
