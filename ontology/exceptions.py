"""Ontology errors: one root, so callers can catch everything the ontology raises.

OntologyError
 ├── UnknownConcept      a SYSTEM:CODE that is not loaded
 └── BadConceptReference text that is not of the form SYSTEM:CODE
"""

from __future__ import annotations


class OntologyError(Exception):
    """Root of the ontology's errors."""


class UnknownConcept(OntologyError):
    def __init__(self, system: str, code: str) -> None:
        super().__init__(
            f"{system}:{code} is not in the ontology: check the code, or load the vocabulary "
            "with `havenet ontology load`"
        )
        self.system = system
        self.code = code


class BadConceptReference(OntologyError):
    def __init__(self, text: str) -> None:
        super().__init__(
            f"{text!r} is not a concept reference: write SYSTEM:CODE, e.g. ICD10CM:G30"
        )
        self.text = text
