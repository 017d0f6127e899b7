//! The audit trail: one JSON line per request, written by urund. It records who asked
//! for what and what happened, never the data of the streams.
#![forbid(unsafe_code)]

use crate::system::Caller;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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
    /// The `--name` the user gave the run (a label, never Docker's name).
    pub name: Option<String>,
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

/// Where records go: always urund's standard error (which systemd sends to the
/// journal), plus the policy's `audit.file` and, with `audit.syslog`, syslog.
pub struct Sink {
    file: Option<(PathBuf, Mutex<File>)>,
    syslog: Option<PathBuf>,
}

/// The syslog socket (journald and rsyslog both listen there).
pub const SYSLOG_SOCKET: &str = "/dev/log";

impl Sink {
    /// Opens the sinks the policy names. An audit file that cannot be opened is an
    /// error: urund does not run without the log it was told to keep.
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
        Ok(Sink { file, syslog })
    }

    /// Reopens the audit file (after log rotation, on SIGHUP). On failure the old
    /// descriptor is kept, so no record is lost.
    pub fn reopen(&self) -> io::Result<()> {
        if let Some((p, f)) = &self.file {
            let new = open_log(p)?;
            *f.lock().unwrap() = new;
        }
        Ok(())
    }

    pub fn write(&self, rec: &Record) {
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

/// Opens (creating if needed) the audit file: append-only, mode 0600, owned by
/// urund's user, not a symlink; its directory is created 0700 if missing.
fn open_log(path: &Path) -> io::Result<File> {
    let ctx =
        |e: io::Error| io::Error::new(e.kind(), format!("audit file {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(ctx)?;
        }
    }
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(ctx)?;
    let meta = f.metadata().map_err(ctx)?;
    if !meta.file_type().is_file() {
        return Err(ctx(io::Error::other("not a regular file")));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(ctx(io::Error::other(format!(
            "owned by uid {}, not by urund's user: chown root it",
            meta.uid()
        ))));
    }
    // A file that existed with a wider mode is narrowed: records are private.
    if meta.mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(ctx)?;
    }
    Ok(f)
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

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("urun-audit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn rec() -> Record {
        let c = Caller {
            uid: 1001,
            gid: 1001,
            pid: 7,
            groups: vec![],
            name: Some("alice".into()),
            group: Some("alice".into()),
        };
        Record::new("rq", &c)
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
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn syslog_datagram() {
        let d = tmpdir("syslog");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("log");
        let rx = UnixDatagram::bind(&p).unwrap();
        let s = Sink::with(None, Some(p)).unwrap();
        s.write(&rec());
        let mut buf = [0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        let m = std::str::from_utf8(&buf[..n]).unwrap();
        let prefix = format!("<86>urund[{}]: {{", std::process::id());
        assert!(m.starts_with(&prefix), "{m}");
        assert!(m.contains("\"user\":\"alice\""), "{m}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
