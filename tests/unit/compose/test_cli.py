"""The `havenet` entry point."""

from __future__ import annotations

import logging

import pytest

from compose.cli import quiet_libraries


def test_pydicom_messages_that_quote_values_never_reach_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_libraries()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("pydicom").warning("Invalid value for VR PN: 'DOE^JANE'")
    assert "DOE^JANE" not in caplog.text
