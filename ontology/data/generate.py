"""Regenerate the derived vocabulary files of ``ontology/data``.

    python -m ontology.data.generate ../shared/data/omop/Synthea27Nj_5.4.zip

Writes ``dicom_modalities.tsv``, ``dicom_body_parts.tsv`` and ``contrast_agents.tsv`` from the
DICOM content mapping resource (PS3.16) as packaged in pydicom, and ``omop_concepts.tsv`` and
``loinc_labs.tsv`` from the OHDSI vocabulary shard of the Synthea27Nj OMOP extract. The
hand-curated files (``snomed_conditions.tsv``, ``snomed_maps.tsv``, ``atc.tsv``) are inputs here.
``tests/unit/ontology/test_data.py`` checks that the shipped DICOM files equal a fresh generation.
"""

from __future__ import annotations

import csv
import io
import sys
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydicom.sr.codedict import codes

from ontology.sources import DATA_DIR, read_tsv

# PS3.16 Annex L, "Correspondence of Anatomic Region Codes and Body Part Examined Defined
# Terms": the Body Part Examined (0018,0015) defined term of each CID 4031 / CID 4030 concept,
# keyed by code meaning. Concepts without a defined term are left out.
BODY_PART_EXAMINED = {
    "Abdomen": "ABDOMEN",
    "Abdomen and Pelvis": "ABDOMENPELVIS",
    "Acromioclavicular joint": "ACJOINT",
    "Ankle joint": "ANKLE",
    "Bile duct": "BILEDUCT",
    "Biliary tract": "BILIARYTRACT",
    "Bladder": "BLADDER",
    "Breast": "BREAST",
    "Bronchus": "BRONCHUS",
    "Calcaneus": "CALCANEUS",
    "Cervical spine": "CSPINE",
    "Cervico-thoracic spine": "CTSPINE",
    "Chest": "CHEST",
    "Chest, Abdomen and Pelvis": "CHESTABDPELVIS",
    "Chest and Abdomen": "CHESTABDOMEN",
    "Clavicle": "CLAVICLE",
    "Coccyx": "COCCYX",
    "Colon": "COLON",
    "Common bile duct": "COMMONBILEDUCT",
    "Duodenum": "DUODENUM",
    "Elbow joint": "ELBOW",
    "Entire body": "WHOLEBODY",
    "Esophagus": "ESOPHAGUS",
    "Extremity": "EXTREMITY",
    "Eye": "EYE",
    "Femur": "FEMUR",
    "Fibula": "FIBULA",
    "Finger": "FINGER",
    "Foot": "FOOT",
    "Forearm": "FOREARM",
    "Gallbladder": "GALLBLADDER",
    "Hand": "HAND",
    "Head": "HEAD",
    "Head and Neck": "HEADNECK",
    "Heart": "HEART",
    "Hip joint": "HIP",
    "Humerus": "HUMERUS",
    "Ileum": "ILEUM",
    "Ilium": "ILIUM",
    "Internal Auditory Canal": "IAC",
    "Jaw region": "JAW",
    "Jejunum": "JEJUNUM",
    "Knee": "KNEE",
    "Large intestine": "LARGEINTESTINE",
    "Larynx": "LARYNX",
    "Lower leg": "LOWERLEG",
    "Lower limb": "LOWERLIMB",
    "Lumbar spine": "LSPINE",
    "Lumbo-sacral spine": "LSSPINE",
    "Mandible": "MANDIBLE",
    "Mastoid bone": "MASTOID",
    "Maxilla": "MAXILLA",
    "Mediastinum": "MEDIASTINUM",
    "Neck": "NECK",
    "Neck and Chest": "NECKCHEST",
    "Neck, Chest, Abdomen and Pelvis": "NECKCHESTABDPELV",
    "Neck, Chest and Abdomen": "NECKCHESTABDOMEN",
    "Optic canal": "OPTICCANAL",
    "Orbital structure": "ORBIT",
    "Pancreas": "PANCREAS",
    "Pancreatic duct": "PANCREATICDUCT",
    "Pancreatic duct and bile duct systems": "PANCBILEDUCT",
    "Parotid gland": "PAROTID",
    "Patella": "PATELLA",
    "Pelvis": "PELVIS",
    "Pelvis and lower extremities": "PELVISLOWEXTREMT",
    "Phantom": "PHANTOM",
    "Prostate": "PROSTATE",
    "Rectum": "RECTUM",
    "Rib": "RIB",
    "Sacroiliac joint": "SIJOINT",
    "Sacrum": "SSPINE",
    "Scapula": "SCAPULA",
    "Sella turcica": "SELLA",
    "Sesamoid bones of foot": "SESAMOID",
    "Shoulder": "SHOULDER",
    "Skull": "SKULL",
    "Small intestine": "SMALLINTESTINE",
    "Spine": "SPINE",
    "Sternoclavicular joint": "SCJOINT",
    "Sternum": "STERNUM",
    "Stomach": "STOMACH",
    "Submandibular gland": "SUBMANDIBULAR",
    "Temporomandibular joint": "TMJ",
    "Thigh": "THIGH",
    "Thoracic spine": "TSPINE",
    "Thoraco-lumbar spine": "TLSPINE",
    "Thumb": "THUMB",
    "Toe": "TOE",
    "Trachea": "TRACHEA",
    "Upper arm": "UPPERARM",
    "Upper limb": "UPPERLIMB",
    "Upper urinary tract": "UPRURINARYTRACT",
    "Ureter": "URETER",
    "Urethra": "URETHRA",
    "Wrist joint": "WRIST",
    "Zygoma": "ZYGOMA",
    # CID 4030 (CT, MR and PET Anatomy Imaged) concepts with their own defined term
    "Adrenal gland": "ADRENAL",
    "Brain": "BRAIN",
    "Carotid Artery": "CAROTID",
    "Cerebellum": "CEREBELLUM",
    "Circle of Willis": "CIRCLEOFWILLIS",
    "Coronary artery": "CORONARYARTERY",
    "Kidney": "KIDNEY",
    "Liver": "LIVER",
    "Spleen": "SPLEEN",
    "Testis": "TESTIS",
    "Thyroid": "THYROID",
    "Uterus": "UTERUS",
}
# Retired or legacy defined terms still written by scanners, and the concept they now denote.
BODY_PART_ALIASES = {"THORAX": "Chest"}

# Substance (by its CID 12 code meaning) -> (ATC code, agent class, synonyms incl. brand names)
CONTRAST_AGENTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "Gadobutrol": ("V08CA09", "gadolinium", ("gadovist", "gadavist")),
    "Gadoterate meglumine": (
        "V08CA02",
        "gadolinium",
        ("gadoterate", "gadoteric acid", "dotarem", "clariscan", "artirem"),
    ),
    "Gadopentetate dimeglumine": (
        "V08CA01",
        "gadolinium",
        ("gadopentetate", "gadopentetic acid", "gd-dtpa", "magnevist"),
    ),
    "Gadodiamide": ("V08CA03", "gadolinium", ("omniscan",)),
    "Gadoteridol": ("V08CA04", "gadolinium", ("prohance",)),
    "Gadobenate dimeglumine": ("V08CA08", "gadolinium", ("gadobenate", "multihance")),
    "Gadoxetate disodium": ("V08CA10", "gadolinium", ("gadoxetate", "primovist", "eovist")),
    "Gadolinium": ("", "gadolinium", ("gadolinium", "gado", "gad", "gd")),
    "Iohexol": ("V08AB02", "iodinated", ("omnipaque",)),
    "Iopamidol": ("V08AB04", "iodinated", ("isovue", "iopamiro")),
    "Iopromide": ("V08AB05", "iodinated", ("ultravist",)),
    "Ioversol": ("V08AB07", "iodinated", ("optiray",)),
    "Iodixanol": ("V08AB09", "iodinated", ("visipaque",)),
    "Barium Sulfate": ("", "barium", ("barium",)),
}

LOINC_LABS = (
    "4548-4",  # HbA1c
    "2345-7",  # glucose, serum/plasma
    "2339-0",  # glucose, blood
    "2160-0",  # creatinine
    "33914-3",  # eGFR
    "718-7",  # haemoglobin
    "6690-2",  # leukocytes
    "777-3",  # platelets
    "731-0",  # lymphocytes
    "2951-2",  # sodium
    "2823-3",  # potassium
    "2093-3",  # cholesterol
    "2085-9",  # HDL cholesterol
    "18262-6",  # LDL cholesterol
    "6301-6",  # INR
    "48065-7",  # D-dimer
    "85319-2",  # HER2, breast cancer specimen
    "85337-4",  # oestrogen receptor, breast cancer specimen
    "85339-0",  # progesterone receptor, breast cancer specimen
    "21908-9",  # stage group
)


def modality_rows() -> list[list[str]]:
    found: dict[str, list[str]] = {}
    for cid in (29, 33):
        collection = getattr(codes, f"cid{cid}")
        for name in collection.dir():
            code = getattr(collection, name)
            row = found.setdefault(code.value, [code.value, code.meaning, ""])
            row[2] = f"{row[2]},{cid}".strip(",")
    return [["code", "display", "cids"], *sorted(found.values())]


def body_part_rows() -> list[list[str]]:
    concepts: dict[str, tuple[str, int]] = {}
    for cid in (4031, 4030):
        collection = getattr(codes, f"cid{cid}")
        for name in collection.dir():
            code = getattr(collection, name)
            if code.scheme_designator == "SCT" and code.meaning in BODY_PART_EXAMINED:
                concepts.setdefault(code.meaning, (code.value, cid))
    missing = sorted(set(BODY_PART_EXAMINED) - set(concepts))
    if missing:
        raise SystemExit(f"not in pydicom's CID 4031/4030: {missing}")
    rows = [
        [BODY_PART_EXAMINED[meaning], value, meaning, str(cid)]
        for meaning, (value, cid) in concepts.items()
    ]
    rows += [
        [term, concepts[meaning][0], meaning, "alias"]
        for term, meaning in BODY_PART_ALIASES.items()
    ]
    return [["body_part_examined", "snomed_code", "display", "cid"], *sorted(rows)]


def contrast_rows() -> list[list[str]]:
    collection = codes.cid12
    by_meaning = {getattr(collection, n).meaning: getattr(collection, n) for n in collection.dir()}
    rows = []
    for meaning, (atc, kind, synonyms) in CONTRAST_AGENTS.items():
        code = by_meaning[meaning]
        rows.append([meaning, code.value, atc, kind, "|".join(synonyms)])
    return [["substance", "snomed_code", "atc_code", "kind", "synonyms"], *rows]


def _read_concepts(zip_path: Path) -> list[dict[str, str]]:
    with zipfile.ZipFile(zip_path) as archive, archive.open("CONCEPT.csv") as raw:
        return list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")))


def omop_rows(concepts: Iterable[dict[str, str]]) -> list[list[str]]:
    """OMOP concepts for the SNOMED subset, the LOINC labs and the drugs of the ATC subset;
    each row says which concept of this ontology it stands for (system, code, relation)."""
    snomed = {row["code"] for row in read_tsv(DATA_DIR / "snomed_conditions.tsv")}
    ingredients = {
        row["display"].lower(): row["code"]
        for row in read_tsv(DATA_DIR / "atc.tsv")
        if len(row["code"]) == 7
    }
    rows = []
    for concept in concepts:
        vocabulary, code, name = (
            concept["vocabulary_id"],
            concept["concept_code"],
            concept["concept_name"],
        )
        if vocabulary == "SNOMED" and code in snomed:
            rows.append(
                [concept["concept_id"], vocabulary, code, name, "SNOMED", code, "equivalent"]
            )
        elif vocabulary == "LOINC" and code in LOINC_LABS:
            rows.append(
                [concept["concept_id"], vocabulary, code, name, "LOINC", code, "equivalent"]
            )
        elif vocabulary == "RxNorm":
            words = name.lower().replace("/", " ").split()
            for ingredient, atc in ingredients.items():
                if ingredient in words and " / " not in name:
                    # a clinical drug is classified under its ingredient's ATC code
                    rows.append(
                        [concept["concept_id"], vocabulary, code, name, "ATC", atc, "broader"]
                    )
    header = ["concept_id", "vocabulary_id", "concept_code", "concept_name"]
    return [[*header, "system", "code", "relation"], *sorted(rows, key=lambda r: int(r[0]))]


def loinc_rows(concepts: Iterable[dict[str, str]]) -> list[list[str]]:
    names = {
        c["concept_code"]: c["concept_name"] for c in concepts if c["vocabulary_id"] == "LOINC"
    }
    missing = [code for code in LOINC_LABS if code not in names]
    if missing:
        raise SystemExit(f"LOINC codes not in the vocabulary shard: {missing}")
    return [["code", "display"], *([code, names[code]] for code in LOINC_LABS)]


def write_tsv(path: Path, rows: Sequence[Sequence[str]], comment: str) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(f"# {comment}\n")
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerows(rows)


def dicom_files() -> dict[str, tuple[list[list[str]], str]]:
    """The DICOM-derived files, which need nothing but pydicom (checked by the tests)."""
    return {
        "dicom_modalities.tsv": (
            modality_rows(),
            "DICOM PS3.16 CID 29 (Acquisition Modality) and CID 33 (Modality), via pydicom",
        ),
        "dicom_body_parts.tsv": (
            body_part_rows(),
            "DICOM PS3.16 CID 4031/4030 SNOMED CT codes with their Annex L Body Part Examined"
            " terms",
        ),
        "contrast_agents.tsv": (
            contrast_rows(),
            "DICOM PS3.16 CID 12 (Imaging Contrast Agent) SNOMED CT codes, WHO ATC codes, names",
        ),
    }


def main(argv: Sequence[str]) -> None:
    for name, (rows, comment) in dicom_files().items():
        write_tsv(DATA_DIR / name, rows, comment)
    if argv:
        concepts = _read_concepts(Path(argv[0]))
        shard = "OHDSI vocabulary shard v5.0 09-APR-22 of the Synthea27Nj OMOP extract"
        write_tsv(DATA_DIR / "omop_concepts.tsv", omop_rows(concepts), shard)
        write_tsv(DATA_DIR / "loinc_labs.tsv", loinc_rows(concepts), f"LOINC, from the {shard}")


if __name__ == "__main__":
    main(sys.argv[1:])
