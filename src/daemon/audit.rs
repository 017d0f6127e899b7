//! The audit trail: one JSON line per event, written by urund. It records who asked
//! for what and what happened, never the data of the streams.
//!
//! A member of the access group is an adversary too, so the trail is bounded:
//! - every string a caller can influence (argv, image, messages that echo input, names,
//!   label values) is clipped once, in [`Record::to_line`], before any sink, with a
//!   visible marker; a line is never longer than [`MAX_LINE`];
//! - records of requests that got no container (refusals, protocol errors, errors
//!   before the container was created, `--policy` queries) are rate-limited per uid
//!   ([`Limiter`]); what is held back is counted and written as one `suppressed` record.
//!   Records about containers (`admitted`, the end of an admitted run, `reaped`) are
//!   never held back: each costs the caller a container, which the policy bounds;
//! - characters that confuse log viewers and JavaScript consumers or are invisible
//!   (every character of the Unicode categories Cc, Cf, Zl and Zp: C1 controls, DEL,
//!   U+2028/U+2029, bidirectional controls, zero-width characters, the BOM, tag
//!   characters) are escaped as `\uXXXX` (a surrogate pair above U+FFFF), as serde_json
//!   does for C0 controls.
//!
//! The audit file's directory must be urund's own (see [`Sink::open`]).
#![forbid(unsafe_code)]

use crate::policy::forced::{LABEL_NAME, LABEL_REQUEST, LABEL_UID, LABEL_USER};
use crate::policy::Caller;
use crate::policy::Limits;
use crate::system::{owner_and_mode, Owner};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::{Mode, SFlag};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest JSON size (quotes included) of one caller-influenced string field: `image`,
/// `message`, each word of `argv`.
pub const MAX_FIELD: usize = 4096;
/// Largest JSON size of the whole `argv` array.
pub const MAX_ARGV: usize = 8192;
/// Largest JSON size of a short field: `request`, `user`, `image_id`, `container`,
/// `rule`, a label value, each name of `env`.
pub const MAX_SHORT: usize = 256;
/// Largest JSON size of `entrypoint` and of `workdir`.
pub const MAX_PATH: usize = 1024;
/// Largest JSON size of the whole `env` array (names only).
pub const MAX_ENV: usize = 2048;
/// Largest number of labels in a `reaped` record.
const MAX_LABELS: usize = 8;
/// Largest number of rules in a `suppressed` record (the rest are counted as `other`).
const MAX_RULES: usize = 16;
/// Largest key of those maps.
const MAX_KEY: usize = 64;
/// No record's line (without its newline) is longer: the sum of the field bounds
/// above and the fixed keys and numbers, checked by a property test.
pub const MAX_LINE: usize = 33 * 1024;
/// Largest JSON size of a build's `findings` and of its `tags` (each array).
pub const MAX_BUILD_LIST: usize = 2048;

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
    /// The OCI runtime the run's container was created with (policy `[runtime]`; at
    /// most 64 bytes, from the policy file only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    pub argv: Vec<String>,
    /// `--entrypoint` as asked (`""`: the image's cleared); `None`: the image's.
    pub entrypoint: Option<String>,
    /// `-w` as asked; `None`: the image's.
    pub workdir: Option<String>,
    /// The names of the `-e`/`--env-file` variables the request carried, never their
    /// values (a value may be a secret).
    pub env: Vec<String>,
    pub container: Option<String>,
    /// The `--name` the user gave the run (a label, never Docker's name).
    pub name: Option<String>,
    /// "allowed", "refused" or "error" (how a request ended); "admitted" (a run's
    /// container was created: written before it starts); "reaped" (urund removed a
    /// container it created and no run tracks: a leftover found at start or by its
    /// reconcile pass); "cleanup" (a removal that failed at the end of a run, queued,
    /// and how its retries ended); "suppressed" (records held back by the rate limit).
    pub decision: &'static str,
    /// The rule that refused the request, or the cause of an error.
    pub rule: Option<String>,
    pub message: Option<String>,
    pub status: Option<u8>,
    pub duration_ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `admitted`: the limits that apply to the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<RunLimits>,
    /// `reaped`: the container's urun labels (uid, user, request, name) as it carried them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `suppressed`: what was held back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<Suppressed>,
    /// A build (`urun build`): its digests, context size, findings, tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildAudit>,
}

/// What a build's record adds: the Dockerfile's and the context's sha256 (hex), the
/// context's size in bytes, the check's findings (`rule:severity:line`), the tags
/// the image got. The image ID is the record's `image_id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BuildAudit {
    pub dockerfile: String,
    pub context: String,
    pub context_bytes: u64,
    pub findings: Vec<String>,
    pub tags: Vec<String>,
}

/// The limits of an admitted run, as numbers: bytes, CPUs, counts, seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunLimits {
    pub memory: u64,
    pub cpus: f64,
    pub pids: u32,
    pub nofile: u32,
    pub nproc: u32,
    pub tmpfs_size: u64,
    pub max_runtime: u64,
    pub max_concurrent: u32,
}

impl From<&Limits> for RunLimits {
    fn from(l: &Limits) -> RunLimits {
        RunLimits {
            memory: l.memory.0,
            cpus: l.cpus.0,
            pids: l.pids.0,
            nofile: l.nofile.0,
            nproc: l.nproc.0,
            tmpfs_size: l.tmpfs_size.0,
            max_runtime: l.max_runtime.0,
            max_concurrent: l.max_concurrent.0,
        }
    }
}

/// What a `suppressed` record stands for: `count` records of its uid, the first and
/// last of them at `first` and `last` (their `time`), by rule (or decision when there
/// was no rule).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Suppressed {
    pub count: u64,
    pub first: f64,
    pub last: f64,
    pub rules: BTreeMap<String, u64>,
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

    /// The record written when a run's container has been created, before it starts:
    /// a run in flight when urund dies is still on record. The end record follows.
    pub fn admitted(&self, limits: &Limits) -> Record {
        Record {
            time: now(),
            decision: "admitted",
            rule: None,
            status: None,
            limits: Some(limits.into()),
            ..self.clone()
        }
    }

    /// The record of a container urund removed that no run tracked (proven its own: see
    /// [`crate::daemon::instance::Owner::proves`]), at start or in a later clean-up pass: its ID
    /// and the urun labels it carried (clipped like the rest).
    pub fn reaped(container: &str, labels: &HashMap<String, String>) -> Record {
        let kept: BTreeMap<String, String> = [LABEL_UID, LABEL_USER, LABEL_REQUEST, LABEL_NAME]
            .iter()
            .filter_map(|k| labels.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect();
        Record {
            time: now(),
            request: labels.get(LABEL_REQUEST).cloned().unwrap_or_default(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            user: "urund".into(),
            pid: std::process::id() as i32,
            container: Some(container.to_string()),
            decision: "reaped",
            message: Some("leftover container removed".into()),
            labels: Some(kept),
            ..Default::default()
        }
    }

    /// A record of urund's clean-up of a run (not a request): a removal that failed at
    /// the end of the run and was queued for retry, and how it ended. `request` and the
    /// run's uid and user go into `labels`; the record is urund's own.
    pub fn cleanup(
        request: &str,
        run_uid: u32,
        run_user: &str,
        container: Option<&str>,
        message: String,
    ) -> Record {
        let labels: BTreeMap<String, String> = [
            (LABEL_UID, run_uid.to_string()),
            (LABEL_USER, run_user.to_string()),
            (LABEL_REQUEST, request.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Record {
            time: now(),
            request: request.to_string(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            user: "urund".into(),
            pid: std::process::id() as i32,
            container: container.map(String::from),
            decision: "cleanup",
            message: Some(message),
            labels: Some(labels),
            ..Default::default()
        }
    }

    /// Records that are rate-limited per uid: those of requests that got no container.
    fn rate_limited(&self) -> bool {
        self.container.is_none() && !matches!(self.decision, "suppressed" | "reaped" | "cleanup")
    }

    /// The record with every string clipped to its bound (see the module comment).
    pub fn bounded(&self) -> Record {
        let short = |s: &Option<String>| s.as_deref().map(|s| clip(s, MAX_SHORT));
        let map = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter()
                .take(MAX_LABELS)
                .map(|(k, v)| (clip(k, MAX_KEY), clip(v, MAX_SHORT)))
                .collect()
        };
        Record {
            time: self.time,
            request: clip(&self.request, MAX_SHORT),
            uid: self.uid,
            gid: self.gid,
            user: clip(&self.user, MAX_SHORT),
            pid: self.pid,
            image: clip(&self.image, MAX_FIELD),
            image_id: short(&self.image_id),
            runtime: short(&self.runtime),
            argv: clip_list(&self.argv, MAX_ARGV, MAX_FIELD),
            entrypoint: self.entrypoint.as_deref().map(|s| clip(s, MAX_PATH)),
            workdir: self.workdir.as_deref().map(|s| clip(s, MAX_PATH)),
            env: clip_list(&self.env, MAX_ENV, MAX_SHORT),
            container: short(&self.container),
            name: short(&self.name),
            decision: self.decision,
            rule: short(&self.rule),
            message: self.message.as_deref().map(|s| clip(s, MAX_FIELD)),
            status: self.status,
            duration_ms: self.duration_ms,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            limits: self.limits.clone(),
            labels: self.labels.as_ref().map(map),
            build: self.build.as_ref().map(|b| BuildAudit {
                dockerfile: clip(&b.dockerfile, MAX_SHORT),
                context: clip(&b.context, MAX_SHORT),
                context_bytes: b.context_bytes,
                findings: clip_list(&b.findings, MAX_BUILD_LIST, MAX_SHORT),
                tags: clip_list(&b.tags, MAX_BUILD_LIST, MAX_SHORT),
            }),
            suppressed: self.suppressed.as_ref().map(|s| Suppressed {
                count: s.count,
                first: s.first,
                last: s.last,
                rules: s
                    .rules
                    .iter()
                    .take(MAX_RULES)
                    .map(|(k, v)| (clip(k, MAX_KEY), *v))
                    .collect(),
            }),
        }
    }

    /// The record as one JSON line: bounded, and escaped for viewers.
    pub fn to_line(&self) -> String {
        let json = serde_json::to_string(&self.bounded()).expect("a Record always serialises");
        escape_confusables(&json)
    }
}

fn now() -> f64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

/// Characters serde_json leaves as they are but that a log viewer, terminal or
/// JavaScript consumer may act on or not show: every character of the Unicode general
/// categories Cc (controls: C0, DEL, C1), Cf (format: soft hyphen, Arabic letter mark,
/// zero-width characters, bidirectional controls, invisible operators, the BOM, tag
/// characters, ...), Zl and Zp (line and paragraph separators, line breaks in
/// JavaScript). [`INVISIBLE`] is that set.
fn confusable(c: char) -> bool {
    let c = c as u32;
    INVISIBLE
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// The code points of general category Cc, Cf, Zl or Zp, as sorted inclusive ranges:
/// Unicode 14 (generated with Python's `unicodedata`: every `cp` with
/// `category(chr(cp)) in {"Cc", "Cf", "Zl", "Zp"}`), widened to whole blocks where later
/// versions add format characters or the block is reserved for them: U+2060–U+206F
/// (U+2065 is unassigned), the Egyptian hieroglyph format controls U+13430–U+1343F
/// (Unicode 15) and the whole tag block U+E0000–U+E007F.
const INVISIBLE: &[(u32, u32)] = &[
    (0x0000, 0x001f),
    (0x007f, 0x009f),
    (0x00ad, 0x00ad),
    (0x0600, 0x0605),
    (0x061c, 0x061c),
    (0x06dd, 0x06dd),
    (0x070f, 0x070f),
    (0x0890, 0x0891),
    (0x08e2, 0x08e2),
    (0x180e, 0x180e),
    (0x200b, 0x200f),
    (0x2028, 0x202e),
    (0x2060, 0x206f),
    (0xfeff, 0xfeff),
    (0xfff9, 0xfffb),
    (0x110bd, 0x110bd),
    (0x110cd, 0x110cd),
    (0x13430, 0x1343f),
    (0x1bca0, 0x1bca3),
    (0x1d173, 0x1d17a),
    (0xe0000, 0xe007f),
];

/// Escapes [`confusable`] characters of a JSON text as `\uXXXX`. They can only occur
/// inside its strings (JSON's structure is ASCII), where the escape means the same.
pub fn escape_confusables(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if confusable(c) {
            // JSON's \u escape is UTF-16: a pair of surrogates above U+FFFF.
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Bytes one character takes in the final line (serde_json's escapes, then ours).
fn json_cost(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        c if (c as u32) < 0x20 || confusable(c) => 6 * c.len_utf16(),
        c => c.len_utf8(),
    }
}

/// Bytes a string takes in the final line, quotes included.
fn json_len(s: &str) -> usize {
    2 + s.chars().map(json_cost).sum::<usize>()
}

/// `s`, or as much of it as fits in `max` bytes of JSON (quotes included) followed by
/// `…[truncated, N bytes]`, N being its whole length. One pass, stopping at the bound.
pub fn clip(s: &str, max: usize) -> String {
    let marker_len = "…[truncated,  bytes]".len() + s.len().to_string().len();
    let room = max.saturating_sub(2 + marker_len);
    let (mut used, mut end) = (2, 0);
    for (i, c) in s.char_indices() {
        used += json_cost(c);
        if used > max {
            return format!("{}…[truncated, {} bytes]", &s[..end], s.len());
        }
        if used - 2 <= room {
            end = i + c.len_utf8();
        }
    }
    s.to_string()
}

/// Room kept at the end of a list for the element that says what was left out.
const ARGV_RESERVE: usize = 96;

/// A list (`argv`, `env`) within `total` bytes of JSON: each element clipped to
/// `each`; once the budget is spent, one last element
/// `…[truncated, K more arguments, B bytes]`.
fn clip_list(argv: &[String], total: usize, each: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut used = 2; // [ ]
    for (i, a) in argv.iter().enumerate() {
        let left = total.saturating_sub(used + 1 + ARGV_RESERVE);
        if left < 32 {
            let rest = &argv[i..];
            out.push(format!(
                "…[truncated, {} more arguments, {} bytes]",
                rest.len(),
                rest.iter().map(|a| a.len()).sum::<usize>()
            ));
            break;
        }
        let c = clip(a, left.min(each));
        used += json_len(&c) + 1;
        out.push(c);
    }
    out
}

/// Full records a uid may have written at once before the rate limit holds them back.
pub const BURST: u32 = 10;
/// Then one more full record per this interval.
pub const REFILL: Duration = Duration::from_secs(6);
/// Records held back are summed up in one `suppressed` record at most this long after
/// the first of them (or earlier: before that uid's next full record, at shutdown).
pub const WINDOW: Duration = Duration::from_secs(60);
/// How often urund should call [`Sink::flush`] so that windows close on time.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// uids tracked at once; the least recently seen is dropped (its summary written) for
/// a new one. Only uids that pass the access check can make records, so they are few.
pub const MAX_UIDS: usize = 1024;

/// The per-uid rate limit of records of requests that got no container: a token
/// bucket per uid ([`BURST`], one token per [`REFILL`]) and the summary of what was
/// held back. Pure: the caller passes the time.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: HashMap<u32, Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
    /// When this uid last made a record (for eviction).
    seen: Instant,
    /// Records held back since `.0`, summed up in `.1` (a `suppressed` record).
    held: Option<(Instant, Record)>,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket {
            tokens: BURST as f64,
            at: now,
            seen: now,
            held: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() / REFILL.as_secs_f64();
        self.tokens = (self.tokens + earned).min(BURST as f64);
        self.at = now;
    }

    /// True if nothing distinguishes this bucket from a new one.
    fn idle(&self) -> bool {
        self.held.is_none() && self.tokens >= BURST as f64
    }
}

impl Limiter {
    /// Offers a record: returns what to write now, in order (a summary of held-back
    /// records first, then the record itself if it passes). Empty if it is held back.
    pub fn offer(&mut self, rec: &Record, now: Instant) -> Vec<Record> {
        let mut out = Vec::new();
        if !self.buckets.contains_key(&rec.uid) {
            self.make_room(now, &mut out);
        }
        let b = self
            .buckets
            .entry(rec.uid)
            .or_insert_with(|| Bucket::new(now));
        b.refill(now);
        b.seen = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            out.extend(b.held.take().map(|(_, s)| s));
            out.push(rec.clone());
            return out;
        }
        // Held back: counted in this uid's open summary.
        let (_, sum) = b.held.get_or_insert_with(|| {
            (
                now,
                Record {
                    time: rec.time,
                    request: String::new(),
                    uid: rec.uid,
                    decision: "suppressed",
                    suppressed: Some(Suppressed {
                        first: rec.time,
                        last: rec.time,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
        });
        sum.gid = rec.gid;
        sum.user = rec.user.clone();
        sum.pid = rec.pid;
        let s = sum.suppressed.as_mut().expect("a summary has its counts");
        s.count += 1;
        s.first = s.first.min(rec.time);
        s.last = s.last.max(rec.time);
        let key = rec.rule.as_deref().unwrap_or(rec.decision);
        if s.rules.contains_key(key) || s.rules.len() < MAX_RULES - 1 {
            *s.rules.entry(key.to_string()).or_default() += 1;
        } else {
            *s.rules.entry("other".to_string()).or_default() += 1;
        }
        sum.message = Some(format!(
            "{} record(s) of this uid held back by the audit rate limit ({BURST} at once, \
             then one every {} s)",
            s.count,
            REFILL.as_secs()
        ));
        // A flood that never stops is still summed up once per window.
        if now.saturating_duration_since(b.held.as_ref().map_or(now, |h| h.0)) >= WINDOW {
            out.extend(b.held.take().map(|(_, s)| s));
        }
        out
    }

    /// The summaries whose window has closed (all of them with `all`, at shutdown),
    /// and forgets the uids with nothing left to remember.
    pub fn flush(&mut self, now: Instant, all: bool) -> Vec<Record> {
        let mut out = Vec::new();
        for b in self.buckets.values_mut() {
            let closed = b
                .held
                .as_ref()
                .is_some_and(|(since, _)| all || now.saturating_duration_since(*since) >= WINDOW);
            if closed {
                out.extend(b.held.take().map(|(_, s)| s));
            }
            b.refill(now);
        }
        self.buckets.retain(|_, b| !b.idle());
        out.sort_by(|a, b| a.time.total_cmp(&b.time));
        out
    }

    /// Makes room for one more uid: forgets idle ones, or else the least recently
    /// seen one, whose summary is written first.
    fn make_room(&mut self, now: Instant, out: &mut Vec<Record>) {
        if self.buckets.len() < MAX_UIDS {
            return;
        }
        for b in self.buckets.values_mut() {
            b.refill(now);
        }
        self.buckets.retain(|_, b| !b.idle());
        if self.buckets.len() < MAX_UIDS {
            return;
        }
        if let Some(uid) = self
            .buckets
            .iter()
            .min_by_key(|(_, b)| b.seen)
            .map(|(u, _)| *u)
        {
            if let Some(b) = self.buckets.remove(&uid) {
                out.extend(b.held.map(|(_, s)| s));
            }
        }
    }

    /// uids tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Where records go: always urund's standard error (which systemd sends to the
/// journal), plus the policy's `audit.file` and, with `audit.syslog`, syslog.
pub struct Sink {
    file: Option<(PathBuf, Mutex<File>)>,
    syslog: Option<PathBuf>,
    limiter: Mutex<Limiter>,
}

/// The syslog socket (journald and rsyslog both listen there).
pub const SYSLOG_SOCKET: &str = "/dev/log";

impl Sink {
    /// Opens the sinks the policy names. An audit file that cannot be opened safely is
    /// an error: urund does not run without the log it was told to keep.
    pub fn open(cfg: &crate::policy::Audit) -> io::Result<Sink> {
        Sink::with(
            cfg.file.as_ref().map(|p| p.0.clone()),
            cfg.syslog.then(|| PathBuf::from(SYSLOG_SOCKET)),
        )
    }

    pub fn with(file: Option<PathBuf>, syslog: Option<PathBuf>) -> io::Result<Sink> {
        let file = match file {
            Some(p) => {
                let f = open_log(&p)?;
                Some((p, Mutex::new(f)))
            }
            None => None,
        };
        Ok(Sink {
            file,
            syslog,
            limiter: Mutex::new(Limiter::default()),
        })
    }

    /// Reopens the audit file (after log rotation, on SIGHUP), with the same checks
    /// as at start. On failure the old descriptor is kept, so no record is lost.
    pub fn reopen(&self) -> io::Result<()> {
        if let Some((p, f)) = &self.file {
            let new = open_log(p)?;
            *f.lock().unwrap() = new;
        }
        Ok(())
    }

    /// Writes a record to every sink, unless the rate limit holds it back (records of
    /// requests that got no container; see [`Limiter`]).
    pub fn write(&self, rec: &Record) {
        if rec.rate_limited() {
            let out = self.limiter.lock().unwrap().offer(rec, Instant::now());
            for r in &out {
                self.emit(r);
            }
        } else {
            self.emit(rec);
        }
    }

    /// Writes the summaries of held-back records whose window has closed (`all`: every
    /// one, at shutdown). Call it every [`FLUSH_EVERY`].
    pub fn flush(&self, all: bool) {
        let out = self.limiter.lock().unwrap().flush(Instant::now(), all);
        for r in &out {
            self.emit(r);
        }
    }

    fn emit(&self, rec: &Record) {
        let line = rec.to_line();
        eprintln!("urund audit: {line}");
        if let Some((p, f)) = &self.file {
            // One write(2) of the whole line on an O_APPEND descriptor: lines from
            // concurrent requests never interleave.
            let mut buf = line.clone().into_bytes();
            buf.push(b'\n');
            if let Err(e) = f.lock().unwrap().write_all(&buf) {
                eprintln!("urund: writing audit file {}: {e}", p.display());
            }
        }
        if let Some(sock) = &self.syslog {
            if let Err(e) = send_syslog(sock, &line) {
                eprintln!("urund: sending audit record to {}: {e}", sock.display());
            }
        }
    }
}

/// Opens (creating if needed) the audit file, so that nobody but urund's user can
/// remove, replace or redirect it, and nothing at its path can make urund block:
/// - its directory is opened component by component from `/`, each with
///   `O_DIRECTORY|O_NOFOLLOW` (no symlink anywhere in the path, no `.` or `..`); a
///   missing component is created 0700;
/// - every ancestor is owned by root or urund's user and not writable by others unless
///   sticky (a group that can write an ancestor, like `syslog` on Ubuntu's
///   `root:syslog 0775` `/var/log`, is trusted as the administrator's choice);
/// - the directory itself is owned by urund's user and writable by nobody else;
/// - the file is opened relative to that descriptor with
///   `O_WRONLY|O_APPEND|O_CREAT|O_NOFOLLOW|O_NONBLOCK|O_NOCTTY|O_CLOEXEC`, mode 0600 (a
///   FIFO cannot block the open), and must be a regular file with one link, owned by
///   urund's user; a wider mode is narrowed to 0600.
fn open_log(path: &Path) -> io::Result<File> {
    let ctx =
        |e: io::Error| io::Error::new(e.kind(), format!("audit file {}: {e}", path.display()));
    let name = path
        .file_name()
        .filter(|_| !path.as_os_str().as_encoded_bytes().ends_with(b"/"))
        .ok_or_else(|| ctx(io::Error::other("names no file")))?;
    let dir = path
        .parent()
        .ok_or_else(|| ctx(io::Error::other("has no directory")))?;
    let dirfd = open_private_dir(dir).map_err(ctx)?;
    if let Ok(st) = nix::sys::stat::fstatat(&dirfd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
    {
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind != SFlag::S_IFREG {
            return Err(ctx(io::Error::other(format!(
                "is {}, not a regular file: remove it",
                kind_name(kind)
            ))));
        }
    }
    let flags = OFlag::O_WRONLY
        | OFlag::O_APPEND
        | OFlag::O_CREAT
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd =
        nix::fcntl::openat(&dirfd, name, flags, Mode::from_bits_truncate(0o600)).map_err(|e| {
            ctx(match e {
                Errno::ELOOP => io::Error::other("is a symlink, which is not followed"),
                Errno::ENXIO => io::Error::other("is a FIFO or socket, not a regular file"),
                e => e.into(),
            })
        })?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| ctx(e.into()))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFREG {
        return Err(ctx(io::Error::other(format!(
            "is {}, not a regular file",
            kind_name(kind)
        ))));
    }
    if owner_and_mode(st.st_uid, st.st_mode, Owner::Us, 0).is_err() {
        return Err(ctx(io::Error::other(format!(
            "owned by uid {}, not by urund's user: chown root it",
            st.st_uid
        ))));
    }
    if st.st_nlink != 1 {
        return Err(ctx(io::Error::other(format!(
            "has {} hard links: an audit file has one",
            st.st_nlink
        ))));
    }
    // A file that existed with a wider mode is narrowed: records are private.
    if st.st_mode & 0o7077 != 0 {
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o600)).map_err(|e| ctx(e.into()))?;
    }
    // Writes to a regular file never block; clear the flag all the same.
    nix::fcntl::fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_APPEND)).map_err(|e| ctx(e.into()))?;
    Ok(File::from(fd))
}

fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "not a regular file",
    }
}

/// Opens `dir` (absolute) for [`open_log`]: from `/`, one component at a time, never
/// following a symlink, creating missing components 0700, checking each (see there).
fn open_private_dir(dir: &Path) -> io::Result<OwnedFd> {
    let names = plain_components(dir)?;
    let mut fd = nix::fcntl::open("/", DIR_FLAGS, Mode::empty())?;
    let mut at = PathBuf::from("/");
    if names.is_empty() {
        check_audit_dir(&fd, &at)?;
        return Ok(fd);
    }
    check_above(&fd, &at)?;
    for (i, name) in names.iter().enumerate() {
        at.push(name);
        fd = open_or_create(&fd, name, &at)?;
        if i + 1 == names.len() {
            check_audit_dir(&fd, &at)?;
        } else {
            check_above(&fd, &at)?;
        }
    }
    Ok(fd)
}

/// How each directory on the way is opened: never through a symlink.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// The names of an absolute path without `.` or `..`.
fn plain_components(dir: &Path) -> io::Result<Vec<&OsStr>> {
    let mut comps = dir.components();
    if comps.next() != Some(Component::RootDir) {
        return Err(io::Error::other(format!(
            "{} is not an absolute path",
            dir.display()
        )));
    }
    comps
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::other(format!(
                "{} has a '.' or '..' component: give the plain path",
                dir.display()
            ))),
        })
        .collect()
}

/// One step down from `fd` to `name` (the path so far is `at`), created 0700 if missing.
fn open_or_create(fd: &OwnedFd, name: &OsStr, at: &Path) -> io::Result<OwnedFd> {
    match nix::fcntl::openat(fd, name, DIR_FLAGS, Mode::empty()) {
        Ok(f) => Ok(f),
        Err(Errno::ENOENT) => {
            match nix::sys::stat::mkdirat(fd, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io::Error::other(format!("creating {}: {e}", at.display()))),
            }
            nix::fcntl::openat(fd, name, DIR_FLAGS, Mode::empty()).map_err(|e| dir_error(at, e))
        }
        Err(e) => Err(dir_error(at, e)),
    }
}

/// The audit directory itself: urund's, not writable by group or others.
fn check_audit_dir(fd: &OwnedFd, at: &Path) -> io::Result<()> {
    let st = nix::sys::stat::fstat(fd)?;
    let mode = st.st_mode & 0o7777;
    let found = owner_and_mode(st.st_uid, mode, Owner::Us, 0o022);
    if found.is_err_and(|u| u.bad_owner) {
        return Err(io::Error::other(format!(
            "its directory {} is owned by uid {}, not by urund's user: \
             chown root {0}, or use another directory",
            at.display(),
            st.st_uid
        )));
    }
    if found.is_err() {
        return Err(io::Error::other(format!(
            "its directory {} is writable by group or others (mode {mode:o}): \
             chmod go-w {0}",
            at.display()
        )));
    }
    Ok(())
}

/// A directory above the audit directory: root's (or urund's), and not writable by
/// everyone unless sticky.
fn check_above(fd: &OwnedFd, at: &Path) -> io::Result<()> {
    let st = nix::sys::stat::fstat(fd)?;
    let mode = st.st_mode & 0o7777;
    if owner_and_mode(st.st_uid, mode, Owner::RootOrUs, 0).is_err() {
        return Err(io::Error::other(format!(
            "{} (above the audit directory) is owned by uid {}, not root",
            at.display(),
            st.st_uid
        )));
    }
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(io::Error::other(format!(
            "{} (above the audit directory) is writable by everyone (mode {mode:o})",
            at.display()
        )));
    }
    Ok(())
}

fn dir_error(at: &Path, e: Errno) -> io::Error {
    match e {
        Errno::ELOOP | Errno::ENOTDIR => io::Error::other(format!(
            "{} is a symlink or not a directory: give the real path (realpath)",
            at.display()
        )),
        e => io::Error::other(format!("{}: {e}", at.display())),
    }
}

/// Sends one record to syslog as `<PRI>urund[PID]: LINE` (RFC 3164 without the
/// optional timestamp, which the receiver adds), facility authpriv, severity info.
pub fn send_syslog(socket: &Path, line: &str) -> io::Result<()> {
    const AUTHPRIV_INFO: u8 = 10 * 8 + 6;
    let msg = format!("<{AUTHPRIV_INFO}>urund[{}]: {line}", std::process::id());
    let s = UnixDatagram::unbound()?;
    s.send_to(msg.as_bytes(), socket)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("urun-audit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn caller(uid: u32) -> Caller {
        Caller {
            uid,
            gid: uid,
            pid: 7,
            groups: vec![],
            name: Some("alice".into()),
            group: Some("alice".into()),
        }
    }

    fn rec() -> Record {
        Record::new("rq", &caller(1001))
    }

    fn refused(uid: u32, rule: &str) -> Record {
        let mut r = Record::new("rq", &caller(uid));
        r.decision = "refused";
        r.rule = Some(rule.into());
        r
    }

    #[test]
    fn file_is_private_append_only_and_reopened() {
        let d = tmpdir("file");
        let p = d.join("sub/audit.log");
        let s = Sink::with(Some(p.clone()), None).unwrap();
        s.write(&rec());
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(p.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        // rotation: rename, reopen, write: the old file has the old line, the new one the new
        let rotated = d.join("sub/audit.log.1");
        std::fs::rename(&p, &rotated).unwrap();
        s.write(&rec());
        s.reopen().unwrap();
        s.write(&rec());
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            2
        );
        let new = std::fs::read_to_string(&p).unwrap();
        assert_eq!(new.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(new.lines().next().unwrap()).unwrap();
        assert_eq!(v["uid"], 1001);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symlinks_are_refused() {
        let d = tmpdir("link");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("audit.log");
        std::os::unix::fs::symlink("/etc/passwd", &p).unwrap();
        assert!(Sink::with(Some(p), None).is_err());
        // a symlink above the file: not followed either
        std::fs::create_dir(d.join("real")).unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("via")).unwrap();
        let e = Sink::with(Some(d.join("via/audit.log")), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("symlink"), "{e}");
        assert!(!d.join("real/audit.log").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_audit_directory_others_can_write_or_own_is_refused() {
        let d = tmpdir("dirmode");
        std::fs::create_dir_all(&d).unwrap();
        for mode in [0o777, 0o770, 0o1777, 0o720] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Sink::with(Some(d.join("audit.log")), None)
                .err()
                .unwrap_or_else(|| panic!("mode {mode:o} accepted"))
                .to_string();
            assert!(e.contains("writable by group or others"), "{e}");
            assert!(!d.join("audit.log").exists());
        }
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
        let e = Sink::with(Some(d.join("audit.log")), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        // an ancestor owned by someone else, or writable by everyone without the sticky bit
        let sub = d.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = Sink::with(Some(sub.join("audit.log")), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("above the audit directory"), "{e}");
        std::os::unix::fs::chown(&d, Some(0), None).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Sink::with(Some(sub.join("audit.log")), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("writable by everyone"), "{e}");
        // sticky (like /tmp) is fine above it
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(Sink::with(Some(sub.join("audit.log")), None).is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn fifos_hard_links_and_dot_dot_are_refused_without_blocking() {
        let d = tmpdir("fifo");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("audit.log");
        nix::unistd::mkfifo(&p, Mode::from_bits_truncate(0o600)).unwrap();
        let e = Sink::with(Some(p.clone()), None).err().unwrap().to_string();
        assert!(e.contains("FIFO"), "{e}");
        std::fs::remove_file(&p).unwrap();
        std::fs::write(d.join("other"), "").unwrap();
        std::fs::hard_link(d.join("other"), &p).unwrap();
        let e = Sink::with(Some(p.clone()), None).err().unwrap().to_string();
        assert!(e.contains("hard links"), "{e}");
        let e = Sink::with(Some(d.join("x/../audit.log")), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("'..'"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reopen_keeps_the_old_file_when_a_fifo_is_planted() {
        let d = tmpdir("hup");
        let p = d.join("log/audit.log");
        let s = Sink::with(Some(p.clone()), None).unwrap();
        let rotated = d.join("log/audit.log.1");
        std::fs::rename(&p, &rotated).unwrap();
        nix::unistd::mkfifo(&p, Mode::from_bits_truncate(0o600)).unwrap();
        assert!(s.reopen().is_err());
        s.write(&rec());
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            1
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn syslog_datagram() {
        let d = tmpdir("syslog");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("log");
        let rx = UnixDatagram::bind(&p).unwrap();
        let s = Sink::with(None, Some(p)).unwrap();
        let mut r = rec();
        r.argv = vec!["a\u{85}b\u{2028}c".into()];
        s.write(&r);
        let mut buf = [0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        let m = std::str::from_utf8(&buf[..n]).unwrap();
        let prefix = format!("<86>urund[{}]: {{", std::process::id());
        assert!(m.starts_with(&prefix), "{m}");
        assert!(m.contains("\"user\":\"alice\""), "{m}");
        assert!(m.contains(r#""a\u0085b\u2028c""#), "{m}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn long_fields_are_clipped_with_a_marker() {
        let mut r = rec();
        r.image = "i".repeat(60_000);
        r.argv = vec!["x".repeat(60_000), "short".into()];
        r.message = Some(format!("image {:?} is not allowed", r.image));
        let line = r.to_line();
        assert!(line.len() <= MAX_LINE, "{}", line.len());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let image = v["image"].as_str().unwrap();
        assert!(image.ends_with("…[truncated, 60000 bytes]"), "{image}");
        assert!(image.starts_with("iiii") && image.len() < MAX_FIELD);
        let a0 = v["argv"][0].as_str().unwrap();
        assert!(a0.ends_with("…[truncated, 60000 bytes]"), "{a0}");
        assert_eq!(v["argv"][1], "short");
        let marker = format!("…[truncated, {} bytes]", r.message.as_ref().unwrap().len());
        assert!(v["message"].as_str().unwrap().ends_with(&marker));
        // many arguments: the ones past the budget are counted in one last element
        r.argv = vec!["y".repeat(3000); 100];
        let v: serde_json::Value = serde_json::from_str(&r.to_line()).unwrap();
        let argv = v["argv"].as_array().unwrap();
        let last = argv.last().unwrap().as_str().unwrap();
        assert_eq!(
            last,
            format!(
                "…[truncated, {} more arguments, {} bytes]",
                101 - argv.len(),
                3000 * (101 - argv.len())
            )
        );
        // short records are unchanged
        let short = rec();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&short.to_line()).unwrap(),
            serde_json::to_value(&short).unwrap()
        );
    }

    #[test]
    fn the_largest_record_fits_in_max_line() {
        let big = |i: usize| format!("{i:03}{}", "\u{85}".repeat(2_000));
        let map = |n: usize| (0..n).map(|i| (big(i), big(i))).collect::<BTreeMap<_, _>>();
        let r = Record {
            time: -1.234_567_890_123_456_7e300,
            request: big(0),
            uid: u32::MAX,
            gid: u32::MAX,
            user: big(0),
            pid: i32::MIN,
            image: big(0),
            image_id: Some(big(0)),
            runtime: Some(big(0)),
            argv: vec![big(0); 100],
            entrypoint: Some(big(0)),
            workdir: Some(big(0)),
            env: vec![big(0); 100],
            container: Some(big(0)),
            name: Some(big(0)),
            decision: "suppressed",
            rule: Some(big(0)),
            message: Some(big(0)),
            status: Some(255),
            duration_ms: u64::MAX,
            bytes_in: u64::MAX,
            bytes_out: u64::MAX,
            limits: Some(RunLimits {
                memory: u64::MAX,
                cpus: -1.234_567_890_123_456_7e300,
                pids: u32::MAX,
                nofile: u32::MAX,
                nproc: u32::MAX,
                tmpfs_size: u64::MAX,
                max_runtime: u64::MAX,
                max_concurrent: u32::MAX,
            }),
            labels: Some(map(40)),
            suppressed: Some(Suppressed {
                count: u64::MAX,
                first: -1.234_567_890_123_456_7e300,
                last: -1.234_567_890_123_456_7e300,
                rules: map(40).into_keys().map(|k| (k, u64::MAX)).collect(),
            }),
            build: Some(BuildAudit {
                dockerfile: big(0),
                context: big(0),
                context_bytes: u64::MAX,
                findings: vec![big(0); 100],
                tags: vec![big(0); 100],
            }),
        };
        let line = r.to_line();
        assert!(line.len() <= MAX_LINE, "{} bytes", line.len());
        assert!(
            line.len() > MAX_LINE * 3 / 4,
            "{} bytes: the bound is tight",
            line.len()
        );
    }

    #[test]
    fn c1_controls_and_line_separators_are_escaped() {
        let mut r = rec();
        r.argv = vec!["\u{85}\u{9b}[31m\u{2028}\u{2029}\u{202e}\u{7f}\u{1b}é".into()];
        let line = r.to_line();
        for c in [
            '\u{85}', '\u{9b}', '\u{2028}', '\u{2029}', '\u{202e}', '\u{7f}', '\u{1b}',
        ] {
            assert!(!line.contains(c), "{c:?} in {line}");
        }
        assert!(
            line.contains(r#"\u0085\u009b[31m\u2028\u2029\u202e\u007f\u001bé"#),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["argv"][0], r.argv[0].as_str());
    }

    #[test]
    fn every_invisible_or_format_character_is_escaped() {
        let mut r = rec();
        let all: String = INVISIBLE
            .iter()
            .flat_map(|&(lo, hi)| lo..=hi)
            .filter_map(char::from_u32)
            .collect();
        r.argv = vec![all.clone()];
        let line = r.to_line();
        assert!(line.is_ascii(), "{line}");
        for (c, esc) in [
            ('\u{61c}', "\\u061c"),
            ('\u{200b}', "\\u200b"),
            ('\u{2065}', "\\u2065"),
            ('\u{feff}', "\\ufeff"),
            ('\u{e0041}', "\\udb40\\udc41"),
        ] {
            assert!(line.contains(esc), "{c:?} not as {esc} in {line}");
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["argv"][0], all.as_str());
        // and nothing else: visible neighbours stay as they are
        r.argv = vec!["\u{a0}é\u{2010}\u{2070}\u{fffc}\u{e0080}".into()];
        assert!(r.to_line().contains(r.argv[0].as_str()));
        // the table is sorted and without overlaps (binary search relies on it)
        assert!(INVISIBLE.windows(2).all(|w| w[0].1 < w[1].0));
        assert!(INVISIBLE.iter().all(|&(lo, hi)| lo <= hi));
    }

    #[test]
    fn admitted_and_reaped_records() {
        let mut r = rec();
        r.container = Some("c0ffee".into());
        r.image_id = Some("sha256:abc".into());
        let a = r.admitted(&Limits::default());
        let v: serde_json::Value = serde_json::from_str(&a.to_line()).unwrap();
        assert_eq!(v["decision"], "admitted");
        assert_eq!(v["container"], "c0ffee");
        assert_eq!(v["limits"]["memory"], 512u64 << 20);
        assert_eq!(v["limits"]["max_runtime"], 86400);
        assert!(v.get("labels").is_none() && v.get("suppressed").is_none());
        let labels = HashMap::from([
            (LABEL_UID.to_string(), "1001".to_string()),
            (LABEL_REQUEST.to_string(), "r-1".to_string()),
            (
                "io.urun.helper".to_string(),
                "/run/urun/urun.sock".to_string(),
            ),
            ("other".to_string(), "x".repeat(100_000)),
        ]);
        let v: serde_json::Value =
            serde_json::from_str(&Record::reaped("dead", &labels).to_line()).unwrap();
        assert_eq!(v["decision"], "reaped");
        assert_eq!(v["container"], "dead");
        assert_eq!(v["request"], "r-1");
        assert_eq!(
            v["labels"],
            serde_json::json!({"io.urun.uid": "1001", "io.urun.request": "r-1"})
        );
        // records about containers are never rate-limited
        assert!(!a.rate_limited() && !Record::reaped("x", &labels).rate_limited());
        assert!(refused(1, "images.allow").rate_limited());
    }

    #[test]
    fn refusals_are_rate_limited_per_uid_and_summed_up() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        let mut written = 0;
        for i in 0..100 {
            let mut r = refused(
                1001,
                if i % 2 == 0 {
                    "images.allow"
                } else {
                    "protocol"
                },
            );
            r.time = 1000.0 + i as f64;
            written += l.offer(&r, t0).len();
        }
        assert_eq!(written, BURST as usize);
        // another uid has its own bucket
        assert_eq!(l.offer(&refused(1002, "env.allow"), t0).len(), 1);
        // the next record that passes (after a refill) is preceded by the summary
        let out = l.offer(&refused(1001, "images.allow"), t0 + REFILL);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].decision, "suppressed");
        assert_eq!(out[0].uid, 1001);
        let s = out[0].suppressed.as_ref().unwrap();
        assert_eq!(s.count, 100 - BURST as u64);
        assert_eq!((s.first, s.last), (1000.0 + BURST as f64, 1099.0));
        assert_eq!(s.rules["images.allow"] + s.rules["protocol"], s.count);
        assert_eq!(out[1].decision, "refused");
        // a flood that stops is summed up when its window closes
        for _ in 0..5 {
            assert!(l.offer(&refused(1001, "x"), t0 + REFILL).is_empty());
        }
        assert!(l.flush(t0 + REFILL + WINDOW / 2, false).is_empty());
        let out = l.flush(t0 + REFILL + WINDOW, false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].suppressed.as_ref().unwrap().count, 5);
        // and then forgotten once its bucket is full again
        l.flush(t0 + REFILL * (BURST + 20), false);
        assert!(l.is_empty(), "{l:?}");
    }

    #[test]
    fn a_flood_that_never_stops_is_summed_up_once_per_window() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        let mut summaries = 0;
        let mut full = 0;
        // 10 records a second for 10 minutes
        for i in 0..6000u32 {
            let now = t0 + Duration::from_millis(100 * i as u64);
            for r in l.offer(&refused(7, "protocol"), now) {
                match r.decision {
                    "suppressed" => summaries += r.suppressed.unwrap().count,
                    _ => full += 1,
                }
            }
        }
        for r in l.flush(t0 + Duration::from_secs(600), true) {
            summaries += r.suppressed.unwrap().count;
        }
        assert_eq!(full + summaries, 6000);
        assert!(full <= BURST as u64 + 600 / REFILL.as_secs() + 1, "{full}");
    }

    #[test]
    fn the_uid_table_is_bounded() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        let mut summaries = 0;
        for uid in 0..(2 * MAX_UIDS as u32) {
            for _ in 0..=BURST {
                for r in l.offer(&refused(uid, "x"), t0) {
                    summaries += (r.decision == "suppressed") as u32;
                }
            }
            assert!(l.len() <= MAX_UIDS);
        }
        // every evicted uid's summary was written, none lost
        summaries += l.flush(t0, true).len() as u32;
        assert_eq!(summaries, 2 * MAX_UIDS as u32);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn any_text() -> impl Strategy<Value = String> {
            prop_oneof![
                ".{0,40}",
                "[\\x00-\\x1f\\x7f-\\x9f\u{2028}\u{2029}\u{202e}\"\\\\a-z]{0,200}",
                // the invisible and format characters, the tag block, and their neighbours
                "[\u{ad}\u{61c}\u{200a}-\u{2010}\u{2027}-\u{202f}\u{205f}-\u{2070}\u{feff}\u{fff9}-\u{fffc}\u{e0000}-\u{e0080}a]{0,200}",
                (0usize..20_000, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
            ]
        }

        fn any_record() -> impl Strategy<Value = Record> {
            (
                (any_text(), any_text(), any_text(), any_text()),
                proptest::collection::vec(any_text(), 0..40),
                (
                    proptest::option::of(any_text()),
                    proptest::option::of(any_text()),
                    proptest::option::of(any_text()),
                    proptest::option::of(any_text()),
                ),
                proptest::collection::btree_map(any_text(), any_text(), 0..20),
                proptest::collection::btree_map(any_text(), any::<u64>(), 0..20),
                (
                    proptest::option::of(any_text()),
                    proptest::option::of(any_text()),
                    proptest::collection::vec(any_text(), 0..40),
                ),
            )
                .prop_map(
                    |(
                        (request, user, image, id),
                        argv,
                        (container, rule, message, iid),
                        labels,
                        rules,
                        (entrypoint, workdir, env),
                    )| Record {
                        time: 1e9,
                        request,
                        uid: u32::MAX,
                        gid: u32::MAX,
                        user,
                        pid: i32::MIN,
                        image,
                        image_id: iid.or(Some(id)),
                        runtime: None,
                        argv,
                        entrypoint,
                        workdir,
                        env,
                        name: container.clone().map(|c| c + "n"),
                        container,
                        decision: "suppressed",
                        rule,
                        message,
                        status: Some(255),
                        duration_ms: u64::MAX,
                        bytes_in: u64::MAX,
                        bytes_out: u64::MAX,
                        limits: Some(RunLimits {
                            memory: u64::MAX,
                            cpus: 1023.999,
                            pids: u32::MAX,
                            nofile: u32::MAX,
                            nproc: u32::MAX,
                            tmpfs_size: u64::MAX,
                            max_runtime: u64::MAX,
                            max_concurrent: u32::MAX,
                        }),
                        labels: Some(labels),
                        suppressed: Some(Suppressed {
                            count: u64::MAX,
                            first: -1e300,
                            last: 1e300,
                            rules,
                        }),
                        build: Some(BuildAudit {
                            dockerfile: "d".repeat(64),
                            context: "c".repeat(64),
                            context_bytes: u64::MAX,
                            findings: vec!["user.root:error:9".into(); 200],
                            tags: vec!["urun/alice/app:1".into(); 200],
                        }),
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn every_line_is_bounded_json_without_raw_confusables(r in any_record()) {
                let line = r.to_line();
                prop_assert!(line.len() <= MAX_LINE, "{} bytes", line.len());
                prop_assert!(!line.contains('\n'));
                prop_assert!(!line.chars().any(|c| confusable(c) || (c as u32) < 0x20));
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                // what fits is kept exactly; what does not keeps a prefix and a marker
                let image = v["image"].as_str().unwrap();
                if json_len(&r.image) <= MAX_FIELD {
                    prop_assert_eq!(image, r.image.as_str());
                } else {
                    let marker = format!("…[truncated, {} bytes]", r.image.len());
                    prop_assert!(image.ends_with(&marker));
                    prop_assert!(r.image.starts_with(&image[..image.len() - marker.len()]));
                }
            }

            #[test]
            fn clip_respects_its_budget(s in any_text(), max in 64usize..10_000) {
                let c = clip(&s, max);
                prop_assert!(json_len(&c) <= max);
                let marker = format!("…[truncated, {} bytes]", s.len());
                prop_assert!(c == s || c.ends_with(&marker));
            }
        }
    }
}
