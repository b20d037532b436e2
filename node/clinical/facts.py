"""What an imported record becomes: rows for the fact store, before they are written."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from node.clinical.models import CODE_LENGTH, DISPLAY_LENGTH, SYSTEM_LENGTH

OMOP_CONCEPT_SYSTEM = "https://ohdsi.org/omop/concept"


@dataclass(frozen=True, slots=True)
class Coding:
    system: str
    code: str
    display: str = ""

    def columns(self) -> dict[str, str]:
        return {
            "system": self.system[:SYSTEM_LENGTH],
            "code": self.code[:CODE_LENGTH],
            "display": self.display[:DISPLAY_LENGTH],
        }


@dataclass(frozen=True, slots=True)
class PersonFacts:
    """What a record says about the patient; None (or empty) means "not said here"."""

    subject_key: str
    sex: str = ""
    birth_year: int | None = None
    death_date: dt.date | None = None


@dataclass(slots=True)
class Fact:
    """One row of a fact table (``table`` is a key of ``models.FACT_TABLES``)."""

    table: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Extracted:
    """The rows one source record gives."""

    facts: list[Fact] = field(default_factory=list)
    person: PersonFacts | None = None
