"""Every hub domain's tables, gathered for Alembic (``Base.metadata`` fills on import)."""

from __future__ import annotations

import importlib

DOMAIN_MODELS = (
    "hub.audit",
    "hub.nodes.models",
    "hub.users.models",
    "hub.federation.models",
    "hub.catalogue.models",
    "hub.release.models",
    "hub.curation.models",
    "hub.dicomweb.models",
)


def import_all() -> None:
    for name in DOMAIN_MODELS:
        importlib.import_module(name)
