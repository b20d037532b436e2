"""The release path's fixtures (a node in process beside the hub, a curator), and studies it
released into quarantine, for the pages that show them."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hub.curation import service as curation
from hub.db import transaction as hub_transaction
from hub.deps import Runtime
from node.store.db import transaction
from tests.conftest import ct_dataset
from tests.unit.hub.release.conftest import Site, curator, file_request, site
from tests.unit.node.test_qa import store_instance

__all__ = ["curator", "site", "two_studies"]


def store_series(site: Site, study: int, series: int, numbers: list[int]) -> str:
    """Instances of one series, stored in the order given; the stage-1 study UID."""
    uid = ""
    for number in numbers:
        ds = ct_dataset(
            patient_id=f"MRN7781{study}",
            study_uid=f"1.2.826.0.1.3680043.10.5.{study}",
            series_uid=f"1.2.826.0.1.3680043.10.5.{study}.{series}",
            sop_uid=f"1.2.826.0.1.3680043.10.5.{study}.{series}.{number}",
            rows=32,
        )
        ds.SeriesNumber = series
        ds.InstanceNumber = number
        with transaction(site.sessions) as session:
            uid = store_instance(session, site.settings.data_dir, ds).series.study.study_uid
    return uid


def released(client: TestClient, researcher: str, site: Site, uids: list[str]) -> None:
    request = file_request(client, researcher, study_uids=uids)
    site.receive_tasks()
    site.approve(request["id"])
    site.upload()


@pytest.fixture
def two_studies(client: TestClient, runtime: Runtime, researcher: str, site: Site) -> list[int]:
    """Two studies in quarantine: the first with two series (three and one frames)."""
    first = store_series(site, 1, 1, [3, 1, 2])
    store_series(site, 1, 2, [1])
    second = store_series(site, 2, 1, [1])
    released(client, researcher, site, [first, second])
    with hub_transaction(runtime.sessions) as session:
        return [study.id for study in curation.queue(session=session)]
