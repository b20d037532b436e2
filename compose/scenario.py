"""What the demo network lives through, step by step, as its users would do it.

Two synthetic hospitals each get a node. Hospital 1's modality pushes its images to the node
over C-STORE; hospital 2's images sit in its PACS (a local Orthanc, when installed), from
which hospital IT retrieves the MR studies with `havenet node pacs retrieve` (C-FIND, C-MOVE)
— or they are pushed too when Orthanc is not installed. Both import their FHIR bundles
(`havenet node import fhir`), publish their catalogue, answer a researcher's federated query,
and release the cohort a researcher requests once their hospital IT approves it
(`havenet node requests approve`); a curator at the hub rejects one study with a reason and
accepts the rest, and the hub exports the project (`havenet hub export`).

Hospital-side commands run as the programs hospital IT would type; hub-side actions go
through the hub's API with the researcher's, curator's and admin's tokens. What is printed
and summarised is counts, states, addresses and tokens of the demo's own users — never an
identifier of a synthetic patient.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import httpx

from common.schemas.cohort import COHORT_COUNT
from compose.exceptions import DemoError
from compose.network import (
    HubProcess,
    NodeProcess,
    OrthancProcess,
    PacsEntry,
    Service,
    orthanc_program,
    push,
    stop_all,
    wait_until,
)
from compose.synthetic import fhir as synthetic_fhir
from compose.synthetic.dicom import generate_corpus

logger = logging.getLogger(__name__)

PROJECT = "memory-clinic"
STUDIES_PER_PATIENT = 2
SERIES_PER_STUDY = 2
INSTANCES_PER_SERIES = 2
IMAGE_SIZE = 64  # rows and columns: small images keep the run short
# A cohort of MR patients; the statistic compares their MMSE scores with and without
# Alzheimer's disease (exact codes: the demo's nodes do not load the ontology by default).
COHORT: dict[str, Any] = {
    "version": 1,
    "name": "patients with an MR study",
    "inclusion": {"kind": "imaging", "modality": ["MR"]},
}
BREAKDOWNS = ["sex", "age_band"]
STATISTIC: dict[str, Any] = {
    "measurement": synthetic_fhir.MMSE.concept,
    "split": {"kind": "condition", "concept": synthetic_fhir.ALZHEIMER.concept},
    "bin_edges": [0, 10, 20, 25, 31],
}
REJECTION_REASON = "motion artefacts in every series (demo: a curator's rejection)"
# How long each wait may take on two busy cores.
INGEST_SECONDS = 180.0
ANSWER_SECONDS = 90.0
RELEASE_SECONDS = 180.0
DELIVERY_SECONDS = 60.0


class Say(Protocol):
    def __call__(self, text: str, *, step: bool = False) -> None: ...


# -- the summary ---------------------------------------------------------------------------------


@dataclass
class NodeSummary:
    """What one node went through, in counts."""

    api: str
    pages: str
    feed: str = ""
    patients: int = 0
    instances_sent: int = 0
    instances_ingested: int = 0
    instances_rejected: int = 0
    clinical_patients: int = 0
    clinical_records: int = 0
    clinical_facts: int = 0
    catalogue_cells: int = 0
    query_state: str = ""
    query_patients: int | None = None
    query_studies: int | None = None
    uploads: int = 0  # imaging studies and patients' clinical records, one manifest each
    files_held: int = 0
    studies_released: int = 0
    clinical_released: int = 0
    studies_accepted: int = 0
    clinical_accepted: int = 0
    studies_rejected: int = 0
    rejection_delivered: bool = False
    studies_exported: int = 0
    clinical_exported: int = 0


@dataclass
class Summary:
    ok: bool = False
    error: str = ""
    failed_step: str = ""
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    hub: dict[str, str] = field(default_factory=dict)
    project: str = PROJECT
    nodes: dict[str, NodeSummary] = field(default_factory=dict)
    catalogue: dict[str, Any] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    request: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the parts -----------------------------------------------------------------------------------


@dataclass
class Hospital:
    """A synthetic hospital: its images, its FHIR bundles, its node and perhaps its PACS."""

    name: str  # the node's name at the hub
    folder: Path
    seed: int
    node: NodeProcess
    pacs: OrthancProcess | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def archive(self) -> Path:
        return self.folder / "archive"

    @property
    def fhir(self) -> Path:
        return self.folder / "fhir"


@dataclass
class Users:
    admin: str = ""
    researcher: str = ""
    curator: str = ""


def checked(response: httpx.Response, what: str, expected: int = 200) -> Any:
    """The JSON of a hub or node answer, or `DemoError` naming the action and the status."""
    if response.status_code != expected:
        raise DemoError(f"{what}: answered {response.status_code}: {response.text[:300]}")
    return response.json()


def is_imaging(entry: dict[str, Any]) -> bool:
    """A curation entry with DICOM files (else it carries a patient's clinical records)."""
    return int(entry["files"]) > 0


def in_parallel(work: Sequence[Callable[[], None]]) -> None:
    """Run each piece of ``work`` at once (they wait on I/O and other processes); the first
    error is raised. Never start a long-running process from here: it would die with the
    worker thread."""
    with ThreadPoolExecutor(max_workers=len(work)) as pool:
        for future in [pool.submit(piece) for piece in work]:
            future.result()


class Scenario:
    """The network and the story, step by step; ``run`` fills ``summary``."""

    def __init__(
        self,
        workdir: Path,
        *,
        patients: int,
        say: Say,
        use_orthanc: bool = True,
        load_ontology: bool = False,
    ) -> None:
        self.workdir = workdir
        self.patients = patients
        self.say = say
        self.summary = Summary()
        self.users = Users()
        self.started: list[Service] = []  # stopped together, by `stop`
        self._accepted: list[dict[str, Any]] = []
        self.hub = HubProcess.create(workdir / "hub", load_ontology=load_ontology)
        program = orthanc_program() if use_orthanc else None
        self.hospitals = [
            self._hospital(1, None, load_ontology),
            self._hospital(2, program, load_ontology),
        ]

    def _hospital(self, number: int, orthanc: Path | None, load_ontology: bool) -> Hospital:
        folder = self.workdir / f"hospital-{number}"
        pacs = OrthancProcess.create(folder / "pacs", orthanc) if orthanc is not None else None
        entries = (PacsEntry("pacs", pacs.ae_title, pacs.dicom_port),) if pacs else ()
        node = NodeProcess.create(
            f"the node of hospital-{number}",
            folder / "node",
            ae_title=f"HAVENET{number}",
            pacs=entries,
            load_ontology=load_ontology,
        )
        hospital = Hospital(f"hospital-{number}", folder, seed=number, node=node, pacs=pacs)
        self.summary.nodes[hospital.name] = NodeSummary(
            api=f"{node.api_url}/docs", pages=f"{node.api_url}/ui/"
        )
        return hospital

    # -- running -----------------------------------------------------------------------------

    def run(self) -> Summary:
        """Every step in order; on the first failure the summary says which and why."""
        started = time.monotonic()
        steps: list[tuple[str, Callable[[], None]]] = [
            ("hospitals", self.make_hospitals),
            ("hub", self.start_hub),
            ("enrollment", self.enroll_nodes),
            ("feeding", self.feed_nodes),
            ("catalogue", self.publish_catalogues),
            ("query", self.federated_query),
            ("release", self.request_and_release),
            ("curation", self.curate),
            ("export", self.export),
        ]
        try:
            for name, step in steps:
                with self._timed(name):
                    step()
            self.summary.ok = True
        except DemoError as exc:
            self.summary.error = str(exc)
        except httpx.HTTPError as exc:
            self.summary.error = f"HTTP: {type(exc).__name__}: {exc}"
        except Exception as exc:  # a defect: reported in the summary, traced in the log
            logger.exception("the demo failed unexpectedly")
            self.summary.error = f"unexpected {type(exc).__name__}: {exc}"
        self.summary.seconds = round(time.monotonic() - started, 1)
        return self.summary

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except BaseException:
            self.summary.failed_step = name
            raise
        finally:
            self.summary.steps[name] = round(time.monotonic() - started, 1)

    def processes_running(self) -> str:
        """Which process stopped by itself, or "" while every one runs."""
        for service in self.started:
            if service.process is not None and not service.running:
                return f"{service.name} stopped; its log: {service.log_path}"
        return ""

    def stop(self) -> None:
        """Stop every process, the last started first."""
        stop_all(list(reversed(self.started)))
        self.started.clear()

    # -- 1. the hospitals --------------------------------------------------------------------

    def make_hospitals(self) -> None:
        self.say("Synthetic hospitals (fake patients, fake identifiers)", step=True)
        for hospital in self.hospitals:
            key = generate_corpus(
                hospital.archive,
                patients=self.patients,
                studies_per_patient=STUDIES_PER_PATIENT,
                series_per_study=SERIES_PER_STUDY,
                instances_per_series=INSTANCES_PER_SERIES,
                rows=IMAGE_SIZE,
                columns=IMAGE_SIZE,
                seed=hospital.seed,
            )
            hospital.files = [hospital.archive / name for name in key.files]
            clinical = synthetic_fhir.generate_bundles(
                hospital.fhir, key.patients, seed=hospital.seed
            )
            self.summary.nodes[hospital.name].patients = len(key.patients)
            self.say(
                f"{hospital.name}: {len(key.patients)} patients, "
                f"{len(key.patients) * STUDIES_PER_PATIENT} CT/MR studies, "
                f"{len(hospital.files)} images in {hospital.archive}; "
                f"{len(clinical.files)} FHIR bundles ({clinical.resources} resources) "
                f"in {hospital.fhir}"
            )

    # -- 2. the hub (and the PACS, while it starts) -------------------------------------------

    def start_hub(self) -> None:
        pacs = " and hospital-2's PACS" if any(h.pacs for h in self.hospitals) else ""
        self.say(f"The hub{pacs}", step=True)
        self.hub.launch()
        self.started.append(self.hub)
        for hospital in self.hospitals:
            if hospital.pacs is not None:
                self._fill_pacs(hospital, hospital.pacs)
        self.hub.wait_started()
        self.summary.hub = {"api": f"{self.hub.url}/docs", "pages": f"{self.hub.url}/ui/"}
        self.say(f"hub: API {self.hub.url}/docs, pages {self.hub.url}/ui/")
        admin = self.hub.cli("user", "add", "demo-admin", "--role", "admin").strip()
        self.users.admin = admin
        self.users.researcher = self._user("ada", "researcher")
        self.users.curator = self._user("cora", "curator")
        self._admin("POST", "/api/v1/projects", {"name": PROJECT}, "create the project")
        self._admin("POST", f"/api/v1/projects/{PROJECT}/members", {"user": "ada"}, "add ada to it")
        self.say(
            f"users: demo-admin (admin, `havenet hub user add`), ada (researcher), "
            f"cora (curator); project {PROJECT!r} with ada as a member"
        )

    def _fill_pacs(self, hospital: Hospital, pacs: OrthancProcess) -> None:
        node = hospital.node
        self.started.append(pacs)
        pacs.start({"havenet": (node.ae_title, "127.0.0.1", node.dicom_port)})
        result = push(
            hospital.files, port=pacs.dicom_port, called_ae=pacs.ae_title, calling_ae="MODALITY2"
        )
        if result.refused:
            raise DemoError(f"{hospital.name}'s PACS refused {result.refused} images")
        self.say(
            f"{hospital.name}: PACS (Orthanc) at {pacs.url}, DICOM port {pacs.dicom_port}; "
            f"it holds the hospital's {pacs.instances()} images"
        )

    def _user(self, name: str, role: str) -> str:
        created = self._admin("POST", "/api/v1/users", {"name": name, "role": role}, "add " + name)
        token: str = created["token"]
        return token

    def _admin(self, method: str, path: str, body: dict[str, Any], what: str) -> Any:
        answer = self.hub.api(method, path, self.users.admin, json=body)
        return checked(answer, f"the hub, asked to {what}", expected=201)

    # -- 3. enrollment --------------------------------------------------------------------------

    def enroll_nodes(self) -> None:
        self.say(
            "Enrollment: each node generates its key pair and presents a one-time token", step=True
        )
        for hospital in self.hospitals:
            hospital.node.write_config()
        in_parallel([partial(self._enroll, hospital) for hospital in self.hospitals])
        for hospital in self.hospitals:  # from this thread: a node lives as long as it
            hospital.node.launch()
            self.started.append(hospital.node)
        for hospital in self.hospitals:
            hospital.node.wait_started()
            node = hospital.node
            self.say(
                f"{hospital.name}: node running — API {node.api_url}/docs, pages "
                f"{node.api_url}/ui/, DICOM {node.ae_title}@127.0.0.1:{node.dicom_port}"
            )

    def _enroll(self, hospital: Hospital) -> None:
        created = self._admin("POST", "/api/v1/nodes", {"name": hospital.name}, "add a node")
        printed = hospital.node.cli("enroll", self.hub.url, "-", stdin=created["enrollment_token"])
        self.say(f"{hospital.name}: {printed.strip()}")

    # -- 4. images and records ------------------------------------------------------------------

    def feed_nodes(self) -> None:
        self.say(
            "Images and clinical records arrive; stage 1 pseudonymizes them on arrival", step=True
        )
        in_parallel([partial(self._feed, hospital) for hospital in self.hospitals])

    def _feed(self, hospital: Hospital) -> None:
        """The records first: importing them while a storm of images is being stored would
        contend for the node's SQLite database."""
        self._import_clinical(hospital)
        summary = self.summary.nodes[hospital.name]
        node = hospital.node
        if hospital.pacs is not None:
            summary.feed = "C-FIND and C-MOVE from the hospital's PACS (Orthanc), MR studies"
            expected = self._retrieve(hospital)
        else:
            if hospital is not self.hospitals[0]:
                self.say(
                    f"{hospital.name}: no PACS to retrieve from (Orthanc is not installed, or "
                    "--no-orthanc): its images are pushed too"
                )
            result = push(
                hospital.files,
                port=node.dicom_port,
                called_ae=node.ae_title,
                calling_ae=f"MODALITY{hospital.seed}",
            )
            expected = result.sent + result.refused
            summary.feed = f"C-STORE from the hospital's modality ({result.tool})"
            self.say(f"{hospital.name}: {result.sent} images sent over C-STORE ({result.tool})")
        summary.instances_sent = expected
        counts = wait_until(
            lambda: self._ingested(node, expected),
            step=f"{hospital.name}: stage 1 of {expected} images",
            seconds=INGEST_SECONDS,
            log=node.log_path,
        )
        summary.instances_ingested = int(counts["instances"])
        summary.instances_rejected = int(counts["rejected"])
        self.say(
            f"{hospital.name}: {counts['instances']} instances stored (pseudonymized), "
            f"{counts['rejected']} rejected; {counts['patients']} patients, "
            f"{counts['studies']} studies"
        )

    def _retrieve(self, hospital: Hospital) -> int:
        """Hospital IT retrieves the PACS's MR studies (C-FIND, then C-MOVE to the node,
        study by study); the number of instances the job found."""
        arguments = ("pacs", "retrieve", "--modality", "MR", "--date-from", "1990-01-01")
        output = hospital.node.cli(*arguments, "--wait", timeout=INGEST_SECONDS)
        found = re.search(r"queued as job (\d+)", output)
        if found is None:
            raise DemoError(f"{hospital.name}: `havenet node {' '.join(arguments)}` named no job")
        job = checked(hospital.node.api("GET", f"/jobs/{found[1]}"), "the retrieval job")
        self.say(
            f"{hospital.name}: `havenet node {' '.join(arguments)} --wait`: job {job['id']} "
            f"{job['status']}: {job['total']} studies, {job['found']} instances found, "
            f"{job['stored']} stored"
        )
        if job["status"] != "done":
            raise DemoError(f"{hospital.name}: the retrieval job ended {job['status']}")
        return int(job["found"])

    def _import_clinical(self, hospital: Hospital) -> None:
        summary = self.summary.nodes[hospital.name]
        output = hospital.node.cli("import", "fhir", str(hospital.fhir), "--json")
        results = [json.loads(line) for line in output.splitlines() if line.strip()]
        summary.clinical_records = sum(int(r["records"]) for r in results)
        summary.clinical_patients = sum(int(r["patients"]) for r in results)
        summary.clinical_facts = sum(sum(r["facts"].values()) for r in results)
        self.say(
            f"{hospital.name}: `havenet node import fhir`: {len(results)} bundles, "
            f"{summary.clinical_records} records of {summary.clinical_patients} patients, "
            f"{summary.clinical_facts} facts"
        )

    @staticmethod
    def _ingested(node: NodeProcess, expected: int) -> dict[str, int] | None:
        node.check_running()
        status = checked(node.api("GET", "/status"), "the node's status")
        counts: dict[str, int] = status["counts"]
        done = counts["instances"] + counts["rejected"] >= expected
        return counts if done and status["ingest"]["queued"] == 0 else None

    # -- 5. the catalogue --------------------------------------------------------------------------

    def publish_catalogues(self) -> None:
        self.say("Catalogue: each node publishes aggregates, small cells withheld", step=True)
        in_parallel([partial(self._publish, hospital) for hospital in self.hospitals])
        search = self.hub.api(
            "POST", "/api/v1/catalogue/search", self.users.researcher, json={"modality": ["MR"]}
        )
        found = checked(search, "the catalogue search")
        total = found["total"]
        self.summary.catalogue = {
            "search": {"modality": ["MR"]},
            "total": total,
            "nodes": {n["node"]: n for n in found["nodes"]},
        }
        per_node = ", ".join(f"{n['node']} {n['series']}" for n in found["nodes"])
        self.say(
            f"catalogue search for MR at the hub: {total['series']} series ({per_node}); "
            "the federated query counts the patients"
        )

    def _publish(self, hospital: Hospital) -> None:
        output = hospital.node.cli("catalogue", "publish").strip()
        receipt = json.loads(output.removeprefix("published:").strip())
        self.summary.nodes[hospital.name].catalogue_cells = int(receipt["cells"])
        self.say(
            f"{hospital.name}: `havenet node catalogue publish`: {receipt['cells']} cells, "
            f"{receipt['marginals']} marginals"
        )

    # -- 6. the federated query --------------------------------------------------------------------

    def query_command(self) -> str:
        """The same query from the command line (the researcher's token in the environment)."""
        statistic = STATISTIC
        return (
            f"HAVENET_HUB_TOKEN=... havenet hub query {self.workdir / 'cohort.json'} "
            f"--project {PROJECT} --hub {self.hub.url} --breakdown {','.join(BREAKDOWNS)} "
            f"--stat {statistic['measurement']} --by @{self.workdir / 'split.json'} "
            f"--bins {','.join(str(edge) for edge in statistic['bin_edges'])}"
        )

    def query_payload(self) -> dict[str, Any]:
        return {
            "project": PROJECT,
            "cohort": COHORT,
            "breakdowns": BREAKDOWNS,
            "statistic": STATISTIC,
        }

    def federated_query(self) -> None:
        self.say("Federated query: each node counts under its own disclosure control", step=True)
        for name, definition in (("cohort.json", COHORT), ("split.json", STATISTIC["split"])):
            (self.workdir / name).write_text(json.dumps(definition, indent=1) + "\n")
        body = {"kind": COHORT_COUNT, "project": PROJECT, "payload": self.query_payload()}
        created = checked(
            self.hub.api("POST", "/api/v1/tasks", self.users.researcher, json=body),
            "the hub, asked for a cohort count",
            expected=201,
        )
        task_id = int(created["id"])
        result = wait_until(
            lambda: self._query_result(task_id),
            step="the nodes' answers",
            seconds=ANSWER_SECONDS,
            log=self.hub.log_path,
        )
        detail = checked(self.hub.api("GET", f"/api/v1/tasks/{task_id}", self.users.researcher), "")
        for target in detail["targets"]:
            self._node_answer(target)
        self.summary.query = {
            "task_id": task_id,
            "cohort": COHORT["name"],
            "complete": result["complete"],
            "answered": result["answered"],
            "patients": result["patients"],
            "studies": result["studies"],
            "breakdowns": result["breakdowns"],
            "statistic": {"groups": result["groups"], "welch": result["welch"]},
        }
        self._print_query(result)

    def _query_result(self, task_id: int) -> dict[str, Any] | None:
        answer = self.hub.api("GET", f"/api/v1/tasks/{task_id}/cohort", self.users.researcher)
        result: dict[str, Any] = checked(answer, "the query's answers")
        return result if result["complete"] else None

    def _node_answer(self, target: dict[str, Any]) -> None:
        summary = self.summary.nodes.get(target["node"])
        if summary is None:
            return
        summary.query_state = target["state"]
        answer = target.get("result") or {}
        summary.query_patients = (answer.get("patients") or {}).get("value")
        summary.query_studies = (answer.get("studies") or {}).get("value")

    def _print_query(self, result: dict[str, Any]) -> None:
        def figure(value: dict[str, Any]) -> str:
            if value["at_least"]:
                return f"≥{value['value']}" if value["value"] else "withheld"
            return str(value["value"])

        for name, summary in self.summary.nodes.items():
            shown = "withheld" if summary.query_patients is None else summary.query_patients
            self.say(f"{name}: {summary.query_state}, {shown} patients")
        self.say(
            f"network: {figure(result['patients'])} patients with an MR study "
            f"({figure(result['studies'])} studies; counts rounded to 5, under 10 withheld)"
        )
        for dimension, cells in result["breakdowns"].items():
            shown = ", ".join(f"{value or '?'} {figure(count)}" for value, count in cells.items())
            self.say(f"  by {dimension}: {shown or 'every cell withheld'}")
        for group in result["groups"]:
            mean = "—" if group["mean"] is None else f"{group['mean']:.1f}"
            self.say(f"  MMSE, Alzheimer's {group['group']}: n={group['n']}, mean {mean}")
        welch = result["welch"]
        if welch:
            self.say(
                f"  Welch's t-test: difference {welch['mean_difference']:.1f} points, "
                f"t={welch['t']:.2f}, p={welch['p']:.2g}"
            )

    # -- 7. the data request and its release ------------------------------------------------------

    def request_and_release(self) -> None:
        self.say(
            "Data request: the researcher asks for the cohort; hospital IT approves", step=True
        )
        body = {
            "project": PROJECT,
            "selection": {"cohort": COHORT},
            "nodes": [h.name for h in self.hospitals],
        }
        created = checked(
            self.hub.api("POST", "/api/v1/requests", self.users.researcher, json=body),
            "the hub, asked for a data request",
            expected=201,
        )
        request_id = int(created["id"])
        self.summary.request = {"id": request_id, "selection": "cohort"}
        in_parallel([partial(self._approve, hospital, request_id) for hospital in self.hospitals])
        targets = wait_until(
            lambda: self._released(request_id),
            step="the release of the approved studies",
            seconds=RELEASE_SECONDS,
            log=self.hub.log_path,
        )
        self.summary.request["states"] = {t["node"]: t["state"] for t in targets}
        for target in targets:
            summary = self.summary.nodes[target["node"]]
            summary.uploads = int(target["studies"])
            summary.files_held = int(target["held"])
            self.say(
                f"{target['node']}: {target['state']}: {target['studies']} uploads (imaging "
                f"studies and patients' clinical records) verified into the hub's quarantine, "
                f"{target['held']} files held back at the node"
            )

    def _approve(self, hospital: Hospital, request_id: int) -> None:
        node = hospital.node
        wait_until(
            lambda: any(r["id"] == request_id for r in self._node_requests(node)),
            step=f"{hospital.name}: the data request's arrival",
            seconds=DELIVERY_SECONDS,
            log=node.log_path,
        )
        output = node.cli("requests", "approve", str(request_id), timeout=RELEASE_SECONDS)
        first = output.strip().splitlines()[0] if output.strip() else "approved"
        self.say(f"{hospital.name}: `havenet node requests approve {request_id}`: {first}")

    @staticmethod
    def _node_requests(node: NodeProcess) -> list[dict[str, Any]]:
        node.check_running()
        found: list[dict[str, Any]] = checked(node.api("GET", "/api/v1/requests"), "requests")
        return found

    def _released(self, request_id: int) -> list[dict[str, Any]] | None:
        answer = self.hub.api("GET", f"/api/v1/requests/{request_id}", self.users.researcher)
        targets: list[dict[str, Any]] = checked(answer, "the data request")["targets"]
        for target in targets:
            if target["state"] in ("declined", "failed"):
                raise DemoError(
                    f"{target['node']}: the release {target['state']}: {target['reason']}"
                )
        return targets if all(t["state"] == "released" for t in targets) else None

    # -- 8. curation ----------------------------------------------------------------------------

    def curate(self) -> None:
        self.say("Curation: the hub re-checked every upload; a curator decides", step=True)
        expected = sum(s.uploads for s in self.summary.nodes.values())
        queue = wait_until(
            lambda: self._queue(expected),
            step="the curation queue",
            seconds=DELIVERY_SECONDS,
            log=self.hub.log_path,
        )
        for entry in queue:
            summary = self.summary.nodes[entry["node"]]
            if is_imaging(entry):
                summary.studies_released += 1
            else:
                summary.clinical_released += 1
        rejected = self._reject_one(queue)
        for entry in queue:
            if entry is not rejected:
                self._curator("accept", entry, {})
                self._accepted.append(entry)
                summary = self.summary.nodes[entry["node"]]
                if is_imaging(entry):
                    summary.studies_accepted += 1
                else:
                    summary.clinical_accepted += 1
        self.say(
            f"cora accepted {len(self._accepted)} uploads and rejected imaging study "
            f"{rejected['id']} of {rejected['node']}: {REJECTION_REASON!r}"
        )
        self._rejection_delivered(rejected["node"])

    def _reject_one(self, queue: list[dict[str, Any]]) -> dict[str, Any]:
        """An imaging study the hub's PHI scan flagged, or else the first imaging study."""
        imaging = [entry for entry in queue if is_imaging(entry)]
        if not imaging:
            raise DemoError("no imaging study reached the curation queue")
        rejected = next((entry for entry in imaging if entry["findings"]), imaging[0])
        self._curator("reject", rejected, {"reason": REJECTION_REASON})
        self.summary.nodes[rejected["node"]].studies_rejected += 1
        return rejected

    def _rejection_delivered(self, name: str) -> None:
        node = next(h.node for h in self.hospitals if h.name == name)
        wait_until(
            lambda: checked(node.api("GET", "/api/v1/requests/rejections"), "rejections"),
            step=f"{name}: the rejection's arrival",
            seconds=DELIVERY_SECONDS,
            log=node.log_path,
        )
        self.summary.nodes[name].rejection_delivered = True
        self.say(f"{name}: the rejection and its reason reached the node")

    def _queue(self, expected: int) -> list[dict[str, Any]] | None:
        answer = self.hub.api("GET", "/api/v1/curation", self.users.curator)
        queue: list[dict[str, Any]] = checked(answer, "the curation queue")
        return queue if queue and len(queue) >= expected else None

    def _curator(self, decision: str, study: dict[str, Any], body: dict[str, str]) -> None:
        path = f"/api/v1/curation/{study['id']}/{decision}"
        checked(self.hub.api("POST", path, self.users.curator, json=body), f"{decision} a study")

    # -- 9. export ------------------------------------------------------------------------------

    def export(self) -> None:
        self.say("Export: the project's accepted studies, one zip each", step=True)
        folder = self.workdir / "export"
        printed = self.hub.cli("export", PROJECT, str(folder)).strip()
        zips = {path.name for path in folder.glob("*.zip")}
        for entry in self._accepted:
            if not any(name.endswith(f"_{entry['study_uid']}.zip") for name in zips):
                continue
            summary = self.summary.nodes[entry["node"]]
            if is_imaging(entry):
                summary.studies_exported += 1
            else:
                summary.clinical_exported += 1
        self.summary.export = {"folder": str(folder), "studies": len(zips)}
        self.say(f"`havenet hub export {PROJECT}`: {printed}")
        self.say(f"with manifest.json and README.md (the de-identification applied) in {folder}")
