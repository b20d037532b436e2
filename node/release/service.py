"""Data requests at the node: recorded when the hub's task arrives, decided by hospital IT,
and on approval released — stage 2 of what the selection selects (a cohort resolved by
:mod:`node.release.selection`), files that fail held with their reason, and everything bound
for the hub (the decision, progress, each study's and each patient's records manifest) put
in the durable outbox that :mod:`node.release.upload` sends: :func:`plan_release`, then
:func:`queue_study` for each manifest as stage 2 finishes it, then :func:`finish_release`
(:func:`release` does all three in one transaction).

Plain functions taking a keyword-only ``session``; none commits. Decisions are audited in
the node's log; the hub audits them again when they arrive.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common import audit
from common.schemas.channel import TaskRead
from common.schemas.release import (
    ReleaseRejectedPayload,
    ReleaseRequestPayload,
    ReleaseState,
    Selection,
    StateReport,
    StudyManifest,
)
from node.release import selection as selections
from node.release import stage2
from node.release.exceptions import AlreadyDecided, NothingToRetry, RequestNotFound
from node.release.models import HeldFile, OutboxItem, OutboxState, Rejection, ReleaseRequest
from node.release.schemas import (
    HeldFileRead,
    RejectionRead,
    ReleaseRequestRead,
    SelectionCount,
)
from node.settings import NodeSettings
from node.store.models import AuditRecord, utcnow

logger = logging.getLogger(__name__)


def record_request(*, session: Session, task: TaskRead) -> ReleaseRequest:
    """The hub's request, pending hospital IT's decision (a task delivered again is the same
    request)."""
    payload = ReleaseRequestPayload.model_validate(task.payload)
    found = get_by_hub_id(session=session, hub_request_id=payload.request_id)
    if found is not None:
        return found
    request = ReleaseRequest(
        hub_request_id=payload.request_id,
        task_id=task.id,
        project=task.project or "",
        profile=payload.profile,
        requested_by=task.requested_by,
        selection=payload.selection.model_dump(mode="json", by_alias=True),
    )
    session.add(request)
    session.flush()
    _audit(
        session,
        f"hub:{task.requested_by}",
        "release.request",
        request,
        project=request.project,
        profile=request.profile,
        cohort=payload.selection.cohort is not None,
        studies=len(payload.selection.study_uids),
        subjects=len(payload.selection.subject_keys),
    )
    return request


def record_rejection(*, session: Session, task: TaskRead) -> Rejection:
    payload = ReleaseRejectedPayload.model_validate(task.payload)
    found = session.execute(select(Rejection).where(Rejection.task_id == task.id)).scalar()
    if found is not None:
        return found
    rejection = Rejection(
        task_id=task.id,
        hub_request_id=payload.request_id,
        study_uid=payload.study_uid,
        reason=payload.reason,
        requested_by=task.requested_by,
    )
    session.add(rejection)
    session.flush()
    audit.append(
        session,
        AuditRecord,
        actor=f"hub:{task.requested_by}",
        action="release.rejected",
        subject=f"data request {payload.request_id}",
        details={"study": payload.study_uid, "reason": payload.reason},
    )
    return rejection


def get_by_hub_id(*, session: Session, hub_request_id: int) -> ReleaseRequest | None:
    return session.execute(
        select(ReleaseRequest).where(ReleaseRequest.hub_request_id == hub_request_id)
    ).scalar_one_or_none()


def require(*, session: Session, hub_request_id: int) -> ReleaseRequest:
    found = get_by_hub_id(session=session, hub_request_id=hub_request_id)
    if found is None:
        raise RequestNotFound(hub_request_id)
    return found


def require_by_pk(*, session: Session, pk: int) -> ReleaseRequest:
    found = session.get(ReleaseRequest, pk)
    if found is None:
        raise RequestNotFound(pk)
    return found


def listing(*, session: Session, state: ReleaseState | None = None) -> list[ReleaseRequest]:
    query = select(ReleaseRequest).order_by(ReleaseRequest.id)
    if state is not None:
        query = query.where(ReleaseRequest.state == state)
    return list(session.execute(query).scalars())


def rejections(*, session: Session) -> list[Rejection]:
    return list(session.execute(select(Rejection).order_by(Rejection.id)).scalars())


def decline(*, session: Session, hub_request_id: int, reason: str, actor: str) -> ReleaseRequest:
    request = _undecided(session, hub_request_id)
    _decide(session, request, ReleaseState.DECLINED, reason, actor)
    return request


def approve(*, session: Session, hub_request_id: int, actor: str) -> ReleaseRequest:
    """Record the approval (and queue it for the hub); :func:`release` runs stage 2 next."""
    request = _undecided(session, hub_request_id)
    _decide(session, request, ReleaseState.APPROVED, "", actor)
    return request


def plan_release(
    *, session: Session, settings: NodeSettings, hub_request_id: int
) -> tuple[stage2.Job, stage2.Plan]:
    """What stage 2 of an approved request will release (commit before streaming it)."""
    request = require(session=session, hub_request_id=hub_request_id)
    if ReleaseState(request.state) != ReleaseState.APPROVED:
        raise AlreadyDecided(hub_request_id, ReleaseState(request.state).value)
    job = stage2.Job.for_project(
        settings, request.project, request.profile, settings.release_chunk_bytes
    )
    selection = Selection.model_validate(request.selection)
    planned = stage2.plan(session=session, selection=selection)
    # The hub hears "releasing" ahead of the first study; the count follows when stage 2 is
    # done (the same outbox item, sent again). Here the request stays approved until then,
    # so that uploads catching up with stage 2 do not report it released early.
    _report(session, request, ReleaseState.RELEASING, "")
    return job, planned


def queue_study(
    *, session: Session, job: stage2.Job, hub_request_id: int, manifest: StudyManifest
) -> None:
    """A study (or a patient's records) stage 2 finished, into the outbox at once: its
    upload starts while stage 2 goes on (the hub takes uploads of an approved request)."""
    request = require(session=session, hub_request_id=hub_request_id)
    body = {
        "root": str(job.root.relative_to(job.settings.data_dir)),
        "chunk_bytes": job.chunk_bytes,
        "manifest": manifest.model_dump(mode="json"),
    }
    _enqueue(session, request, "study", f"study:{manifest.study_uid}", body)


def finish_release(
    *, session: Session, hub_request_id: int, result: stage2.Stage2Result
) -> ReleaseRequest:
    """Stage 2 is done: the files held, the count of studies; the request is releasing
    until the outbox has sent every study, or released at once when it has."""
    request = require(session=session, hub_request_id=hub_request_id)
    request.held = [HeldFile(sop_uid=h.sop_uid, code=h.code, reason=h.reason) for h in result.held]
    request.studies = len(result.manifests)
    request.state = ReleaseState.RELEASING
    _report(session, request, ReleaseState.RELEASING, "")
    _audit(
        session,
        "node",
        "release.stage2",
        request,
        studies=sum(1 for m in result.manifests if m.files),
        files=sum(len(m.files) for m in result.manifests),
        records=sum(len(m.records) for m in result.manifests),
        held=len(result.held),
        held_reasons=sorted({h.reason for h in result.held}),
    )
    _complete(session, request)
    return request


def release(
    *, session: Session, settings: NodeSettings, hub_request_id: int
) -> stage2.Stage2Result:
    """Stage 2 of an approved request in one transaction; each study's manifest goes into
    the outbox (:func:`node.release.workflow.approve_and_release` streams them instead)."""
    job, planned = plan_release(session=session, settings=settings, hub_request_id=hub_request_id)
    result = stage2.Stage2Result(root=job.root)
    outcomes = itertools.chain(
        stage2.images(job, hub_request_id, planned.sources),
        stage2.records(
            session=session,
            job=job,
            request_id=hub_request_id,
            subjects=planned.record_subjects,
        ),
    )
    for outcome in outcomes:
        result.add(outcome)
        if isinstance(outcome, StudyManifest):
            queue_study(session=session, job=job, hub_request_id=hub_request_id, manifest=outcome)
    finish_release(session=session, hub_request_id=hub_request_id, result=result)
    return result


def fail(*, session: Session, hub_request_id: int, reason: str) -> None:
    request = require(session=session, hub_request_id=hub_request_id)
    request.state = ReleaseState.FAILED
    request.reason = reason
    _report(session, request, ReleaseState.FAILED, reason)
    _audit(session, "node", "release.failed", request, reason=reason)


def study_failed(*, session: Session, item: OutboxItem, reason: str) -> None:
    """A study the hub refused (or whose files changed since stage 2) fails its request, so
    that hospital IT and the hub see it, and a retry can run stage 2 again."""
    item.state = OutboxState.FAILED
    item.last_error = reason[:500]
    request = require_by_pk(session=session, pk=item.request_id)
    if ReleaseState(request.state) in {ReleaseState.APPROVED, ReleaseState.RELEASING}:
        fail(session=session, hub_request_id=request.hub_request_id, reason=f"upload: {reason}")


def retry(*, session: Session, hub_request_id: int, actor: str) -> ReleaseRequest:
    """A failed release made ready to run again (approved, audited): stage 2 runs next and
    writes the same files, and every study is queued afresh — the hub acknowledges those it
    holds, and the chunks it holds are not sent again."""
    request = require(session=session, hub_request_id=hub_request_id)
    failed = _failed_studies(session, request)
    if ReleaseState(request.state) != ReleaseState.FAILED and not failed:
        raise NothingToRetry(hub_request_id, ReleaseState(request.state).value)
    previous = request.reason
    request.state = ReleaseState.APPROVED
    request.reason = ""
    _audit(session, actor, "release.retried", request, reason=previous, failed_studies=failed)
    return request


def _failed_studies(session: Session, request: ReleaseRequest) -> int:
    return int(
        session.execute(
            select(func.count())
            .select_from(OutboxItem)
            .where(
                OutboxItem.request_id == request.id,
                OutboxItem.kind == "study",
                OutboxItem.state == OutboxState.FAILED,
            )
        ).scalar_one()
    )


def complete(*, session: Session) -> None:
    """Report released every releasing request whose studies have all been sent (run by the
    upload worker after each round, so that no race between stage 2 finishing and the last
    study arriving can leave a request releasing for ever)."""
    for request in listing(session=session, state=ReleaseState.RELEASING):
        _complete(session, request)


def _complete(session: Session, request: ReleaseRequest) -> None:
    remaining = session.execute(
        select(func.count())
        .select_from(OutboxItem)
        .where(
            OutboxItem.request_id == request.id,
            OutboxItem.kind == "study",
            OutboxItem.state != OutboxState.SENT,
        )
    ).scalar_one()
    if remaining == 0 and ReleaseState(request.state) == ReleaseState.RELEASING:
        request.state = ReleaseState.RELEASED
        _report(session, request, ReleaseState.RELEASED, "")
        _audit(session, "node", "release.released", request, studies=request.studies)


def manifest_of(item: OutboxItem) -> StudyManifest:
    return StudyManifest.model_validate(item.body["manifest"])


def _undecided(session: Session, hub_request_id: int) -> ReleaseRequest:
    request = require(session=session, hub_request_id=hub_request_id)
    if ReleaseState(request.state) != ReleaseState.REQUESTED:
        raise AlreadyDecided(hub_request_id, ReleaseState(request.state).value)
    return request


def _decide(
    session: Session, request: ReleaseRequest, state: ReleaseState, reason: str, actor: str
) -> None:
    request.state = state
    request.reason = reason
    request.decided_by = actor
    request.decided_at = utcnow()
    _report(session, request, state, reason)
    _audit(session, actor, f"release.{state.value}", request, reason=reason)


def _report(session: Session, request: ReleaseRequest, state: ReleaseState, reason: str) -> None:
    report = StateReport(
        state=state, reason=reason, studies=request.studies, held=len(request.held)
    )
    _enqueue(session, request, "state", f"state:{state.value}", report.model_dump(mode="json"))


def _enqueue(
    session: Session, request: ReleaseRequest, kind: str, key: str, body: dict[str, Any]
) -> None:
    found = session.execute(
        select(OutboxItem).where(OutboxItem.request_id == request.id, OutboxItem.key == key)
    ).scalar_one_or_none()
    if found is None:
        session.add(OutboxItem(request_id=request.id, kind=kind, key=key, body=body))
    else:  # the same step again (a failed release retried): send it afresh
        found.body = body
        found.state = OutboxState.QUEUED
        found.next_attempt_at = utcnow()
    session.flush()


def _audit(
    session: Session, actor: str, action: str, request: ReleaseRequest, **details: Any
) -> None:
    audit.append(
        session,
        AuditRecord,
        actor=actor,
        action=action,
        subject=f"data request {request.hub_request_id}",
        details=details,
    )


def due(*, session: Session, now: dt.datetime, limit: int = 20) -> list[OutboxItem]:
    return list(
        session.execute(
            select(OutboxItem)
            .where(OutboxItem.state == OutboxState.QUEUED, OutboxItem.next_attempt_at <= now)
            .order_by(OutboxItem.id)
            .limit(limit)
        ).scalars()
    )


def selects(*, session: Session, request: ReleaseRequest) -> SelectionCount:
    """What the request's selection selects on this node today (counts only)."""
    return selections.count(session=session, selection=Selection.model_validate(request.selection))


def read(request: ReleaseRequest, selects: SelectionCount | None = None) -> ReleaseRequestRead:
    return ReleaseRequestRead(
        id=request.hub_request_id,
        project=request.project,
        profile=request.profile,
        requested_by=request.requested_by,
        selection=request.selection,
        state=ReleaseState(request.state),
        reason=request.reason,
        decided_by=request.decided_by,
        studies=request.studies,
        held=[HeldFileRead(sop_uid=h.sop_uid, code=h.code, reason=h.reason) for h in request.held],
        created_at=_aware(request.created_at),
        selects=selects,
    )


def read_rejection(rejection: Rejection) -> RejectionRead:
    return RejectionRead(
        request_id=rejection.hub_request_id,
        study_uid=rejection.study_uid,
        reason=rejection.reason,
        requested_by=rejection.requested_by,
        received_at=_aware(rejection.received_at),
    )


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
