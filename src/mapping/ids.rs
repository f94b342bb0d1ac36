//! Deterministic resource ids: UUID v5 of a fixed Relais namespace and `type|system|value`, so the same input
//! always gives the same ids (and the same Bundle), and two senders' identifiers never collide.

use std::sync::LazyLock;

use sha1::{Digest, Sha1};
use uuid::{Builder, Uuid};

/// The Relais namespace: UUID v5 of the URL namespace and `https://relais/fhir`.
static NAMESPACE: LazyLock<Uuid> =
    LazyLock::new(|| Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://relais/fhir"));

/// The id of a resource of `kind` keyed by `parts` (joined with `|`): `Uuid::new_v5(NAMESPACE, name)`, hashed
/// with the `sha1` crate (SHA extensions when the CPU has them) and without building the name.
pub fn id(kind: &str, parts: &[&str]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(NAMESPACE.as_bytes());
    hasher.update(kind.as_bytes());
    for p in parts {
        hasher.update(b"|");
        hasher.update(p.as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Builder::from_sha1_bytes(bytes).into_uuid().hyphenated().encode_lower(&mut buf).to_owned()
}

/// `urn:uuid:<id>`: the fullUrl of a Bundle entry and the literal reference to it.
pub fn urn(id: &str) -> String {
    let mut out = String::with_capacity(9 + id.len());
    out.push_str("urn:uuid:");
    out.push_str(id);
    out
}

/// Percent-encodes a search parameter value (conditional `PUT` URLs).
pub fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/".contains(&b) {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(id("Patient", &["urn:oid:1.2", "42"]), id("Patient", &["urn:oid:1.2", "42"]));
        assert_ne!(id("Patient", &["urn:oid:1.2", "42"]), id("Patient", &["urn:oid:1.3", "42"]));
        assert_eq!(id("Patient", &["a"]).len(), 36);
        assert_eq!(query_escape("urn:oid:1.2|A B"), "urn:oid:1.2%7CA%20B");
    }

    #[test]
    fn ids_are_the_uuid_v5_of_the_joined_name() {
        let name = "Patient|urn:oid:1.2.250.1.71.4.2.2.1|7788990";
        let expected = Uuid::new_v5(&NAMESPACE, name.as_bytes()).hyphenated().to_string();
        assert_eq!(id("Patient", &["urn:oid:1.2.250.1.71.4.2.2.1", "7788990"]), expected);
        assert_eq!(id("Bundle", &[]), Uuid::new_v5(&NAMESPACE, b"Bundle").hyphenated().to_string());
    }
}
