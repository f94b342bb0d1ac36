//! `relais check --routes DIR`: validates route files against the configured sinks, without I/O beyond
//! reading the files.

use std::collections::BTreeSet;
use std::path::Path;

use super::{RouteErrors, RouteSet};

/// Checks every route file of `dir` against the sink instance names; returns how many routes were read, or
/// every error with `file:line`.
pub fn check_routes(dir: &Path, sinks: &BTreeSet<String>) -> Result<usize, RouteErrors> {
    RouteSet::load_dir(dir, sinks).map(|set| set.routes().len())
}
