//! The audit trail: one JSON line per request, written by urund. It records who asked
//! for what and what happened, never the data of the streams.
#![forbid(unsafe_code)]

use crate::system::Caller;
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Record {
    /// Seconds since the epoch, with milliseconds.
    pub time: f64,
    pub request: String,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub pid: i32,
    pub image: String,
    pub image_id: Option<String>,
    pub argv: Vec<String>,
    pub container: Option<String>,
    /// "allowed", "refused" or "error".
    pub decision: &'static str,
    /// The rule that refused the request, or the cause of an error.
    pub rule: Option<String>,
    pub message: Option<String>,
    pub status: Option<u8>,
    pub duration_ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Record {
    pub fn new(request: &str, caller: &Caller) -> Record {
        Record {
            time: now(),
            request: request.to_string(),
            uid: caller.uid,
            gid: caller.gid,
            user: caller.display_name(),
            pid: caller.pid,
            decision: "error",
            ..Default::default()
        }
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a Record always serialises")
    }
}

fn now() -> f64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

/// Where records go. For now: standard error, which systemd sends to the journal.
pub fn write(rec: &Record) {
    eprintln!("urund audit: {}", rec.to_line());
}
