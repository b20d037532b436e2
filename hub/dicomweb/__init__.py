"""DICOMweb (PS3.18 QIDO-RS and WADO-RS) on a project's workspace, for DICOM viewers."""
