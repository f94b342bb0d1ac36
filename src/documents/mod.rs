//! Documents: XDS metadata, ORU^R01 documents, the FHIR DocumentReference bundle, ZAM acknowledgements.
