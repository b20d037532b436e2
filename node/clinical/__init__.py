"""Clinical records at the node: FHIR R4 and OMOP CDM 5.4 import, stage-1 pseudonymization
in step with the images, the fact store the federated query engine reads, and the stage-2
export of a cohort for a project."""
