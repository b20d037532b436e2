"""The bare package names exist on PyPI too: each must resolve inside this repository."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["common", "node", "hub", "ontology", "compose"])
def test_the_package_resolves_inside_the_repository(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().parent == ROOT / name
