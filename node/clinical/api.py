"""``POST /clinical/fhir``: import a FHIR R4 Bundle (collection, transaction or batch).

Thin: the request's session is the one transaction (the whole Bundle or nothing), the
service does the work, ``node.main`` maps its errors (an invalid entry → 422 naming the
entry and the element, never a value).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from node import api as node_api
from node.clinical import service
from node.clinical.schemas import ClinicalImportRead

router = APIRouter(prefix="/clinical", tags=["clinical"])


@router.post(
    "/fhir",
    summary="Import a FHIR R4 Bundle (pseudonymized on arrival)",
    responses={422: {"description": "An entry is invalid: the message names it and the element."}},
)
def import_fhir(
    bundle: Annotated[dict[str, Any], Body(description="A FHIR R4 Bundle.")],
    request: Request,
    node: node_api.RuntimeDep,
    session: node_api.SessionDep,
) -> ClinicalImportRead:
    """Patients are matched to their images by the hospital patient ID; every resource is
    validated against R4 and pseudonymized by the node's profile before anything is
    stored. Importing the same Bundle again changes nothing."""
    settings = node.settings
    context = service.ImportContext(
        rules=service.build_rules(settings.profile, settings.site_project, settings.secret().value),
        keyring=node.keyring,
        actor=f"api@{request.client.host if request.client is not None else 'unknown'}",
    )
    result = service.import_fhir_bundle(
        session=session, context=context, bundle=bundle, name="request"
    )
    return ClinicalImportRead.model_validate(result.as_dict())
