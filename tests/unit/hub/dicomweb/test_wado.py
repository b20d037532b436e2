"""WADO-RS: a workspace's studies, series and instances as the released files, their
metadata without bulk data, and the bulk data the metadata points to."""

from __future__ import annotations

import io
import json

import pydicom
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless
from sqlalchemy import select

from hub.audit import AuditRecord
from hub.curation import service as curation
from hub.deps import Runtime
from hub.dicomweb import multipart
from hub.dicomweb.service import StoredInstance
from hub.storage.service import LocalStorage
from tests.unit.hub.conftest import PROJECT
from tests.unit.hub.dicomweb.conftest import (
    ROOT,
    Workspace,
    encode,
    get,
    multipart_parts,
    released_ct,
)

DICOM_PARTS = 'multipart/related; type="application/dicom"'


def test_a_study_is_retrieved_as_its_released_files_one_part_each(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    datasets = [released_ct("BV-0001", 1, series=s, instance=i) for s in (1, 2) for i in (1, 2)]
    workspace.add(*datasets)

    response = get(client, "/studies/2.25.1", researcher, accept=DICOM_PARTS)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(DICOM_PARTS + "; boundary=")
    parts = multipart_parts(response)
    assert [part.body for part in parts] == [encode(ds) for ds in datasets]
    assert {part.content_type for part in parts} == {
        f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    }


def test_a_series_or_an_instance_is_retrieved_alone(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(
        *(released_ct("BV-0001", 1, series=s, instance=i) for s in (1, 2) for i in (1, 2))
    )

    series = multipart_parts(get(client, "/studies/2.25.1/series/2.25.1.2", researcher))
    instance = multipart_parts(
        get(client, "/studies/2.25.1/series/2.25.1.2/instances/2.25.1.2.1", researcher)
    )

    sops = [pydicom.dcmread(io.BytesIO(part.body)).SOPInstanceUID for part in series]
    assert sops == ["2.25.1.2.1", "2.25.1.2.2"]
    assert len(instance) == 1
    assert pydicom.dcmread(io.BytesIO(instance[0].body)).SOPInstanceUID == "2.25.1.2.1"


def test_implicit_vr_files_are_sent_as_explicit_vr_when_asked(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = released_ct("BV-0001", 1)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    workspace.add(ds)

    as_stored = multipart_parts(get(client, "/studies/2.25.1", researcher, accept="*/*"))
    explicit = multipart_parts(
        get(
            client,
            "/studies/2.25.1",
            researcher,
            accept=f"{DICOM_PARTS}; transfer-syntax={ExplicitVRLittleEndian}",
        )
    )

    assert as_stored[0].content_type.endswith(f"transfer-syntax={ImplicitVRLittleEndian}")
    assert explicit[0].content_type.endswith(f"transfer-syntax={ExplicitVRLittleEndian}")
    sent = pydicom.dcmread(io.BytesIO(explicit[0].body))
    assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert sent.PixelData == ds.PixelData


def compressed_study() -> pydicom.Dataset:
    path = get_testdata_file("MR_small_jp2klossless.dcm", download=False)
    assert path is not None
    ds = pydicom.dcmread(path)
    ds.PatientID = ds.PatientName = "BV-0009"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "2.25.9", "2.25.9.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "2.25.9.1.1"
    return ds


def test_compressed_files_are_sent_as_released_and_never_decompressed(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(compressed_study())

    as_stored = get(
        client, "/studies/2.25.9", researcher, accept=f"{DICOM_PARTS}; transfer-syntax=*"
    )
    explicit = get(
        client,
        "/studies/2.25.9",
        researcher,
        accept=f"{DICOM_PARTS}; transfer-syntax={ExplicitVRLittleEndian}",
    )

    (part,) = multipart_parts(as_stored)
    assert part.content_type == f"application/dicom; transfer-syntax={JPEG2000Lossless}"
    assert explicit.status_code == 406
    assert "transfer-syntax=*" in explicit.json()["detail"]


def test_metadata_carries_every_attribute_and_points_to_the_pixel_data(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1, instance=1), released_ct("BV-0001", 1, instance=2))

    response = get(client, "/studies/2.25.1/metadata", researcher)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    first, _second = response.json()
    assert first["00100020"]["Value"] == ["BV-0001"]
    assert first["00280010"]["Value"] == [16]
    assert first["00191002"]["Value"] == [912]  # a private attribute stage 2 kept
    pixels = first["7FE00010"]
    assert "InlineBinary" not in pixels
    assert pixels["BulkDataURI"] == (
        f"http://testserver{ROOT}/studies/2.25.1/series/2.25.1.1/instances/2.25.1.1.1"
        "/bulkdata/7FE00010"
    )


def test_the_bulk_data_uri_of_the_metadata_serves_the_pixel_data(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    ds = released_ct("BV-0001", 1)
    workspace.add(ds)
    (header,) = get(client, "/studies/2.25.1/series/2.25.1.1/metadata", researcher).json()

    response = client.get(
        header["7FE00010"]["BulkDataURI"], headers={"Authorization": f"Bearer {researcher}"}
    )

    assert response.status_code == 200
    (part,) = multipart_parts(response)
    assert part.content_type == "application/octet-stream"
    assert part.body == ds.PixelData


def test_retrieving_a_study_is_audited_with_counts_only(
    client: TestClient, runtime: Runtime, researcher: str, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1, instance=1), released_ct("BV-0001", 1, instance=2))

    assert get(client, "/studies/2.25.1", researcher).status_code == 200

    with runtime.sessions() as session:
        (record,) = session.execute(
            select(AuditRecord).where(AuditRecord.action == "dicomweb.retrieve")
        ).scalars()
    assert record.actor == "user:ada"
    assert json.loads(record.details) == {"level": "study", "instances": 2}
    assert "BV-0001" not in record.subject + record.details


class CountingStorage(LocalStorage):
    def __init__(self, storage: LocalStorage) -> None:
        super().__init__(storage.root)
        self.reads = 0

    def get(self, key: str) -> bytes:
        self.reads += 1
        return super().get(key)


def test_a_retrieve_reads_one_file_at_a_time_as_the_body_is_sent(
    runtime: Runtime, workspace: Workspace
) -> None:
    datasets = [released_ct("BV-0001", 1, instance=i) for i in range(1, 6)]
    workspace.add(*datasets)
    prefix = curation.workspace_prefix(PROJECT, "BV-0001", "2.25.1")
    files = [
        StoredInstance(f"{prefix}/{key}", str(ExplicitVRLittleEndian))
        for key in sorted(k.removeprefix(prefix + "/") for k in workspace.storage.list(prefix))
    ]
    storage = CountingStorage(workspace.storage)

    body = multipart.dicom_parts(storage, files, "*", "b0undary")
    header, first = next(body), next(body)

    assert header.startswith(b"--b0undary\r\nContent-Type: application/dicom")
    assert pydicom.dcmread(io.BytesIO(first)).SOPInstanceUID == "2.25.1.1.1"
    assert storage.reads == 1
    assert sum(1 for _ in body) == 1 + 4 * 3 + 1  # the first part's end, four more, the close
    assert storage.reads == 5
