"""A viewer-grade DICOMweb client against the hub: Orthanc with Debian's DICOMweb plugin,
the hub (`havenet hub serve`) in its `DicomWeb.Servers` with a researcher's bearer token,
searching a project's workspace (QIDO-RS) and pulling a study from it (WADO-RS). Frames and
rendered images fetched by `dicomweb-client` (PyPI, the Python sibling of the client OHIF
uses), since Orthanc's plugin retrieves whole instances into its store and DCMTK has no
DICOMweb client. And the same searches on PostgreSQL, where wildcards are its regular
expressions."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import JPEG2000Lossless, RLELossless

from hub.db import make_engine, make_sessionmaker, migrate, transaction
from hub.deps import Runtime
from hub.main import create_app
from hub.settings import HubSettings
from hub.users import service as users
from hub.users.models import Role
from tests.integration.conftest import OrthancFactory
from tests.integration.hubs import HUB_SECRET, Hub
from tests.integration.peers import PeerMissing, skip_or_fail
from tests.unit.hub.conftest import PROJECT, add_user
from tests.unit.hub.dicomweb import test_qido as qido
from tests.unit.hub.dicomweb.conftest import Workspace, encode, released_ct, workspace_in
from tests.unit.hub.dicomweb.test_frames import multiframe

pytestmark = pytest.mark.slow

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
SERVER = "havenet"


def dicomweb_plugin() -> Path:
    if not PLUGIN.is_file():
        skip_or_fail(PeerMissing("Orthanc's DICOMweb plugin", "orthanc-dicomweb", [str(PLUGIN)]))
    return PLUGIN


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    server = Hub(tmp_path / "hub")
    yield server
    server.stop()


def seed(hub: Hub, *studies: list[Dataset]) -> str:
    """Accepted studies in the hub's workspace (before it starts); a member's token."""
    settings = HubSettings(data_dir=hub.folder, secret=HUB_SECRET)  # type: ignore[arg-type]
    hub.folder.mkdir(parents=True)
    migrate(settings.database)
    engine = make_engine(settings.database)
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        secret=settings.secret_bytes(),
    )
    try:
        with transaction(runtime.sessions) as session:
            _, token = users.create(
                session=session, secret=runtime.secret, name="ada", role=Role.RESEARCHER, actor="t"
            )
            users.create_project(session=session, name=PROJECT, actor="t")
            users.add_member(session=session, project=PROJECT, user="ada", actor="t")
        workspace: Workspace = workspace_in(runtime)
        for datasets in studies:
            workspace.add(*datasets)
    finally:
        engine.dispose()
    return token


def test_orthanc_searches_and_pulls_a_project_study_from_the_hub(
    hub: Hub, orthanc_factory: OrthancFactory
) -> None:
    wanted = [released_ct("BV-0001", 1, series=s, instance=i) for s in (1, 2) for i in (1, 2)]
    other = [released_ct("BV-0002", 2, study_date="20220202", modality="MR")]
    token = seed(hub, wanted, other)
    hub.start()
    orthanc = orthanc_factory(
        overrides={
            "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "Servers": {
                    SERVER: {
                        "Url": f"{hub.url}/dicom-web/projects/{PROJECT}/",
                        "HttpHeaders": {"Authorization": f"Bearer {token}"},
                    }
                },
            },
        }
    )
    client = orthanc.client

    found = client.post(
        f"/dicom-web/servers/{SERVER}/qido",
        json={"Uri": "/studies", "Arguments": {"StudyDate": "20210101-20211231"}},
    )
    series = client.post(
        f"/dicom-web/servers/{SERVER}/qido", json={"Uri": "/studies/2.25.1/series"}
    )
    metadata = client.post(
        f"/dicom-web/servers/{SERVER}/get", json={"Uri": "/studies/2.25.1/metadata"}
    )
    pulled = client.post(
        f"/dicom-web/servers/{SERVER}/retrieve", json={"Resources": [{"Study": "2.25.1"}]}
    )

    assert found.status_code == 200, found.text
    # Orthanc hands the hub's DICOM JSON on in its own shape: one "Value" string each.
    assert [study["0020000D"]["Value"] for study in found.json()] == ["2.25.1"]
    assert sorted(s["0020000E"]["Value"] for s in series.json()) == ["2.25.1.1", "2.25.1.2"]
    assert metadata.status_code == 200, metadata.text
    assert len(metadata.json()) == 4
    assert all("BulkDataURI" in header["7FE00010"] for header in metadata.json())
    assert pulled.status_code == 200, pulled.text
    assert pulled.json()["ReceivedInstancesCount"] == "4"
    held = {
        hashlib.sha256(client.get(f"/instances/{instance}/file").content).hexdigest()
        for instance in client.get("/instances").json()
    }
    assert held == {hashlib.sha256(encode(ds)).hexdigest() for ds in wanted}


def test_orthanc_without_a_token_is_refused_and_pulls_nothing(
    hub: Hub, orthanc_factory: OrthancFactory
) -> None:
    seed(hub, [released_ct("BV-0001", 1)])
    hub.start()
    orthanc = orthanc_factory(
        overrides={
            "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {
                "Enable": True,
                "Servers": {SERVER: {"Url": f"{hub.url}/dicom-web/projects/{PROJECT}/"}},
            },
        }
    )

    refused = orthanc.client.post(f"/dicom-web/servers/{SERVER}/qido", json={"Uri": "/studies"})

    assert refused.status_code == 401  # Orthanc passes on the hub's refusal
    assert orthanc.client.get("/instances").json() == []


def test_a_dicomweb_client_fetches_frames_and_rendered_images_from_the_hub(hub: Hub) -> None:
    rle = multiframe(syntax=RLELossless)
    jp2 = multiframe(syntax=JPEG2000Lossless, side=32)
    jp2.SOPInstanceUID, jp2.InstanceNumber = "2.25.1.1.2", 2
    token = seed(hub, [rle, jp2])
    hub.start()
    client = DICOMwebClient(
        url=f"{hub.url}/dicom-web/projects/{PROJECT}",
        headers={"Authorization": f"Bearer {token}"},
    )
    uids = ("2.25.1", "2.25.1.1")

    decoded = client.retrieve_instance_frames(
        *uids,
        "2.25.1.1.1",
        [3, 1],
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
    )
    as_rle = client.retrieve_instance_frames(
        *uids, "2.25.1.1.1", [2], media_types=(("image/dicom-rle", str(RLELossless)),)
    )
    as_jp2 = client.retrieve_instance_frames(
        *uids, "2.25.1.1.2", [1, 2], media_types=("image/jp2",)
    )
    jpeg = client.retrieve_instance_rendered(*uids, "2.25.1.1.1", media_types=("image/jpeg",))
    png = client.retrieve_instance_frames_rendered(
        *uids, "2.25.1.1.2", [2], media_types=("image/png",), params={"window": "300,600,linear"}
    )

    native = multiframe().PixelData
    size = len(native) // 3
    assert decoded == [native[2 * size :], native[:size]]
    assert as_rle == list(generate_frames(rle.PixelData, number_of_frames=3))[1:2]
    assert as_jp2 == list(generate_frames(jp2.PixelData, number_of_frames=3))[:2]
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    picture = Image.open(io.BytesIO(png))
    assert (picture.format, picture.size) == ("PNG", (32, 32))
    assert np.asarray(picture).max() > np.asarray(picture).min()


def test_searches_match_alike_on_postgresql(postgres_database_url: str, tmp_path: Path) -> None:
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        database_url=postgres_database_url,
        secret=HUB_SECRET,  # type: ignore[arg-type]
        ontology_at_start=False,
    )
    with TestClient(create_app(settings)) as client:
        runtime: Runtime = client.app.state.hub  # type: ignore[attr-defined]
        researcher = add_user(runtime, "ada", Role.RESEARCHER, PROJECT)
        qido.test_matching_on_patient_id_wildcards_dates_modalities_and_uids(
            client, researcher, workspace_in(runtime)
        )
