//! `relais check`, mappings half: loads every mapping file the way `relais serve` does and lists every
//! problem with `file:line`. (Route files are checked by the routing module.)

use std::path::Path;

use super::file::{self, CheckError};

/// Checks the mappings directory; `Ok` holds a one-line summary, `Err` every problem found.
pub fn check_mappings(dir: &Path) -> Result<String, Vec<CheckError>> {
    match file::load(dir) {
        Ok(rules) => Ok(format!(
            "{}: ok ({} elements, {} class rules, {} tables, {} segment extensions)",
            dir.display(),
            rules.source.len(),
            rules.classes.len(),
            rules.tables.len(),
            rules.segment_extensions.len()
        )),
        Err(errors) => Err(errors.0),
    }
}
