"""Hospital IT's decisions on held queries, posted to the hub over the signed channel.

Whoever decides (the node's API, or ``havenet node queries`` in its own process) sends at
once; what could not be sent then — the hub unreachable — the running node's agent sends
after each poll. Sends in one process are serialized, so the agent and an API request never
post the same decision side by side.
"""

from __future__ import annotations

import logging
import threading

import httpx
from sqlalchemy.orm import Session, sessionmaker

from common.errors import HavenetError
from common.schemas.channel import API_PREFIX, TaskResult
from node.federation import enrollment as enrollments
from node.federation import keys
from node.federation.client import checked, client, unreachable
from node.federation.exceptions import ResultNotTaken
from node.query import approval as approvals
from node.settings import NodeSettings
from node.store.db import transaction

logger = logging.getLogger(__name__)

_sending = threading.Lock()


def try_sending(settings: NodeSettings, sessions: sessionmaker[Session]) -> None:
    """:func:`send_due` right after a decision: a hub that cannot take it now gets it from
    the agent after its next poll, so a failure here is only logged."""
    try:
        send_due(settings, sessions)
    except HavenetError as exc:
        logger.warning("decision not sent to the hub yet: %s", exc)


def send_due(settings: NodeSettings, sessions: sessionmaker[Session]) -> dict[int, str]:
    """Post every decision the hub has not taken yet; per task, what the hub said.

    Raises ``HubUnreachable`` (the rest waits for the next try) or ``HubRefused``."""
    with _sending:
        with transaction(sessions) as session:
            due = {
                a.task_id: TaskResult.model_validate(a.result)
                for a in approvals.due(session=session)
            }
        if not due:
            return {}
        enrollment = enrollments.load(settings.data_dir)
        key = keys.KeyFile(keys.key_path(settings.data_dir))
        replies: dict[int, str] = {}
        with client(enrollment, key, timeout=settings.hub_timeout_seconds) as hub:
            for task_id, result in due.items():
                replies[task_id] = _post(hub, task_id, result)
                with transaction(sessions) as session:
                    approvals.mark_sent(
                        session=session, task_id=task_id, hub_reply=replies[task_id]
                    )
                logger.info("decision on task %d sent: %s", task_id, replies[task_id])
        return replies


def _post(hub: httpx.Client, task_id: int, result: TaskResult) -> str:
    try:
        receipt = checked(
            hub.post(
                f"{API_PREFIX}/tasks/{task_id}/result",
                content=result.model_dump_json().encode(),
                headers={"Content-Type": "application/json"},
            )
        )
    except httpx.HTTPError as exc:
        raise unreachable(exc) from None
    except ResultNotTaken as exc:  # expired at the hub, or answered already: final
        return f"not taken: {exc.detail}"
    return str(receipt.get("state", ""))
