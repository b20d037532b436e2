"""`havenet demo`: the embedded default on one machine, no containers.

For now: a synthetic multi-patient hospital corpus (with fake identifiers everywhere a
real PACS puts them) is generated, pseudonymized for the node (stage 1) and anonymized
for a project (stage 2), and the summary of each stage is printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from common.crypto import SiteSecret
from common.deid import runner

console = Console(soft_wrap=True)


def demo(
    workdir: Annotated[Path, typer.Option(help="Folder for the demo's files.")] = Path(
        "demo-output"
    ),
    patients: Annotated[int, typer.Option(min=1)] = 6,
    json_summary: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Generate a synthetic hospital and de-identify it in two stages."""
    from compose.synthetic.dicom import generate_corpus  # noqa: PLC0415 - only the demo needs it

    workdir = workdir.resolve()
    hospital, stage1, stage2 = workdir / "hospital", workdir / "stage1", workdir / "stage2"
    secret = workdir / "site-secret"
    workdir.mkdir(parents=True, exist_ok=True)
    if not secret.exists():
        secret.write_text(SiteSecret.generate() + "\n")
        secret.chmod(0o600)
    key = generate_corpus(
        hospital,
        patients=patients,
        studies_per_patient=2,
        series_per_study=3,
        instances_per_series=4,
    )
    console.print(
        f"synthetic hospital: {len(key.files)} instances of {patients} patients in {hospital}"
    )
    results = {}
    for name, profile, project, source, target in (
        ("stage 1 (node, pseudonymize)", "pseudonymize", "site", hospital, stage1),
        ("stage 2 (project, anonymize)", "anonymize", "demo-project", stage1, stage2),
    ):
        summary = runner.run(
            runner.RunConfig(profile=profile, project=project, secret_file=secret),
            source,
            target,
            workers=2,
        )
        results[name] = summary.as_dict()
        console.print(
            f"{name}: {summary.written} written, {summary.rejected} rejected, "
            f"{summary.failed} failed, {summary.megabytes_per_second:.1f} MB/s → "
            f"{target}"
        )
        for reason, count in sorted(summary.reasons.items()):
            console.print(f"    {count} x {reason}")
    if json_summary:
        typer.echo(json.dumps(results, indent=1))
    failed = any(r["failed"] for r in results.values())
    if failed:
        raise typer.Exit(1)
