//! urun, the client. Unprivileged and untrusted: it forwards a request and the
//! streams, and prints what urund says. It never talks to Docker, and nothing it
//! sends can say who the caller is (urund asks the kernel).

use crate::cli::Urun;
use crate::protocol::{self, Kind, Progress, Query, Request};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::IsTerminal;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Runs urun with parsed arguments; returns the exit status.
pub fn run(args: Urun) -> u8 {
    match run_inner(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("urun: {e:#}");
            125
        }
    }
}

fn run_inner(args: &Urun) -> Result<u8> {
    let sock = connect(&args.socket)?;
    if args.show_policy {
        let mut w = sock.try_clone().context("socket")?;
        protocol::write_frame(&mut w, Kind::Query, &Query::policy().encode())
            .context("sending the query to urund")?;
        return relay_output(sock);
    }
    let mut req = Request::new(args.image.clone(), args.command.clone());
    req.interactive = args.interactive;
    let mut writer = sock.try_clone().context("socket")?;
    protocol::write_frame(&mut writer, Kind::Request, &req.encode())
        .context("sending the request to urund")?;
    let writer = Arc::new(Mutex::new(writer));
    if args.interactive {
        let w = writer.clone();
        std::thread::spawn(move || pump_stdin(&w));
    }
    relay_output(sock)
}

fn connect(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path).map_err(|e| {
        let p = path.display();
        let why = match e.kind() {
            io::ErrorKind::NotFound => {
                "no such socket: is urund running? (systemctl status urund.socket)".to_string()
            }
            io::ErrorKind::PermissionDenied => {
                let group = std::fs::metadata(path)
                    .ok()
                    .and_then(|m| nix::unistd::Group::from_gid(m.gid().into()).ok().flatten())
                    .map_or_else(|| "urun".to_string(), |g| g.name);
                format!(
                    "permission denied: you are not in the {group:?} group that may use urun \
                     (ask your administrator; after being added, log in again)"
                )
            }
            io::ErrorKind::ConnectionRefused => "urund is not running (stale socket)".to_string(),
            _ => e.to_string(),
        };
        anyhow::anyhow!("cannot connect to urund at {p}: {why}")
    })
}

/// Copies stdin to the helper as `Stdin` frames, then sends `StdinEof`.
fn pump_stdin(w: &Mutex<UnixStream>) {
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if protocol::write_frame(&mut *w.lock().unwrap(), Kind::Stdin, &buf[..n]).is_err() {
            return;
        }
    }
    let _ = protocol::write_frame(&mut *w.lock().unwrap(), Kind::StdinEof, &[]);
}

/// Writes what the container prints to our stdout/stderr until the exit status.
fn relay_output(sock: UnixStream) -> Result<u8> {
    // Unbuffered handles on fds 1 and 2 (std's stdout is line-buffered).
    let mut out = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    let mut err = File::from(io::stderr().as_fd().try_clone_to_owned()?);
    let mut r = io::BufReader::with_capacity(256 * 1024, sock);
    let mut pull = PullView::new(io::stderr().is_terminal());
    loop {
        let frame = protocol::read_frame(&mut r).context("reading from urund")?;
        if !matches!(frame, Some((Kind::Progress, _))) {
            pull.finish(&mut err);
        }
        match frame {
            Some((Kind::Progress, p)) => {
                if let Ok(ev) = serde_json::from_slice::<Progress>(&p) {
                    if let Some(text) = pull.update(ev) {
                        let _ = err.write_all(text.as_bytes());
                    }
                }
            }
            Some((Kind::Stdout, p)) => {
                if let Err(e) = out.write_all(&p) {
                    // Like a process killed by SIGPIPE when our reader has gone.
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(141);
                    }
                    return Err(e).context("writing to stdout");
                }
            }
            Some((Kind::Stderr, p)) => {
                let _ = err.write_all(&p);
            }
            Some((Kind::Exit, p)) => return Ok(protocol::decode_exit(&p)?),
            Some((Kind::Error, p)) => {
                let (status, msg) = protocol::decode_error(&p)?;
                eprintln!("urun: {msg}");
                return Ok(status);
            }
            Some((k, _)) => anyhow::bail!("urund sent an unexpected {k:?} frame"),
            None => anyhow::bail!("urund closed the connection without an exit status"),
        }
    }
}

/// What the client shows of a pull urund does for it: on a terminal one line,
/// rewritten in place, with the layers done and the bytes downloaded; otherwise one
/// plain line per status change (never per byte count).
struct PullView {
    tty: bool,
    /// layer id → (status, current, total)
    layers: BTreeMap<String, (String, u64, u64)>,
    open_line: bool,
}

impl PullView {
    fn new(tty: bool) -> PullView {
        PullView {
            tty,
            layers: BTreeMap::new(),
            open_line: false,
        }
    }

    /// Text to write to stderr for one event, if any. Pure apart from `self`.
    fn update(&mut self, ev: Progress) -> Option<String> {
        let clean =
            |s: &str| -> String { s.chars().filter(|c| !c.is_control()).take(200).collect() };
        let (id, status) = (clean(&ev.id), clean(&ev.status));
        let image = clean(&ev.image);
        // Docker names layers by 12 hex digits; other ids are tags ("latest").
        let is_layer = id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
        if is_layer {
            let e = self.layers.entry(id.clone()).or_default();
            e.0 = status.clone();
            if let Some(c) = ev.current {
                e.1 = c;
            }
            if let Some(t) = ev.total {
                e.2 = t;
            }
        }
        if self.tty {
            if !is_layer {
                let mut s = String::new();
                if self.open_line {
                    s.push('\n');
                    self.open_line = false;
                }
                s.push_str(&plain(&id, &status));
                return Some(s);
            }
            let done = self
                .layers
                .values()
                .filter(|l| l.0 == "Pull complete" || l.0 == "Already exists")
                .count();
            let (cur, tot) = self
                .layers
                .values()
                .fold((0, 0), |(c, t), l| (c + l.1, t + l.2));
            self.open_line = true;
            Some(format!(
                "\r\x1b[KPulling {image}: {done}/{} layers complete, {} / {} downloaded",
                self.layers.len(),
                human(cur),
                human(tot)
            ))
        } else if ev.current.is_some() && ev.total.is_some() {
            None
        } else {
            Some(plain(&id, &status))
        }
    }

    /// Ends an open progress line before other output.
    fn finish(&mut self, err: &mut impl Write) {
        if self.open_line {
            let _ = err.write_all(b"\n");
            self.open_line = false;
        }
    }
}

fn plain(id: &str, status: &str) -> String {
    if id.is_empty() {
        format!("{status}\n")
    } else {
        format!("{id}: {status}\n")
    }
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1}GB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1}MB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1}kB", n as f64 / 1024.0),
        n => format!("{n}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, status: &str, cur: Option<u64>, tot: Option<u64>) -> Progress {
        Progress {
            image: "127.0.0.1:5000/x:latest".into(),
            id: id.into(),
            status: status.into(),
            current: cur,
            total: tot,
        }
    }

    #[test]
    fn plain_lines_without_a_terminal() {
        let mut v = PullView::new(false);
        assert_eq!(
            v.update(ev("latest", "Pulling from x", None, None))
                .as_deref(),
            Some("latest: Pulling from x\n")
        );
        assert_eq!(
            v.update(ev("0123456789ab", "Downloading", Some(10), Some(100))),
            None
        );
        assert_eq!(
            v.update(ev("0123456789ab", "Pull complete", None, None))
                .as_deref(),
            Some("0123456789ab: Pull complete\n")
        );
        // no escape sequences from the daemon reach the terminal
        assert_eq!(
            v.update(ev("", "Status: \x1b[2Jdone", None, None))
                .as_deref(),
            Some("Status: [2Jdone\n")
        );
    }

    #[test]
    fn one_updating_line_on_a_terminal() {
        let mut v = PullView::new(true);
        let s = v
            .update(ev("0123456789ab", "Downloading", Some(512), Some(2048)))
            .unwrap();
        assert!(
            s.starts_with("\r\x1b[K") && s.contains("0/1 layers") && s.contains("512B / 2.0kB"),
            "{s:?}"
        );
        let s = v
            .update(ev("0123456789ab", "Pull complete", None, None))
            .unwrap();
        assert!(s.contains("1/1 layers"), "{s:?}");
        let s = v
            .update(ev("", "Status: Downloaded newer image", None, None))
            .unwrap();
        assert_eq!(s, "\nStatus: Downloaded newer image\n");
    }
}
