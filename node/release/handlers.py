"""The node's side of the release task kinds: a request is recorded for hospital IT to
decide (the answer says so; the decision follows over the channel), and a curator's
rejection is recorded with its reason."""

from __future__ import annotations

from typing import Any

from common.schemas.channel import TaskRead
from common.schemas.release import RejectionReceived, ReleaseReceived, ReleaseState
from node.federation.handlers import HandlerContext
from node.release import service as releases
from node.store.db import transaction


def handle_release_request(task: TaskRead, context: HandlerContext) -> dict[str, Any]:
    with transaction(context.sessions) as session:
        request = releases.record_request(session=session, task=task)
        state = ReleaseState(request.state)
    return ReleaseReceived(state=state).model_dump(mode="json")


def handle_release_rejected(task: TaskRead, context: HandlerContext) -> dict[str, Any]:
    with transaction(context.sessions) as session:
        releases.record_rejection(session=session, task=task)
    return RejectionReceived(recorded=True).model_dump(mode="json")
