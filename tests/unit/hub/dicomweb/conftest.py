"""A hub in process whose project workspace holds accepted studies of real DICOM files (in
its central storage, where curation puts them), and a parser of multipart responses."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydicom.dataset import Dataset

from hub.curation import service as curation
from hub.curation.models import ReceivedStudy, StudyState
from hub.db import transaction
from hub.deps import Runtime
from hub.nodes import service as nodes
from hub.release.models import DataRequest
from hub.storage.service import LocalStorage
from hub.users import service as users
from hub.users.models import Role
from tests.conftest import ct_dataset
from tests.unit.hub.conftest import PROJECT, add_user, bearer

ROOT = f"/dicom-web/projects/{PROJECT}"


def released_ct(
    subject_key: str,
    study: int,
    *,
    series: int = 1,
    instance: int = 1,
    study_date: str = "20210310",
    modality: str = "CT",
) -> Dataset:
    """A small CT as stage 2 releases it: a subject key for name and ID, project UIDs."""
    study_uid = f"2.25.{study}"
    ds = ct_dataset(
        patient_id=subject_key,
        patient_name=subject_key,
        study_uid=study_uid,
        series_uid=f"{study_uid}.{series}",
        sop_uid=f"{study_uid}.{series}.{instance}",
        study_date=study_date,
    )
    for keyword in ("PatientBirthDate", "PatientAddress", "OtherPatientIDs", "InstitutionName"):
        delattr(ds, keyword)
    ds.StudyDescription = f"CT HEAD {study}"
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
    return ds


def encode(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass
class Workspace:
    """Puts studies where curation leaves them: files in storage, a received_study row."""

    runtime: Runtime
    storage: LocalStorage
    request_id: int
    node_pk: int

    def add(self, *datasets: Dataset, state: StudyState = StudyState.ACCEPTED) -> int:
        first = datasets[0]
        subject_key, study_uid = str(first.PatientID), str(first.StudyInstanceUID)
        prefix = curation.workspace_prefix(PROJECT, subject_key, study_uid)
        files = []
        for ds in datasets:
            data = encode(ds)
            path = f"{subject_key}/{study_uid}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
            self.storage.put(f"{prefix}/{path}", data)
            files.append({"path": path, "size": len(data), "sop_instance_uid": ds.SOPInstanceUID})
        manifest: dict[str, Any] = {"profile": "anonymize", "files": files, "report": {}}
        digest = hashlib.sha256(repr(files).encode()).hexdigest()
        with transaction(self.runtime.sessions) as session:
            project = users.require_project(session=session, name=PROJECT)
            study = ReceivedStudy(
                project_id=project.id,
                request_id=self.request_id,
                node_pk=self.node_pk,
                study_uid=study_uid,
                subject_key=subject_key,
                manifest=manifest,
                content_sha256=digest,
                signature="unused-here",
                state=state,
            )
            session.add(study)
            session.flush()
            return study.id


def workspace_in(runtime: Runtime) -> Workspace:
    """A workspace for the project: a node and a data request its studies came under."""
    with transaction(runtime.sessions) as session:
        node, _, _ = nodes.create(
            session=session, secret=runtime.secret, name="st-elsewhere", token_hours=1, actor="t"
        )
        project = users.require_project(session=session, name=PROJECT)
        request = DataRequest(project_id=project.id, created_by="ada", profile="anonymize")
        session.add(request)
        session.flush()
        request_id, node_pk = request.id, node.id
    return Workspace(runtime, LocalStorage(runtime.settings.storage_root), request_id, node_pk)


@pytest.fixture
def workspace(runtime: Runtime, researcher: str) -> Workspace:
    return workspace_in(runtime)


@pytest.fixture
def curator(runtime: Runtime) -> str:
    return add_user(runtime, "cora", Role.CURATOR)


def get(client: TestClient, path: str, token: str, accept: str | None = None) -> Response:
    headers = bearer(token)
    if accept is not None:
        headers["Accept"] = accept
    return client.get(f"{ROOT}{path}", headers=headers)


def value(dataset: dict[str, Any], tag: str) -> Any:
    """The first value of an attribute in a DICOM JSON dataset (None when empty)."""
    values = dataset[tag].get("Value")
    return values[0] if values else None


@dataclass(frozen=True)
class Part:
    content_type: str
    body: bytes


def multipart_parts(response: Response) -> list[Part]:
    """The parts of a multipart/related body, read as a client would (RFC 2046)."""
    found = re.search(r"boundary=\"?([^\";]+)\"?", response.headers["content-type"])
    assert found is not None, response.headers["content-type"]
    delimiter = b"--" + found.group(1).encode()
    body = response.content
    assert body.endswith(delimiter + b"--\r\n")
    parts = []
    for chunk in body.split(b"\r\n" + delimiter)[:-1]:
        part = chunk.removeprefix(delimiter).removeprefix(b"\r\n")
        head, _, payload = part.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode("ascii").split("\r\n") if line)
        parts.append(Part(headers["Content-Type"], payload))
    return parts
