"""The outbound-only agent: long-polls the hub for tasks, runs each with the handler of its
kind, records it in the node's audit log, and posts the result.

It runs as one asyncio task in the node's event loop (started and stopped by the node's
lifespan). When the hub cannot be reached it backs off (doubling, with jitter, up to
``hub_retry_max_seconds``) and tries again; a node that was away picks up its pending,
unexpired tasks at its first poll. Tasks are handled one at a time, so a task is never
answered twice by one agent; the hub hands a pending task out again until it is answered.

A handler may defer a task (a query waiting for local approval): the hub is told so and
stops handing it out; the decision is posted later (:mod:`node.query.delivery`), and the
agent sends any decision not sent yet after each poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from functools import partial
from typing import Any

import anyio.to_thread
import httpx
from sqlalchemy.orm import Session, sessionmaker

from common import audit
from common.schemas.channel import API_PREFIX, ResultStatus, TaskList, TaskRead, TaskResult
from node.federation import enrollment as enrollments
from node.federation import keys
from node.federation.client import async_client, checked, unreachable
from node.federation.exceptions import (
    HubRefused,
    HubUnreachable,
    ResultNotTaken,
    TaskDeferred,
    TaskRefused,
)
from node.federation.handlers import HandlerContext, Registry, registry
from node.query import delivery
from node.settings import NodeSettings
from node.store.db import transaction
from node.store.models import AuditRecord

logger = logging.getLogger(__name__)

POLL_GRACE_SECONDS = 10.0  # beyond the hub's hold, before a poll counts as lost


class Agent:
    def __init__(
        self,
        settings: NodeSettings,
        sessions: sessionmaker[Session],
        client: httpx.AsyncClient,
        handlers: Registry = registry,
    ) -> None:
        self.settings = settings
        self.context = HandlerContext(settings, sessions)
        self.client = client
        self.handlers = handlers
        self._task: asyncio.Task[None] | None = None
        self._delay = settings.hub_retry_min_seconds

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="havenet-federation-agent")

    async def stop(self) -> None:
        """Stop polling at once (a held poll is abandoned; the hub keeps the task pending)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.client.aclose()
        logger.info("federation agent stopped")

    async def run(self) -> None:
        logger.info("federation agent polling %s", self.client.base_url)
        while True:
            try:
                tasks = await self.poll()
            except HubUnreachable as exc:
                logger.warning("%s; trying again in %.1f s", exc, self._delay)
                await self._back_off()
                continue
            except HubRefused as exc:
                logger.error("%s; trying again in %.0f s", exc, self.settings.hub_retry_max_seconds)
                await asyncio.sleep(self.settings.hub_retry_max_seconds)
                continue
            self._delay = self.settings.hub_retry_min_seconds
            for task in tasks:
                await self.handle(task)
            await self.send_decisions()

    async def poll(self) -> list[TaskRead]:
        wait = self.settings.hub_poll_wait_seconds
        try:
            response = await self.client.get(
                f"{API_PREFIX}/tasks",
                params={"wait": f"{wait:g}"},
                timeout=httpx.Timeout(
                    self.settings.hub_timeout_seconds, read=wait + POLL_GRACE_SECONDS
                ),
            )
        except httpx.HTTPError as exc:
            raise unreachable(exc) from None
        return TaskList.model_validate(checked(response)).tasks

    async def handle(self, task: TaskRead) -> None:
        if task.expires <= dt.datetime.now(dt.UTC):
            logger.info(
                "task %d (%s) expired before it could run; not answered", task.id, task.kind
            )
            return
        result = await anyio.to_thread.run_sync(partial(self.run_handler, task))
        await anyio.to_thread.run_sync(partial(self.record, task, result))
        await self.deliver(task, result)

    def run_handler(self, task: TaskRead) -> TaskResult:
        handler = self.handlers.get(task.kind)
        if handler is None:
            return TaskResult(
                status=ResultStatus.REFUSED,
                reason=f"this node has no handler for task kind {task.kind!r}",
            )
        try:
            payload = handler(task, self.context)
        except TaskRefused as exc:
            return TaskResult(status=ResultStatus.REFUSED, reason=exc.reason)
        except TaskDeferred as exc:
            return TaskResult(status=ResultStatus.DEFERRED, reason=exc.reason)
        except Exception as exc:
            # The type only: an exception's text may quote a value from the store.
            logger.error("task %d (%s) failed: %s", task.id, task.kind, type(exc).__name__)
            return TaskResult(
                status=ResultStatus.FAILED, reason=f"{type(exc).__name__} at the node"
            )
        return TaskResult(status=ResultStatus.ANSWERED, payload=payload)

    def record(self, task: TaskRead, result: TaskResult, action: str = "federation.answer") -> None:
        """What is about to leave the node, written before it leaves."""
        details: dict[str, Any] = {
            "task": task.id,
            "kind": task.kind,
            "status": result.status.value,
            "project": task.project,
            "requested_by": task.requested_by,
        }
        if result.reason:
            details["reason"] = result.reason
        if result.status == ResultStatus.ANSWERED:
            details["answer"] = result.payload
        with transaction(self.context.sessions) as session:
            audit.append(
                session,
                AuditRecord,
                actor=f"hub:{self.client.base_url.host}",
                action=action,
                subject=f"task {task.id}",
                details=details,
            )

    async def deliver(self, task: TaskRead, result: TaskResult) -> None:
        """Post the result; retry while the hub is unreachable, give up when it says no."""
        body = result.model_dump_json().encode()
        while True:
            try:
                response = await self.client.post(
                    f"{API_PREFIX}/tasks/{task.id}/result",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                receipt = checked(response)
            except httpx.HTTPError as exc:
                logger.warning("result of task %d: %s", task.id, unreachable(exc))
                await self._back_off()
                continue
            except HubUnreachable as exc:
                logger.warning("result of task %d: %s", task.id, exc)
                await self._back_off()
                continue
            except ResultNotTaken as exc:
                logger.info("result of task %d not taken: %s", task.id, exc.detail)
                return
            except HubRefused as exc:
                logger.error("result of task %d refused: %s", task.id, exc)
                return
            self._delay = self.settings.hub_retry_min_seconds
            logger.info("task %d (%s): %s", task.id, task.kind, receipt.get("state"))
            return

    async def send_decisions(self) -> None:
        """Post the local decisions on held queries that could not be sent when taken."""
        try:
            await anyio.to_thread.run_sync(delivery.send_due, self.settings, self.context.sessions)
        except (HubUnreachable, HubRefused) as exc:
            logger.warning("decisions on held queries not sent yet: %s", exc)
        except Exception as exc:  # the agent must outlive one bad round; the type only
            logger.error("sending decisions on held queries failed: %s", type(exc).__name__)

    async def _back_off(self) -> None:
        await asyncio.sleep(self._delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
        self._delay = min(self._delay * 2, self.settings.hub_retry_max_seconds)


async def start(settings: NodeSettings, sessions: sessionmaker[Session]) -> Agent | None:
    """The running agent of an enrolled node; None (and a log line) for one not enrolled."""
    if not enrollments.is_enrolled(settings.data_dir):
        logger.info("not enrolled with a hub: the federation agent does not run")
        return None
    enrollment = enrollments.load(settings.data_dir)
    key = keys.KeyFile(keys.key_path(settings.data_dir))
    key.get()  # a missing or unreadable key stops the start, with the file named
    agent = Agent(
        settings,
        sessions,
        async_client(enrollment, key, timeout=settings.hub_timeout_seconds),
    )
    agent.start()
    return agent
