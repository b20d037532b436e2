"""Publishing the catalogue to the hub over the node's own signed, outbound connection."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from common import audit
from common.schemas.catalogue import CataloguePublication
from common.schemas.channel import API_PREFIX
from node.catalogue import service as catalogue
from node.federation import client as hub_client
from node.federation import enrollment as enrollments
from node.federation.keys import KeyFile, key_path
from node.settings import NodeSettings
from node.store.db import transaction
from node.store.models import AuditRecord

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 60.0


def build(sessions: sessionmaker[Session], settings: NodeSettings) -> CataloguePublication:
    with transaction(sessions) as session:
        return catalogue.build(
            session=session,
            threshold=settings.catalogue_threshold,
            rounding=settings.catalogue_rounding,
        )


def publish(
    sessions: sessionmaker[Session], settings: NodeSettings, *, actor: str
) -> dict[str, Any]:
    """Build the catalogue, send it to the hub, record that it left. Raises
    ``NotEnrolled``, ``HubUnreachable`` or ``HubRefused``; nothing is recorded then."""
    enrollment = enrollments.load(settings.data_dir)
    publication = build(sessions, settings)
    body = publication.model_dump_json().encode("utf-8")
    with hub_client.client(
        enrollment, KeyFile(key_path(settings.data_dir)), timeout=PUBLISH_TIMEOUT_SECONDS
    ) as client:
        try:
            response = client.post(
                f"{API_PREFIX}/catalogue",
                content=body,
                headers={"Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise hub_client.unreachable(exc) from None
        receipt: dict[str, Any] = hub_client.checked(response)
    with transaction(sessions) as session:
        audit.append(
            session,
            AuditRecord,
            actor=actor,
            action="catalogue.published",
            subject=enrollment.name,
            details={
                "cells": len(publication.cells),
                "withheld_cells": publication.suppressed_cells,
                "marginals": len(publication.marginals),
                "withheld_marginals": publication.suppressed_marginals,
                "threshold": publication.threshold,
            },
        )
    logger.info(
        "catalogue published: %d cells (%d withheld), %d marginals",
        len(publication.cells),
        publication.suppressed_cells,
        len(publication.marginals),
    )
    return receipt
