//! urun, the client. Unprivileged and untrusted: it forwards a request and the
//! streams, and prints what urund says. It never talks to Docker, and nothing it
//! sends can say who the caller is (urund asks the kernel).

use crate::cli::Urun;
use crate::protocol::{self, Kind, Request};
use anyhow::{Context, Result};
use std::fs::File;
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
    loop {
        let frame = protocol::read_frame(&mut r).context("reading from urund")?;
        match frame {
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
