"""Fixtures shared by every test: a site secret, engines, and DICOM datasets built in code."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from common.crypto import Pseudonymizer, SiteSecret
from common.deid.engine import Engine
from common.deid.profile import load_profile, parse_profile

# Nodes and hubs the tests start (in process or as processes, which inherit this) do not
# load the vocabularies at start (~7 s each); the tests that need them load a subset.
os.environ.setdefault("HAVENET_NODE_ONTOLOGY_AT_START", "false")
os.environ.setdefault("HAVENET_HUB_ONTOLOGY_AT_START", "false")

SECRET = b"test-secret-0123456789abcdef-not-for-production"
SHARED = Path(__file__).resolve().parents[2] / "shared"

PATIENT_NAME = "PHILLIPS^MARGARET^ANNE"
PATIENT_ID = "MRN99817263"
BIRTH_DATE = "19470312"
ACCESSION = "ACC55519872"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "site-secret"
    path.write_bytes(SECRET)
    return path


EngineFactory = Callable[..., Engine]


@pytest.fixture
def make_engine() -> EngineFactory:
    def build(
        profile: str = "anonymize",
        project: str = "project-a",
        yaml_text: str | None = None,
        subject_keys: dict[str, str] | None = None,
    ) -> Engine:
        loaded = parse_profile(yaml_text, "test.yaml") if yaml_text else load_profile(profile)
        mapper = Pseudonymizer(
            SiteSecret(SECRET),
            project,
            subject_key_prefix=loaded.subject_key_prefix,
            min_offset_days=loaded.min_offset_days,
            max_offset_days=loaded.max_offset_days,
        )
        return Engine(loaded, mapper, subject_keys)

    return build


def ct_dataset(
    *,
    patient_id: str = PATIENT_ID,
    patient_name: str = PATIENT_NAME,
    study_uid: str = "1.2.826.0.1.3680043.10.1.1",
    series_uid: str = "1.2.826.0.1.3680043.10.1.1.1",
    sop_uid: str = "1.2.826.0.1.3680043.10.1.1.1.1",
    study_date: str = "20230415",
    rows: int = 16,
) -> Dataset:
    """A small CT instance with the identifiers a hospital PACS holds."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITAL_PACS"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.ContentDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = ACCESSION
    ds.Modality = "CT"
    ds.Manufacturer = "ACME Medical"
    ds.ManufacturerModelName = "Scanner 9000"
    ds.InstitutionName = "St Elsewhere General Hospital"
    ds.InstitutionAddress = "1 Hospital Road, Springfield"
    ds.StationName = "CTROOM3"
    ds.DeviceSerialNumber = "SN-4455-7788"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.StudyDescription = f"CT HEAD for {patient_name.split('^', maxsplit=1)[0]} {patient_id}"
    ds.SeriesDescription = "AX HEAD 5mm"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "F"
    ds.PatientAge = "076Y"
    ds.PatientWeight = "61.5"
    ds.OtherPatientIDs = "NHS4857773456"
    ds.PatientAddress = "22 Acacia Avenue, Springfield"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.StudyID = "S7734"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    reference = Dataset()
    reference.ReferencedSOPClassUID = CTImageStorage
    reference.ReferencedSOPInstanceUID = study_uid + ".77.1"
    ds.ReferencedImageSequence = Sequence([reference])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = rows
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.PixelData = (np.arange(rows * rows, dtype=np.uint16) % 4096).tobytes()
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x00191002, "SL", 912)  # known safe: number of cells in detector
    ds.add_new(0x00090010, "LO", "ACME HOSPITAL 1")
    ds.add_new(0x00091001, "LO", patient_name)  # an unknown private attribute with PHI
    return ds
