//! The drop folder: CDA documents (`.xml`) and HL7v2 messages (`.hl7`, `.er7`, `.txt`, one per file) dropped
//! in `folder.path` (default `<data_dir>/inbox`) are journaled, then moved to `.done/`, or to `.rejected/`
//! with a `<name>.reason` file beside them.
//!
//! A half-written file is never taken: hidden and temporary names (`.x`, `x.tmp`, `x.part`, `x~`, `x.swp`,
//! `x.crdownload`) are ignored, and a file is taken only once its size and modification time have not changed
//! for `folder.settle_secs` (a writer that renames a finished file into place is taken on the next scan).
//! The folder is polled every second rather than watched with inotify: polling works the same on the
//! network shares (NFS, SMB) where DPIs drop files and inotify sees nothing, the settle rule needs size and
//! time samples anyway, and one directory listing a second costs nothing.
//!
//! Order: the journal write is durable before the file moves. If Relais stops in between, the file is taken
//! again at start and the journal's deduplication (MSH-4 + MSH-10, or custodian + document id) answers with
//! the first entry. Files with another extension are left in place (logged once).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tracing::{debug, error, info, warn};

use super::Intake;
use super::document::DocumentOutcome;
use crate::hl7v2::{AckCode, read_ack};
use crate::journal::Transport;
use crate::shutdown::Shutdown;

/// How often the folder is listed.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Where accepted files go, under the folder.
pub const DONE_DIR: &str = ".done";

/// Where refused files go (with a `.reason` file), under the folder.
pub const REJECTED_DIR: &str = ".rejected";

/// What a file holds, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Cda,
    Hl7v2,
}

fn kind_of(path: &Path) -> Option<FileKind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "xml" => Some(FileKind::Cda),
        "hl7" | "er7" | "txt" => Some(FileKind::Hl7v2),
        _ => None,
    }
}

/// Hidden or temporary names a writer uses before the file is complete.
fn is_temporary(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.ends_with('~')
        || [".tmp", ".part", ".partial", ".swp", ".crdownload", ".filepart"]
            .iter()
            .any(|s| lower.ends_with(s))
}

/// The last size and mtime seen for a file, and since when they have not changed.
struct Seen {
    size: u64,
    modified: Option<SystemTime>,
    since: Instant,
}

/// The watcher's memory between scans.
struct Watcher {
    dir: PathBuf,
    settle: Duration,
    intake: Intake,
    seen: HashMap<PathBuf, Seen>,
    ignored: HashSet<PathBuf>,
    /// Files journaled but that could not be moved: never journaled twice by this process.
    stuck: HashSet<PathBuf>,
    /// The folder could not be listed at the last scan (warn once, not every second).
    unreadable: bool,
}

/// Creates the folder and its `.done/` and `.rejected/` subfolders.
pub fn prepare(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join(DONE_DIR))?;
    std::fs::create_dir_all(dir.join(REJECTED_DIR))
}

/// Polls `dir` every second until shutdown, journaling settled files through `intake`.
pub async fn run(intake: Intake, dir: PathBuf, settle: Duration, mut shutdown: Shutdown) {
    info!(folder = %dir.display(), settle_secs = settle.as_secs(), "drop folder watched");
    let mut watcher = Watcher {
        dir,
        settle,
        intake,
        seen: HashMap::new(),
        ignored: HashSet::new(),
        stuck: HashSet::new(),
        unreadable: false,
    };
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = tick.tick() => watcher.scan().await,
        }
    }
}

impl Watcher {
    async fn scan(&mut self) {
        let dir = self.dir.clone();
        let listing = tokio::task::spawn_blocking(move || list(&dir)).await;
        let files = match listing {
            Ok(Ok(files)) => {
                if std::mem::take(&mut self.unreadable) {
                    info!(folder = %self.dir.display(), "drop folder readable again");
                }
                files
            }
            Ok(Err(e)) => {
                if !std::mem::replace(&mut self.unreadable, true) {
                    warn!(folder = %self.dir.display(), error = %e, "drop folder not readable");
                }
                return;
            }
            Err(_) => return,
        };
        let now = Instant::now();
        let present: HashSet<PathBuf> = files.iter().map(|(p, ..)| p.clone()).collect();
        self.seen.retain(|p, _| present.contains(p));
        self.stuck.retain(|p| present.contains(p));
        self.ignored.retain(|p| present.contains(p));
        for (path, size, modified) in files {
            if self.stuck.contains(&path) {
                continue;
            }
            let Some(kind) = kind_of(&path) else {
                if self.ignored.insert(path.clone()) {
                    warn!(file = %file_name(&path), "drop folder: not a .xml, .hl7, .er7 or .txt file; left in place");
                }
                continue;
            };
            let settled = match self.seen.get_mut(&path) {
                Some(seen) if seen.size == size && seen.modified == modified => {
                    now.duration_since(seen.since) >= self.settle
                }
                Some(seen) => {
                    *seen = Seen { size, modified, since: now };
                    false
                }
                None => {
                    self.seen.insert(path.clone(), Seen { size, modified, since: now });
                    self.settle.is_zero()
                }
            };
            if settled {
                self.seen.remove(&path);
                self.take(&path, kind, size).await;
            }
        }
    }

    async fn take(&mut self, path: &Path, kind: FileKind, size: u64) {
        let name = file_name(path);
        let peer = format!("folder:{name}");
        let cap = self.intake.max_document_size().max(self.intake.max_message_size()) as u64 * 2;
        if size > cap {
            let reason = format!("file of {size} bytes: too large to journal (limit {cap} bytes)");
            warn!(file = %name, "{reason}");
            self.finish(path, false, Some(reason)).await;
            return;
        }
        let raw = match tokio::fs::read(path).await {
            Ok(raw) => Bytes::from(raw),
            Err(e) => {
                warn!(file = %name, error = %e, "drop folder: file not readable; will retry");
                return;
            }
        };
        let (accepted, reason) = match kind {
            FileKind::Cda => match self.intake.submit_document(raw, Transport::Folder, &peer).await {
                DocumentOutcome::Accepted { id, .. } => {
                    debug!(file = %name, journal_id = id, "document taken from the drop folder");
                    (true, None)
                }
                DocumentOutcome::Rejected { reason, .. } => (false, Some(reason)),
                DocumentOutcome::Unavailable { reason } => {
                    error!(file = %name, %reason, "journal unavailable; the file stays for the next scan");
                    return;
                }
            },
            FileKind::Hl7v2 => {
                let outcome = self.intake.submit(raw, Transport::Folder, &peer).await.resolve().await;
                if outcome.journal_id.is_none() {
                    error!(file = %name, "journal unavailable; the file stays for the next scan");
                    return;
                }
                match outcome.code {
                    AckCode::AA => (true, None),
                    code => {
                        let text = read_ack(&outcome.ack).ok().and_then(|a| a.error_text);
                        (false, Some(format!("{}: {}", code.as_str(), text.unwrap_or_default())))
                    }
                }
            }
        };
        self.finish(path, accepted, reason).await;
    }

    /// Moves the file to `.done/` or `.rejected/` (+ `.reason`); a name already there gets a numeric suffix.
    async fn finish(&mut self, path: &Path, accepted: bool, reason: Option<String>) {
        let dir = self.dir.join(if accepted { DONE_DIR } else { REJECTED_DIR });
        let path_buf = path.to_path_buf();
        let moved = tokio::task::spawn_blocking(move || move_into(&path_buf, &dir, reason.as_deref())).await;
        match moved {
            Ok(Ok(target)) => debug!(file = %file_name(&target), accepted, "drop folder file moved"),
            Ok(Err(e)) => {
                error!(file = %file_name(path), error = %e, "journaled but could not be moved; left in place");
                self.stuck.insert(path.to_path_buf());
            }
            Err(_) => {
                self.stuck.insert(path.to_path_buf());
            }
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Regular, non-temporary files directly in `dir`, with size and mtime.
fn list(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64, Option<SystemTime>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_temporary(name) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            files.push((entry.path(), meta.len(), meta.modified().ok()));
        }
    }
    files.sort();
    Ok(files)
}

fn move_into(path: &Path, dir: &Path, reason: Option<&str>) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = file_name(path);
    let mut target = dir.join(&name);
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    if let Some(reason) = reason {
        let reason_path = PathBuf::from(format!("{}.reason", target.display()));
        std::fs::write(reason_path, format!("{reason}\n"))?;
    }
    std::fs::rename(path, &target)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_hidden_names_are_never_taken() {
        for name in [".x.xml", "a.xml.tmp", "a.part", "a.xml~", "a.swp", "A.TMP", "b.crdownload"] {
            assert!(is_temporary(name), "{name}");
        }
        for name in ["a.xml", "msg.hl7", "tmp.xml"] {
            assert!(!is_temporary(name), "{name}");
        }
    }

    #[test]
    fn kinds_come_from_the_extension() {
        assert_eq!(kind_of(Path::new("a.XML")), Some(FileKind::Cda));
        assert_eq!(kind_of(Path::new("a.hl7")), Some(FileKind::Hl7v2));
        assert_eq!(kind_of(Path::new("a.er7")), Some(FileKind::Hl7v2));
        assert_eq!(kind_of(Path::new("a.txt")), Some(FileKind::Hl7v2));
        assert_eq!(kind_of(Path::new("a.pdf")), None);
    }

    #[test]
    fn moving_keeps_both_files_when_a_name_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join(DONE_DIR);
        for _ in 0..2 {
            let file = dir.path().join("a.xml");
            std::fs::write(&file, b"x").unwrap();
            move_into(&file, &done, Some("why")).unwrap();
        }
        assert!(done.join("a.xml").exists() && done.join("a.xml.1").exists());
        assert_eq!(std::fs::read_to_string(done.join("a.xml.1.reason")).unwrap(), "why\n");
    }
}
