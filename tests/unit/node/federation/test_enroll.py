"""Enrollment on the node side: the hub's address is checked, and an enrolled node is not
enrolled again by mistake (that would discard its key)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common import signing
from common.errors import ConfigurationError
from node.federation import enroll as enrolling
from node.federation import enrollment as enrollments
from node.federation import keys
from node.federation.enrollment import Enrollment
from node.federation.exceptions import HubUnreachable, NotEnrolled
from node.settings import NodeSettings
from node.store.db import make_engine, make_sessionmaker, migrate
from tests.integration.peers import free_port


@pytest.fixture
def settings(tmp_path: Path) -> NodeSettings:
    return NodeSettings(data_dir=tmp_path)


@pytest.fixture
def sessions(settings: NodeSettings) -> Iterator[sessionmaker[Session]]:
    migrate(settings.database)
    engine = make_engine(settings.database)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.mark.parametrize(
    "url", ["hub.example.org", "ftp://hub.example.org", "https://", "https://hub/?token=x"]
)
def test_a_hub_address_that_is_not_http_or_https_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="HUB_URL"):
        enrolling.normalized_hub_url(url)


def test_a_trailing_slash_is_dropped_from_the_hub_address() -> None:
    assert enrolling.normalized_hub_url("https://hub.example.org:8443/") == (
        "https://hub.example.org:8443"
    )


def test_an_enrolled_node_is_not_enrolled_again_without_replace(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    enrollments.save(settings.data_dir, Enrollment("https://hub", "abc", "north"))
    with pytest.raises(ConfigurationError, match="--replace"):
        enrolling.enroll(
            settings=settings,
            sessions=sessions,
            hub_url="https://hub.example.org",
            token="hve_" + "x" * 40,
            actor="test",
        )
    assert enrollments.load(settings.data_dir).node_id == "abc"


def test_a_node_without_enrollment_says_how_to_enroll(settings: NodeSettings) -> None:
    with pytest.raises(NotEnrolled, match="havenet node enroll"):
        enrollments.load(settings.data_dir)


def test_a_failed_re_enrollment_keeps_the_current_key_and_enrollment(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    current = signing.generate_private_key()
    keys.write_private_key(keys.key_path(settings.data_dir), current)
    enrollments.save(settings.data_dir, Enrollment("https://hub", "abc", "north"))
    with pytest.raises(HubUnreachable):
        enrolling.enroll(
            settings=settings,
            sessions=sessions,
            hub_url=f"http://127.0.0.1:{free_port()}",  # nothing listens
            token="hve_" + "x" * 40,
            actor="test",
            replace=True,
        )
    kept = keys.read_private_key(keys.key_path(settings.data_dir))
    assert signing.public_key_text(kept) == signing.public_key_text(current)
    assert enrollments.load(settings.data_dir).node_id == "abc"
    assert not keys.next_key_path(settings.data_dir).exists()
