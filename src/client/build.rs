//! `urun build`: the client side of a build. It reads the context *as the caller*
//! (a directory through [`super::context`], or a tar archive or a lone Dockerfile on
//! standard input), sends the `Build` request, streams the context as `Context`
//! frames (each at most [`CONTEXT_CHUNK`] bytes) ended by one `ContextEnd`, forwards
//! Ctrl-C and the other signals as `Signal` frames, prints what urund sends, and on
//! the `Result` prints docker's legacy-builder lines (`Successfully built ...`).
//! Nothing it sends is trusted by urund: the size limit, the archive's validity and
//! every check are urund's.

use super::cli::{self, BuildArgs};
use super::context::{self, ContextError, Dockerfile};
use super::{connect, relay_with_result, Finished};
use crate::wire::{self, status, BuildRequest, Kind, Outcome};
use anyhow::{Context as _, Result};
use std::ffi::OsString;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

/// Bytes of context per `Context` frame (at most [`wire::MAX_FRAME`]).
pub const CONTEXT_CHUNK: usize = 256 << 10;

/// A context of this many bytes or more gets the updating progress line on a
/// terminal while it is sent.
const PROGRESS_FROM: u64 = 1 << 20;

/// `urun build ...` (the arguments after the word `build`): parse, refuse, build.
pub fn main(argv: Vec<OsString>) -> u8 {
    let (args, m) = match cli::parse_build(argv) {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            eprintln!("urun: {}", cli::one_line_error_for(&e, &cli::BUILD_USAGE));
            return status::REFUSED;
        }
    };
    if let Some(msg) = cli::build_refusal(&args, &m, nix::unistd::getuid().as_raw()) {
        eprintln!("urun: {msg}");
        return status::REFUSED;
    }
    let Some(context) = args.context.clone() else {
        let u = &cli::BUILD_USAGE;
        eprintln!(
            "urun: missing PATH | -: usage: {} (see {})",
            u.usage, u.help
        );
        return status::REFUSED;
    };
    super::exit_status(build(&args, &context))
}

/// Where the context comes from, decided (and read, for what is small) before urund
/// is contacted.
pub(crate) enum Source {
    /// A directory, read by the walk as the caller.
    Dir(context::Builder),
    /// A tar archive on standard input: its first bytes (read to tell), then the rest.
    Tar(Vec<u8>),
    /// A Dockerfile on standard input and no context: sent as an archive of one file.
    Single(Vec<u8>),
}

/// What a `-` context on standard input is, from its first bytes (up to 512).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StdinKind {
    Tar,
    Compressed(&'static str),
    Dockerfile,
}

/// Tells a tar archive (a header block whose checksum holds), a compressed stream
/// (refused: urund reads plain tar only) and anything else (a Dockerfile) apart, as
/// docker's `IsArchive` does.
pub(crate) fn stdin_kind(head: &[u8]) -> StdinKind {
    for (magic, name) in [
        (&[0x1f, 0x8b][..], "gzip"),
        (b"BZh", "bzip2"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
    ] {
        if head.starts_with(magic) {
            return StdinKind::Compressed(name);
        }
    }
    if head.len() == 512 {
        let h = tar::Header::from_byte_slice(head);
        let sum: u32 = head
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    *b as u32
                }
            })
            .sum();
        if h.cksum().is_ok_and(|c| c == sum) {
            return StdinKind::Tar;
        }
    }
    StdinKind::Dockerfile
}

/// Reads up to `n` bytes (fewer only at the end of the input).
fn read_up_to(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A Dockerfile read from standard input (`-f -`, or a `-` context that is not an
/// archive), bounded.
fn read_dockerfile(r: &mut impl Read, mut head: Vec<u8>) -> Result<Vec<u8>> {
    let max = context::MAX_DOCKERFILE as usize;
    let more = read_up_to(r, max + 1 - head.len().min(max + 1))
        .context("reading the Dockerfile from standard input")?;
    head.extend(more);
    if head.len() > max {
        anyhow::bail!("the Dockerfile on standard input is larger than {max} bytes");
    }
    if head.is_empty() {
        anyhow::bail!("the Dockerfile on standard input is empty");
    }
    Ok(head)
}

/// The context's source and the Dockerfile's name in it (the request's `dockerfile`).
pub(crate) fn source(
    args: &BuildArgs,
    context_arg: &str,
    stdin: &mut impl Read,
    cwd: &Path,
) -> Result<(Source, String)> {
    let file_is_stdin = args.file.as_deref() == Some(Path::new("-"));
    if context_arg == "-" {
        return stdin_source(args, stdin);
    }
    let dir = cwd.join(context_arg);
    let meta = std::fs::metadata(&dir)
        .with_context(|| format!("unable to prepare the build context {context_arg:?}"))?;
    if !meta.is_dir() {
        anyhow::bail!("the build context {context_arg:?} is not a directory");
    }
    // As docker: the context's own symlinks are resolved first (the walk below
    // never follows one).
    let root: PathBuf = std::fs::canonicalize(&dir)
        .with_context(|| format!("unable to prepare the build context {context_arg:?}"))?;
    let dockerfile = if file_is_stdin {
        Dockerfile::Content(read_dockerfile(stdin, Vec::new())?)
    } else {
        context::locate_dockerfile(Path::new(context_arg), args.file.as_deref(), cwd)
            .map_err(|e| anyhow::anyhow!("{e}"))?
    };
    let name = match &dockerfile {
        Dockerfile::InContext(p) => {
            let clean = context::ignore::clean(p);
            // Said now, rather than after the context was sent.
            let found = std::fs::symlink_metadata(root.join(&clean));
            if !found.is_ok_and(|m| m.file_type().is_file()) {
                return Err(anyhow::anyhow!(
                    "{}",
                    ContextError::DockerfileMissing { name: clean }
                ));
            }
            clean
        }
        Dockerfile::Content(c) => context::Builder::added_name(c),
    };
    Ok((Source::Dir(context::Builder::new(root, dockerfile)), name))
}

/// [`source`] of `urun build -`: a tar archive, or a Dockerfile alone, on `stdin`.
fn stdin_source(args: &BuildArgs, stdin: &mut impl Read) -> Result<(Source, String)> {
    let head = read_up_to(stdin, 512).context("reading the build context from standard input")?;
    match stdin_kind(&head) {
        StdinKind::Tar => {
            let name = match &args.file {
                Some(f) => f
                    .to_str()
                    .context("-f: the Dockerfile's name is not UTF-8")?
                    .to_string(),
                None => "Dockerfile".to_string(),
            };
            Ok((Source::Tar(head), name))
        }
        StdinKind::Compressed(kind) => anyhow::bail!(
            "the build context on standard input is {kind}-compressed: urun sends a \
             plain tar archive (decompress it first, e.g. zcat context.tar.gz | urun build -)"
        ),
        // As docker: a lone Dockerfile, named Dockerfile (-f is not used then).
        StdinKind::Dockerfile => Ok((
            Source::Single(read_dockerfile(stdin, head)?),
            "Dockerfile".to_string(),
        )),
    }
}

/// The `Build` request from the command line. `lookup` is the environment (for
/// `--build-arg NAME`).
pub(crate) fn request(
    args: &BuildArgs,
    dockerfile: String,
    lookup: impl Fn(&str) -> Option<String>,
) -> BuildRequest {
    BuildRequest {
        version: wire::VERSION,
        tags: args.tags.clone(),
        dockerfile,
        build_args: cli::build_args(&args.build_args, lookup),
        target: args.target.clone(),
        no_cache: args.no_cache,
        never_pull: args.pull.as_deref() == Some("never"),
        labels: cli::labels(&args.labels),
        quiet: args.quiet,
    }
}

fn build(args: &BuildArgs, context_arg: &str) -> Result<Finished> {
    let cwd = std::env::current_dir().context("finding the current directory")?;
    let (source, dockerfile) = source(args, context_arg, &mut io::stdin().lock(), &cwd)?;
    let req = request(args, dockerfile, |n| std::env::var(n).ok());
    remove_old_iidfile(args)?;
    // Before any other thread exists (see `super::forwarded_signals`).
    let signals = super::forwarded_signals();
    signals
        .thread_block()
        .context("blocking signals for forwarding")?;
    let sock = connect(&args.socket)?;
    let mut w = sock.try_clone().context("socket")?;
    if let Err(e) = wire::write_frame(&mut w, Kind::Build, &req.encode()) {
        return super::refused_or(Err(e), sock, "sending the build request to urund");
    }
    let writer = Arc::new(Mutex::new(w));
    {
        let w = writer.clone();
        let shut = sock.try_clone().context("socket")?;
        std::thread::spawn(move || super::forward_signals(signals, &w, &shut, false));
    }
    let (failed_tx, failed_rx) = mpsc::channel();
    {
        let w = writer.clone();
        let shut = sock.try_clone().context("socket")?;
        let progress = Progress::new(!args.quiet, io::stderr().is_terminal());
        std::thread::spawn(move || {
            if let Err(e) = send_context(source, &w, progress, &mut io::stdin().lock()) {
                // A local failure (a special file, a changed file, the client's own
                // limit): urund is told by the connection closing before `ContextEnd`.
                // An output error means urund closed the connection: its own last
                // frame says why.
                if !matches!(e, ContextError::Io { ref path, .. } if path.is_empty()) {
                    let _ = failed_tx.send(e);
                    let _ = shut.shutdown(std::net::Shutdown::Both);
                }
            }
        });
    }
    let mut outcome = None;
    let relayed = relay_with_result(sock, false, Some(&mut outcome));
    if let Ok(e) = failed_rx.try_recv() {
        return Err(anyhow::anyhow!("{e}"));
    }
    let finished = relayed?;
    if finished.status == 0 && finished.message.is_none() {
        match outcome {
            Some(Outcome::Built { image_id, tags }) => {
                report_built(args, &image_id, &tags)?;
            }
            Some(_) => anyhow::bail!("urund answered the build with another request's result"),
            None => anyhow::bail!("urund ended the build without its result"),
        }
    }
    Ok(finished)
}

/// As docker: an old `--iidfile` never outlives a failed build.
fn remove_old_iidfile(args: &BuildArgs) -> Result<()> {
    if let Some(f) = &args.iidfile {
        match std::fs::remove_file(f) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("--iidfile {}", f.display()))
            }
            _ => {}
        }
    }
    Ok(())
}

/// docker's legacy builder's last lines (or the ID alone with `-q`), and `--iidfile`.
fn report_built(args: &BuildArgs, image_id: &str, tags: &[String]) -> Result<()> {
    let text = built_lines(image_id, tags, args.quiet);
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")?;
    if let Some(f) = &args.iidfile {
        std::fs::write(f, image_id)
            .with_context(|| format!("--iidfile {}: writing the image ID", f.display()))?;
    }
    Ok(())
}

/// `Successfully built <12 hex>` and `Successfully tagged <tag>` per tag; with `quiet`
/// the full ID alone. Control characters from urund are dropped.
pub(crate) fn built_lines(image_id: &str, tags: &[String], quiet: bool) -> String {
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).collect() };
    if quiet {
        return format!("{}\n", clean(image_id));
    }
    let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
    let short: String = clean(hex).chars().take(12).collect();
    let mut t = format!("Successfully built {short}\n");
    for tag in tags {
        t.push_str(&format!("Successfully tagged {}\n", clean(tag)));
    }
    t
}

/// `Context` frames of at most [`CONTEXT_CHUNK`] bytes, written under the connection's
/// lock one frame at a time (so the signal thread's frames get in between).
pub(crate) struct FrameSink<'a, W: Write> {
    w: &'a Mutex<W>,
    buf: Vec<u8>,
    sent: u64,
}

impl<'a, W: Write> FrameSink<'a, W> {
    pub(crate) fn new(w: &'a Mutex<W>) -> Self {
        FrameSink {
            w,
            buf: Vec::with_capacity(CONTEXT_CHUNK),
            sent: 0,
        }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut g = self.w.lock().unwrap_or_else(|p| p.into_inner());
        wire::write_frame(&mut *g, Kind::Context, &self.buf)?;
        self.sent += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Sends what is buffered; returns the bytes sent in all.
    pub(crate) fn flush_all(&mut self) -> io::Result<u64> {
        self.send_buf()?;
        Ok(self.sent)
    }

    /// Sends what is buffered and the `ContextEnd` frame; returns the bytes sent.
    pub(crate) fn end(mut self) -> io::Result<u64> {
        self.send_buf()?;
        let mut g = self.w.lock().unwrap_or_else(|p| p.into_inner());
        wire::write_frame(&mut *g, Kind::ContextEnd, &[])?;
        Ok(self.sent)
    }
}

impl<W: Write> Write for FrameSink<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CONTEXT_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CONTEXT_CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// docker's "Sending build context to Docker daemon  12.29MB": on a terminal one line
/// rewritten while a large context is sent; the final line in every case (not with
/// `-q`).
pub(crate) struct Progress {
    show: bool,
    tty: bool,
    open: bool,
}

impl Progress {
    pub(crate) fn new(show: bool, tty: bool) -> Progress {
        Progress {
            show,
            tty,
            open: false,
        }
    }

    /// The text to write for `bytes` sent so far (`done`: all of it), if any.
    pub(crate) fn text(&mut self, bytes: u64, done: bool) -> Option<String> {
        if !self.show {
            return None;
        }
        let line = format!("Sending build context to urund  {}", human_size(bytes, 4));
        if done {
            let cr = if self.open { "\r\x1b[K" } else { "" };
            self.open = false;
            return Some(format!("{cr}{line}\n"));
        }
        if self.tty && bytes >= PROGRESS_FROM {
            self.open = true;
            return Some(format!("\r\x1b[K{line}"));
        }
        None
    }

    fn show(&mut self, bytes: u64, done: bool) {
        if let Some(t) = self.text(bytes, done) {
            let mut e = io::stderr().lock();
            let _ = e.write_all(t.as_bytes());
            let _ = e.flush();
        }
    }
}

/// Streams the context: the walk (or standard input) into `Context` frames, then
/// `ContextEnd`.
pub(crate) fn send_context<W: Write>(
    source: Source,
    w: &Mutex<W>,
    mut progress: Progress,
    stdin: &mut dyn Read,
) -> Result<u64, ContextError> {
    let out_err = |e: io::Error| ContextError::Io {
        path: String::new(),
        source: e,
    };
    let mut sink = FrameSink::new(w);
    match source {
        Source::Dir(builder) => {
            builder.write_to(&mut sink, &mut |n| progress.show(n, false))?;
        }
        Source::Tar(head) => {
            sink.write_all(&head).map_err(out_err)?;
            let mut buf = vec![0u8; CONTEXT_CHUNK];
            let mut total = head.len() as u64;
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(ContextError::Io {
                            path: "standard input".into(),
                            source: e,
                        })
                    }
                };
                sink.write_all(&buf[..n]).map_err(out_err)?;
                total += n as u64;
                progress.show(total, false);
            }
        }
        Source::Single(dockerfile) => {
            sink.write_all(&single_file_archive(&dockerfile))
                .map_err(out_err)?;
        }
    }
    // The last line before `ContextEnd`: urund's findings come after it.
    let sent = sink.flush_all().map_err(out_err)?;
    progress.show(sent, true);
    sink.end().map_err(out_err)
}

/// A context of one file, `Dockerfile` (what docker makes of a Dockerfile on stdin).
pub(crate) fn single_file_archive(dockerfile: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(dockerfile.len() as u64);
    b.append_data(&mut h, "Dockerfile", dockerfile)
        .expect("writing to memory");
    b.into_inner().expect("writing to memory")
}

/// docker's `units.HumanSizeWithPrecision`: decimal units (kB = 1000 bytes), `digits`
/// significant digits, trailing zeros dropped (`2.048kB`, `12.29MB`, `5B`).
pub fn human_size(n: u64, digits: usize) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    // %.Ng: N significant digits, no exponent for values below 1000.
    let int_digits = if v < 1.0 {
        1
    } else {
        (v.log10().floor() as usize) + 1
    };
    let decimals = digits.saturating_sub(int_digits);
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    // Rounding up to the next power of ten (999.99 → "1000") is what %g prints too.
    format!("{s}{}", UNITS[i])
}

#[cfg(test)]
mod tests;
