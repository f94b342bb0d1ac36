//! The admin API from the command line: `relais messages`, `relais replay`, `relais dlq`, `relais sinks`
//! (blocking reqwest).
//!
//! Each command returns the text to print: an aligned table by default, the API's JSON with `--json`.
//! Long replays go in chunks of [`REPLAY_CHUNK`] ids with a progress bar (indicatif) on a terminal.

use std::fmt::Write as _;

use indicatif::{ProgressBar, ProgressStyle};
use reqwest::blocking::{Client as Http, RequestBuilder};
use serde::de::DeserializeOwned;

use super::api::{DeadLetter, Flow, IdsRequest, ReplayReport, ReplayRequest, SearchQuery, Undeliverable};
use crate::journal::{EntryMeta, ReplayFrom};

/// Ids per replay request (one progress step each).
pub const REPLAY_CHUNK: usize = 50;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached or answered something unreadable.
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    /// The server refused the request.
    #[error("{status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The server's `error` text.
        message: String,
    },
}

/// A connection to one Relais admin API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    operator: String,
    http: Http,
}

impl Client {
    /// A client of the server at `url` (e.g. `http://127.0.0.1:8080`), with the admin token if any.
    pub fn new(url: &str, token: Option<String>) -> Result<Client, Error> {
        let operator = std::env::var("USER").unwrap_or_else(|_| "cli".into());
        let http = Http::builder().timeout(std::time::Duration::from_secs(60)).build()?;
        Ok(Client { base: url.trim_end_matches('/').to_owned(), token, operator, http })
    }

    fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, Error> {
        let mut request = request.header("x-relais-operator", &self.operator);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send()?;
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().unwrap_or_default();
            let message = body["error"].as_str().unwrap_or("no reason given").to_owned();
            return Err(Error::Refused { status: status.as_u16(), message });
        }
        Ok(response.json()?)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    fn post<T: DeserializeOwned>(&self, path: &str, body: &impl serde::Serialize) -> Result<T, Error> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
    }

    /// `GET /api/search`.
    pub fn search(&self, query: &SearchQuery) -> Result<Vec<EntryMeta>, Error> {
        self.send(self.http.get(format!("{}/api/search", self.base)).query(query))
    }

    /// Replays `ids` from `from`, [`REPLAY_CHUNK`] at a time, with a progress bar when `progress`.
    pub fn replay(&self, ids: &[u64], from: ReplayFrom, progress: bool) -> Result<ReplayReport, Error> {
        let bar = if progress && ids.len() > REPLAY_CHUNK {
            let bar = ProgressBar::new(ids.len() as u64);
            if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} replayed ({eta} left)") {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        let mut report = ReplayReport::default();
        for chunk in ids.chunks(REPLAY_CHUNK) {
            let request = ReplayRequest { ids: chunk.to_vec(), from: Some(from), ..ReplayRequest::default() };
            let done: ReplayReport = self.post("/api/replay", &request)?;
            report.replayed.extend(done.replayed);
            report.refused.extend(done.refused);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(report)
    }

    /// `GET /api/dlq/{sink}`.
    pub fn dead_letters(&self, sink: &str, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        self.get(&format!("/api/dlq/{}?limit={limit}", segment(sink)))
    }

    /// `GET /api/dlq/{sink}/{id}`: the dead letter with its bundle.
    pub fn dead_letter(&self, sink: &str, id: u64) -> Result<serde_json::Value, Error> {
        self.get(&format!("/api/dlq/{}/{id}", segment(sink)))
    }

    /// `POST /api/dlq/{sink}/replay` or `purge` (`action`); no ids means all. Returns the API's answer.
    pub fn dead_letter_action(
        &self,
        sink: &str,
        action: &str,
        ids: &[u64],
    ) -> Result<serde_json::Value, Error> {
        self.post(&format!("/api/dlq/{}/{action}", segment(sink)), &IdsRequest { ids: ids.to_vec() })
    }

    /// `GET /api/sinks`.
    pub fn sinks(&self) -> Result<Vec<Flow>, Error> {
        self.get("/api/sinks")
    }

    /// `POST /api/sinks/{sink}/pause` (`paused`) or `resume`. Returns the API's answer.
    pub fn set_paused(&self, sink: &str, paused: bool) -> Result<serde_json::Value, Error> {
        let action = if paused { "pause" } else { "resume" };
        self.post(&format!("/api/sinks/{}/{action}", segment(sink)), &serde_json::json!({}))
    }

    /// `GET /api/undeliverable`.
    pub fn undeliverable(&self, sink: Option<&str>, limit: usize) -> Result<Vec<Undeliverable>, Error> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(sink) = sink {
            query.push(("sink", sink.to_owned()));
        }
        self.send(self.http.get(format!("{}/api/undeliverable", self.base)).query(&query))
    }
}

fn segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Renders rows as a table with a header line, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// The table of `relais messages`.
pub fn messages_table(entries: &[EntryMeta]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            let header = entry.header.clone().unwrap_or_default();
            let event = entry.progress.as_ref().and_then(|p| p.event_class).map_or("", |e| e.as_str());
            vec![
                entry.id.to_string(),
                entry.received_at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                header.sending_facility,
                header.message_type,
                header.control_id,
                entry.state.as_str().to_owned(),
                event.to_owned(),
                entry.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["ID", "RECEIVED", "SENDER", "TYPE", "CONTROL ID", "STATE", "EVENT", "REASON"], &rows)
}

/// The table of `relais dlq list`.
pub fn dead_letters_table(dead: &[DeadLetter]) -> String {
    let rows: Vec<Vec<String>> = dead
        .iter()
        .map(|d| {
            vec![
                d.message_id.to_string(),
                d.route.clone(),
                d.event_class.map_or("", |e| e.as_str()).to_owned(),
                d.attempts.map_or(String::new(), |n| n.to_string()),
                d.at.map(|at| at.strftime("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
                d.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["MESSAGE", "ROUTE", "EVENT", "ATTEMPTS", "AT", "REASON"], &rows)
}

/// The table of `relais sinks list`.
pub fn sinks_table(flows: &[Flow]) -> String {
    let rows: Vec<Vec<String>> = flows
        .iter()
        .map(|f| {
            vec![
                f.sink.clone(),
                if f.paused { "paused" } else { "running" }.to_owned(),
                f.routed.to_string(),
                f.published.to_string(),
                f.dead_letters.map_or("?".to_owned(), |n| n.to_string()),
            ]
        })
        .collect();
    table(&["SINK", "STATE", "ROUTED", "PUBLISHED", "DEAD LETTERS"], &rows)
}

/// The table of `relais sinks undeliverable`.
pub fn undeliverable_table(found: &[Undeliverable]) -> String {
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|u| {
            vec![
                u.message_id.to_string(),
                u.sink.clone(),
                u.at.map(|at| at.strftime("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
                u.attempts.to_string(),
                u.reason.clone(),
            ]
        })
        .collect();
    table(&["MESSAGE", "SINK", "AT", "ATTEMPTS", "REASON"], &rows)
}

/// The text of a replay report.
pub fn replay_text(report: &ReplayReport) -> String {
    let mut out = format!("replayed {} message(s)\n", report.replayed.len());
    for refused in &report.refused {
        let _ = writeln!(out, "refused {}: {}", refused.id, refused.reason);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_to_the_widest_cell() {
        let out =
            table(&["ID", "STATE"], &[vec!["1".into(), "published".into()], vec!["1234".into(), "x".into()]]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, ["ID    STATE", "1     published", "1234  x"]);
    }
}
