"""Deterministic corpus of uncompressed 16-bit CT slices for the de-identification benchmark.

Every slice is an Explicit VR Little Endian CT Image Storage instance with a realistic header
(patient, study, series, equipment, geometry, rescale) and a smooth ellipse phantom with mild
seeded noise, so that a compressor would see something like a real CT slice rather than noise.

The corpus is laid out flat (``CT00000.dcm`` ...) because dicom-anonymizer does not recurse into
sub-folders. A ``manifest.json`` beside the folder records the parameters the corpus was made
with, the identifying values put in it and a hash of every slice's pixel data, so the benchmark
can tell whether a tool kept the pixels and dropped the identifiers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian
from pydicom.uid import generate_uid as _generate_uid

GENERATOR_VERSION = 2
UID_PREFIX = "1.2.826.0.1.3680043.10.543."
PATIENTS = (
    ("DOE^JANE^M", "HV100234", "19580312", "F"),
    ("SMITH^JOHN", "HV100871", "19490707", "M"),
    ("MULLER^ANNA^K", "HV101455", "19720130", "F"),
    ("GARCIA^LUIS", "HV102019", "19661124", "M"),
)
STUDIES_PER_PATIENT = 2
SERIES_PER_STUDY = 2
INSTITUTION = "SAINT ELSEWHERE GENERAL HOSPITAL"
INSTITUTION_ADDRESS = "1 Hospital Road, Springfield"
REFERRING = "HOUSE^GREGORY^^DR"
PERFORMING = "QUINCY^MARGARET^^DR"
OPERATOR = "RADTECH^SAM"
SERIES_KINDS = (("CHEST 1.0 B30f", "B30f"), ("CHEST 1.0 B70f LUNG", "B70f"))
Pixels = npt.NDArray[np.uint16]


@dataclass(frozen=True)
class CorpusSpec:
    """What a corpus is made of; a corpus on disk is re-used only when its spec matches."""

    files: int
    size: int
    version: int = GENERATOR_VERSION


@dataclass(frozen=True)
class SliceIndex:
    """Where one slice sits in the patient / study / series tree."""

    number: int
    patient: int
    study: int
    series: int
    instance: int
    slices_in_series: int


def _uid(*parts: object) -> str:
    """A deterministic UID derived from ``parts``."""
    return str(_generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(p) for p in parts]))


def slice_index(number: int, files: int) -> SliceIndex:
    """Spread ``files`` slices evenly over patients, studies and series."""
    series_total = len(PATIENTS) * STUDIES_PER_PATIENT * SERIES_PER_STUDY
    per_series = max(1, -(-files // series_total))
    series_flat = min(number // per_series, series_total - 1)
    first = series_flat * per_series
    in_series = files - first if series_flat == series_total - 1 else min(per_series, files - first)
    study_flat, series = divmod(series_flat, SERIES_PER_STUDY)
    patient, study = divmod(study_flat, STUDIES_PER_PATIENT)
    return SliceIndex(number, patient, study, series, number - first, in_series)


def _ellipse(
    yy: npt.NDArray[np.float64],
    xx: npt.NDArray[np.float64],
    centre: tuple[float, float],
    axes: tuple[float, float],
) -> npt.NDArray[np.bool_]:
    return ((xx - centre[0]) / axes[0]) ** 2 + ((yy - centre[1]) / axes[1]) ** 2 <= 1.0


def phantom(size: int, z: float, seed: int) -> Pixels:
    """A chest-like slice in stored values (HU + 1024, 12 bits) at relative height ``z`` (0..1)."""
    grid = np.linspace(-1.0, 1.0, size)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    hu = np.full((size, size), -1000.0)
    body = 0.85 - 0.1 * abs(z - 0.5)
    hu[_ellipse(yy, xx, (0.0, 0.05), (body, body * 0.7))] = 40.0
    lung = 0.28 + 0.08 * np.sin(np.pi * z)
    for side in (-1.0, 1.0):
        hu[_ellipse(yy, xx, (side * 0.38, 0.0), (lung * 0.8, lung * 1.3))] = -850.0
    hu[_ellipse(yy, xx, (0.1, 0.05), (0.18 + 0.05 * z, 0.15))] = 60.0
    hu[_ellipse(yy, xx, (0.0, 0.45), (0.07, 0.07))] = 700.0
    hu[_ellipse(yy, xx, (0.0, 0.45), (0.035, 0.035))] = 250.0
    hu[_ellipse(yy, xx, (-0.05, -0.2), (0.05, 0.05))] = 180.0
    noise = np.random.default_rng(seed).normal(0.0, 12.0, (size, size))
    stored = np.clip(hu + noise + 1024.0, 0.0, 4095.0)
    stored[xx**2 + yy**2 > 1.0] = 0.0
    return stored.astype(np.uint16)


def _accession(patient: int, study: int) -> str:
    return f"ACC{patient:02d}{study:02d}7731"


def _patient_and_study(ds: Dataset, idx: SliceIndex) -> None:
    name, pid, birth, sex = PATIENTS[idx.patient]
    study_date = f"2025{(idx.patient * 3 + idx.study) % 12 + 1:02d}{10 + idx.study:02d}"
    ds.PatientName = name
    ds.PatientID = pid
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    ds.PatientAge = f"{2025 - int(birth[:4]):03d}Y"
    ds.OtherPatientIDs = f"MRN{pid[2:]}"
    ds.StudyInstanceUID = _uid("study", idx.patient, idx.study)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    ds.StudyTime = f"{8 + idx.study:02d}1503"
    ds.AccessionNumber = _accession(idx.patient, idx.study)
    ds.StudyID = f"{idx.patient * 10 + idx.study + 1}"
    ds.StudyDescription = "CT CHEST WITH CONTRAST"
    ds.ReferringPhysicianName = REFERRING
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = INSTITUTION_ADDRESS
    ds.InstitutionalDepartmentName = "RADIOLOGY"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _order(ds: Dataset, idx: SliceIndex) -> None:
    """The order and procedure step a scanner copies from the worklist."""
    name = PATIENTS[idx.patient][0]
    ds.IssuerOfPatientID = "SEGH"
    ds.PatientSize = "1.72"
    ds.PatientWeight = "74"
    ds.NameOfPhysiciansReadingStudy = PERFORMING
    ds.ProcedureCodeSequence = [_code("CTCHC", "99SEGH", "CT CHEST WITH CONTRAST")]
    request = Dataset()
    request.RequestedProcedureID = f"RP{idx.patient:02d}{idx.study:02d}"
    request.ScheduledProcedureStepID = f"SPS{idx.patient:02d}{idx.study:02d}"
    request.ScheduledProcedureStepDescription = "CT CHEST WITH CONTRAST"
    request.RequestingPhysician = REFERRING
    ds.RequestAttributesSequence = [request]
    ds.RequestedProcedureDescription = "CT CHEST WITH CONTRAST"
    ds.PerformedProcedureStepStartDate = ds.StudyDate
    ds.PerformedProcedureStepStartTime = ds.StudyTime
    ds.PerformedProcedureStepID = f"PPS{idx.patient:02d}{idx.study:02d}"
    ds.PerformedProcedureStepDescription = "CT CHEST WITH CONTRAST"
    ds.AdmittingDiagnosesDescription = f"Follow-up nodule, {name.split('^')[0].title()} case"


def _dose_and_geometry(ds: Dataset) -> None:
    """Acquisition parameters a CT writes on every slice."""
    ds.DistanceSourceToDetector = "1085.6"
    ds.DistanceSourceToPatient = "595.0"
    ds.TableHeight = "168.0"
    ds.RotationDirection = "CW"
    ds.Exposure = 105
    ds.FilterType = "FLAT"
    ds.GeneratorPower = 25
    ds.FocalSpots = "1.2"
    ds.DateOfLastCalibration = "20250105"
    ds.TimeOfLastCalibration = "071012.000000"
    ds.RevolutionTime = 0.5
    ds.SingleCollimationWidth = 0.6
    ds.TotalCollimationWidth = 38.4
    ds.TableSpeed = 46.0
    ds.TableFeedPerRotation = 23.0
    ds.SpiralPitchFactor = 0.6
    ds.CTDIvol = 6.42
    ds.CTDIPhantomTypeCodeSequence = [_code("113691", "DCM", "IEC Body Dosimetry Phantom")]


def _series_and_equipment(ds: Dataset, idx: SliceIndex) -> None:
    description, kernel = SERIES_KINDS[idx.series % len(SERIES_KINDS)]
    ds.Modality = "CT"
    ds.SeriesInstanceUID = _uid("series", idx.patient, idx.study, idx.series)
    ds.FrameOfReferenceUID = _uid("frame", idx.patient, idx.study)
    ds.SeriesNumber = idx.series + 2
    ds.SeriesDescription = description
    ds.SeriesTime = f"{8 + idx.study:02d}{20 + idx.series:02d}11"
    ds.PerformingPhysicianName = PERFORMING
    ds.OperatorsName = OPERATOR
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "SOMATOM Force"
    ds.StationName = "CTAWP73512"
    ds.DeviceSerialNumber = "73512"
    ds.SoftwareVersions = "syngo CT VB20A"
    ds.BodyPartExamined = "CHEST"
    ds.ProtocolName = "Thorax Routine"
    ds.ConvolutionKernel = kernel
    ds.KVP = "120"
    ds.XRayTubeCurrent = 210
    ds.ExposureTime = 500
    ds.SliceThickness = "1.0"
    ds.DataCollectionDiameter = "500.0"
    ds.ReconstructionDiameter = "380.0"
    ds.GantryDetectorTilt = "0.0"
    ds.PatientPosition = "FFS"
    ds.ContrastBolusAgent = "IOMERON 350"
    _dose_and_geometry(ds)


def _instance(ds: Dataset, idx: SliceIndex, spec: CorpusSpec) -> None:
    z = -100.0 - idx.instance * 1.0
    spacing = 380.0 / spec.size
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = _uid("instance", idx.number)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = ds.StudyDate
    ds.InstanceCreationTime = ds.StudyTime
    ds.AcquisitionDateTime = f"{ds.StudyDate}{8 + idx.study:02d}2101.000000"
    localizer = Dataset()
    localizer.ReferencedSOPClassUID = CTImageStorage
    localizer.ReferencedSOPInstanceUID = _uid("topogram", idx.patient, idx.study)
    ds.ReferencedImageSequence = [localizer]
    ds.IrradiationEventUID = _uid("event", idx.patient, idx.study, idx.series)
    ds.InstanceNumber = idx.instance + 1
    ds.AcquisitionNumber = 1
    ds.AcquisitionTime = ds.ContentTime = (
        f"{8 + idx.study:02d}21{idx.instance % 60:02d}.{idx.instance:06d}"
    )
    ds.ImagePositionPatient = [-190.0 + spacing / 2, -190.0 + spacing / 2, z]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceLocation = z
    ds.PositionReferenceIndicator = ""
    ds.PixelSpacing = [round(spacing, 6), round(spacing, 6)]
    ds.WindowCenter = ["40", "-600"]
    ds.WindowWidth = ["400", "1200"]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenterWidthExplanation = ["WINDOW1", "WINDOW2"]
    ds.LossyImageCompression = "00"


def _vendor_blob(series: int, size: int = 2400) -> bytes:
    """A vendor's binary header (as Siemens' CSA), deterministic and a few KB like real ones."""
    text = f"SV10\\4\\3\\1;series={series};recon=fbp;kernel=B30f;dose=ok;".encode()
    return (text * (size // len(text) + 1))[:size]


def _private_block(ds: Dataset, idx: SliceIndex) -> None:
    block = ds.private_block(0x0029, "HAVENET BENCH SCANNER 1.0", create=True)
    block.add_new(0x01, "LO", "REGULAR DOSE")
    block.add_new(0x02, "LO", f"Scan of {PATIENTS[idx.patient][0]}")
    block.add_new(0x08, "CS", "IMAGE NUM 4")
    block.add_new(0x10, "OB", _vendor_blob(idx.series))


def _pixels(ds: Dataset, pixels: Pixels) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelPaddingValue = 0
    ds.PixelData = pixels.tobytes()


def make_slice(idx: SliceIndex, spec: CorpusSpec) -> Dataset:
    """One complete CT slice dataset with its file meta information."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    _patient_and_study(ds, idx)
    _order(ds, idx)
    _series_and_equipment(ds, idx)
    _instance(ds, idx, spec)
    _private_block(ds, idx)
    z = idx.instance / max(1, idx.slices_in_series - 1)
    _pixels(ds, phantom(spec.size, z, seed=idx.number))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def pixel_hash(data: bytes) -> str:
    """The hash the manifest keeps of one slice's pixel data."""
    return hashlib.sha256(data).hexdigest()


def manifest_path(folder: Path) -> Path:
    """Where the manifest of the corpus in ``folder`` lives."""
    return folder.with_name(folder.name + ".manifest.json")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of the corpus in ``folder``, or None if there is none."""
    path = manifest_path(folder)
    if not path.is_file():
        return None
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def _is_current(folder: Path, spec: CorpusSpec) -> bool:
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("spec") != asdict(spec):
        return False
    return len(list(folder.glob("*.dcm"))) == spec.files


def _identifiers() -> dict[str, list[str]]:
    """The identifying values put in the corpus, by the keyword they were put under."""
    studies = [(p, s) for p in range(len(PATIENTS)) for s in range(STUDIES_PER_PATIENT)]
    return {
        "PatientName": [p[0] for p in PATIENTS],
        "PatientID": [p[1] for p in PATIENTS],
        "OtherPatientIDs": [f"MRN{p[1][2:]}" for p in PATIENTS],
        "PatientBirthDate": [p[2] for p in PATIENTS],
        "AccessionNumber": [_accession(p, s) for p, s in studies],
        "StudyInstanceUID": [_uid("study", p, s) for p, s in studies],
        "InstitutionName": [INSTITUTION],
        "ReferringPhysicianName": [REFERRING],
    }


def generate(folder: Path, spec: CorpusSpec) -> None:
    """Write the corpus described by ``spec`` into ``folder`` (emptied first) and its manifest."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    hashes = []
    for number in range(spec.files):
        ds = make_slice(slice_index(number, spec.files), spec)
        ds.save_as(folder / f"CT{number:05d}.dcm", enforce_file_format=True)
        hashes.append(pixel_hash(ds.PixelData))
    manifest = {"spec": asdict(spec), "identifiers": _identifiers(), "pixel_sha256": hashes}
    manifest_path(folder).write_text(json.dumps(manifest, indent=1))


def ensure(folder: Path, spec: CorpusSpec) -> bool:
    """Make sure ``folder`` holds the corpus for ``spec``; True if it had to be generated."""
    if _is_current(folder, spec):
        return False
    generate(folder, spec)
    return True
