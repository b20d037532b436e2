"""Catalogue benchmark: faceted search over the aggregates of 50 nodes (1,000,000 series).

Run with the project's interpreter, from anywhere::

    .venv/bin/python benchmarks/catalogue/run.py [--nodes 50] [--series 20000] [--rounds 5]

Each node draws ``--series`` series with realistic skew (modality, body part, sequence type,
contrast, manufacturer, field strength, slice thickness, year), counts them into cube cells
and withholds small cells exactly as a node does (``node.catalogue.suppression``); the hub
stores the publications (``hub.catalogue.service.store_publication``). Then 20 typical
searches (with sequence-family expansion and facets) run ``--rounds`` times each through
``hub.catalogue.service.search`` on SQLite and on PostgreSQL 15 (a throwaway cluster, when
installed). Prints p50/p95/max latency per database. Asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402

from common.schemas.catalogue import (  # noqa: E402
    VIEWS,
    CataloguePublication,
    ImagingKey,
    slice_band,
)
from hub import models  # noqa: E402
from hub.catalogue import models as catalogue_models  # noqa: E402, F401
from hub.catalogue import service as catalogue  # noqa: E402
from hub.catalogue.schemas import CatalogueQuery  # noqa: E402
from hub.db import Base, make_engine, make_sessionmaker, transaction  # noqa: E402
from hub.nodes.models import Node  # noqa: E402
from node.catalogue.service import CatalogueDraft, Counts, publish  # noqa: E402
from tests.integration.peers import PeerMissing, Postgres  # noqa: E402

MR_TYPES = ["T1w", "T2w", "FLAIR", "DWI", "ADC", "SWI", "T2starw", "localizer", "MRA", "PD",
            "DSC perfusion", "DCE perfusion", "ASL perfusion", "BOLD", "other"]  # fmt: skip
CT_TYPES = ["CT", "CTA", "CT perfusion", "localizer"]
BODY = ["BRAIN", "HEAD", "CHEST", "ABDOMEN", "PELVIS", "SPINE", "KNEE", "NECK", "HEART"]
MAKERS = ["Siemens", "GE", "Philips", "Canon"]

SEARCHES: list[dict[str, object]] = [
    {},
    {"modality": ["MR"]},
    {"modality": ["MR"], "body_part": ["BRAIN"]},
    {"modality": ["MR"], "body_part": ["BRAIN"], "sequence_type": ["T1w"]},
    {"modality": ["MR"], "body_part": ["BRAIN"], "sequence_type": ["T1w"],
     "slice_thickness_max": 1.5},
    {"modality": ["MR"], "body_part": ["BRAIN"], "sequence_type": ["T1w"], "contrast": True,
     "slice_thickness_max": 1.5},
    {"modality": ["MR"], "sequence_type": ["perfusion"]},
    {"modality": ["MR"], "sequence_type": ["diffusion"], "field_strength": [3.0]},
    {"modality": ["CT"], "body_part": ["CHEST"]},
    {"modality": ["CT"], "sequence_type": ["angiography"], "year_from": 2018},
    {"sequence_type": ["FLAIR"], "year_from": 2015, "year_to": 2020},
    {"manufacturer": ["Siemens"], "field_strength": [3.0]},
    {"modality": ["MR"], "manufacturer": ["GE", "Philips"], "sequence_type": ["T2w", "FLAIR"]},
    {"body_part": ["KNEE"], "modality": ["MR"]},
    {"modality": ["MR"], "body_part": ["BRAIN"], "sequence_type": ["SWI"], "field_strength": [3.0]},
    {"contrast": True},
    {"modality": ["MR"], "body_part": ["SPINE"], "slice_thickness_max": 3.0},
    {"modality": ["CT"], "slice_thickness_max": 1.0, "year_from": 2020},
    {"modality": ["MR"], "body_part": ["BRAIN"], "sequence_type": ["t2"], "year_from": 2019},
    {"modality": ["MR", "CT"], "body_part": ["BRAIN", "HEAD"], "contrast": False},
]  # fmt: skip


def node_publication(rng: random.Random, series: int) -> CataloguePublication:
    """A node's real publication (``node.catalogue.service.publish``) of ``series`` drawn
    series, 2.5 series per patient, 1.25 per study."""
    makers = rng.sample(MAKERS, 2)
    cells: dict[ImagingKey, Counts] = defaultdict(Counts)
    for _ in range(series):
        modality = rng.choices(["MR", "CT", "PT"], [60, 35, 5])[0]
        types = MR_TYPES if modality == "MR" else CT_TYPES if modality == "CT" else ["other"]
        kind = types[min(int(rng.expovariate(0.35)), len(types) - 1)]
        contrast = rng.random() < (0.9 if "perfusion" in kind or kind == "CTA" else 0.2)
        key = ImagingKey(
            modality=modality,
            body_part=BODY[min(int(rng.expovariate(0.5)), len(BODY) - 1)],
            sequence_type=kind,
            contrast=contrast,
            manufacturer=makers[0] if rng.random() < 0.7 else makers[1],
            field_strength=rng.choice([1.5, 3.0]) if modality == "MR" else None,
            slice_band=slice_band(rng.choice([0.9, 1.0, 1.2, 2.0, 3.0, 4.0, 5.0, 6.0])),
            study_year=2010 + min(int(rng.expovariate(0.15)), 15),
        )
        patient = rng.randrange(series * 2 // 5)
        counts = cells[key]
        counts.patients.add(patient)
        counts.studies.add(patient * 2 + rng.randrange(2))
        counts.series += 1
    return publish(CatalogueDraft(cells=dict(cells), marginals={}))


def fill(url: str, publications: list[CataloguePublication]) -> None:
    models.import_all()
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    sessions = make_sessionmaker(engine)
    for index, publication in enumerate(publications):
        with transaction(sessions) as session:
            node = Node(node_id=f"bench-{index:02d}", name=f"hospital-{index:02d}")
            session.add(node)
            session.flush()
            catalogue.store_publication(session=session, node=node, publication=publication)
    if url.startswith("postgresql"):
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    engine.dispose()


def measure(url: str, rounds: int) -> list[float]:
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    timings: list[float] = []
    with transaction(sessions) as session:  # warm the connection and the caches once
        catalogue.search(CatalogueQuery(), session=session)
    for _ in range(rounds):
        for filters in SEARCHES:
            query = CatalogueQuery(**filters)  # type: ignore[arg-type]
            started = time.perf_counter()
            with transaction(sessions) as session:
                catalogue.search(query, session=session)
            timings.append((time.perf_counter() - started) * 1000)
    engine.dispose()
    return timings


def report(name: str, timings: list[float]) -> None:
    ordered = sorted(timings)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    print(
        f"| {name} | {len(ordered)} | {statistics.median(ordered):.1f} | {p95:.1f} "
        f"| {ordered[-1]:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--series", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(11)
    started = time.perf_counter()
    publications = [node_publication(rng, args.series) for _ in range(args.nodes)]
    print(
        f"{args.nodes} nodes x {args.series} series = {args.nodes * args.series} series "
        f"(publications built in {time.perf_counter() - started:.1f} s)"
    )
    for name in VIEWS:
        cells = [c for p in publications for c in p.cells if c.view == name]
        series = sum(c.series for c in cells)
        print(f"view {name}: {len(cells)} published cells holding {series} series")
    print(f"withheld cells: {sum(p.suppressed_cells for p in publications)}")
    print("\n| database | searches | p50 ms | p95 ms | max ms |\n| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'hub.db'}"
        fill(url, publications)
        report("SQLite", measure(url, args.rounds))
    try:
        server = Postgres.start()
    except PeerMissing as missing:
        print(f"| PostgreSQL | skipped: {missing} | | | |")
        return
    try:
        fill(server.url, publications)
        report("PostgreSQL 15", measure(server.url, args.rounds))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
