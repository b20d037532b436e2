"""What the clinical import's API returns: counts and a content hash, never a value."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ClinicalImportRead(BaseModel):
    """What one imported Bundle gave."""

    format: str = Field(description="fhir-bundle, fhir-ndjson or omop-<table>.")
    sha256: str = Field(description="SHA-256 of the content (the audit log names it so).")
    records: int = Field(description="Resources (or rows) read, skipped ones included.")
    patients: int = Field(description="Patients the content describes.")
    facts: dict[str, int] = Field(description="Facts written per table (new or updated).")
    skipped: dict[str, int] = Field(
        description="Resources of types the node does not import, per type."
    )
