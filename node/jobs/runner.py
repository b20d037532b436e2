"""Runs one selection job: find → per-study retrieve, or clean-up.

A retrieval job goes through two steps, each committed as it ends so that a node killed at
any moment resumes where it stopped:

1. **plan**: C-FIND the PACS (study level, and series level when a protocol or a modality
   narrows a study down). The plan — the hospital's study and series UIDs — is stored
   encrypted in ``report["selection"]``; a ``JobStudy`` row per study keeps its PHI-free
   progress, keyed by the study's stage-1 UID (the pseudonymous UID the study gets in the
   store). The job's view shows them as ``report["studies"]``.
2. **retrieve**: each study not yet fetched is C-MOVEd to the node (or C-GET into the
   ingest); its entry records found / retrieved / failed / stored and its state. A study
   fetched before a restart is not fetched again.

Counters on the job: ``found`` instances the PACS reported, ``retrieved`` sub-operations
completed, ``stored`` instances now in the store under the job's studies, ``rejected``
instances stage 1 refused for this job (``RejectedInstance.job_id``), with their reasons in
``report["rejected"]``. ``total``/``done_items`` count studies (subjects for a clean-up).

A PACS that cannot be reached, or a study with failed sub-operations, makes the job wait
(RETRYING, ``next_attempt_at`` with exponential back-off) up to ``RetryPolicy.max_attempts``.
Cancelling sends C-CANCEL to the running retrieval. A node stopping sends C-CANCEL too and
puts the job back in the queue without counting the attempt.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common import audit
from common.crypto import Pseudonymizer
from common.deid.profile import load_profile
from common.deid.table import Option
from common.errors import HavenetError, PermanentError
from node.clinical import service as clinical
from node.dicom.scu import (
    OnProgress,
    PacsClient,
    PacsUnavailable,
    Progress,
    RetrieveResult,
    RetrieveTarget,
    SeriesMatch,
    SeriesQuery,
    ShouldCancel,
    StoreInstance,
    StudyMatch,
    StudyQuery,
)
from node.jobs import service
from node.jobs.exceptions import InvalidSelection, SpecUnreadable
from node.jobs.service import JobKind, Method
from node.settings import NodeSettings, Pacs
from node.store import correspondence
from node.store import service as store
from node.store.db import transaction
from node.store.models import (
    AuditRecord,
    Instance,
    Job,
    JobStatus,
    Patient,
    Series,
    Study,
    utcnow,
)

logger = logging.getLogger(__name__)

# Correspondence kinds stage 1 records (node.store.service): PatientID ↔ subject key,
# StudyInstanceUID ↔ stage-1 study UID. A restore reads them backwards.
PATIENT_KIND = store.PATIENT
STUDY_KIND = store.STUDY
# How long to wait for stage 1 to catch up after a study before counting what was stored.
DRAIN_SECONDS = 600.0


class IngestSink(Protocol):
    """What the runner needs of ``node.ingest.service.Ingest``."""

    def accept(self, encoded: bytes, *, source: str, job_id: int | None = None) -> object: ...

    def drain(self, timeout: float, /, *, job_id: int | None = None) -> object: ...


class PacsOperations(Protocol):
    """What the runner needs of a PACS client (``node.dicom.scu.PacsClient``)."""

    def find_studies(self, queries: Sequence[StudyQuery]) -> list[StudyMatch]: ...

    def find_series(self, queries: Sequence[SeriesQuery]) -> list[SeriesMatch]: ...

    def move(
        self,
        target: RetrieveTarget,
        *,
        destination: str,
        job_id: int | None = None,
        should_cancel: ShouldCancel | None = None,
        on_progress: OnProgress | None = None,
    ) -> RetrieveResult: ...

    def get(
        self,
        target: RetrieveTarget,
        *,
        store: StoreInstance,
        should_cancel: ShouldCancel | None = None,
        on_progress: OnProgress | None = None,
    ) -> RetrieveResult: ...


ClientFactory = Callable[[Pacs], PacsOperations]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off: ``first_delay`` after the first failed attempt, doubling."""

    max_attempts: int = 5
    first_delay: dt.timedelta = dt.timedelta(seconds=30)
    max_delay: dt.timedelta = dt.timedelta(hours=1)

    def delay(self, attempt: int) -> dt.timedelta:
        factor: int = 2 ** max(attempt - 1, 0)
        delay: dt.timedelta = self.first_delay * factor
        return min(delay, self.max_delay)


class StudyState(str, Enum):
    """Where one study of a retrieval job stands (``JobStudy.state``)."""

    # Not fetched yet (or the fetch was interrupted).
    PENDING = "pending"
    # Every sub-operation completed.
    RETRIEVED = "retrieved"
    # Fetched, but some sub-operations failed; fetched again on the next attempt.
    INCOMPLETE = "incomplete"
    # Could not be fetched within the job's attempts.
    FAILED = "failed"


_TO_FETCH = (StudyState.PENDING.value, StudyState.INCOMPLETE.value)


@dataclass(frozen=True)
class PlannedStudy:
    """One study to fetch, with the hospital's UIDs (kept encrypted between runs)."""

    study_uid: str = field(repr=False)
    series_uids: tuple[str, ...] = field(default=(), repr=False)
    found: int = 0
    modalities: tuple[str, ...] = ()  # only while planning


class _Cancelled(Exception):
    """Hospital IT cancelled the job while it ran."""


class _Interrupted(Exception):
    """The node is stopping: put the job back in the queue."""


def stage1_uid_mapper(settings: NodeSettings) -> Callable[[str], str]:
    """The UID stage 1 gives an original UID (keyed and deterministic, DESIGN.md decision 4)."""
    profile = load_profile(settings.profile)
    if Option.RETAIN_UIDS in profile.options:
        return lambda uid: uid
    return Pseudonymizer(settings.secret(), settings.site_project).uid


def default_clients(settings: NodeSettings) -> ClientFactory:
    def build(pacs: Pacs) -> PacsOperations:
        return PacsClient(pacs, ae_title=settings.ae_title)

    return build


class Runner:
    """Runs jobs against the PACS configured in ``settings``; one job at a time."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        sessions: sessionmaker[Session],
        ingest: IngestSink,
        clients: ClientFactory | None = None,
        retry: RetryPolicy | None = None,
        should_stop: Callable[[], bool] | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        poll_seconds: float = 1.0,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.ingest = ingest
        self.clients = clients or default_clients(settings)
        self.retry = retry or RetryPolicy()
        self.should_stop = should_stop or (lambda: False)
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.drain_seconds = drain_seconds
        self._stage1: Callable[[str], str] | None = None

    @property
    def stage1_uid(self) -> Callable[[str], str]:
        if self._stage1 is None:
            self._stage1 = stage1_uid_mapper(self.settings)
        return self._stage1

    # -- picking ----------------------------------------------------------------------------

    def run_due(self) -> int:
        """Run every job that is due, oldest first, until none is left or the node stops."""
        ran = 0
        while not self.should_stop():
            with transaction(self.sessions) as session:
                job_id = service.next_due(session=session, now=self.clock())
                claimed = job_id is not None and service.claim(
                    session=session, job_id=job_id, now=self.clock()
                )
            if job_id is None:
                break
            if claimed:
                self._run_claimed(job_id)
                ran += 1
        return ran

    def run(self, job_id: int) -> JobStatus:
        """Run one waiting job now, whatever its back-off says; returns where it ended."""
        with transaction(self.sessions) as session:
            claimed = service.claim(session=session, job_id=job_id, now=self.clock())
        if claimed:
            self._run_claimed(job_id)
        with transaction(self.sessions) as session:
            return JobStatus(service.get(session=session, job_id=job_id).status)

    def _run_claimed(self, job_id: int) -> None:
        started = time.monotonic()
        with transaction(self.sessions) as session:
            kind = service.get(session=session, job_id=job_id).kind
        logger.info("job %d (%s) started", job_id, kind)
        try:
            if kind == JobKind.DELETE.value:
                self._delete(job_id)
            elif kind in (JobKind.RETRIEVE.value, JobKind.RESTORE.value):
                self._retrieve(job_id)
            else:
                raise InvalidSelection(f"job {job_id}: unknown kind {kind!r}")
        except _Cancelled:
            logger.info("job %d stopped: cancelled", job_id)
        except _Interrupted:
            with transaction(self.sessions) as session:
                service.finish(
                    session=session, job_id=job_id, status=JobStatus.QUEUED, uncount_attempt=True
                )
            logger.info("job %d interrupted by the node stopping; queued again", job_id)
        except (PermanentError, InvalidSelection, SpecUnreadable) as exc:
            self._end(job_id, JobStatus.FAILED, str(exc))
        except HavenetError as exc:  # retryable: the PACS, the network, configuration
            self._retry_or_fail(job_id, str(exc))
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            # The message of an unexpected error may quote a value: log where, not what.
            place = f"{Path(where.filename).name}:{where.lineno}"
            reason = f"unexpected {type(exc).__name__} at {place}"
            logger.error("job %d: %s", job_id, reason)
            self._retry_or_fail(job_id, reason)
        logger.info("job %d ran for %.1f s", job_id, time.monotonic() - started)

    def _end(self, job_id: int, status: JobStatus, error: str = "") -> None:
        with transaction(self.sessions) as session:
            if service.finish(session=session, job_id=job_id, status=status, error=error):
                logger.info("job %d %s%s", job_id, status.value, f": {error}" if error else "")

    def _retry_or_fail(self, job_id: int, reason: str) -> None:
        with transaction(self.sessions) as session:
            job = service.get(session=session, job_id=job_id)
            if job.attempts >= self.retry.max_attempts:
                _give_up_pending(session, job)
                ended = service.finish(
                    session=session,
                    job_id=job_id,
                    status=JobStatus.FAILED,
                    error=f"{reason} (gave up after {job.attempts} attempts)",
                )
                if ended:
                    logger.warning("job %d failed after %d attempts", job_id, job.attempts)
                return
            when = self.clock() + self.retry.delay(job.attempts)
            if service.finish(
                session=session,
                job_id=job_id,
                status=JobStatus.RETRYING,
                error=reason,
                next_attempt_at=when,
            ):
                logger.info(
                    "job %d: attempt %d did not finish; next at %s",
                    job_id,
                    job.attempts,
                    when.isoformat(timespec="seconds"),
                )

    # -- cancellation -------------------------------------------------------------------------

    def _check(self, job_id: int) -> None:
        if self.should_stop():
            raise _Interrupted
        with transaction(self.sessions) as session:
            status = session.execute(select(Job.status).where(Job.id == job_id)).scalar_one()
        if status == JobStatus.CANCELLED.value:
            raise _Cancelled

    def _cancel_probe(self, job_id: int) -> ShouldCancel:
        """A cheap ``should_cancel`` for a running retrieval: the database at most once per
        ``poll_seconds``."""
        last = [0.0]
        verdict = [False]

        def should_cancel() -> bool:
            if verdict[0] or self.should_stop():
                return True
            now = time.monotonic()
            if now - last[0] >= self.poll_seconds:
                last[0] = now
                try:
                    self._check(job_id)
                except (_Cancelled, _Interrupted):
                    verdict[0] = True
            return verdict[0]

        return should_cancel

    # -- retrieval --------------------------------------------------------------------------

    def _pacs(self, name: object) -> Pacs:
        if not self.settings.pacs:
            raise InvalidSelection("no PACS is configured: add one under `pacs:` in the settings")
        if name is None:
            return self.settings.pacs[0]
        for pacs in self.settings.pacs:
            if pacs.name == name:
                return pacs
        names = ", ".join(p.name for p in self.settings.pacs)
        raise InvalidSelection(f"no PACS named {name!r} in the settings (configured: {names})")

    def _retrieve(self, job_id: int) -> None:
        with transaction(self.sessions) as session:
            job = service.get(session=session, job_id=job_id)
            spec = dict(job.spec)
            planned = "selection" in job.report
        client = self.clients(self._pacs(spec.get("pacs")))
        self._check(job_id)
        if not planned:
            self._plan(job_id, client, spec)
        plan = self._load_plan(job_id)
        method = Method(str(spec.get("method", Method.MOVE.value)))
        for key, study in plan:
            with transaction(self.sessions) as session:
                state = service.job_study(session=session, job_id=job_id, study_key=key).state
            if state not in _TO_FETCH:
                continue
            self._check(job_id)
            self._fetch(job_id, key, study, client, method)
        self._conclude(job_id)

    def _plan(self, job_id: int, client: PacsOperations, spec: dict[str, Any]) -> None:
        """C-FIND the PACS and store the plan; nothing is fetched yet."""
        with transaction(self.sessions) as session:
            job = service.get(session=session, job_id=job_id)
            if job.kind == JobKind.RESTORE.value:
                studies, extra = self._restore_plan(session, client, spec, job_id)
            else:
                studies, extra = self._retrieve_plan(job, client, spec)
        studies = self._narrow_to_series(client, studies, spec)
        keyed = [(self.stage1_uid(s.study_uid), s) for s in studies]
        ciphertext, key_id = service.encrypt_json(
            self.settings.keyring(),
            [
                {"study": s.study_uid, "series": list(s.series_uids), "found": s.found}
                for _, s in keyed
            ],
        )
        entries = [
            service.PlannedEntry(key, s.found, len(s.series_uids) or None) for key, s in keyed
        ]
        with transaction(self.sessions) as session:
            job = service.get(session=session, job_id=job_id)
            job.report = {
                **job.report,
                **extra,
                "selection": service.encode_blob(ciphertext),
                "selection_key": key_id,
            }
            job.total = service.plan_studies(
                session=session, job_id=job_id, entries=entries, state=StudyState.PENDING.value
            )
            job.found = sum(s.found for _, s in keyed)
        logger.info(
            "job %d: %d studies, %d instances to fetch",
            job_id,
            job.total,
            sum(s.found for _, s in keyed),
        )

    def _retrieve_plan(
        self, job: Job, client: PacsOperations, spec: dict[str, Any]
    ) -> tuple[list[PlannedStudy], dict[str, Any]]:
        chosen = service.selection(job=job, keyring=self.settings.keyring())
        base = StudyQuery(
            modality=str(spec.get("modality") or ""),
            study_description=str(spec.get("study_description") or ""),
            date_from=_date(spec.get("date_from")),
            date_to=_date(spec.get("date_to")),
        )
        queries = study_queries(base, chosen.patient_ids, chosen.accession_numbers)
        matches = client.find_studies(queries)
        patients = {m.patient_id for m in matches}
        accessions = {m.accession_number for m in matches}
        unmatched = {
            "patient_ids": sum(1 for p in chosen.patient_ids if p not in patients),
            "accession_numbers": sum(1 for a in chosen.accession_numbers if a not in accessions),
        }
        studies = [_planned(m) for m in matches]
        return studies, {"unmatched": unmatched, "modalities": _modalities(matches)}

    def _restore_plan(
        self, session: Session, client: PacsOperations, spec: dict[str, Any], job_id: int
    ) -> tuple[list[PlannedStudy], dict[str, Any]]:
        """Subject keys and stage-1 study UIDs back to the hospital's identifiers; each
        look-up is a re-identification, audited as ``havenet node reidentify`` is."""
        keyring = self.settings.keyring()
        wanted = [str(u) for u in spec.get("study_uids", [])]
        queries: list[StudyQuery] = []
        unresolved: list[str] = []
        for key in spec.get("subject_keys", []):
            originals = correspondence.originals_for(
                session=session, keyring=keyring, kind=PATIENT_KIND, pseudonym=str(key)
            )
            _audit_reidentified(session, job_id, PATIENT_KIND, str(key), len(originals))
            if not originals:
                unresolved.append(str(key))
            queries += [StudyQuery(patient_id=p) for p in originals]
        matches = client.find_studies(queries) if queries else []
        if wanted:
            matches = [m for m in matches if self.stage1_uid(m.study_uid) in wanted]
        have = {self.stage1_uid(m.study_uid) for m in matches}
        by_uid: list[StudyQuery] = []
        for uid in wanted:
            if uid in have:
                continue
            originals = correspondence.originals_for(
                session=session, keyring=keyring, kind=STUDY_KIND, pseudonym=uid
            )
            _audit_reidentified(session, job_id, STUDY_KIND, uid, len(originals))
            by_uid += [StudyQuery(study_uid=o) for o in originals]
        if by_uid:
            matches += [
                m for m in client.find_studies(by_uid) if self.stage1_uid(m.study_uid) in wanted
            ]
        have = {self.stage1_uid(m.study_uid) for m in matches}
        missing = [uid for uid in wanted if uid not in have]
        studies = [_planned(m) for m in matches]
        return studies, {
            "unresolved_subjects": unresolved,
            "missing_studies": missing,
            "modalities": _modalities(matches),
        }

    def _narrow_to_series(
        self, client: PacsOperations, studies: list[PlannedStudy], spec: dict[str, Any]
    ) -> list[PlannedStudy]:
        """Series-level selection when a protocol name is asked for, or when a study holds
        more modalities than the one asked for (seed 000 selects MR series by protocol)."""
        protocol = str(spec.get("protocol_name") or "")
        modality = str(spec.get("modality") or "")
        if protocol:
            narrow = list(studies)
        elif modality:
            narrow = [s for s in studies if set(s.modalities) - {modality}]
        else:
            return studies
        if not narrow:
            return studies
        series = client.find_series(
            [SeriesQuery(s.study_uid, modality=modality, protocol_name=protocol) for s in narrow]
        )
        by_study: dict[str, list[SeriesMatch]] = {}
        for match in series:
            by_study.setdefault(match.study_uid, []).append(match)
        narrowed = {s.study_uid for s in narrow}
        result = []
        for study in studies:
            if study.study_uid not in narrowed:
                result.append(study)
                continue
            chosen = by_study.get(study.study_uid, [])
            if chosen:
                result.append(
                    PlannedStudy(
                        study.study_uid,
                        tuple(m.series_uid for m in chosen),
                        sum(m.instance_count or 0 for m in chosen),
                    )
                )
        return result

    def _load_plan(self, job_id: int) -> list[tuple[str, PlannedStudy]]:
        with transaction(self.sessions) as session:
            job = service.get(session=session, job_id=job_id)
            blob = service.decode_blob(str(job.report["selection"]))
            key_id = str(job.report["selection_key"])
        rows = service.decrypt_json(self.settings.keyring(), blob, key_id, job_id=job_id)
        plan = []
        for row in rows:
            study = PlannedStudy(str(row["study"]), tuple(row["series"]), int(row["found"]))
            plan.append((self.stage1_uid(study.study_uid), study))
        return plan

    def _fetch(
        self,
        job_id: int,
        key: str,
        study: PlannedStudy,
        client: PacsOperations,
        method: Method,
    ) -> None:
        """Fetch one study and record how it went."""
        target = RetrieveTarget(study.study_uid, study.series_uids)
        done_before = self._retrieved_elsewhere(job_id, key)
        reporter = self._progress_reporter(job_id, done_before)
        should_cancel = self._cancel_probe(job_id)
        try:
            if method is Method.GET:
                source = f"c-get job {job_id}"

                def store(encoded: bytes) -> None:
                    self.ingest.accept(encoded, source=source, job_id=job_id)

                result = client.get(
                    target, store=store, should_cancel=should_cancel, on_progress=reporter
                )
            else:
                result = client.move(
                    target,
                    destination=self.settings.ae_title,
                    job_id=job_id,
                    should_cancel=should_cancel,
                    on_progress=reporter,
                )
        except PacsUnavailable as exc:
            self._record(job_id, key, study, None, str(exc), method)
            raise
        if result.cancelled:
            self._record(job_id, key, study, None, "", method)
            self._check(job_id)
            raise _Interrupted
        self._record(job_id, key, study, result, "", method)

    def _retrieved_elsewhere(self, job_id: int, key: str) -> int:
        """Sub-operations already counted for the job's other studies."""
        with transaction(self.sessions) as session:
            return service.retrieved_elsewhere(session=session, job_id=job_id, study_key=key)

    def _progress_reporter(self, job_id: int, done_before: int) -> OnProgress:
        """Show live progress on the job (at most every two seconds)."""
        last = [0.0]

        def report(progress: Progress) -> None:
            now = time.monotonic()
            if now - last[0] < 2.0:
                return
            last[0] = now
            with transaction(self.sessions) as session:
                job = service.get(session=session, job_id=job_id)
                job.retrieved = done_before + progress.completed + progress.warning

        return report

    def _record(
        self,
        job_id: int,
        key: str,
        study: PlannedStudy,
        result: RetrieveResult | None,
        error: str,
        method: Method,
    ) -> None:
        """Write one study's outcome and the job's counters in one transaction."""
        if result is not None:
            # Stage 1 has run on everything this study brought before it is counted.
            self.ingest.drain(self.drain_seconds, job_id=job_id)
        with transaction(self.sessions) as session:
            job = service.get(session=session, job_id=job_id)
            entry = service.job_study(session=session, job_id=job_id, study_key=key)
            if result is not None:
                entry.attempts += 1
                entry.retrieved = result.completed + result.warning
                entry.failed = result.failed
                if not entry.found and result.total:
                    entry.found = result.total
                if result.ok:
                    entry.state = StudyState.RETRIEVED.value
                    entry.error = ""
                else:
                    entry.state = StudyState.INCOMPLETE.value
                    entry.error = self._failure(result, method)
            elif error:
                entry.attempts += 1
                entry.error = error
            entry.stored = _stored_in(session, key, [self.stage1_uid(u) for u in study.series_uids])
            session.flush()
            self._update_counters(session, job)
            state, retrieved, failed, stored = (
                entry.state,
                entry.retrieved,
                entry.failed,
                entry.stored,
            )
        logger.info(
            "job %d: study %s %s (%d retrieved, %d failed, %d stored)",
            job_id,
            key,
            state,
            retrieved,
            failed,
            stored,
        )

    def _failure(self, result: RetrieveResult, method: Method) -> str:
        """Why a study is incomplete, with what to check (no identifiers)."""
        status = f"status 0x{result.status:04X}"
        if result.nothing_sent and method is Method.MOVE:
            return (
                f"the PACS refused the C-MOVE ({status}) without sending anything: check that "
                f"it knows the node's AE title {self.settings.ae_title!r} with its host and "
                "DICOM port, and that the study is still there"
            )
        if result.nothing_sent:
            return f"the PACS refused the C-GET ({status}) without sending anything"
        return f"{result.failed} of {result.total or '?'} sub-operations failed (final {status})"

    def _update_counters(self, session: Session, job: Job) -> None:
        totals = service.study_totals(
            session=session,
            job_id=job.id,
            to_fetch=_TO_FETCH,
            retrieved_state=StudyState.RETRIEVED.value,
        )
        job.found, job.retrieved, job.stored = totals.found, totals.retrieved, totals.stored
        job.total, job.done_items = totals.studies, totals.done
        rejected = service.rejected_reasons(session=session, job_id=job.id)
        job.rejected = sum(int(r["count"]) for r in rejected)
        job.report = {
            **job.report,
            "rejected": rejected,
            "summary": _summary(job, totals.studies, totals.studies_retrieved),
        }

    def _conclude(self, job_id: int) -> None:
        with transaction(self.sessions) as session:
            job = service.get(session=session, job_id=job_id)
            studies = service.job_studies(session=session, job_id=job_id)
            incomplete = [(e.state, e.error) for e in studies if e.state in _TO_FETCH]
            anything = any(e.retrieved for e in studies)
            attempts = job.attempts
            if incomplete and attempts >= self.retry.max_attempts:
                _give_up_pending(session, job)
            self._update_counters(session, job)
        if not incomplete:
            self._end(job_id, JobStatus.DONE)
            return
        errors = Counter(error for _, error in incomplete if error)
        why = f": {errors.most_common(1)[0][0]}" if errors else ""
        if attempts < self.retry.max_attempts:
            self._retry_or_fail(job_id, f"{len(incomplete)} studies incomplete{why}")
            return
        # Seed 000 reports partial success as such; nothing fetched at all is a failure.
        self._end(
            job_id,
            JobStatus.DONE if anything else JobStatus.FAILED,
            f"{len(incomplete)} studies incomplete after {attempts} attempts{why}",
        )

    # -- clean-up ---------------------------------------------------------------------------

    def _delete(self, job_id: int) -> None:
        """Remove each subject's patient, studies, series, instances and files; one
        transaction per subject, so a restart skips the subjects already removed."""
        with transaction(self.sessions) as session:
            job = service.get(session=session, job_id=job_id)
            keys = [str(k) for k in cast(list[str], job.spec.get("subject_keys", []))]
            job.total = len(keys)
        for key in keys:
            with transaction(self.sessions) as session:
                job = service.get(session=session, job_id=job_id)
                done = cast(dict[str, Any], job.report.get("subjects", {}))
            if key in done:
                continue
            self._check(job_id)
            # Rows first, files after the commit: a row never outlives its file.
            paths = self._delete_subject(job_id, key)
            store.remove_files(self.settings.data_dir, paths)
        self._end(job_id, JobStatus.DONE)

    def _delete_subject(self, job_id: int, key: str) -> list[Path]:
        with transaction(self.sessions) as session:
            job = service.get(session=session, job_id=job_id)
            studies = sorted(
                session.execute(
                    select(Study.study_uid)
                    .join(Patient, Study.patient_id == Patient.id)
                    .where(Patient.subject_key == key)
                ).scalars()
            )
            known = session.execute(
                select(Patient.id).where(Patient.subject_key == key)
            ).scalar_one_or_none()
            paths = store.delete_patient(session=session, subject_key=key)
            facts = clinical.delete_subject(session=session, subject_key=key)
            if known is None and not facts:
                entry: dict[str, Any] = {
                    "state": "not_found",
                    "studies": [],
                    "instances": 0,
                    "clinical_rows": 0,
                }
            else:
                entry = {
                    "state": "deleted",
                    "studies": studies,
                    "instances": len(paths),
                    "clinical_rows": facts,
                }
                audit.append(
                    session,
                    AuditRecord,
                    actor=f"job {job_id}",
                    action="store.delete",
                    subject=key,
                    details={"studies": len(studies), "instances": len(paths), "clinical": facts},
                )
            subjects = {**cast(dict[str, Any], job.report.get("subjects", {})), key: entry}
            job.report = {**job.report, "subjects": subjects}
            job.done_items = len(subjects)
            job.stored = sum(int(e["instances"]) for e in subjects.values())
        logger.info("job %d: subject %s %s", job_id, key, entry["state"])
        return paths


def _audit_reidentified(
    session: Session, job_id: int, kind: str, pseudonym: str, found: int
) -> None:
    audit.append(
        session,
        AuditRecord,
        actor=f"job {job_id}",
        action="reidentify",
        subject=pseudonym,
        details={"kind": kind, "purpose": "restore from the PACS", "originals": found},
    )


def study_queries(
    base: StudyQuery, patient_ids: Sequence[str], accession_numbers: Sequence[str]
) -> list[StudyQuery]:
    """One query per identifier, each with the job's filters; the filters alone if none."""
    queries = [replace(base, patient_id=p) for p in patient_ids]
    queries += [replace(base, accession_number=a) for a in accession_numbers]
    return queries or [base]


def _give_up_pending(session: Session, job: Job) -> None:
    """The job ends: its studies still pending failed."""
    service.set_pending_studies(
        session=session,
        job_id=job.id,
        pending=StudyState.PENDING.value,
        state=StudyState.FAILED.value,
    )
    studies = service.job_studies(session=session, job_id=job.id)
    if studies:
        job.done_items = len(studies)


def _stored_in(session: Session, study_uid: str, series_uids: Sequence[str]) -> int:
    query = (
        select(func.count(Instance.id))
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .where(Study.study_uid == study_uid)
    )
    if series_uids:
        query = query.where(Series.series_uid.in_(list(series_uids)))
    return int(session.execute(query).scalar_one())


def _summary(job: Job, studies: int, studies_retrieved: int) -> dict[str, Any]:
    """Success rates as seed 000 reports them."""
    return {
        "studies": studies,
        "studies_retrieved": studies_retrieved,
        "instances_found": job.found,
        "instances_retrieved": job.retrieved,
        "instances_stored": job.stored,
        "instances_rejected": job.rejected,
        "retrieval_rate": round(job.retrieved / job.found, 4) if job.found else None,
        "storage_rate": round(job.stored / job.found, 4) if job.found else None,
    }


def _planned(match: StudyMatch) -> PlannedStudy:
    return PlannedStudy(match.study_uid, (), match.instance_count or 0, match.modalities)


def _modalities(matches: Sequence[StudyMatch]) -> dict[str, int]:
    """How many studies hold each modality (counts only)."""
    counts: dict[str, int] = {}
    for match in matches:
        for modality in match.modalities:
            counts[modality] = counts.get(modality, 0) + 1
    return dict(sorted(counts.items()))


def _date(value: object) -> dt.date | None:
    if not value:
        return None
    return dt.date.fromisoformat(str(value))
