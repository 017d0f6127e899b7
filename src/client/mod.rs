//! urun, the client. Unprivileged and untrusted: it forwards a request, the streams,
//! the signals it receives and its terminal's size, and prints what urund says. It
//! never talks to Docker, and nothing it sends can say who the caller is (urund asks
//! the kernel).
//!
//! It never exits while its container runs: every signal it can catch is forwarded,
//! and it ends only on urund's final frame or when the connection is gone (urund then
//! removes the container). A terminal put in raw mode for `-t` is restored on every
//! one of those paths.

mod build;
pub mod cli;
pub mod context;
mod images;

use crate::policy::mounts;
use crate::wire::{self, status, Kind, Progress, Query, Request, Signal, WinSize};
use anyhow::{Context, Result};
use cli::Urun;
use nix::sys::signal::{SigSet, Signal as Sig};
use nix::sys::termios::{self, SetArg, Termios};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A second SIGINT/SIGTERM within this time kills the container (SIGKILL).
pub const KILL_AFTER_SECOND_SIGNAL: Duration = Duration::from_secs(5);

/// urun's whole life: parse, refuse what is refused, run. Returns the exit status.
pub fn main(argv: impl IntoIterator<Item = OsString>) -> u8 {
    let (sub, argv) = match cli::split_command(argv.into_iter().collect()) {
        Ok(x) => x,
        Err(msg) => {
            eprintln!("urun: {msg}");
            return status::REFUSED;
        }
    };
    match sub {
        cli::Sub::Run => main_run(argv),
        cli::Sub::Build => build::main(argv),
        cli::Sub::Images => images::images_main(argv),
        cli::Sub::Rmi => images::rmi_main(argv),
        cli::Sub::Push => images::push_main(argv),
    }
}

/// `urun [run] [OPTIONS] IMAGE ...`: parse, refuse what is refused, run.
fn main_run(argv: Vec<OsString>) -> u8 {
    let (args, matches) = match cli::parse_urun_matches(argv) {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            eprintln!("urun: {}", cli::one_line_error(&e));
            return status::REFUSED;
        }
    };
    if let Some(msg) = cli::refusal(&matches, nix::unistd::getuid().as_raw()) {
        eprintln!("urun: {msg}");
        return status::REFUSED;
    }
    run(args)
}

/// Runs urun with parsed arguments; returns the exit status.
pub fn run(args: Urun) -> u8 {
    exit_status(run_inner(&args))
}

/// How a command ended, as urun's exit status: the message urund sent, or urun's own
/// error ([`status::REFUSED`]), on stderr.
fn exit_status(end: Result<Finished>) -> u8 {
    match end {
        Ok(Finished { status, message }) => {
            if let Some(m) = message {
                eprintln!("urun: {m}");
            }
            status
        }
        Err(e) => {
            eprintln!("urun: {e:#}");
            status::REFUSED
        }
    }
}

/// How a run ended: urund's status, and its message for an `Error` frame.
struct Finished {
    status: u8,
    message: Option<String>,
}

fn request(args: &Urun) -> Result<Request> {
    let env = cli::environment(
        args,
        |p| std::fs::read_to_string(p),
        |n| std::env::var(n).ok(),
    )
    .map_err(anyhow::Error::msg)?;
    let mut req = Request::new(args.image.clone(), args.command.clone());
    req.interactive = args.interactive;
    req.tty = args.tty;
    req.env = env;
    req.workdir = args.workdir.clone();
    req.entrypoint = args.entrypoint.clone();
    req.name = args.name.clone();
    req.user = args.user.clone();
    req.network = args.network.clone();
    req.never_pull = args.pull.as_deref() == Some("never");
    Ok(req)
}

/// `urun --policy`: urund's answer.
fn show_policy(socket: &Path) -> Result<Finished> {
    let sock = connect(socket)?;
    let mut w = sock.try_clone().context("socket")?;
    let sent = wire::write_frame(&mut w, Kind::Query, &Query::policy().encode());
    refused_or(sent, sock, "sending the query to urund")
}

/// Sends the request. The directory travels as an open descriptor with it: urund
/// mounts what we opened, never a path. A passed stdin comes after it.
fn send_request(
    writer: &mut UnixStream,
    req: &Request,
    dir: Option<&File>,
    pass_stdin: bool,
) -> io::Result<()> {
    let stdin = io::stdin();
    let fds: Vec<_> = dir
        .map(|d| d.as_fd())
        .into_iter()
        .chain(pass_stdin.then(|| stdin.as_fd()))
        .collect();
    if fds.is_empty() {
        return wire::write_frame(writer, Kind::Request, &req.encode());
    }
    let frame = wire::encode_frame(Kind::Request, &req.encode());
    crate::system::send_with_fds_waiting(writer, &frame, &fds, crate::system::NOT_ADMITTED_WAIT)
}

fn run_inner(args: &Urun) -> Result<Finished> {
    if args.show_policy {
        return show_policy(&args.socket);
    }
    let mut req = request(args)?;
    let dir = working_directory(args, &mut req)?;
    let stdin_tty = io::stdin().is_terminal();
    if args.tty && args.interactive && !stdin_tty {
        anyhow::bail!("the input device is not a TTY (-t with -i needs a terminal on stdin)");
    }
    if args.tty {
        req.size = terminal_size();
    }
    // With -i and no -t, a stdin urund can read without waiting (a pipe, a socket, a
    // regular file on a local filesystem) goes to it as a descriptor: the bytes then
    // skip this process and its socket. Anything else (a terminal, /dev/null, no
    // stdin at all) is copied as `Stdin` frames, as before.
    let pass_stdin = args.interactive
        && !args.tty
        && !stdin_tty
        && crate::system::check_passed_stdin(io::stdin().as_fd()).is_ok();
    req.stdin_fd = pass_stdin;
    // Before any other thread exists, so that every thread inherits the mask and the
    // signals are only ever taken by the forwarding thread.
    let signals = forwarded_signals();
    signals
        .thread_block()
        .context("blocking signals for forwarding")?;
    let sock = connect(&args.socket)?;
    let mut writer = sock.try_clone().context("socket")?;
    let sent = send_request(&mut writer, &req, dir.as_ref(), pass_stdin);
    if sent.is_err() {
        return refused_or(sent, sock, "sending the request to urund");
    }
    drop(dir);
    let writer = Arc::new(Mutex::new(writer));
    // Raw mode from here (with -it, as docker: with -t alone the local terminal keeps
    // its line discipline, so Ctrl-C is a signal urun forwards); restored when `raw`
    // is dropped, whatever the way out.
    let raw = match args.tty && args.interactive && stdin_tty {
        true => Some(RawTerminal::enter().context("putting the terminal in raw mode")?),
        false => None,
    };
    {
        let w = writer.clone();
        let shut = sock.try_clone().context("socket")?;
        let tty = args.tty;
        std::thread::spawn(move || forward_signals(signals, &w, &shut, tty));
    }
    if args.interactive && !pass_stdin {
        let w = writer.clone();
        std::thread::spawn(move || pump_stdin(&w));
    }
    relay_output(sock, raw.is_some())
}

fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Sig::SIGINT,
        Sig::SIGTERM,
        Sig::SIGHUP,
        Sig::SIGQUIT,
        Sig::SIGUSR1,
        Sig::SIGUSR2,
        Sig::SIGWINCH,
    ] {
        set.add(s);
    }
    set
}

/// Takes the blocked signals one by one: SIGWINCH becomes a `Resize` (with `-t`), the
/// others a `Signal` frame; a second SIGINT/SIGTERM within
/// [`KILL_AFTER_SECOND_SIGNAL`] becomes SIGKILL.
///
/// A frame that cannot be sent within [`SEND_TIMEOUT`] means urund is not reading us
/// (it is blocked writing to a container that does not read its stdin): a signal is
/// then dropped, and a kill becomes shutting down our sending side (through `shut`,
/// a handle that needs no lock), which urund takes as "kill the container" and
/// answers with the final frame we still read.
fn forward_signals(set: SigSet, w: &Mutex<UnixStream>, shut: &UnixStream, tty: bool) {
    let mut last_stop: Option<Instant> = None;
    loop {
        let Ok(sig) = set.wait() else { return };
        let frame = match sig {
            Sig::SIGWINCH if tty => terminal_size().map(|s| (Kind::Resize, s.encode().to_vec())),
            Sig::SIGWINCH => None,
            _ => {
                let mut s = match sig {
                    Sig::SIGINT => Signal::Int,
                    Sig::SIGTERM => Signal::Term,
                    Sig::SIGHUP => Signal::Hup,
                    Sig::SIGQUIT => Signal::Quit,
                    Sig::SIGUSR1 => Signal::Usr1,
                    _ => Signal::Usr2,
                };
                if matches!(s, Signal::Int | Signal::Term) {
                    let now = Instant::now();
                    if last_stop.is_some_and(|t| now - t < KILL_AFTER_SECOND_SIGNAL) {
                        s = Signal::Kill;
                    }
                    last_stop = Some(now);
                }
                Some((Kind::Signal, s.encode().to_vec()))
            }
        };
        let Some((kind, payload)) = frame else {
            continue;
        };
        match send_within(w, kind, &payload, SEND_TIMEOUT) {
            Sent::Yes => {}
            Sent::Gone => return,
            Sent::Stuck if payload == Signal::Kill.encode() => {
                let _ = shut.shutdown(std::net::Shutdown::Write);
            }
            Sent::Stuck => {}
        }
    }
}

/// How long the signal thread waits to get a frame out.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

enum Sent {
    Yes,
    Stuck,
    Gone,
}

/// Sends one small frame if the socket takes it within `limit`, without blocking
/// behind a writer that is stuck.
fn send_within(w: &Mutex<UnixStream>, kind: Kind, payload: &[u8], limit: Duration) -> Sent {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let t = Instant::now();
    let mut guard = loop {
        match w.try_lock() {
            Ok(g) => break g,
            Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) if t.elapsed() < limit => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::sync::TryLockError::WouldBlock) => return Sent::Stuck,
        }
    };
    let left = limit.saturating_sub(t.elapsed()).as_millis().min(60_000) as u16;
    let mut fds = [PollFd::new(guard.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::from(left)) {
        Ok(n) if n > 0 => {}
        _ => return Sent::Stuck,
    }
    match wire::write_frame(&mut *guard, kind, payload) {
        Ok(()) => Sent::Yes,
        Err(_) => Sent::Gone,
    }
}

/// The local terminal's size: stdin's, else stdout's.
fn terminal_size() -> Option<WinSize> {
    crate::system::terminal_size(io::stdin().as_fd())
        .or_else(|| crate::system::terminal_size(io::stdout().as_fd()))
        .map(|(rows, cols)| WinSize { rows, cols })
}

/// The terminal on stdin in raw mode for the life of the value (as `docker run -t`:
/// keys, Ctrl-C and Ctrl-D go to the container's terminal, which does the editing).
struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    fn enter() -> nix::Result<RawTerminal> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// `--here` or `-v HOST-DIR:DIR[:ro]`: resolves the host directory (relative to the
/// current directory; symlinks and `..` resolved by the kernel), requires it to be
/// the current directory or below it, and opens it as the caller. Fills in the
/// request's mount (and, for `--here`, the working directory).
fn working_directory(args: &Urun, req: &mut Request) -> Result<Option<File>> {
    let (source, target, read_only) = if args.here {
        (".".to_string(), None, false)
    } else {
        match &args.volume[..] {
            [] => return Ok(None),
            [v] => {
                let spec = mounts::parse_volume(v).map_err(anyhow::Error::msg)?;
                (spec.source, Some(spec.target), spec.read_only)
            }
            _ => anyhow::bail!("-v: only one directory can be mounted per run"),
        }
    };
    let cwd = std::env::current_dir()
        .and_then(std::fs::canonicalize)
        .context("finding the current directory")?;
    let resolved = std::fs::canonicalize(cwd.join(&source))
        .with_context(|| format!("-v: cannot resolve {source:?}"))?;
    mounts::check_below_cwd(&cwd, &resolved).map_err(anyhow::Error::msg)?;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(&resolved)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open {} to mount it: {e} (you can only mount a directory you can open)",
                resolved.display()
            )
        })?;
    let target = match target {
        Some(t) => t,
        None => {
            let t = resolved
                .to_str()
                .context("the current directory is not UTF-8")?;
            mounts::validate_target(t)
                .map_err(|e| anyhow::anyhow!("--here: {e}; use -v \"$PWD\":/work instead"))?;
            if req.workdir.is_none() {
                req.workdir = Some(t.to_string());
            }
            t.to_string()
        }
    };
    req.mount = Some(wire::MountRequest { target, read_only });
    Ok(Some(dir))
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

/// After sending the request (or query) failed: urund may have refused the connection
/// before reading anything (too many connections waiting, out of descriptors) and
/// closed it, leaving its one error frame to be read. Returns urund's answer if there
/// is one, else the send error.
fn refused_or(sent: io::Result<()>, sock: UnixStream, what: &'static str) -> Result<Finished> {
    let Err(e) = sent else {
        return relay_output(sock, false);
    };
    match relay_output(sock, false) {
        Ok(f) if f.message.is_some() => Ok(f),
        _ => Err(e).context(what),
    }
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
        if wire::write_frame(&mut *w.lock().unwrap(), Kind::Stdin, &buf[..n]).is_err() {
            return;
        }
    }
    let _ = wire::write_frame(&mut *w.lock().unwrap(), Kind::StdinEof, &[]);
}

/// Writes what the container prints to our stdout/stderr until the exit status.
/// `raw`: our terminal is in raw mode, so urun's own lines (pull progress) need `\r\n`.
fn relay_output(sock: UnixStream, raw: bool) -> Result<Finished> {
    relay_with_result(sock, raw, None)
}

/// [`relay_output`], also taking the `Result` frame of a build or management request:
/// its payload is stored in `result` (a second one, or one where none is expected, is
/// a protocol error).
fn relay_with_result(
    sock: UnixStream,
    raw: bool,
    mut result: Option<&mut Option<wire::Outcome>>,
) -> Result<Finished> {
    // Unbuffered handles on fds 1 and 2 (std's stdout is line-buffered).
    let mut out = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    let mut err = File::from(io::stderr().as_fd().try_clone_to_owned()?);
    let mut r = Frames::new(sock);
    let mut pull = PullView::new(io::stderr().is_terminal());
    let done = |status, message| Ok(Finished { status, message });
    loop {
        let frame = r.next().context("reading from urund")?;
        if !matches!(frame, Some((Kind::Progress, _))) {
            pull.finish(&mut err);
        }
        let Some((kind, range)) = frame else {
            anyhow::bail!("urund closed the connection without an exit status")
        };
        let p = &r.buf[range.clone()];
        match kind {
            Kind::Progress => {
                if let Ok(ev) = serde_json::from_slice::<Progress>(p) {
                    if let Some(text) = pull.update(ev) {
                        let text = match raw {
                            true => text.replace('\n', "\r\n"),
                            false => text,
                        };
                        let _ = err.write_all(text.as_bytes());
                    }
                }
            }
            Kind::Stdout => {
                // This frame and the stdout frames already read behind it, in one
                // vectored write, straight from the read buffer.
                let mut ranges = vec![range];
                while ranges.len() < MAX_WRITE_FRAMES {
                    match r.complete() {
                        Ok(Some((Kind::Stdout, next))) => {
                            r.start = next.end;
                            ranges.push(next);
                        }
                        _ => break,
                    }
                }
                if let Err(e) = write_all_ranges(&mut out, &r.buf, &ranges) {
                    // Like a process killed by SIGPIPE when our reader has gone.
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return done(141, None);
                    }
                    return Err(e).context("writing to stdout");
                }
            }
            Kind::Stderr => {
                let _ = err.write_all(p);
            }
            Kind::Result => match result.as_deref_mut() {
                Some(slot @ None) => *slot = Some(wire::Outcome::decode(p)?),
                _ => anyhow::bail!("urund sent an unexpected Result frame"),
            },
            Kind::Exit => return done(wire::decode_exit(p)?, None),
            Kind::Error => {
                let (status, msg) = wire::decode_error(p)?;
                return done(status, Some(msg));
            }
            k => anyhow::bail!("urund sent an unexpected {k:?} frame"),
        }
    }
}

/// Most stdout frames written in one vectored write (well under IOV_MAX).
const MAX_WRITE_FRAMES: usize = 256;

/// urund's frames, read in large chunks into one buffer and handed out as ranges of it
/// (no copy per frame). The buffer holds the largest frame urund sends whole.
struct Frames {
    sock: UnixStream,
    buf: Vec<u8>,
    /// The unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Frames {
    fn new(sock: UnixStream) -> Frames {
        Frames {
            sock,
            // Zeroed by the allocator: pages are touched only as reads fill them.
            buf: vec![0u8; wire::HEADER + wire::MAX_FRAME + 256 * 1024],
            start: 0,
            end: 0,
        }
    }

    /// The next frame (kind and payload range in `buf`), reading as needed; `None` on
    /// a clean end of the stream between frames.
    fn next(&mut self) -> io::Result<Option<(Kind, std::ops::Range<usize>)>> {
        loop {
            if let Some((kind, range)) = self.complete()? {
                self.start = range.end;
                return Ok(Some((kind, range)));
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = loop {
                match self.sock.read(&mut self.buf[self.end..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            if n == 0 {
                return match self.end {
                    0 => Ok(None),
                    _ => Err(io::ErrorKind::UnexpectedEof.into()),
                };
            }
            self.end += n;
        }
    }

    /// The frame at the front if it is all in the buffer (not consumed).
    fn complete(&self) -> io::Result<Option<(Kind, std::ops::Range<usize>)>> {
        let have = &self.buf[self.start..self.end];
        let Some(h) = have.first_chunk::<{ wire::HEADER }>() else {
            return Ok(None);
        };
        let (kind, len) =
            wire::parse_header(*h).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if have.len() < wire::HEADER + len {
            return Ok(None);
        }
        let first = self.start + wire::HEADER;
        Ok(Some((kind, first..first + len)))
    }
}

/// Writes the ranges of `buf`, in order, with as few vectored writes as the kernel
/// takes.
fn write_all_ranges(
    out: &mut File,
    buf: &[u8],
    ranges: &[std::ops::Range<usize>],
) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = ranges
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| io::IoSlice::new(&buf[r.clone()]))
        .collect();
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        match out.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
