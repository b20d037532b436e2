"""Stage-1 ingest: every arrival is made durable, pseudonymized in a worker process, stored.

The path of one instance::

    accept()  (the association's thread)       check the bytes, append them to the spool
                                                and flush it (shared by concurrent arrivals),
                                                queue the entry; the SCP acknowledges after
    dispatcher thread                           hand entries to the process pool, as many at
                                                once as have arrived while the workers were busy
    worker process (settings.workers of them)   read, stage 1, write the store file
    writer thread (the only database writer)    flush the store files of a batch of outcomes,
                                                then their rows in one transaction; after
                                                commit, mark the entries done

Crash safety follows from the order: an instance is acknowledged only once its spool entry
is durable; its store file is durable before its rows are written; its spool entry goes
only after the rows are committed. A node killed anywhere restarts with every acknowledged
instance either stored or still in the spool, and :meth:`Ingest.start` re-processes the
spool first; stage 1 is deterministic and the store deduplicates by the hospital's SOP
Instance UID, so doing an instance twice stores it once. Store files are renamed into place
(no half-written file), and a patient folder without a patient row is removed at start.

Memory stays flat: the queue of spool entries is bounded (``accept`` waits when the workers
fall behind), as is the number of arrivals in the pool, and workers read the spool
themselves rather than receiving the bytes.

Stopping is bounded: arrivals in the pool get :data:`STOP_TIMEOUT` seconds to finish, then
the workers still busy are terminated; what they held stays in the spool for the next start.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from node.ingest import validate, worker
from node.ingest.exceptions import IngestStopped, InstanceUnreadable, SpoolUnavailable
from node.ingest.spool import Spool, SpoolEntry
from node.settings import NodeSettings
from node.store import service as store
from node.store.correspondence import CorrespondenceError
from node.store.db import transaction

logger = logging.getLogger(__name__)

QUEUE_LIMIT = 2048  # spool entries waiting for a worker before accept() waits
TASKS_PER_WORKER = 2  # tasks in the pool (running or next), per worker
TASK_LIMIT = 16  # arrivals per task at most (a task takes what waits when it is made)
IN_FLIGHT_LIMIT = 512  # arrivals handed to the pool and not yet written, at most
BATCH_LIMIT = 256  # outcomes written per transaction at most
BATCH_WAIT = 0.1  # seconds the writer waits for a batch to fill (fewer, larger commits)
_BATCH_POLL = 0.01  # while it waits, how often it looks whether anything is still coming
_QUIET = 0.02  # seconds without an arrival after which a push is taken to have ended
RETRY_DELAY = 5.0  # seconds before an arrival whose store write failed is tried again
CRASH_LIMIT = 2  # a worker dying on the same arrival this often rejects it
STOP_TIMEOUT = 10.0  # seconds stop() lets the pool finish before terminating workers
WORKER_NICENESS = 10  # stage 1 yields the cores to the receiving thread (worker.init)
WORKER_EXIT_SECONDS = 2.0  # for a terminated worker to exit before it is killed


@dataclass(frozen=True, slots=True)
class _Done:
    entries: list[SpoolEntry]
    future: Future[list[worker.Outcome]]


@dataclass(frozen=True, slots=True)
class _Refused:
    rejection: store.Rejection


_STOP = object()


class Ingest:
    """Receive arrivals, run stage 1 on them in a process pool, store them crash-safely."""

    def __init__(self, settings: NodeSettings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self._sessions = sessions
        self._keyring = settings.keyring()
        self._config = worker.WorkerConfig(
            profile=settings.profile,
            project=settings.site_project,
            secret=settings.secret().value,
            store_dir=settings.store_dir,
            parent_pid=os.getpid(),
            niceness=WORKER_NICENESS,
        )
        self._spool = Spool(settings.spool_dir)
        self._workers = settings.workers
        self._queue: queue.Queue[SpoolEntry] = queue.Queue(maxsize=QUEUE_LIMIT)
        self._results: queue.Queue[_Done | _Refused | object] = queue.Queue()
        self._backlog: deque[SpoolEntry] = deque()  # recovered at start, or after a crash
        self._suspects: deque[SpoolEntry] = deque()  # in flight when a worker died
        self._delayed: list[tuple[float, int, SpoolEntry]] = []  # (due, tie, entry)
        self._tie = itertools.count()
        self._crashes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending = 0  # spool entries not yet finished (queued or in flight)
        self._pending_jobs: Counter[int] = Counter()  # the same, of each selection job
        self._in_flight = 0  # arrivals handed to the pool and not yet written
        self._tasks = 0  # tasks in the pool, not yet finished
        self._task_limit = TASKS_PER_WORKER * self._workers
        self._counts: Counter[str] = Counter()
        self._last_arrival = 0.0  # time.monotonic() of the last arrival
        self._state = "new"
        self._stopping = threading.Event()
        self._executor: ProcessPoolExecutor | None = None
        self._threads: list[threading.Thread] = []

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Tidy what a crash may have left, start the workers, re-process the spool."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError("an Ingest starts once")
            self._state = "starting"
        worker.build_engine(self._config)  # a bad profile or secret fails here, not in a worker
        recovered = self._recover()
        self._executor = self._new_executor()
        # Every worker starts now (the pool would start the second one only when the first is
        # busy, in the middle of a push), or this raises.
        pings = [self._executor.submit(worker.ping, 0.02) for _ in range(self._workers)]
        for ping in pings:
            ping.result()
        with self._lock:
            self._backlog.extend(recovered)
            self._pending += len(recovered)
            self._pending_jobs.update(e.job_id for e in recovered if e.job_id is not None)
            self._state = "running"
        self._threads = [
            threading.Thread(target=self._dispatch, name="ingest-dispatcher", daemon=True),
            threading.Thread(target=self._write, name="ingest-writer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        logger.info(
            "ingest started: %d worker(s), %d arrival(s) recovered from the spool",
            self._workers,
            len(recovered),
        )

    def stop(self) -> None:
        """Stop accepting, finish the arrivals in the pool, stop the workers.

        Arrivals still waiting in the spool stay there for the next start.
        """
        with self._lock:
            if self._state not in ("running", "failed"):  # failed: still stop the workers
                self._state = "stopped"
                return
            self._state = "stopping"
        self._stopping.set()
        deadline = time.monotonic() + STOP_TIMEOUT
        self._threads[0].join(timeout=STOP_TIMEOUT)
        with self._changed:
            while self._in_flight and time.monotonic() < deadline:
                self._changed.wait(timeout=0.1)
            stuck = self._in_flight
        self._results.put(_STOP)
        self._threads[1].join(timeout=max(1.0, deadline - time.monotonic()))
        if self._executor is not None:
            self._stop_pool(self._executor)
        self._spool.close()
        with self._lock:
            self._state = "stopped"
            left = self._pending
        if stuck:
            logger.warning(
                "ingest: %d arrival(s) were still in stage 1 after %.0f s; their workers were "
                "terminated",
                stuck,
                STOP_TIMEOUT,
            )
        logger.info("ingest stopped; %d arrival(s) left in the spool for the next start", left)

    def _stop_pool(self, executor: ProcessPoolExecutor) -> None:
        """Shut the pool down without waiting on a worker that does not finish: what it
        holds stays in the spool."""
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + WORKER_EXIT_SECONDS
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        stragglers = [p for p in processes if p.is_alive()]
        for process in stragglers:
            process.terminate()
        for process in stragglers:
            process.join(timeout=WORKER_EXIT_SECONDS)
            if process.is_alive():
                process.kill()
                process.join(timeout=WORKER_EXIT_SECONDS)
        if stragglers:
            _remove_dead_workers_files(self._config.staging_dir)

    def _recover(self) -> list[SpoolEntry]:
        partials = self._spool.prepare()
        staging = self._config.staging_dir
        staging.mkdir(parents=True, exist_ok=True)
        for leftover in os.scandir(staging):
            Path(leftover.path).unlink(missing_ok=True)
            partials += 1
        with transaction(self._sessions) as session:
            known = store.subject_keys(session=session)
            orphans = (
                store.orphan_subject_folders(session=session, store_dir=self.settings.store_dir)
                if known  # an empty database next to a full store is a mistake, not a crash
                else []
            )
        store.remove_folders(orphans)
        if partials or orphans:
            logger.warning(
                "ingest: removed %d temporary file(s) and %d patient folder(s) without rows "
                "left by an interrupted run",
                partials,
                len(orphans),
            )
        return self._spool.pending()

    def _new_executor(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["node.ingest.worker"])
        return ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=context,
            initializer=worker.init,
            initargs=(self._config,),
        )

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (for operators and crash tests)."""
        executor = self._executor
        processes = getattr(executor, "_processes", None) or {}
        return sorted(int(pid) for pid in processes)

    # -- arrivals ----------------------------------------------------------------------------

    def accept(self, encoded: bytes, *, source: str, job_id: int | None = None) -> None:
        """Make an arrived instance durable (spool file + fsync) and queue it; return only
        once it is safe. ``encoded`` is a complete DICOM file (preamble + file meta), as
        pynetdicom's ``event.encoded_dataset()`` gives.

        Raises InstanceUnreadable (corrupt or truncated: recorded as rejected),
        SpoolUnavailable (nothing kept: the disk is full, say) or IngestStopped.
        """
        if self._state != "running":
            raise IngestStopped("the ingest is not running; send again later")
        try:
            validate.check(encoded)
        except InstanceUnreadable as exc:
            with self._lock:
                self._pending += 1  # until its rejection is written
                if job_id is not None:
                    self._pending_jobs[job_id] += 1
            self._results.put(
                _Refused(store.Rejection(exc.code, exc.reason, source, job_id=job_id))
            )
            raise
        try:
            entry = self._spool.write(encoded, source=source, job_id=job_id)
        except SpoolUnavailable as exc:
            logger.error("ingest: %s", exc)
            raise
        with self._lock:
            self._pending += 1
            if job_id is not None:
                self._pending_jobs[job_id] += 1
            self._counts["received"] += 1
            self._last_arrival = time.monotonic()
        while not self._stopping.is_set():
            try:
                self._queue.put(entry, timeout=0.2)
                return
            except queue.Full:
                continue  # the workers are behind: wait, so the sender slows down
        # Stopping: the entry is durable and will be processed at the next start.

    def drain(self, timeout: float = 60.0, *, job_id: int | None = None) -> None:
        """Wait until every accepted arrival is stored or rejected — or, with ``job_id``,
        every arrival of that job, whatever else keeps the node busy."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending_jobs[job_id] if job_id is not None else self._pending:
                if self._state not in ("running", "starting"):
                    raise IngestStopped(
                        f"the ingest is not running; {self._pending} arrival(s) wait in the spool"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{self._pending} arrival(s) still waiting after {timeout:.0f} s"
                    )
                self._changed.wait(timeout=min(left, 0.5))

    def counts(self) -> dict[str, int]:
        """Since start: queued now, stored, duplicates, replaced, rejected, retried."""
        with self._lock:
            return {
                "queued": self._pending,
                "stored": self._counts["stored"],
                "duplicates": self._counts["duplicates"],
                "replaced": self._counts["replaced"],
                "rejected": self._counts["rejected"],
                "retried": self._counts["retried"],
            }

    # -- dispatcher --------------------------------------------------------------------------

    def _dispatch(self) -> None:
        try:
            while not self._stopping.is_set():
                suspect = self._take_suspect()
                if suspect is not None:
                    self._isolate(suspect)
                    continue
                if not self._reserve_task():
                    break  # stopping: what waits stays in the spool
                batch = self._next_batch()
                if batch:
                    self._submit(batch)
                else:
                    self._release_task()
        except Exception as exc:
            # Refuse new arrivals (the sender gets "out of resources" and keeps the instance)
            # rather than accept ones nothing will ever process.
            logger.error(
                "ingest: the dispatcher stopped (%s); arrivals are refused", type(exc).__name__
            )
            with self._lock:
                self._state = "failed"
            raise

    def _take_suspect(self) -> SpoolEntry | None:
        with self._lock:
            return self._suspects.popleft() if self._suspects else None

    def _next_entry(self) -> SpoolEntry | None:
        with self._lock:
            if self._backlog:
                return self._backlog.popleft()
            if self._delayed and self._delayed[0][0] <= time.monotonic():
                return heapq.heappop(self._delayed)[2]
            wait = 0.1
            if self._delayed:
                wait = max(0.0, min(wait, self._delayed[0][0] - time.monotonic()))
        try:
            return self._queue.get(timeout=wait)
        except queue.Empty:
            return None

    def _reserve_task(self) -> bool:
        """Wait for room in the pool: while every worker is busy, arrivals gather into the
        next task instead of queueing one by one in the pool. (And for the writer, if it is
        far behind: what the workers did waits for it in memory.)"""
        with self._changed:
            while self._tasks >= self._task_limit or self._in_flight >= IN_FLIGHT_LIMIT:
                if self._stopping.is_set():
                    return False
                self._changed.wait(timeout=0.1)
            self._tasks += 1
            return True

    def _release_task(self) -> None:
        with self._changed:
            self._tasks -= 1
            self._changed.notify_all()

    def _next_batch(self) -> list[SpoolEntry]:
        """The next arrival (waiting a moment for one), and those that wait behind it."""
        first = self._next_entry()
        if first is None:
            return []
        batch = [first]
        with self._lock:
            while len(batch) < TASK_LIMIT and self._backlog:
                batch.append(self._backlog.popleft())
        while len(batch) < TASK_LIMIT:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            self._in_flight += len(batch)
        return batch

    def _submit(self, batch: list[SpoolEntry]) -> Future[list[worker.Outcome]]:
        for _ in range(3):
            executor = self._executor
            assert executor is not None
            try:
                future = executor.submit(worker.process_batch, batch)
            except (BrokenProcessPool, RuntimeError):
                self._replace_executor(executor)
                continue
            future.add_done_callback(lambda f: self._finished_task(batch, f))
            return future
        raise RuntimeError("the ingest's process pool cannot be started")

    def _finished_task(self, batch: list[SpoolEntry], future: Future[list[worker.Outcome]]) -> None:
        """A worker is free again (its outcomes go to the writer): the next task can go, before
        the writer has committed these."""
        with self._changed:
            self._tasks -= 1
            self._changed.notify_all()
        self._results.put(_Done(batch, future))

    def _replace_executor(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is not broken:
                return
            logger.warning("ingest: a worker process died; starting a new pool")
            self._executor = self._new_executor()
        broken.shutdown(wait=False, cancel_futures=True)
        _remove_dead_workers_files(self._config.staging_dir)

    def _isolate(self, entry: SpoolEntry) -> None:
        """Run an arrival that was in the pool when a worker died, alone, to tell whether it
        is what kills workers."""
        with self._changed:
            while self._in_flight and not self._stopping.is_set():
                self._changed.wait(timeout=0.1)
            if self._stopping.is_set():
                self._suspects.appendleft(entry)  # it stays in the spool
                return
            self._in_flight += 1
            self._tasks += 1
        future = self._submit([entry])
        while not self._stopping.is_set():  # the writer gets the outcome through the callback
            with contextlib.suppress(Exception):
                future.exception(timeout=0.1)
            if future.done():
                break
        with self._changed:  # and wait for the writer, which may find it a suspect again
            while self._in_flight and not self._stopping.is_set():
                self._changed.wait(timeout=0.1)

    # -- writer ------------------------------------------------------------------------------

    def _write(self) -> None:
        while True:
            item = self._results.get()
            if item is _STOP:
                return
            batch = [item]
            held = _arrivals(item)
            deadline = time.monotonic() + BATCH_WAIT
            while len(batch) < BATCH_LIMIT:
                left = deadline - time.monotonic()
                if left <= 0 or (self._results.empty() and self._quiet(held)):
                    break  # nothing more is coming soon: no reason to hold these back
                try:
                    more = self._results.get(timeout=min(left, _BATCH_POLL))
                except queue.Empty:
                    continue
                if more is _STOP:
                    self._results.put(_STOP)
                    break
                batch.append(more)
                held += _arrivals(more)
            try:
                self._handle(batch)
            except Exception:  # never let the writer die: what is not written stays spooled
                logger.exception("ingest: writing a batch failed")

    def _quiet(self, held: int) -> bool:
        """Nothing in the pool (the writer ``held`` the arrivals handed to it), nothing
        waiting for it, and no arrival a moment ago (a sender in the middle of a push sends
        the next one within milliseconds).

        Arrivals, not tasks: the dispatcher holds a task slot while it waits for the next
        arrival, so an idle pool always has a task; counted, the last batch of every push
        waited the whole ``BATCH_WAIT``."""
        with self._lock:
            if self._in_flight > held or self._backlog or not self._queue.empty():
                return False
            return time.monotonic() - self._last_arrival > _QUIET

    def _handle(self, batch: list[_Done | _Refused | object]) -> None:
        stored: list[tuple[SpoolEntry, store.InstanceRecord]] = []
        rejected: list[tuple[SpoolEntry | None, store.Rejection]] = []
        vanished: list[SpoolEntry] = []
        released = 0
        for item in batch:
            if isinstance(item, _Refused):
                rejected.append((None, item.rejection))
                continue
            assert isinstance(item, _Done)
            released += len(item.entries)
            for entry, outcome in self._outcomes(item):
                if isinstance(outcome, worker.Stored):
                    stored.append((entry, outcome.record))
                elif isinstance(outcome, worker.Rejected):
                    rejected.append((entry, outcome.rejection))
                elif isinstance(outcome, worker.Vanished):
                    logger.warning("ingest: a spool entry vanished before stage 1 ran")
                    vanished.append(entry)
        try:
            if stored or rejected:
                self._commit(stored, rejected)
            if vanished:
                self._finished(vanished, Counter())
        finally:
            # Always give the slots back: a failed commit leaves its entries in the spool
            # (they are done again at the next start), but must not wedge the dispatcher.
            with self._changed:
                self._in_flight -= released
                self._changed.notify_all()

    def _outcomes(self, item: _Done) -> list[tuple[SpoolEntry, worker.Outcome | None]]:
        """The worker's outcome of each arrival of a task; None when the arrival goes back
        for another attempt."""
        try:
            outcomes = item.future.result()
        except BrokenProcessPool:
            return [(entry, self._crashed(entry)) for entry in item.entries]
        except Exception as exc:  # the task itself failed outside stage 1 (a pickling error…)
            return [(entry, self._failed(entry, exc)) for entry in item.entries]
        settled: list[tuple[SpoolEntry, worker.Outcome | None]] = []
        for entry, outcome in zip(item.entries, outcomes, strict=True):
            if isinstance(outcome, worker.Retry):
                self._later(entry, outcome.reason)
                settled.append((entry, None))
                continue
            self._crashes.pop(entry.name, None)
            settled.append((entry, outcome))
        return settled

    def _crashed(self, entry: SpoolEntry) -> worker.Outcome | None:
        """A worker died holding ``entry`` (perhaps because of another arrival of its task):
        it is tried again alone."""
        self._crashes[entry.name] += 1
        if self._crashes[entry.name] > CRASH_LIMIT:
            return self._given_up(entry, "worker-crashed", "stage 1 kept killing its worker")
        with self._lock:
            self._suspects.append(entry)
        return None

    def _failed(self, entry: SpoolEntry, exc: Exception) -> worker.Outcome | None:
        self._crashes[entry.name] += 1
        if self._crashes[entry.name] > CRASH_LIMIT:
            return self._given_up(entry, "failed", f"stage 1 failed ({type(exc).__name__})")
        self._later(entry, f"the worker failed ({type(exc).__name__})")
        return None

    def _given_up(self, entry: SpoolEntry, code: str, reason: str) -> worker.Rejected:
        self._crashes.pop(entry.name, None)
        logger.error("ingest: an arrival is rejected: %s", reason)
        return worker.Rejected(store.Rejection(code, reason, entry.source, job_id=entry.job_id))

    def _later(self, entry: SpoolEntry, reason: str) -> None:
        logger.warning("ingest: an arrival will be tried again in %.0f s: %s", RETRY_DELAY, reason)
        with self._lock:
            self._counts["retried"] += 1
            heapq.heappush(self._delayed, (time.monotonic() + RETRY_DELAY, next(self._tie), entry))

    def _commit(
        self,
        stored: list[tuple[SpoolEntry, store.InstanceRecord]],
        rejected: list[tuple[SpoolEntry | None, store.Rejection]],
    ) -> None:
        try:  # the files, and their renames into the store, are durable before their rows
            if stored:
                worker.flush_store(
                    self.settings.store_dir, [self.settings.data_dir / r.path for _, r in stored]
                )
        except OSError as exc:
            for entry, _ in stored:
                self._later(entry, f"cannot flush the store ({exc.strerror or type(exc).__name__})")
            stored = []
        try:
            with transaction(self._sessions) as session:
                results = store.store_batch(
                    session=session, keyring=self._keyring, records=[r for _, r in stored]
                )
                store.record_rejections(session=session, rejections=[r for _, r in rejected])
        except Exception as exc:
            logger.warning(
                "ingest: writing %d row(s) at once failed (%s); writing them one by one",
                len(stored) + len(rejected),
                type(exc).__name__,
            )
            self._commit_one_by_one(stored, rejected)
            return
        tally: Counter[str] = Counter({"rejected": len(rejected)})
        for result in results:
            tally[_TALLY[result.status]] += 1
            if result.obsolete:
                store.remove_files(self.settings.data_dir, result.obsolete)
        entries = [e for e, _ in stored] + [e for e, _ in rejected if e is not None]
        self._finished(entries, tally, refused=[r.job_id for e, r in rejected if e is None])

    def _commit_one_by_one(
        self,
        stored: list[tuple[SpoolEntry, store.InstanceRecord]],
        rejected: list[tuple[SpoolEntry | None, store.Rejection]],
    ) -> None:
        keyring = self._keyring
        for entry, record in stored:

            def write_record(session: Session, r: store.InstanceRecord = record) -> object:
                return store.store_batch(session=session, keyring=keyring, records=[r])

            self._commit_single(
                entry, write_record, source=entry.source, job_id=entry.job_id, written=record.path
            )
        for maybe_entry, rejection in rejected:

            def write_rejection(session: Session, r: store.Rejection = rejection) -> object:
                return store.record_rejections(session=session, rejections=[r])

            self._commit_single(
                maybe_entry, write_rejection, source=rejection.source, job_id=rejection.job_id
            )

    def _commit_single(
        self,
        entry: SpoolEntry | None,
        write: Callable[[Session], object],
        *,
        source: str,
        job_id: int | None,
        written: str | None = None,
    ) -> None:
        tally: Counter[str] = Counter()
        try:
            with transaction(self._sessions) as session:
                outcome = write(session)
        except CorrespondenceError as exc:
            # The table maps this hospital identifier to another pseudonym: the keys or the
            # secret changed. Storing would break the table; the arrival is rejected.
            logger.error("ingest: an arrival conflicts with the correspondence table")
            with transaction(self._sessions) as session:
                store.record_rejections(
                    session=session,
                    rejections=[store.Rejection("store-conflict", str(exc), source, job_id=job_id)],
                )
                unreferenced = written is not None and not store.path_in_use(
                    session=session, path=written
                )
            if unreferenced and written is not None:
                store.remove_files(self.settings.data_dir, [written])
            tally["rejected"] += 1
        except Exception as exc:
            if entry is not None:
                self._later(entry, f"the database refused the rows ({type(exc).__name__})")
            else:
                logger.warning("ingest: a rejection could not be recorded (%s)", type(exc).__name__)
                self._finished([], Counter(), refused=[job_id])
            return
        else:
            if isinstance(outcome, list):
                for result in outcome:
                    tally[_TALLY[result.status]] += 1
                    if result.obsolete:
                        store.remove_files(self.settings.data_dir, result.obsolete)
            else:
                tally["rejected"] += 1
        self._finished(
            [entry] if entry is not None else [], tally, refused=[] if entry else [job_id]
        )

    def _finished(
        self,
        entries: list[SpoolEntry],
        tally: Counter[str],
        refused: Sequence[int | None] = (),
    ) -> None:
        """The outcome of these entries (and of arrivals never spooled, by the job they came
        for) is committed: drop them from the spool."""
        for entry in entries:
            self._spool.remove(entry)
        with self._changed:
            self._counts.update(tally)
            self._pending -= len(entries) + len(refused)
            for job_id in itertools.chain((e.job_id for e in entries), refused):
                if job_id is not None:
                    self._pending_jobs[job_id] -= 1
            self._changed.notify_all()


def _arrivals(item: _Done | _Refused | object) -> int:
    """How many arrivals handed to the pool a writer's item settles."""
    return len(item.entries) if isinstance(item, _Done) else 0


def _remove_dead_workers_files(staging: Path) -> None:
    """Temporary files of workers that died (their names start with the worker's pid)."""
    for leftover in os.scandir(staging):
        pid = leftover.name.split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            Path(leftover.path).unlink(missing_ok=True)
        except PermissionError:
            continue


_TALLY = {
    store.StoreStatus.STORED: "stored",
    store.StoreStatus.DUPLICATE: "duplicates",
    store.StoreStatus.REPLACED: "replaced",
}
