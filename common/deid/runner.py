"""De-identify files and folders, in one process or a pool, with bounded memory.

Files are discovered lazily in a stable order and handed to workers in small batches, so
memory stays flat whatever the corpus size. Results come back in input order, which makes
the report byte-identical from run to run. Each worker builds its engine once.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.crypto import Pseudonymizer, SiteSecret
from common.deid.engine import Engine
from common.deid.exceptions import InstanceRejected, SourceUnavailable
from common.deid.files import read_instance, write_atomic
from common.deid.profile import load_profile, read_lookup_table
from common.errors import ConfigurationError

logger = logging.getLogger(__name__)

REPORT_NAME = "deid-report.jsonl"
SUMMARY_NAME = "deid-summary.json"
_BATCH_PER_WORKER = 64


@dataclass(frozen=True)
class RunConfig:
    profile: str
    project: str
    secret_file: Path
    lookup: Path | None = None


@dataclass(frozen=True)
class FileOutcome:
    source: str  # the input path relative to the input root (shown to the operator only)
    status: str  # written, rejected or failed
    bytes_in: int
    bytes_out: int = 0
    output: str = ""
    code: str = ""
    reason: str = ""
    report: dict[str, Any] | None = None


@dataclass
class Summary:
    files: int = 0
    written: int = 0
    rejected: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (input path, reason)

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes_in / 1e6 / self.seconds if self.seconds else 0.0

    def add(self, outcome: FileOutcome) -> None:
        self.files += 1
        self.bytes_in += outcome.bytes_in
        self.bytes_out += outcome.bytes_out
        if outcome.status == "written":
            self.written += 1
            return
        if outcome.status == "rejected":
            self.rejected += 1
        else:
            self.failed += 1
        self.reasons[f"{outcome.code}: {outcome.reason}"] += 1
        self.problems.append((outcome.source, outcome.reason))

    def as_dict(self) -> dict[str, Any]:
        """The PHI-free summary written beside the output (no input paths)."""
        return {
            "files": self.files,
            "written": self.written,
            "rejected": self.rejected,
            "failed": self.failed,
            "megabytes_in": round(self.bytes_in / 1e6, 3),
            "megabytes_out": round(self.bytes_out / 1e6, 3),
            "reasons": dict(sorted(self.reasons.items())),
        }


def build_engine(config: RunConfig) -> Engine:
    profile = load_profile(config.profile)
    mapper = Pseudonymizer(
        secret=SiteSecret.from_file(config.secret_file),
        project=config.project,
        subject_key_prefix=profile.subject_key_prefix,
        min_offset_days=profile.min_offset_days,
        max_offset_days=profile.max_offset_days,
    )
    lookup_path = config.lookup or profile.subject_key_lookup
    keys = read_lookup_table(lookup_path) if lookup_path else None
    return Engine(profile, mapper, keys)


def process_file(engine: Engine, source: Path, relative: str, output_root: Path) -> FileOutcome:
    size = _size(source)
    try:
        result = engine.deidentify(read_instance(source))
        write_atomic(output_root / result.relative_path, result.data)
    except InstanceRejected as exc:
        return FileOutcome(relative, "rejected", size, code=exc.code, reason=exc.reason)
    except SourceUnavailable as exc:
        return FileOutcome(relative, "failed", size, code="unreadable", reason=str(exc))
    except Exception as exc:
        # Only the type: a message from deep inside a library might quote a value.
        logger.warning("de-identification failed with %s", type(exc).__name__)
        return FileOutcome(
            relative, "failed", size, code="failed", reason=f"internal error ({type(exc).__name__})"
        )
    return FileOutcome(
        relative,
        "written",
        size,
        len(result.data),
        result.relative_path,
        report=result.report.as_dict(),
    )


def discover(root: Path, *, skip: Path | None = None) -> Iterator[tuple[Path, str]]:
    """Every file under ``root`` (or ``root`` itself), in a stable order, lazily; the folder
    ``skip`` (an output inside the input) is left out as a whole."""
    if root.is_file():
        yield root, root.name
        return
    for directory, subdirs, files in os.walk(root):
        base = Path(directory)
        if skip is not None:
            subdirs[:] = [d for d in subdirs if (base / d).resolve() != skip]
        subdirs.sort()
        for name in sorted(files):
            if name in (REPORT_NAME, SUMMARY_NAME):
                continue  # an earlier run's own report, when its output is this run's input
            path = base / name
            yield path, str(path.relative_to(root))


def count_files(root: Path) -> int:
    return 1 if root.is_file() else sum(len(files) for _, _, files in os.walk(root))


# -- worker pool ---------------------------------------------------------------------------

_engine: Engine | None = None
_output_root: Path | None = None


def _init_worker(config: RunConfig, output_root: Path) -> None:
    global _engine, _output_root  # noqa: PLW0603 - one engine per worker process
    _engine = build_engine(config)
    _output_root = output_root


def _work(task: tuple[str, str]) -> FileOutcome:
    assert _engine is not None and _output_root is not None
    return process_file(_engine, Path(task[0]), task[1], _output_root)


def _batches(items: Iterator[tuple[Path, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    batch: list[tuple[str, str]] = []
    for path, relative in items:
        batch.append((str(path), relative))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run(
    config: RunConfig,
    source: Path,
    output: Path,
    *,
    workers: int = 1,
    on_outcome: Callable[[FileOutcome], None] | None = None,
) -> Summary:
    """De-identify everything under ``source`` into ``output``; write report and summary."""
    engine = build_engine(config)  # validates profile, secret and lookup before any work
    if source.resolve() == output.resolve() or output.resolve() in source.resolve().parents:
        raise ConfigurationError(
            "the input lies inside the output folder: choose an output outside the input"
        )
    output.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    started = time.perf_counter()
    report_path = output / REPORT_NAME
    with report_path.open("w", encoding="utf-8") as report:

        def record(outcome: FileOutcome) -> None:
            summary.add(outcome)
            if outcome.report is not None:
                report.write(
                    json.dumps({"file": outcome.output, **outcome.report}, sort_keys=True) + "\n"
                )
            if on_outcome is not None:
                on_outcome(outcome)

        files = discover(source, skip=output.resolve())
        if workers <= 1:
            for path, relative in files:
                record(process_file(engine, path, relative, output))
        else:
            context = multiprocessing.get_context("fork")
            with context.Pool(workers, _init_worker, (config, output)) as pool:
                for batch in _batches(files, workers * _BATCH_PER_WORKER):
                    for outcome in pool.imap(_work, batch, chunksize=8):
                        record(outcome)
    summary.seconds = time.perf_counter() - started
    write_atomic(output / SUMMARY_NAME, (json.dumps(summary.as_dict(), indent=1) + "\n").encode())
    return summary


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
