"""Fixtures that start real peers on free loopback ports and always stop them.

A test using any of them is marked `peers` (deselect with `-m "not peers"`). A peer whose
programs are missing skips the test, or fails it when HAVENET_REQUIRE_PEERS=1 (CI).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.integration.peers import (
    Dcmtk,
    Modality,
    Orthanc,
    PeerMissing,
    Postgres,
    orthanc_binary,
    skip_or_fail,
)

PEER_FIXTURES = frozenset(
    {
        "orthanc",
        "orthanc_factory",
        "dcmtk",
        "postgres",
        "postgres_url",
        "postgres_database_url",
        "browser",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks on fixtures have no effect: mark the tests that use a peer fixture instead."""
    for item in items:
        if PEER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.peers)


class OrthancFactory(Protocol):
    def __call__(
        self,
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, Modality] | None = None,
        overrides: Mapping[str, object] | None = None,
    ) -> Orthanc: ...


@pytest.fixture(scope="session")
def _stopping_orthancs() -> Iterator[list[Orthanc]]:
    """Orthancs asked to shut down at the end of their test; waited for (or killed) here.

    A clean Orthanc shutdown takes ~3.5 s: waiting for it in each test's teardown would
    dominate the suite, so it proceeds in the background while the next tests run.
    """
    stopping: list[Orthanc] = []
    try:
        yield stopping
    finally:
        for orthanc in stopping:
            orthanc.wait_stopped(timeout=15.0)


@pytest.fixture
def orthanc_factory(tmp_path: Path, _stopping_orthancs: list[Orthanc]) -> Iterator[OrthancFactory]:
    """Start Orthancs with a given AE title, `DicomModalities` or config overrides.

    Each gets its own folder under the test's tmp_path; all are stopped after the test.
    """
    try:
        orthanc_binary()
    except PeerMissing as missing:
        skip_or_fail(missing)
    started: list[Orthanc] = []

    def start(
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, Modality] | None = None,
        overrides: Mapping[str, object] | None = None,
    ) -> Orthanc:
        orthanc = Orthanc.start(
            tmp_path / f"orthanc-{len(started)}",
            aet=aet,
            modalities=modalities,
            overrides=overrides,
        )
        started.append(orthanc)
        return orthanc

    try:
        yield start
    finally:
        for orthanc in started:
            orthanc.request_stop()
        _stopping_orthancs.extend(started)


@pytest.fixture
def orthanc(orthanc_factory: OrthancFactory) -> Orthanc:
    """A fresh, empty Orthanc (AE title ORTHANC) for this test."""
    return orthanc_factory()


@pytest.fixture(scope="session")
def dcmtk() -> Dcmtk:
    """The DCMTK network tools (echoscu, storescu, findscu, movescu, getscu)."""
    try:
        return Dcmtk.find()
    except PeerMissing as missing:
        skip_or_fail(missing)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One throwaway PostgreSQL 15 cluster for the whole session (per xdist worker)."""
    try:
        server = Postgres.start()
    except PeerMissing as missing:
        skip_or_fail(missing)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres: Postgres) -> str:
    """SQLAlchemy URL of the session's database: postgresql+psycopg://havenet@127.0.0.1:P/havenet."""
    return postgres.url


@pytest.fixture
def postgres_database_url(postgres: Postgres) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty database for this test, dropped after it."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres.create_database(name)
    try:
        yield url
    finally:
        postgres.drop_database(name)


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; Playwright downloads nothing


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian `chromium`) driven by Playwright, for the page tests."""
    if not CHROMIUM.is_file():
        skip_or_fail(PeerMissing("Chromium", "chromium", [str(CHROMIUM)]))
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()
