"""Federation benchmark: a federated cohort count over 10 nodes of 10,000 patients each.

Run with the project's interpreter, from anywhere::

    .venv/bin/python benchmarks/federation/run.py [--nodes 10] [--patients 10000] [--rounds 3]

Each node is a real ``havenet node serve`` process with its own SQLite database filled with
synthetic patients (imaging studies and series, diagnoses, drugs, measurements; the ontology
loaded) and enrolled with a real ``havenet hub serve`` on loopback. 20 cohort definitions of
increasing complexity (imaging, clinical, AND/OR/NOT, time windows, a breakdown, a
statistic) are each sent ``--rounds`` times as a ``cohort.count`` task to every node; the
end-to-end time is from creating the task until the hub holds every node's answer. The
node-side time is the evaluation alone (``node.query.service.answer``), in this process, on
one node's database. Prints p50/p95 of both; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sqlalchemy import insert  # noqa: E402

from common.crypto import SiteSecret  # noqa: E402
from common.schemas.cohort import COHORT_COUNT, CohortCountRequest  # noqa: E402
from node.clinical.models import Condition, Drug, Measurement, Person  # noqa: E402
from node.query import service as queries  # noqa: E402
from node.query.disclosure import Policy  # noqa: E402
from node.settings import load  # noqa: E402
from node.store.db import make_engine, make_sessionmaker, migrate, transaction  # noqa: E402
from node.store.models import Patient, Series, Study  # noqa: E402
from ontology import loader  # noqa: E402
from tests.integration.hubs import SITE_SECRET, Hub, NodeProcess  # noqa: E402

PROJECT = "benchmark"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
DIAGNOSES = ["G30.1", "G30.9", "F03.90", "I10", "E11.9", "G35", "C34.90", "J45.909"]
MR_SERIES = ["t1_mprage_sag", "t2_tse_tra", "t2_flair_tra", "ep2d_diff_b1000", "swi_tra",
             "ep2d_perf", "t1_vibe_fs_post"]  # fmt: skip
CT_SERIES = ["CT HEAD 5mm", "CTA HEAD NECK", "CHEST 1.25 LUNG"]

MR = {"kind": "imaging", "modality": ["MR"]}
DEMENTIA = {"kind": "condition", "id": "dementia", "concept": "ICD10CM:G30"}
COHORTS: list[dict[str, Any]] = [
    {"inclusion": MR},
    {"inclusion": {"kind": "imaging", "modality": ["CT"]}},
    {"inclusion": {"kind": "condition", "concept": "ICD10CM:G30"}},
    {"inclusion": {"kind": "patient", "sex": ["F"]}},
    {"inclusion": {"kind": "imaging", "modality": ["MR"], "sequence_type": ["T1w"]}},
    {"inclusion": {"kind": "medication", "concept": "ATC:N06DA02"}},
    {"inclusion": {"kind": "measurement", "concept": "LOINC:4548-4", "value_min": 6.5}},
    {"inclusion": {"all": [MR, {"kind": "condition", "concept": "ICD10CM:I10"}]}},
    {"inclusion": {"any": [{"kind": "condition", "concept": "ICD10CM:G30"},
                           {"kind": "condition", "concept": "ICD10CM:F03"}]}},
    {"inclusion": MR, "exclusion": {"kind": "condition", "concept": "ICD10CM:C34"}},
    {"inclusion": {"all": [{"kind": "imaging", "modality": ["MR"], "sequence_type": ["FLAIR"]},
                           {"kind": "condition", "concept": "ICD10CM:G35"}]}},
    {"inclusion": {"kind": "imaging", "modality": ["MR"], "age_min": 65}},
    {"inclusion": {"all": [{"kind": "patient", "sex": ["M"]},
                           {"kind": "imaging", "modality": ["CT"], "sequence_type": ["CTA"]}]}},
    {"inclusion": {"all": [DEMENTIA, {**MR, "within": {"anchor": "dementia", "max_days": 90}}]}},
    {"inclusion": {"all": [DEMENTIA, {**MR, "within": {"anchor": "dementia", "min_days": -365,
                                                       "max_days": 365}}]}},
    {"inclusion": {"all": [{"kind": "condition", "concept": "ICD10CM:E11"},
                           {"kind": "measurement", "concept": "LOINC:4548-4", "value_min": 7}]},
     "exclusion": {"kind": "medication", "concept": "ATC:A10BA02"}},
    {"inclusion": {"all": [MR, {"not": {"kind": "condition", "concept": "ICD10CM:G30"}}]}},
    {"inclusion": {"all": [DEMENTIA, {"kind": "medication", "concept": "ATC:N06DA02"},
                           {**MR, "within": {"anchor": "dementia", "max_days": 180}}]}},
    {"inclusion": {"all": [{"any": [DEMENTIA, {"kind": "condition", "concept": "ICD10CM:F03"}]},
                           {"kind": "imaging", "modality": ["MR"], "sequence_type": ["T1w"],
                            "age_min": 60, "age_max": 90}]}},
    {"inclusion": {"all": [DEMENTIA, MR]},
     "exclusion": {"any": [{"kind": "condition", "concept": "ICD10CM:C34"},
                           {"kind": "condition", "concept": "ICD10CM:G35"}]}},
]  # fmt: skip
EXTRAS: list[dict[str, Any]] = [{} for _ in COHORTS]
EXTRAS[4] = {"breakdowns": ["sex", "age_band"]}
EXTRAS[16] = {
    "statistic": {
        "measurement": "LOINC:81243-3",
        "split": {"kind": "condition", "concept": "ICD10CM:G30"},
        "bin_edges": [900, 1000, 1100, 1200, 1300, 1400, 1500, 1600],
    }
}


def request(index: int) -> dict[str, Any]:
    return {"project": PROJECT, "cohort": {"version": 1, **COHORTS[index]}, **EXTRAS[index]}


def fill(url: str, seed: int, patients: int) -> None:
    """``patients`` synthetic patients in bulk: studies, series, diagnoses, drugs, labs."""
    rng = random.Random(seed)
    engine = make_engine(url)
    rows: dict[type, list[dict[str, Any]]] = {
        Patient: [], Person: [], Study: [], Series: [], Condition: [], Drug: [], Measurement: []
    }  # fmt: skip
    study_id = series_id = fact = 0
    for n in range(1, patients + 1):
        key = f"SK{seed:02d}{n:08d}"
        sex, born = rng.choice("FM"), rng.randint(1930, 2000)
        rows[Patient].append({"id": n, "subject_key": key, "sex": sex, "birth_year": born})
        rows[Person].append({"subject_key": key, "sex": sex, "birth_year": born})
        diagnosed = rng.sample(DIAGNOSES, rng.choice([0, 1, 1, 2, 3]))
        first = dt.date(2012, 1, 1) + dt.timedelta(days=rng.randint(0, 3650))
        for code in diagnosed:
            fact += 1
            rows[Condition].append({"subject_key": key, "system": ICD10CM, "code": code,
                                    "date": first, "source": f"b:{fact}"})  # fmt: skip
        for _ in range(rng.randint(1, 3)):
            study_id += 1
            when = first + dt.timedelta(days=rng.randint(-400, 400))
            modality = rng.choice(["MR", "MR", "CT"])
            rows[Study].append(
                {
                    "id": study_id,
                    "study_uid": f"2.25.{seed}{study_id}",
                    "patient_id": n,
                    "study_date": when,
                    "modalities": modality,
                }
            )
            names = MR_SERIES if modality == "MR" else CT_SERIES
            for text in rng.sample(names, rng.randint(1, min(4, len(names)))):
                series_id += 1
                rows[Series].append({
                    "id": series_id, "series_uid": f"2.25.{seed}{study_id}.{series_id}",
                    "study_id": study_id, "modality": modality, "body_part": "HEAD",
                    "description": text, "manufacturer": "SIEMENS",
                    "field_strength": 3.0 if modality == "MR" else None, "slice_thickness": 1.0,
                })  # fmt: skip
        for code, low, high in (("4548-4", 4.5, 9.5), ("81243-3", 900.0, 1600.0)):
            fact += 1
            rows[Measurement].append({"subject_key": key, "system": LOINC, "code": code,
                                      "date": first, "value_as_number": rng.uniform(low, high),
                                      "unit": "", "source": f"b:{fact}"})  # fmt: skip
        if "G30.1" in diagnosed or "G30.9" in diagnosed or rng.random() < 0.05:
            fact += 1
            rows[Drug].append({"subject_key": key, "system": ATC, "code": "N06DA02",
                               "date": first, "source": f"b:{fact}"})  # fmt: skip
    with engine.begin() as connection:
        for model, values in rows.items():
            for start in range(0, len(values), 20_000):
                connection.execute(insert(model), values[start : start + 20_000])
    engine.dispose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(q * len(ordered)) - 1)]


def node_side(data_dir: Path, rounds: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of each evaluation. SQLite runs in this process, so
    its CPU time is the work itself; on shared cores the wall clock adds the waiting."""
    settings = load(None, data_dir=data_dir, site_secret=SITE_SECRET)
    engine = make_engine(settings.database)
    sessions = make_sessionmaker(engine)
    policy = Policy.from_settings(settings)
    timings, cpu = [], []
    for round_ in range(rounds + 1):
        for index in range(len(COHORTS)):
            payload = {**request(index), "project": f"node-side-{round_}"}
            started, cpu_started = time.perf_counter(), time.process_time()
            with transaction(sessions) as session:
                queries.answer(
                    CohortCountRequest.model_validate(payload),
                    session=session,
                    policy=policy,
                    secret=SiteSecret(SITE_SECRET.encode()),
                    actor="benchmark",
                )
            if round_:  # the first round labels the series once: a warm-up
                timings.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - cpu_started) * 1000)
    engine.dispose()
    return timings, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the folder (logs, databases)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="havenet-federation-"))
    hub = Hub(folder / "hub").start()
    nodes: list[NodeProcess] = []
    try:
        admin = hub.cli("user", "add", "bench-admin", "--role", "admin")
        researcher = hub.cli("user", "add", "bench-researcher", "--role", "researcher")
        hub.cli("project", "add", PROJECT)
        hub.cli("project", "member", "add", PROJECT, "bench-researcher")
        started = time.perf_counter()
        template = folder / "template.db"
        migrate(f"sqlite:///{template}")
        loader.load(make_engine(f"sqlite:///{template}"))
        for index in range(args.nodes):
            node = NodeProcess(folder / f"hospital-{index:02d}")
            node.data_dir.mkdir(parents=True)
            shutil.copyfile(template, node.data_dir / "node.db")
            fill(f"sqlite:///{node.data_dir / 'node.db'}", index, args.patients)
            created = hub.api(
                "POST", "/api/v1/nodes", admin, json={"name": f"hospital-{index:02d}"}
            )
            node.enroll(hub, created.json()["enrollment_token"])
            nodes.append(node.start())
        print(f"{args.nodes} nodes x {args.patients} patients ready "
              f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
        time.sleep(5)  # every agent is polling
        end_to_end = []
        outcomes: Counter[str] = Counter()
        asked: list[tuple[float, int, int]] = []
        for round_ in range(args.rounds):
            for index in range(len(COHORTS)):
                end_to_end.append(federated(hub, researcher, request(index), outcomes))
                asked.append((end_to_end[-1], round_ + 1, index))
        print(f"node answers: {dict(sorted(outcomes.items()))}")
        slowest = sorted(asked, reverse=True)[:3]
        print(
            "slowest: " + ", ".join(f"{ms:.0f} ms (round {r}, cohort {i})" for ms, r, i in slowest)
        )
        local, local_cpu = node_side(nodes[0].data_dir, args.rounds)
        print("\n| measurement | n | p50 ms | p95 ms | max ms |\n| --- | --- | --- | --- | --- |")
        for name, values in (
            ("end to end, all nodes", end_to_end),
            ("node-side evaluation", local),
            ("node-side evaluation, CPU time", local_cpu),
        ):
            print(f"| {name} | {len(values)} | {statistics.median(values):.0f} "
                  f"| {percentile(values, 0.95):.0f} | {max(values):.0f} |")  # fmt: skip
    finally:
        for node in nodes:
            node.stop()
        hub.stop()
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def federated(hub: Hub, token: str, payload: dict[str, Any], outcomes: Counter[str]) -> float:
    started = time.perf_counter()
    body = {"kind": COHORT_COUNT, "project": PROJECT, "payload": payload}
    created = hub.api("POST", "/api/v1/tasks", token, json=body)
    created.raise_for_status()
    task_id = created.json()["id"]
    while True:
        states = hub.api("GET", f"/api/v1/tasks/{task_id}", token).json()["states"]
        if not {"pending", "deferred"} & set(states):  # every node answered (or is offline)
            elapsed = (time.perf_counter() - started) * 1000
            outcomes.update(states)
            if {"refused", "failed"} & set(states):
                detail = hub.api("GET", f"/api/v1/tasks/{task_id}", token).json()
                outcomes.update(
                    f"{t['state']}: {t['reason']}"
                    for t in detail["targets"]
                    if t["state"] in {"refused", "failed"}
                )
            return elapsed
        time.sleep(0.02)


if __name__ == "__main__":
    main()
