//! Ingest: listeners that journal each message, then acknowledge it.
