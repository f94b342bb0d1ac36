//! The XDS code tables of `mappings/tables/xds/xds-*.toml`: files an integrator edits, read once at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A table file that could not be read, named by its path.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not the expected TOML.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error, with its line and column.
        message: String,
    },
    /// A value is inconsistent (a type naming an unknown class…).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One document type of `xds-types.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TypeEntry {
    /// The typeCode display name.
    pub display: String,
    /// The classCode (TRE_A03).
    pub class: String,
    /// The formatCode of a level 3 document.
    pub format: String,
    /// The type's code system, LOINC when absent.
    #[serde(default)]
    pub system: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TypesFile {
    types: BTreeMap<String, TypeEntry>,
}

/// The code systems of `[systems]` in `xds-codes.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Systems {
    /// typeCode system (LOINC).
    pub r#type: String,
    /// classCode system.
    pub class: String,
    /// formatCode system.
    pub format: String,
    /// confidentialityCode N/R/V system.
    pub confidentiality: String,
    /// Masking confidentiality codes system.
    pub masking: String,
    /// healthcareFacilityTypeCode system.
    pub facility: String,
    /// practiceSettingCode system.
    pub practice: String,
    /// contentTypeCode system.
    pub content_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CodesFile {
    systems: Systems,
    classes: BTreeMap<String, String>,
    level1: BTreeMap<String, String>,
    masking: BTreeMap<String, String>,
    content_type: BTreeMap<String, String>,
}

/// Every XDS table, loaded and cross-checked.
#[derive(Debug, Clone)]
pub struct XdsTables {
    /// Document types by code.
    pub types: BTreeMap<String, TypeEntry>,
    /// Code systems.
    pub systems: Systems,
    /// classCode labels.
    pub classes: BTreeMap<String, String>,
    /// Level 1 formatCode by media type.
    pub level1: BTreeMap<String, String>,
    /// Masking flag → confidentiality code.
    pub masking: BTreeMap<String, String>,
    /// Encounter class or code → contentTypeCode (`default` when none matches).
    pub content_type: BTreeMap<String, String>,
}

impl XdsTables {
    /// Reads `xds-types.toml` and `xds-codes.toml` from `dir` (usually `mappings/tables/xds`).
    pub fn load(dir: &Path) -> Result<XdsTables, TableError> {
        let types_path = dir.join("xds-types.toml");
        let codes_path = dir.join("xds-codes.toml");
        let types: TypesFile = read_toml(&types_path)?;
        let codes: CodesFile = read_toml(&codes_path)?;
        for (code, entry) in &types.types {
            if !codes.classes.contains_key(&entry.class) {
                return Err(TableError::Invalid {
                    path: types_path,
                    message: format!(
                        "types.\"{code}\".class = \"{}\" is not in [classes] of xds-codes.toml",
                        entry.class
                    ),
                });
            }
        }
        if !codes.content_type.contains_key("default") {
            return Err(TableError::Invalid {
                path: codes_path,
                message: "[content_type] needs a `default`".into(),
            });
        }
        Ok(XdsTables {
            types: types.types,
            systems: codes.systems,
            classes: codes.classes,
            level1: codes.level1,
            masking: codes.masking,
            content_type: codes.content_type,
        })
    }
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TableError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| TableError::Read { path: path.into(), source })?;
    toml::from_str(&text).map_err(|e| TableError::Parse { path: path.into(), message: e.to_string() })
}
