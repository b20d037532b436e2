"""Garbage collection of central storage: a rejected study's chunks and an abandoned upload's
go once the grace period has passed; a study in quarantine or accepted keeps every chunk."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import zipfile

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from common.schemas.channel import API_PREFIX
from compose.cli import app
from hub.audit import AuditRecord
from hub.curation import collect as collector
from hub.db import transaction
from hub.deps import Runtime
from hub.storage.service import LocalStorage, chunk_key
from tests.unit.hub.conftest import HUB_SECRET, PROJECT, bearer
from tests.unit.hub.release.conftest import Site, file_request

STRAY = b"a chunk whose manifest never came"
LATER = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)  # the grace period has passed


def two_studies_one_rejected(client: TestClient, researcher: str, curator: str, site: Site) -> None:
    uids = [site.store(1).study_uid, site.store(2).study_uid]
    request = file_request(client, researcher, study_uids=uids)
    site.receive_tasks()
    site.approve(request["id"])
    site.upload()
    first = client.get("/api/v1/curation", headers=bearer(curator)).json()[0]
    rejected = client.post(
        f"/api/v1/curation/{first['id']}/reject",
        json={"reason": "wrong body part"},
        headers=bearer(curator),
    )
    assert rejected.status_code == 200, rejected.text
    sha = hashlib.sha256(STRAY).hexdigest()
    with site.uploader().make_client() as channel:
        stored = channel.post(
            f"{API_PREFIX}/chunks", params={"part": f"{sha}:{len(STRAY)}"}, content=STRAY
        )
    assert stored.json() == {"stored": 1}


def chunk_names(runtime: Runtime) -> set[str]:
    storage = LocalStorage(runtime.settings.storage_root)
    return {key.rsplit("/", 1)[-1] for key in storage.list("chunks")}


def test_a_rejected_studys_chunks_and_an_abandoned_uploads_go_once_old_enough(
    client: TestClient, researcher: str, curator: str, runtime: Runtime, site: Site
) -> None:
    two_studies_one_rejected(client, researcher, curator, site)
    storage = LocalStorage(runtime.settings.storage_root)
    before = chunk_names(runtime)
    with transaction(runtime.sessions) as session:
        kept = collector.referenced_chunks(session=session)
        young = collector.collect(session=session, storage=storage, actor="test")
        dry = collector.collect(
            session=session, storage=storage, actor="test", dry_run=True, now=LATER
        )
    assert (young.chunks, young.files) == (0, 0)
    assert chunk_names(runtime) == before
    free = before - kept
    assert hashlib.sha256(STRAY).hexdigest() in free and len(free) == 2  # and the rejected one
    assert (dry.chunks, dry.dry_run) == (2, True) and chunk_names(runtime) == before
    freed = sum(storage.size(chunk_key(sha)) for sha in free)

    with transaction(runtime.sessions) as session:
        done = collector.collect(session=session, storage=storage, actor="test", now=LATER)
    assert (done.chunks, done.bytes) == (2, freed)
    assert chunk_names(runtime) == kept

    [waiting] = client.get("/api/v1/curation", headers=bearer(curator)).json()
    accepted = client.post(f"/api/v1/curation/{waiting['id']}/accept", headers=bearer(curator))
    assert accepted.status_code == 200
    exported = client.get(
        f"/api/v1/exports/{PROJECT}/studies/{waiting['id']}.zip", headers=bearer(researcher)
    )
    assert exported.status_code == 200
    assert any(
        name.endswith(".dcm") for name in zipfile.ZipFile(io.BytesIO(exported.content)).namelist()
    )
    with transaction(runtime.sessions) as session:
        actions = session.execute(
            select(AuditRecord.action).where(AuditRecord.action == "storage.collect")
        ).scalars()
        assert len(list(actions)) == 3


def test_the_collect_command_reports_what_it_would_delete(
    client: TestClient,
    researcher: str,
    curator: str,
    runtime: Runtime,
    site: Site,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    two_studies_one_rejected(client, researcher, curator, site)
    monkeypatch.setenv("HAVENET_HUB_SECRET", HUB_SECRET)
    monkeypatch.setenv("HAVENET_HUB_DATA_DIR", str(runtime.settings.data_dir))
    result = CliRunner().invoke(
        app, ["hub", "storage", "collect", "--grace-hours", "0", "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    reported = json.loads(result.stdout)
    assert (reported["chunks"], reported["files"], reported["dry_run"]) == (2, 0, True)
    assert reported["bytes"] > len(STRAY)
    assert chunk_names(runtime) >= {hashlib.sha256(STRAY).hexdigest()}
