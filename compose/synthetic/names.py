"""Made-up names and places for synthetic hospitals.

Every person name is built from invented syllables, so no real patient can be named by
accident. All surnames have the same length, and so have all given names: no surname is
the tail of another and no given name is the start of another, which keeps a byte search
for "SURNAME^GIVEN" from matching a different person. There are 180 of each: a corpus gives
every person (patient, physician, operator) a surname and a given name of their own until they
run out, so that finding a name part in de-identified output always points to one person.
"""

from __future__ import annotations

_SURNAME_HEADS = (
    "BRAN", "CORV", "DALM", "FENW", "GARR", "HOLB", "KESL", "LUND", "MARV", "NOLT",
    "PERR", "QUIL", "RASK", "STAV", "TORV", "VELD", "WARB", "YSEL", "ZORN", "ALDR",
    "BEXT", "CRAM", "DROV", "ELMS", "FOSK", "GLEB", "HURL", "JASP", "KORB", "LIMM",
)  # fmt: skip
_SURNAME_TAILS = ("ELLO", "INGS", "OWAY", "ASKI", "ETTE", "UNDE")
_GIVEN_HEADS = (
    "ANS", "BEL", "COR", "DAV", "ELI", "FRE", "GIL", "HAN", "ISO", "JOR",
    "KAL", "LIN", "MAR", "NED", "OLI", "PAU", "QUI", "RAF", "SAB", "TEO",
    "ULF", "VIR", "WEN", "XAN", "YOR", "ZEP", "ADA", "BRI", "CEL", "DOM",
)  # fmt: skip
_GIVEN_TAILS = ("ANE", "ORA", "ICK", "ELM", "WYN", "ISA")

SURNAMES: tuple[str, ...] = tuple(h + t for h in _SURNAME_HEADS for t in _SURNAME_TAILS)
GIVEN_NAMES: tuple[str, ...] = tuple(h + t for h in _GIVEN_HEADS for t in _GIVEN_TAILS)

# (name, short form used in identifiers such as the MRN issuer, street address)
HOSPITALS: tuple[tuple[str, str, str], ...] = (
    ("HAVENBROOK GENERAL HOSPITAL", "HVB", "14 Quarry Lane, Havenbrook"),
    ("NORTHMERE UNIVERSITY HOSPITAL", "NMU", "2 Tillgate Road, Northmere"),
    ("ST ALDRIC MEDICAL CENTRE", "SAM", "77 Fennick Street, Aldric Vale"),
    ("WESTFORD REGIONAL HOSPITAL", "WRH", "9 Orrin Parade, Westford"),
    ("LINDENVALE CLINIC", "LVC", "31 Brackley Row, Lindenvale"),
)
