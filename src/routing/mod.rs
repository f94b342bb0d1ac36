//! The route stage: `routes/*.toml` compiled into a [`RouteSet`] that says where a mapped message goes.
//!
//! It receives [`Facts`] from the map stage (never the raw message) and hands the pipeline a [`Routing`]:
//! each destination (a sink instance named in `relais.toml`) once, with the first route that sent the
//! message there. A message no route matches gets an empty routing and is journaled `unrouted`, never dropped.
//!
//! Loading is all-or-nothing: every file of the directory is read (sorted by name), every error is reported
//! with `file:line`, and a set is built only when there is none ([`RouteSet::load_dir`]). [`reload`] swaps a
//! live set on SIGHUP or file change, keeping the previous one when the new files do not load.

pub mod check;
pub mod compile;
pub mod file;
pub mod reload;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::facts::Facts;

pub use compile::Predicate;

/// A problem in a route file, located by file and line (1-based; 0 when the file itself is the problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct RouteError {
    /// The route file.
    pub file: PathBuf,
    /// The line in it.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Every problem found while loading a route directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RouteErrors(pub Vec<RouteError>);

impl fmt::Display for RouteErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its unique name.
    pub name: String,
    /// The file it comes from.
    pub file: PathBuf,
    /// The line of its `name` key.
    pub line: usize,
    /// Sink instance names.
    pub destinations: Vec<String>,
    /// When it applies.
    pub predicate: Predicate,
}

/// The routes of one directory, in file then declaration order.
#[derive(Debug, Clone, Default)]
pub struct RouteSet {
    routes: Vec<Route>,
}

/// Where one message goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// Names of the routes that matched, in order.
    pub routes: Vec<String>,
    /// `(destination, route)`: each destination once, with the first matching route that names it.
    pub destinations: Vec<(String, String)>,
}

impl Routing {
    /// True when no route matched (the message is `unrouted`).
    pub fn is_unrouted(&self) -> bool {
        self.destinations.is_empty()
    }
}

/// For `relais routes explain`: one route's verdict on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The route name.
    pub route: String,
    /// `file:line` of the route.
    pub location: String,
    /// `None` when the route matches, otherwise the first predicate that failed.
    pub failed: Option<String>,
    /// The route's destinations.
    pub destinations: Vec<String>,
}

impl RouteSet {
    /// Reads every `*.toml` in `dir` (sorted by file name) and checks destinations against `sinks`.
    /// All errors of all files are returned together.
    pub fn load_dir(dir: &Path, sinks: &BTreeSet<String>) -> Result<RouteSet, RouteErrors> {
        let files = match route_files(dir) {
            Ok(files) => files,
            Err(e) => {
                return Err(RouteErrors(vec![RouteError {
                    file: dir.to_path_buf(),
                    line: 0,
                    message: format!("cannot read the routes directory: {e}"),
                }]));
            }
        };
        let mut errors = Vec::new();
        let mut routes: Vec<Route> = Vec::new();
        for path in files {
            match std::fs::read_to_string(&path) {
                Ok(text) => parse_file(&path, &text, sinks, &mut routes, &mut errors),
                Err(e) => {
                    errors.push(RouteError { file: path, line: 0, message: format!("cannot read: {e}") })
                }
            }
        }
        if errors.is_empty() { Ok(RouteSet { routes }) } else { Err(RouteErrors(errors)) }
    }

    /// Parses one file's text (used by `load_dir` and tests); destinations are checked against `sinks`.
    pub fn from_str(file: &Path, text: &str, sinks: &BTreeSet<String>) -> Result<RouteSet, RouteErrors> {
        let mut errors = Vec::new();
        let mut routes = Vec::new();
        parse_file(file, text, sinks, &mut routes, &mut errors);
        if errors.is_empty() { Ok(RouteSet { routes }) } else { Err(RouteErrors(errors)) }
    }

    /// The routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Every sink named by some route.
    pub fn destinations(&self) -> BTreeSet<String> {
        self.routes.iter().flat_map(|r| r.destinations.iter().cloned()).collect()
    }

    /// Where a message with these facts goes.
    pub fn route(&self, facts: &Facts) -> Routing {
        let mut routing = Routing::default();
        for route in &self.routes {
            if !route.predicate.matches(facts) {
                continue;
            }
            routing.routes.push(route.name.clone());
            for dest in &route.destinations {
                if !routing.destinations.iter().any(|(d, _)| d == dest) {
                    routing.destinations.push((dest.clone(), route.name.clone()));
                }
            }
        }
        routing
    }

    /// Each route's verdict on these facts, in order.
    pub fn explain(&self, facts: &Facts) -> Vec<Verdict> {
        self.routes
            .iter()
            .map(|route| Verdict {
                route: route.name.clone(),
                location: format!("{}:{}", route.file.display(), route.line),
                failed: route.predicate.check(facts).err(),
                destinations: route.destinations.clone(),
            })
            .collect()
    }
}

/// For `relais routes explain`: maps `raw` with `transform` and gives each route's verdict on its facts.
pub fn explain_message(
    set: &RouteSet,
    transform: &dyn crate::facts::Transform,
    kind: crate::facts::MessageKind,
    raw: &[u8],
) -> Result<Vec<Verdict>, crate::facts::MapFailure> {
    let mapped = transform.map(kind, raw)?;
    Ok(set.explain(&mapped.facts))
}

/// Renders verdicts one per line: `MATCH name (file:line) -> dest, dest` or `no    name (file:line): why`.
pub fn render_verdicts(verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    for verdict in verdicts {
        match &verdict.failed {
            None => out.push_str(&format!(
                "MATCH {} ({}) -> {}\n",
                verdict.route,
                verdict.location,
                verdict.destinations.join(", ")
            )),
            Some(why) => out.push_str(&format!("no    {} ({}): {why}\n", verdict.route, verdict.location)),
        }
    }
    if verdicts.iter().all(|v| v.failed.is_some()) {
        out.push_str("=> unrouted\n");
    }
    out
}

fn route_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn parse_file(
    path: &Path,
    text: &str,
    sinks: &BTreeSet<String>,
    routes: &mut Vec<Route>,
    errors: &mut Vec<RouteError>,
) {
    let error = |span: Option<std::ops::Range<usize>>, message: String| RouteError {
        file: path.to_path_buf(),
        line: span.map_or(0, |s| line_of(text, s.start)),
        message,
    };
    let parsed: file::RouteFile = match toml::from_str(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            errors.push(error(e.span(), e.message().trim().to_owned()));
            return;
        }
    };
    for def in parsed.route {
        let span = def.span();
        let def = def.into_inner();
        let name_span = def.name.span();
        let name = def.name.into_inner();
        if name.trim().is_empty() {
            errors.push(error(Some(name_span.clone()), "route name must not be empty".into()));
        }
        if let Some(other) = routes.iter().find(|r| r.name == name) {
            errors.push(error(
                Some(name_span.clone()),
                format!("route `{name}` is already defined at {}:{}", other.file.display(), other.line),
            ));
        }
        if def.destinations.is_empty() {
            errors.push(error(Some(span), format!("route `{name}` has no destinations")));
        }
        let mut destinations = Vec::new();
        for dest in def.destinations {
            if !sinks.contains(dest.get_ref()) {
                let known: Vec<&str> = sinks.iter().map(String::as_str).collect();
                errors.push(error(
                    Some(dest.span()),
                    format!(
                        "route `{name}`: unknown destination `{}` (sinks in relais.toml: {})",
                        dest.get_ref(),
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ),
                ));
            }
            destinations.push(dest.into_inner());
        }
        routes.push(Route {
            name,
            file: path.to_path_buf(),
            line: line_of(text, name_span.start),
            destinations,
            predicate: compile::compile(def.when),
        });
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests;
