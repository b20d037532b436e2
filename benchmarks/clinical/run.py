"""Clinical import benchmark: 1,000 Synthea-like patients as FHIR and as OMOP CSV.

Run with the project's interpreter, from anywhere::

    .venv/bin/python benchmarks/clinical/run.py [--patients 1000] [--small 250]

Generates the corpora from the real samples in ``../shared/data`` (see the README), then
runs each measurement in a fresh process of its own, one core, a fresh SQLite node database
each time (the node's defaults: WAL, synchronous=FULL), and prints resources/s, rows/s and
the process's peak RSS. ``--small`` repeats the streamed imports with fewer patients, to show
whether memory grows with the input. Asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "data"
FHIR_SAMPLES = SHARED / "fhir" / "synthea-r4-bundles"
OMOP_ZIP = SHARED / "omop" / "Synthea27Nj_5.4.zip"
SECRET = b"benchmark-site-secret-0123456789abcdef"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NAMESPACE = uuid.UUID("6f0c1a52-2b6e-4d1c-9a3e-5f2b8c7d9e10")
OMOP_TABLES = (
    "person",
    "death",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "measurement",
    "observation",
    "procedure_occurrence",
)


# -- corpora ----------------------------------------------------------------------------------


def _rekeyed(text: str, copy: int) -> str:
    """Every UUID (ids, fullUrls, references, the MR number) replaced, consistently."""
    return UUID.sub(lambda m: str(uuid.uuid5(NAMESPACE, f"{copy}:{m.group(0)}")), text)


def generate_fhir(folder: Path, patients: int) -> None:
    """``bundles/`` (one transaction Bundle per patient) and ``ndjson/`` (Patient.ndjson,
    Resources.ndjson) holding the same resources."""
    samples = [
        p.read_text()
        for p in sorted(FHIR_SAMPLES.glob("*.json"))
        if "Information" not in p.name  # the hospital and practitioner lists
    ]
    (folder / "bundles").mkdir(parents=True)
    (folder / "ndjson").mkdir()
    with (
        (folder / "ndjson" / "Patient.ndjson").open("w") as patients_file,
        (folder / "ndjson" / "Resources.ndjson").open("w") as others_file,
    ):
        for copy in range(patients):
            text = _rekeyed(samples[copy % len(samples)], copy)
            (folder / "bundles" / f"patient-{copy:05d}.json").write_text(text)
            for entry in json.loads(text)["entry"]:
                out = (
                    patients_file if entry["resource"]["resourceType"] == "Patient" else others_file
                )
                out.write(json.dumps(entry["resource"], separators=(",", ":")) + "\n")


def generate_omop(folder: Path, patients: int) -> None:
    """The 28 persons of Synthea27Nj repeated with new person ids, row ids and source
    values until ``patients`` persons are there (the last copy is cut short)."""
    folder.mkdir(parents=True)
    with zipfile.ZipFile(OMOP_ZIP) as archive:
        for table in OMOP_TABLES:
            with archive.open(f"{table.upper()}.csv") as raw:
                rows = list(csv.reader(line.decode("utf-8") for line in raw))
            header, body = rows[0], rows[1:]
            ids = [
                i for i, name in enumerate(header) if name.endswith("_id") and "concept" not in name
            ]
            ids = [
                i for i in ids if header[i] not in ("provider_id", "care_site_id", "location_id")
            ]
            person = header.index("person_id")
            source = header.index("person_source_value") if table == "person" else -1
            with (folder / f"{table}.csv").open("w", newline="") as out:
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow(header)
                for copy in range((patients + 27) // 28):
                    for row in body:
                        number = int(row[person])
                        if copy * 28 + number > patients:
                            continue
                        new = list(row)
                        for i in ids:
                            if new[i]:
                                new[i] = str(int(new[i]) + copy * 10_000_000)
                        if source >= 0:
                            new[source] = str(uuid.uuid5(NAMESPACE, f"{copy}:{row[source]}"))
                        writer.writerow(new)


# -- measurements (each in its own process) ---------------------------------------------------


def _context(database: Path) -> tuple[Any, Any]:
    from node.clinical import service  # noqa: PLC0415 - imported in the measuring process
    from node.store.correspondence import Keyring, new_key, parse_key  # noqa: PLC0415
    from node.store.db import make_engine, make_sessionmaker, migrate  # noqa: PLC0415

    url = f"sqlite:///{database}"
    migrate(url)
    context = service.ImportContext(
        rules=service.build_rules("pseudonymize", "site", SECRET),
        keyring=Keyring(current=parse_key(new_key())),
        actor="benchmark",
    )
    return make_sessionmaker(make_engine(url)), context


def stage_fhir(data: Path, database: Path, layout: str) -> dict[str, Any]:
    from node.clinical import service  # noqa: PLC0415
    from node.store.db import transaction  # noqa: PLC0415

    sessions, context = _context(database)
    files = (
        sorted((data / "bundles").glob("*.json"))
        if layout == "bundles"
        else [data / "ndjson" / "Patient.ndjson", data / "ndjson" / "Resources.ndjson"]
    )
    read = skipped = facts = 0
    start = time.perf_counter()
    for path in files:
        with transaction(sessions) as session:
            result = service.import_fhir_file(session=session, context=context, path=path)
        read += result.records
        skipped += sum(result.skipped.values())
        facts += sum(result.facts.values())
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "records": read, "imported": read - skipped, "facts": facts}


def stage_omop(data: Path, database: Path) -> dict[str, Any]:
    from node.clinical import omop, service  # noqa: PLC0415
    from node.store.db import transaction  # noqa: PLC0415

    sessions, context = _context(database)
    rows = facts = 0
    start = time.perf_counter()
    for table, path in omop.table_files(data):
        with transaction(sessions) as session:
            result = service.import_omop_table(
                session=session, context=context, path=path, table=table
            )
        rows += result.records
        facts += sum(result.facts.values())
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "records": rows, "imported": rows, "facts": facts}


def stage_fhir_parse(data: Path) -> dict[str, Any]:
    """Reference: json.loads + fhir.resources R4B validation of the same resources, no
    pseudonymization, no database."""
    from fhir.resources.R4B import get_fhir_model_class  # noqa: PLC0415

    from common.deid.profile import FHIR_RESOURCE_TYPES  # noqa: PLC0415

    supported = set(FHIR_RESOURCE_TYPES)
    count = 0
    start = time.perf_counter()
    for path in (data / "ndjson" / "Patient.ndjson", data / "ndjson" / "Resources.ndjson"):
        with path.open("rb") as f:
            for line in f:
                item = json.loads(line)
                if item["resourceType"] in supported:
                    get_fhir_model_class(item["resourceType"]).model_validate(item)
                    count += 1
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "records": count, "imported": count, "facts": 0}


def stage_csv_read(data: Path) -> dict[str, Any]:
    """Reference: the stdlib csv.DictReader over the same tables, nothing else."""
    count = 0
    start = time.perf_counter()
    for table in OMOP_TABLES:
        with (data / f"{table}.csv").open(newline="") as f:
            for _ in csv.DictReader(f):
                count += 1
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "records": count, "imported": count, "facts": 0}


def run_stage(stage: str, data: Path, database: Path) -> None:
    if stage == "fhir-bundles":
        result = stage_fhir(data, database, "bundles")
    elif stage == "fhir-ndjson":
        result = stage_fhir(data, database, "ndjson")
    elif stage == "omop":
        result = stage_omop(data, database)
    elif stage == "fhir-parse":
        result = stage_fhir_parse(data)
    else:
        result = stage_csv_read(data)
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(stage: str, data: Path, work: Path) -> dict[str, Any]:
    database = work / f"{stage}-{data.parent.name}.db"
    database.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, __file__, "--stage", stage, "--data", str(data), "--db", str(database)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- report -------------------------------------------------------------------------------------


def _row(label: str, patients: int, unit: str, result: dict[str, Any]) -> str:
    rate = result["imported"] / result["seconds"]
    return (
        f"{label:<44} {patients:>6} {result['imported']:>9,} {unit:<10} "
        f"{result['seconds']:>7.1f} s {rate:>9,.0f} {unit}/s {result['peak_mib']:>7.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--small", type=int, default=250, help="0: skip the memory check")
    parser.add_argument("--work", type=Path, default=None, help="corpora and databases")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        run_stage(args.stage, args.data, args.db)
        return
    with tempfile.TemporaryDirectory(prefix="havenet-clinical-bench-") as temporary:
        work = args.work or Path(temporary)
        sizes = [args.patients] + ([args.small] if args.small else [])
        print(f"generating {', '.join(map(str, sizes))} patients in {work} ...", flush=True)
        for size in sizes:
            generate_fhir(work / f"n{size}" / "fhir", size)
            generate_omop(work / f"n{size}" / "omop", size)
        print(
            f"\n{'measurement (one process, one core)':<44} {'pat.':>6} {'count':>9} {'':<10} "
            f"{'time':>9} {'rate':>15} {'peak RSS':>11}"
        )
        big = work / f"n{args.patients}"
        plan = [
            (
                "havenet import, FHIR Bundles (1 per patient)",
                "fhir-bundles",
                big / "fhir",
                "resources",
            ),
            ("havenet import, FHIR NDJSON (streamed)", "fhir-ndjson", big / "fhir", "resources"),
            ("reference: json + fhir.resources R4B only", "fhir-parse", big / "fhir", "resources"),
            ("havenet import, OMOP CSV (streamed)", "omop", big / "omop", "rows"),
            ("reference: csv.DictReader only", "csv-read", big / "omop", "rows"),
        ]
        if args.small:
            small = work / f"n{args.small}"
            plan += [
                (
                    "havenet import, FHIR NDJSON (streamed)",
                    "fhir-ndjson",
                    small / "fhir",
                    "resources",
                ),
                ("havenet import, OMOP CSV (streamed)", "omop", small / "omop", "rows"),
            ]
        for label, stage, data, unit in plan:
            patients = int(data.parent.name[1:])
            print(_row(label, patients, unit, measure(stage, data, work)), flush=True)
        print(
            "\nresources = FHIR resources of the imported types (Claim, Immunization, ... are "
            "read and skipped, not counted); every import includes R4B validation, stage-1 "
            "pseudonymization, correspondence rows, fact upserts and the audit record."
        )


if __name__ == "__main__":
    main()
