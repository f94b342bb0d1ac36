//! The map stage `relais serve` runs: ADT messages to the PAM FR mapping, CDA documents and ORU^R01
//! (a CDA carried in HL7v2) to the documents module.

use crate::config::Settings;
use crate::documents::{DocumentMapper, DocumentMetadata, oru};
use crate::facts::{MapFailure, Mapped, MessageKind, Transform};
use crate::mapping::Mapper;

/// Why the map stage could not be built from the settings (a mapping or table file does not load).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `mappings_dir` holds a bad rule or table file (every error, with file:line).
    #[error("mappings: {0}")]
    Mappings(#[from] crate::mapping::CheckErrors),
    /// A document (XDS) table does not load.
    #[error("document tables: {0}")]
    Tables(#[from] crate::documents::TableError),
}

/// Both mappers, loaded once; each message goes to the one that reads its kind.
pub struct MapStage {
    adt: Mapper,
    documents: DocumentMapper,
}

impl MapStage {
    /// Loads the ADT rules from `mappings_dir` and the XDS tables from `documents.tables`.
    pub fn load(settings: &Settings) -> Result<MapStage, Error> {
        let adt = Mapper::load(&settings.mappings_dir)?.with_settings(settings);
        let documents = DocumentMapper::load(&settings.documents.tables)?;
        Ok(MapStage { adt, documents })
    }
}

impl Transform for MapStage {
    fn map(&self, kind: MessageKind, raw: &[u8]) -> Result<Mapped, MapFailure> {
        match kind {
            MessageKind::Hl7v2 if !oru::is_oru_r01(raw) => self.adt.map(kind, raw),
            MessageKind::Hl7v2 | MessageKind::Cda => self.documents.map(kind, raw),
        }
    }

    fn map_with_metadata(
        &self,
        kind: MessageKind,
        raw: &[u8],
    ) -> Result<(Mapped, Option<DocumentMetadata>), MapFailure> {
        match kind {
            MessageKind::Hl7v2 if !oru::is_oru_r01(raw) => Ok((self.adt.map(kind, raw)?, None)),
            MessageKind::Hl7v2 | MessageKind::Cda => {
                let document = self.documents.map_document(kind, raw)?;
                Ok((document.mapped, Some(document.details.metadata)))
            }
        }
    }
}
