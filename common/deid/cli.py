"""`havenet deid`: de-identify files and folders from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from common.crypto import SiteSecret
from common.deid import runner
from common.deid.profile import BUILTIN_PROFILES, load_profile
from common.errors import HavenetError

console = Console(stderr=True)


def deid(
    source: Annotated[Path, typer.Argument(help="A DICOM file or a folder of them.", exists=True)],
    output: Annotated[Path, typer.Argument(help="Folder for the de-identified files.")],
    profile: Annotated[str, typer.Option(help=f"{', '.join(BUILTIN_PROFILES)} or a file.")],
    project: Annotated[str, typer.Option(help="Project name: keys and UIDs differ per project.")],
    secret_file: Annotated[Path, typer.Option(help="File holding the site secret.")],
    lookup: Annotated[
        Path | None, typer.Option(help="CSV: hospital patient ID, subject key.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """De-identify INPUT into OUTPUT; exit status 1 if any file was rejected or failed."""
    source, output = source.resolve(), output.resolve()
    if output == source:
        raise _usage("OUTPUT must differ from INPUT: originals are never overwritten")
    config = runner.RunConfig(
        profile=profile, project=project, secret_file=secret_file, lookup=lookup
    )
    total = runner.count_files(source)
    try:
        with Progress(
            TextColumn("de-identifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
        ) as progress:
            task = progress.add_task("files", total=total)
            summary = runner.run(
                config, source, output, workers=workers, on_outcome=lambda _: progress.advance(task)
            )
    except HavenetError as exc:
        raise _usage(str(exc)) from None
    _print_summary(summary, output)
    if summary.rejected or summary.failed:
        raise typer.Exit(1)


def _print_summary(summary: runner.Summary, output: Path) -> None:
    console.print(
        f"{summary.files} files: [green]{summary.written} written[/], "
        f"{summary.rejected} rejected, {summary.failed} failed — "
        f"{summary.bytes_in / 1e6:.1f} MB in {summary.seconds:.2f} s "
        f"({summary.megabytes_per_second:.1f} MB/s)"
    )
    for path, reason in summary.problems:
        console.print(f"  [yellow]{path}[/]: {reason}", highlight=False, soft_wrap=True)
    console.print(f"report: {output / runner.REPORT_NAME}")


def _usage(message: str) -> typer.Exit:
    console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def new_secret() -> None:
    """Print a new random site secret (store it in a file only the node can read)."""
    typer.echo(SiteSecret.generate())


def check_profile(
    profile: Annotated[str, typer.Argument(help=f"{', '.join(BUILTIN_PROFILES)} or a file.")],
) -> None:
    """Validate a profile file and print its options and overrides."""
    try:
        loaded = load_profile(profile)
    except HavenetError as exc:
        raise _usage(str(exc)) from None
    typer.echo(f"{loaded.name}: valid")
    typer.echo(f"options: {', '.join(sorted(o.value for o in loaded.options)) or 'none'}")
    typer.echo(f"attribute overrides: {len(loaded.overrides)}")
