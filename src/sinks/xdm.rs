//! The IHE XDM (ITI-32) package an MSSanté mail carries: `IHE_XDM.ZIP`.
//!
//! It receives a [`Submission`] (one document and its metadata) and hands on the zip bytes:
//!
//! ```text
//! INDEX.HTM                         what the package holds, for a person opening it by hand
//! README.TXT                        who made it (software name and version)
//! IHE_XDM/SUBSET01/METADATA.XML     lcm:SubmitObjectsRequest (ebrim.rs), DocumentEntry URI = DOC0001.XML
//! IHE_XDM/SUBSET01/DOC0001.XML      the CDA document
//! ```
//!
//! The PDF rendering, when there is one, travels beside the zip as its own mail attachment (french-interop.md
//! §6.2), not inside it. No I/O: the zip is built in memory.

use std::io::{Cursor, Write};

use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

use crate::sinks::ebrim::Submission;

/// The attachment name MSSanté readers look for.
pub const XDM_FILE_NAME: &str = "IHE_XDM.ZIP";
/// Path of the metadata inside the zip.
pub const METADATA_PATH: &str = "IHE_XDM/SUBSET01/METADATA.XML";
/// Path of the document inside the zip.
pub const DOCUMENT_PATH: &str = "IHE_XDM/SUBSET01/DOC0001.XML";
const DOCUMENT_URI: &str = "DOC0001.XML";

/// Why a package could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The zip writer failed.
    #[error("XDM zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// Writing into the zip failed.
    #[error("XDM zip: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds `IHE_XDM.ZIP` for one document; `software` names the producer in README.TXT (e.g. `Relais 0.1.0`).
pub fn build(submission: &Submission, software: &str) -> Result<Vec<u8>, Error> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    zip.start_file("INDEX.HTM", options)?;
    zip.write_all(index_htm(submission).as_bytes())?;
    zip.start_file("README.TXT", options)?;
    zip.write_all(readme_txt(software).as_bytes())?;
    zip.add_directory("IHE_XDM/", options)?;
    zip.add_directory("IHE_XDM/SUBSET01/", options)?;
    zip.start_file(METADATA_PATH, options)?;
    zip.write_all(&submission.metadata_xml(Some(DOCUMENT_URI)))?;
    zip.start_file(DOCUMENT_PATH, options)?;
    zip.write_all(&submission.document.content)?;
    Ok(zip.finish()?.into_inner())
}

fn index_htm(s: &Submission) -> String {
    let title = escape_html(&s.document.title);
    format!(
        "<!DOCTYPE html>\r\n<html lang=\"fr\"><head><meta charset=\"UTF-8\"><title>IHE XDM</title></head><body>\r\n\
         <h1>Contenu de l'archive IHE XDM</h1>\r\n<ul>\r\n\
         <li><a href=\"IHE_XDM/SUBSET01/METADATA.XML\">IHE_XDM/SUBSET01/METADATA.XML</a> : métadonnées XDS</li>\r\n\
         <li><a href=\"IHE_XDM/SUBSET01/DOC0001.XML\">IHE_XDM/SUBSET01/DOC0001.XML</a> : {title}</li>\r\n\
         </ul>\r\n<p>Voir README.TXT.</p></body></html>\r\n"
    )
}

fn readme_txt(software: &str) -> String {
    format!(
        "Archive IHE XDM (IHE ITI TF-1 §16, ITI-32 Distribute Document Set on Media).\r\n\
         Produite par : {software}\r\n\
         IHE_XDM/SUBSET01/METADATA.XML : métadonnées (ebRIM SubmitObjectsRequest)\r\n\
         IHE_XDM/SUBSET01/DOC0001.XML : document CDA R2\r\n"
    )
}

fn escape_html(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::sinks::ebrim::{SubmissionParams, sample_document};

    #[test]
    fn zip_holds_the_four_files_with_the_document_unchanged() {
        let s = Submission::new(sample_document(), SubmissionParams::default(), jiff::Timestamp::now());
        let bytes = build(&s, "Relais 0.1.0").unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        let names: Vec<String> = archive.file_names().map(|n| n.unwrap().to_string()).collect();
        for expected in ["INDEX.HTM", "README.TXT", METADATA_PATH, DOCUMENT_PATH] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
        let mut doc = Vec::new();
        archive.by_name(DOCUMENT_PATH).unwrap().read_to_end(&mut doc).unwrap();
        assert_eq!(doc, s.document.content);
        let mut readme = String::new();
        archive.by_name("README.TXT").unwrap().read_to_string(&mut readme).unwrap();
        assert!(readme.contains("Relais 0.1.0"));
    }
}
