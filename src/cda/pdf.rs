//! The PDF of a level-1 CDA: `component/nonXMLBody/text` with `mediaType="application/pdf"`, base64-decoded.
//!
//! The header reader ([`super::extract`]) only sniffs that body; the MSSanté sink needs the bytes, to attach the
//! PDF beside `IHE_XDM.ZIP`. Anything else (a structured body, a text body, a base64 that is not a PDF) gives
//! `None`.

use base64::Engine;
use quick_xml::events::Event;
use quick_xml::reader::NsReader;

use super::HL7_V3_NS;

/// The PDF carried by a level-1 CDA's `nonXMLBody`, if it has one.
pub fn pdf(raw: &[u8]) -> Option<Vec<u8>> {
    let mut reader = NsReader::from_reader(raw);
    let mut depth_in_body: Option<usize> = None;
    let mut depth = 0usize;
    let mut in_pdf_text = false;
    let mut encoded = Vec::new();
    loop {
        let (ns, event) = reader.read_resolved_event().ok()?;
        let in_v3 =
            matches!(ns, quick_xml::name::ResolveResult::Bound(n) if n.as_ref() == HL7_V3_NS.as_bytes());
        match event {
            Event::Start(e) => {
                depth += 1;
                let name = e.local_name();
                if in_v3 && name.as_ref() == b"nonXMLBody" {
                    depth_in_body = Some(depth);
                } else if in_v3 && name.as_ref() == b"text" && depth_in_body == Some(depth - 1) {
                    let media = e
                        .try_get_attribute("mediaType")
                        .ok()
                        .flatten()
                        .map(|a| a.value.into_owned())
                        .unwrap_or_default();
                    in_pdf_text = media.eq_ignore_ascii_case(b"application/pdf");
                }
            }
            Event::End(_) => {
                if in_pdf_text {
                    break;
                }
                if depth_in_body == Some(depth) {
                    return None;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) if in_pdf_text => encoded.extend(t.iter().filter(|b| !b.is_ascii_whitespace())),
            Event::CData(c) if in_pdf_text => encoded.extend(c.iter().filter(|b| !b.is_ascii_whitespace())),
            Event::Eof => return None,
            _ => {}
        }
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(&encoded).ok()?;
    bytes.starts_with(b"%PDF-").then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><component><nonXMLBody>\
                       <text mediaType=\"application/pdf\" representation=\"B64\">JVBERi0x\nLjQK</text>\
                       </nonXMLBody></component></ClinicalDocument>";

    #[test]
    fn a_level_1_pdf_body_is_decoded() {
        assert_eq!(pdf(DOC.as_bytes()).unwrap(), b"%PDF-1.4\n");
    }

    #[test]
    fn other_bodies_give_none() {
        let text = DOC.replace("application/pdf", "text/plain");
        assert_eq!(pdf(text.as_bytes()), None);
        let not_pdf = DOC.replace("JVBERi0x\nLjQK", "aGVsbG8=");
        assert_eq!(pdf(not_pdf.as_bytes()), None);
        let structured = "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><component><structuredBody>\
                          <text>JVBERi0xLjQK</text></structuredBody></component></ClinicalDocument>";
        assert_eq!(pdf(structured.as_bytes()), None);
    }
}
