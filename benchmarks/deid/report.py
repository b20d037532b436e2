"""The benchmark's figures: one row per tool, the ratios, the targets and their JSON form.

Sizes and rates are in MiB (2**20 bytes), the unit the issue's "~500 MB for 1,000 slices of
512 KiB" is in; the targets are checked in the same unit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TARGET_TIMES_DICOGNITO = 4.0
TARGET_MIB_PER_S_TWO_WORKERS = 150.0
TARGET_PEAK_MIB = 200.0


@dataclass
class Row:
    """One tool's result; rate and memory figures are None when it was not run."""

    tool: str
    status: str
    files_in: int
    input_mib: float
    files_out: int = 0
    seconds: float | None = None
    mib_per_s: float | None = None
    peak_tree_mib: float | None = None
    peak_process_mib: float | None = None
    cpu_seconds: float | None = None
    others_cpu_percent: float | None = None
    x_pydicom: float | None = None
    x_dicognito: float | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    verification: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets for havenet and whether this run met it."""

    name: str
    status: str
    detail: str


def _rate(rows: list[Row], tool: str) -> float | None:
    for row in rows:
        if row.tool == tool and row.status == "ok":
            return row.mib_per_s
    return None


def add_ratios(rows: list[Row]) -> None:
    """Fill in each row's speed relative to the pydicom baseline and to dicognito."""
    baseline, dicognito = _rate(rows, "pydicom"), _rate(rows, "dicognito")
    for row in rows:
        if row.mib_per_s is None:
            continue
        row.x_pydicom = row.mib_per_s / baseline if baseline else None
        row.x_dicognito = row.mib_per_s / dicognito if dicognito else None


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


HEADER = (
    "tool", "files", "out", "MiB", "s", "MiB/s", "peak tree MiB", "max proc MiB",
    "x pydicom", "x dicognito", "others' CPU", "status",
)  # fmt: skip


def _cells(row: Row) -> tuple[str, ...]:
    ran = row.seconds is not None
    return (
        row.tool, str(row.files_in), str(row.files_out) if ran else "-", _fmt(row.input_mib, 0),
        _fmt(row.seconds, 2), _fmt(row.mib_per_s), _fmt(row.peak_tree_mib),
        _fmt(row.peak_process_mib), _fmt(row.x_pydicom, 2, "x"), _fmt(row.x_dicognito, 2, "x"),
        _fmt(row.others_cpu_percent, 0, "%"), row.status,
    )  # fmt: skip


CHECK_HEADER = (
    "tool", "DICOM out", "pixels identical", "no SOP UIDs", "with identifiers",
    "identifiers left (files)",
)  # fmt: skip


def _check_cells(row: Row) -> tuple[str, ...]:
    found = row.verification
    left = ", ".join(f"{k} ({v})" for k, v in found["identifiers_left"].items()) or "none"
    return (
        row.tool, str(found["dicom_files"]), str(found["pixels_identical"]),
        str(found["without_sop_uids"]), str(found["files_with_identifiers"]), left,
    )  # fmt: skip


def _markdown(header: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [header, tuple("-" * w for w in widths), *body]
    return "\n".join(
        "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    )


def table(rows: list[Row]) -> str:
    """The figures as a Markdown table (readable in a terminal, pasteable into the README)."""
    return _markdown(HEADER, [_cells(r) for r in rows])


def checks_table(rows: list[Row]) -> str:
    """What each tool wrote, as a Markdown table; only tools that ran."""
    return _markdown(CHECK_HEADER, [_check_cells(r) for r in rows if r.verification])


def _measured(rows: list[Row], tool: str) -> Row | None:
    return next((r for r in rows if r.tool == tool and r.status == "ok"), None)


def _times_dicognito(rows: list[Row]) -> Target:
    name = f"havenet --workers 1 >= {TARGET_TIMES_DICOGNITO:g}x dicognito"
    one = _measured(rows, "havenet-w1")
    if one is None or one.x_dicognito is None:
        return Target(name, "not measured", "needs havenet-w1 and dicognito rows")
    met = one.x_dicognito >= TARGET_TIMES_DICOGNITO
    return Target(name, "met" if met else "NOT met", f"{one.x_dicognito:.2f}x")


def _two_workers(rows: list[Row]) -> Target:
    name = f"havenet --workers 2 >= {TARGET_MIB_PER_S_TWO_WORKERS:g} MiB/s"
    two = _measured(rows, "havenet-w2")
    if two is None or two.mib_per_s is None:
        return Target(name, "not measured", "needs the havenet-w2 row")
    met = two.mib_per_s >= TARGET_MIB_PER_S_TWO_WORKERS
    return Target(name, "met" if met else "NOT met", f"{two.mib_per_s:.1f} MiB/s")


def _peak(rows: list[Row]) -> Target:
    name = f"havenet peak tree RSS < {TARGET_PEAK_MIB:g} MiB"
    peaks = [
        (r.tool, r.peak_tree_mib)
        for r in rows
        if r.tool.startswith("havenet") and r.status == "ok" and r.peak_tree_mib is not None
    ]
    if not peaks:
        return Target(name, "not measured", "needs a havenet row")
    met = all(peak < TARGET_PEAK_MIB for _, peak in peaks)
    detail = ", ".join(f"{tool} {peak:.1f} MiB" for tool, peak in peaks)
    return Target(name, "met" if met else "NOT met", detail)


def targets(rows: list[Row]) -> list[Target]:
    """The issue's three targets, judged on this run."""
    return [_times_dicognito(rows), _two_workers(rows), _peak(rows)]


def targets_text(found: list[Target]) -> str:
    """The targets as printed lines."""
    return "\n".join(f"  [{t.status}] {t.name}: {t.detail}" for t in found)


def as_json(rows: list[Row], found: list[Target], context: dict[str, Any]) -> dict[str, Any]:
    """Everything printed, plus the per-run details, as one JSON document."""
    return {
        **context,
        "unit": "MiB (2**20 bytes)",
        "rows": [asdict(row) for row in rows],
        "targets": [asdict(target) for target in found],
    }
