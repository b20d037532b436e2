"""Stage 2 at the node: deterministic for a project, different for another, decisions taken
once, and what the hub is owed kept in the outbox."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.schemas.release import StudyManifest
from node.release import service as releases
from node.release.exceptions import AlreadyDecided
from node.release.models import OutboxItem
from node.settings import NodeSettings
from node.store.db import transaction
from tests.conftest import PATIENT_ID
from tests.unit.node.release.conftest import request_task, store_study


def released(
    sessions: sessionmaker[Session],
    settings: NodeSettings,
    request_id: int,
    project: str,
    uid: str,
) -> list[StudyManifest]:
    with transaction(sessions) as session:
        releases.record_request(session=session, task=request_task(request_id, project, [uid]))
        releases.approve(session=session, hub_request_id=request_id, actor="it")
        result = releases.release(session=session, settings=settings, hub_request_id=request_id)
    return result.manifests


def test_releasing_the_same_study_to_the_same_project_again_gives_identical_files(
    sessions: sessionmaker[Session], settings: NodeSettings
) -> None:
    uid = store_study(sessions, settings.data_dir, 1)
    [first] = released(sessions, settings, 1, "glioma", uid)
    [again] = released(sessions, settings, 2, "glioma", uid)
    assert [f.sha256 for f in first.files] == [f.sha256 for f in again.files]
    assert (first.subject_key, first.study_uid) == (again.subject_key, again.study_uid)


def test_another_project_gets_other_subject_keys_and_uids(
    sessions: sessionmaker[Session], settings: NodeSettings
) -> None:
    uid = store_study(sessions, settings.data_dir, 1)
    [glioma] = released(sessions, settings, 1, "glioma", uid)
    [stroke] = released(sessions, settings, 2, "stroke", uid)
    assert glioma.subject_key != stroke.subject_key
    assert glioma.study_uid != stroke.study_uid
    assert glioma.files[0].sop_instance_uid != stroke.files[0].sop_instance_uid


def test_released_files_and_their_paths_hold_no_hospital_identifier(
    sessions: sessionmaker[Session], settings: NodeSettings
) -> None:
    [manifest] = released(
        sessions, settings, 1, "glioma", store_study(sessions, settings.data_dir, 1)
    )
    root = settings.data_dir / "release" / "glioma"
    for entry in manifest.files:
        assert PATIENT_ID not in entry.path
        assert PATIENT_ID.encode() not in (root / entry.path).read_bytes()
    assert manifest.subject_key.startswith("SUBJ")


def test_a_request_delivered_twice_is_recorded_once(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        first = releases.record_request(session=session, task=request_task(9, "glioma", ["1.2.3"]))
        again = releases.record_request(session=session, task=request_task(9, "glioma", ["1.2.3"]))
        assert first.id == again.id
        assert len(releases.listing(session=session)) == 1


def test_a_declined_request_cannot_be_approved_afterwards(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        releases.record_request(session=session, task=request_task(3, "glioma", ["1.2.3"]))
        releases.decline(session=session, hub_request_id=3, reason="no ethics", actor="it")
        with pytest.raises(AlreadyDecided):
            releases.approve(session=session, hub_request_id=3, actor="it")


def test_the_hub_is_told_the_decision_and_the_release_before_the_studies(
    sessions: sessionmaker[Session], settings: NodeSettings
) -> None:
    released(sessions, settings, 1, "glioma", store_study(sessions, settings.data_dir, 1))
    with transaction(sessions) as session:
        items = session.execute(select(OutboxItem).order_by(OutboxItem.id)).scalars().all()
        keys = [item.key for item in items]
        assert keys[:2] == ["state:approved", "state:releasing"]
        assert keys[2].startswith("study:")
        assert items[1].body["studies"] == 1  # the count, once stage 2 was done


def test_stage2_in_a_pool_of_two_writes_what_one_process_writes(
    sessions: sessionmaker[Session], settings: NodeSettings
) -> None:
    uids = [store_study(sessions, settings.data_dir, study) for study in range(1, 9)]

    def release_with(workers: int, request_id: int) -> list[tuple[str, str]]:
        pool = settings.model_copy(update={"release_workers": workers})
        task = request_task(request_id, "glioma", uids, request_id)
        with transaction(sessions) as session:
            releases.record_request(session=session, task=task)
            releases.approve(session=session, hub_request_id=request_id, actor="it")
            result = releases.release(session=session, settings=pool, hub_request_id=request_id)
        return [(f.path, f.sha256) for m in result.manifests for f in m.files]

    pooled = release_with(2, 1)
    assert len(pooled) == 8
    assert release_with(1, 2) == pooled
