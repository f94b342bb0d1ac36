//! The local copy of the MSSanté directory: RPPS → the practitioner's personal MSSanté mailboxes.
//!
//! `relais directory import FILE` reads the public Annuaire Santé extraction of MSSanté mailboxes (pipe-
//! separated text with a header line, UTF-8 or Windows-1252; columns found by their header names, so extra or
//! reordered columns do not matter: `Type de BAL`, `Adresse BAL`, `Type Identifiant PP`, `Identifiant PP`,
//! `Identification nationale PP`) and replaces the table in `<data_dir>/directory.redb` in one transaction.
//! Only personal mailboxes (`PER`) of practitioners with an RPPS are kept. The notification sink then looks up
//! a GP's addresses by RPPS (11 digits) or IDNPS (`8` + RPPS). It never reaches the network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};

const BY_RPPS: TableDefinition<&str, &str> = TableDefinition::new("mss_by_rpps");
/// The file name of the directory inside the data directory.
pub const FILE_NAME: &str = "directory.redb";

/// A directory problem, naming the file and, for input errors, the line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The extraction could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The extraction does not have the expected shape.
    #[error("{path}:{line}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The directory database failed.
    #[error("directory database: {0}")]
    Storage(String),
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    /// Data lines read.
    pub lines: usize,
    /// Practitioners (RPPS) with at least one personal mailbox.
    pub practitioners: usize,
    /// Mailboxes kept.
    pub mailboxes: usize,
    /// Lines skipped (not a personal mailbox, no RPPS, empty address).
    pub skipped: usize,
}

/// The MSSanté directory in the data directory.
#[derive(Debug)]
pub struct Directory {
    db: Database,
}

/// Normalises a header name: lower case, accents and apostrophes folded, spaces collapsed.
fn norm(s: &str) -> String {
    let folded: String = s
        .trim()
        .trim_start_matches('\u{feff}')
        .chars()
        .map(|c| match c {
            'é' | 'è' | 'ê' | 'É' | 'È' => 'e',
            'à' | 'â' => 'a',
            'ç' => 'c',
            '\u{2019}' => '\'',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The RPPS (11 digits) of an RPPS or IDNPS (`8` + RPPS) identifier.
pub fn rpps_of(id: &str) -> Option<String> {
    let id = id.trim();
    if !id.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    match id.len() {
        11 => Some(id.to_string()),
        12 if id.starts_with('8') => Some(id[1..].to_string()),
        _ => None,
    }
}

/// Parses an extraction into RPPS → addresses.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<(BTreeMap<String, Vec<String>>, ImportReport), Error> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => encoding_rs::WINDOWS_1252.decode(bytes).0,
    };
    let fmt = |line: usize, reason: String| Error::Format { path: path.display().to_string(), line, reason };
    let mut lines = text.lines();
    let header: Vec<String> =
        lines.next().ok_or_else(|| fmt(1, "empty file".into()))?.split('|').map(norm).collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let address = col("adresse bal").ok_or_else(|| fmt(1, "no `Adresse BAL` column".into()))?;
    let kind = col("type de bal").ok_or_else(|| fmt(1, "no `Type de BAL` column".into()))?;
    let id_type = col("type identifiant pp").or_else(|| col("type d'identifiant pp"));
    let id = col("identifiant pp");
    let national = col("identification nationale pp");
    if id.is_none() && national.is_none() {
        return Err(fmt(1, "no `Identifiant PP` nor `Identification nationale PP` column".into()));
    }
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut report = ImportReport { lines: 0, practitioners: 0, mailboxes: 0, skipped: 0 };
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        report.lines += 1;
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() < header.len().min(address.max(kind) + 1) {
            return Err(fmt(n + 2, format!("{} fields, the header has {}", fields.len(), header.len())));
        }
        let get = |i: Option<usize>| i.and_then(|i| fields.get(i)).map(|s| s.trim()).unwrap_or("");
        let addr = get(Some(address));
        let rpps = match (get(id_type), get(id)) {
            ("8", id) => rpps_of(id),
            _ => None,
        }
        .or_else(|| rpps_of(get(national)));
        match rpps {
            Some(rpps) if get(Some(kind)).eq_ignore_ascii_case("PER") && addr.contains('@') => {
                let entry = map.entry(rpps).or_default();
                if !entry.iter().any(|a| a.eq_ignore_ascii_case(addr)) {
                    entry.push(addr.to_string());
                    report.mailboxes += 1;
                }
            }
            _ => report.skipped += 1,
        }
    }
    report.practitioners = map.len();
    Ok((map, report))
}

impl Directory {
    /// Opens (or creates) the directory in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Directory, Error> {
        std::fs::create_dir_all(data_dir).map_err(storage)?;
        let db = Database::create(Self::path(data_dir)).map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(BY_RPPS).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(Directory { db })
    }

    /// Where the directory lives in `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Replaces the whole directory with the extraction in `file`.
    pub fn import(&self, file: &Path) -> Result<ImportReport, Error> {
        let bytes =
            std::fs::read(file).map_err(|e| Error::Read { path: file.display().to_string(), source: e })?;
        let (map, report) = parse(file, &bytes)?;
        let txn = self.db.begin_write().map_err(storage)?;
        txn.delete_table(BY_RPPS).map_err(storage)?;
        {
            let mut table = txn.open_table(BY_RPPS).map_err(storage)?;
            for (rpps, addrs) in &map {
                table.insert(rpps.as_str(), addrs.join("\n").as_str()).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
        Ok(report)
    }

    /// The personal MSSanté addresses of the practitioner with this RPPS or IDNPS; empty when unknown.
    pub fn lookup(&self, id: &str) -> Result<Vec<String>, Error> {
        let Some(rpps) = rpps_of(id) else { return Ok(Vec::new()) };
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(BY_RPPS).map_err(storage)?;
        Ok(table
            .get(rpps.as_str())
            .map_err(storage)?
            .map(|v| v.value().lines().map(String::from).collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Type de BAL|Adresse BAL|Type Identifiant PP|Identifiant PP|Identification nationale PP|Nom d'exercice";

    #[test]
    fn keeps_personal_mailboxes_by_rpps() {
        let text = format!(
            "{HEADER}\nPER|isabelle.agnes@medecin.mssante.fr|8|10000023084|810000023084|AGNES\n\
             PER|i.agnes@autre.mssante.fr|||810000023084|AGNES\n\
             ORG|accueil@ch-test.mssante.fr||||\nAPP|robot@ch-test.mssante.fr||||\n"
        );
        let (map, report) = parse(Path::new("x.txt"), text.as_bytes()).unwrap();
        assert_eq!(map["10000023084"], vec!["isabelle.agnes@medecin.mssante.fr", "i.agnes@autre.mssante.fr"]);
        assert_eq!(report, ImportReport { lines: 4, practitioners: 1, mailboxes: 2, skipped: 2 });
    }

    #[test]
    fn refuses_a_file_without_the_columns_naming_the_line() {
        let err = parse(Path::new("bad.txt"), b"a|b|c\n1|2|3\n").unwrap_err();
        assert_eq!(err.to_string(), "bad.txt:1: no `Adresse BAL` column");
    }

    #[test]
    fn rpps_and_idnps() {
        assert_eq!(rpps_of("810000023084").as_deref(), Some("10000023084"));
        assert_eq!(rpps_of("10000023084").as_deref(), Some("10000023084"));
        assert_eq!(rpps_of("010000023084"), None);
        assert_eq!(rpps_of("abc"), None);
    }
}
