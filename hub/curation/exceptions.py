"""Why the hub refuses a curator's action or an export."""

from __future__ import annotations

from hub.exceptions import Conflict, NotFound


class StudyNotFound(NotFound):
    def __init__(self, study_id: int) -> None:
        super().__init__(f"no received study {study_id} here")


class AlreadyReviewed(Conflict):
    def __init__(self, study_id: int, state: str) -> None:
        super().__init__(f"study {study_id} is {state} already")


class ManifestConflict(Conflict):
    def __init__(self, study_uid: str) -> None:
        super().__init__(
            f"study {study_uid} was accepted with other files; it is not replaced by an upload"
        )
