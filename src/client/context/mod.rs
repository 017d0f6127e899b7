//! The build context, read by the client *as the caller* and streamed as a tar archive.
//!
//! `urun build` must never make root read a host path on a user's behalf, so the client
//! (unprivileged, running as the caller) reads the context directory with the caller's
//! own rights and streams it to `urund`. This module is that reader: it walks the
//! directory, applies `.dockerignore` ([`ignore`], docker's semantics), and writes a tar
//! archive into any [`Write`], the way the docker 20.10 CLI builds its context
//! (`archive.TarWithOptions` with `ChownOpts` 0:0, `TrimBuildFilesFromExcludes`,
//! `AddDockerfileToBuildContext`), with these rules:
//!
//! - **No symlink is ever followed.** Directories are opened relative to their parent's
//!   descriptor with `O_DIRECTORY|O_NOFOLLOW`, files with `O_NOFOLLOW|O_NONBLOCK`, and
//!   what was opened is compared (`fstat`: device, inode, type) with what the walk saw
//!   (`fstatat(AT_SYMLINK_NOFOLLOW)`); a file that changed type or identity in between
//!   is an error. A symlink goes into the archive as a link (a link to `/etc/shadow`
//!   is a link, never the file).
//! - Regular files keep their permission bits, including setuid, setgid and sticky, as
//!   docker keeps them (the built image is checked for setuid/setgid files by `urund`;
//!   dropping them here would prove nothing, since the client is not trusted). File
//!   capabilities (`security.capability`), which docker would carry, are not: no
//!   extended attributes are read. Owner and group are 0 in the archive, as docker's
//!   `ChownOpts` makes them; user and group *names* are left empty (docker's archive
//!   carries the caller's, which the build does not use). Modification times are kept
//!   (whole seconds, as docker).
//! - Directories are archived (with their modes); a directory excluded by
//!   `.dockerignore` but named by an exception below it is walked without being
//!   archived itself, as docker does. Entries come in a fixed order: depth first, names
//!   in byte order (Go's `filepath.Walk`).
//! - Hard links: the second and later names of a file (same device and inode, docker
//!   uses the inode only) are archived as links to the first name archived.
//! - FIFOs, sockets and devices are refused with an error naming the path (docker would
//!   archive them). Names that are not UTF-8 are refused too (the pattern matcher works
//!   on text).
//! - The Dockerfile and `.dockerignore` are always sent, whatever `.dockerignore` says
//!   (docker's `TrimBuildFilesFromExcludes`). A Dockerfile from outside the context or
//!   from standard input ([`Dockerfile::Content`]) is added as `.dockerfile.<20 hex>`
//!   (docker uses a random suffix; here it is the start of the Dockerfile's sha256, so
//!   the same context and Dockerfile give the same archive), and that name is appended
//!   to the archived `.dockerignore` (created if absent) so the daemon drops the file
//!   from what `COPY` sees, as docker does. A context entry already named so is an error.
//! - A byte limit holds while streaming: nothing past the limit is ever written; a file
//!   that would pass it is refused before its first byte. `urund` enforces its own limit
//!   on what it reads; this one gives the user an early, clear message.
//! - The sha256 of the whole stream and of the Dockerfile are computed on the way, for
//!   display (`urund` computes its own); a progress callback sees the byte count.
#![forbid(unsafe_code)]

pub mod ignore;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Default byte limit of a context stream (the client's; `urund` has its own).
pub const DEFAULT_LIMIT: u64 = 1 << 30;
/// Largest Dockerfile accepted (read in full: it is checked, hashed and maybe added).
pub const MAX_DOCKERFILE: u64 = 4 << 20;
/// Largest `.dockerignore` accepted.
pub const MAX_DOCKERIGNORE: u64 = 1 << 20;
/// How often (in bytes) the progress callback is called at most.
const PROGRESS_STEP: u64 = 256 << 10;

/// Where the Dockerfile comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dockerfile {
    /// A file inside the context, by its path relative to the context root
    /// (`Dockerfile` by default).
    InContext(String),
    /// Its content, read by the client from outside the context or from standard input
    /// (`-f -`): added to the archive under a name of its own.
    Content(Vec<u8>),
}

/// Why a context could not be sent. Each message names the path and what to do.
#[derive(Debug)]
pub enum ContextError {
    /// The stream would pass the limit (`path`: the entry that would pass it).
    TooLarge { limit: u64, path: String },
    /// A FIFO, socket or device.
    Special { path: String, kind: &'static str },
    /// The file changed type or identity between the walk and the open, or its size
    /// while it was read.
    Changed { path: String },
    /// A name that is not UTF-8.
    NotUtf8 { path: String },
    /// An unusable `.dockerignore` pattern.
    Pattern(ignore::PatternError),
    /// The Dockerfile is not a regular file in the context.
    DockerfileMissing { name: String },
    /// The Dockerfile or `.dockerignore` is too large or not a regular file.
    BadBuildFile { path: String, why: String },
    /// A context entry has the name reserved for the added Dockerfile.
    NameTaken { name: String },
    /// An I/O error on a path (or on the output, `path` empty).
    Io { path: String, source: io::Error },
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextError::TooLarge { limit, path } => write!(
                f,
                "the build context is larger than the limit of {limit} bytes (at {path}); \
                 exclude what the build does not need in .dockerignore"
            ),
            ContextError::Special { path, kind } => write!(
                f,
                "{path}: a {kind} cannot be sent in a build context; remove it or list it \
                 in .dockerignore"
            ),
            ContextError::Changed { path } => write!(
                f,
                "{path} changed while the build context was being read; try again"
            ),
            ContextError::NotUtf8 { path } => write!(
                f,
                "{path}: file names in a build context must be UTF-8; rename it or list \
                 its directory in .dockerignore"
            ),
            ContextError::Pattern(e) => write!(f, "{e}"),
            ContextError::DockerfileMissing { name } => write!(
                f,
                "cannot locate the Dockerfile {name} in the build context (it must be a \
                 regular file, not a link)"
            ),
            ContextError::BadBuildFile { path, why } => write!(f, "{path}: {why}"),
            ContextError::NameTaken { name } => write!(
                f,
                "the build context already has an entry named {name}, the name reserved \
                 for the Dockerfile given with -f; rename it"
            ),
            ContextError::Io { path, source } if path.is_empty() => {
                write!(f, "sending the build context: {source}")
            }
            ContextError::Io { path, source } => write!(f, "{path}: {source}"),
        }
    }
}

impl std::error::Error for ContextError {}

fn io_err(path: &str, e: impl Into<io::Error>) -> ContextError {
    ContextError::Io {
        path: path.to_string(),
        source: e.into(),
    }
}

/// What was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Bytes written (the whole tar stream).
    pub bytes: u64,
    /// sha256 of the stream, hexadecimal.
    pub sha256: String,
    /// The Dockerfile's name in the archive (the build's `dockerfile` parameter).
    pub dockerfile_name: String,
    /// sha256 of the Dockerfile, hexadecimal.
    pub dockerfile_sha256: String,
    /// Entries archived.
    pub entries: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a build context and writes it as a tar archive.
#[derive(Debug, Clone)]
pub struct Builder {
    root: PathBuf,
    dockerfile: Dockerfile,
    limit: u64,
}

/// The output side: counts, hashes, enforces the limit, reports progress.
struct Meter<'p, W: Write> {
    out: W,
    written: u64,
    limit: u64,
    over: bool,
    hash: Sha256,
    progress: &'p mut dyn FnMut(u64),
    last_progress: u64,
}

impl<W: Write> Write for Meter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            self.over = true;
            return Err(io::Error::other("the build context limit was reached"));
        }
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        if self.written - self.last_progress >= PROGRESS_STEP {
            self.last_progress = self.written;
            (self.progress)(self.written);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A reader that hashes what passes through it.
struct Hashing<'h, R: Read> {
    inner: R,
    hash: Option<&'h mut Sha256>,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hash.as_deref_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// The walk's state.
struct Walk<'a, 'p, W: Write> {
    tar: tar::Builder<Meter<'p, W>>,
    matcher: ignore::Matcher,
    /// The Dockerfile's path in the context (when it is there).
    dockerfile_in: Option<&'a str>,
    dockerfile_hash: Option<Sha256>,
    /// Name and content of an added Dockerfile.
    added: Option<(String, &'a [u8])>,
    dockerignore: Option<Vec<u8>>,
    dockerignore_sent: bool,
    links: HashMap<(u64, u64), String>,
    entries: u64,
    limit: u64,
}

/// Opens `name` in `dirfd` read-only with `flags`, never following a symlink, and
/// checks that it is the file the walk saw (`seen`: device, inode, type): a symlink or
/// a file of another type there now is a change. The descriptor and its `fstat`.
fn open_seen(
    dirfd: &OwnedFd,
    name: &str,
    path: &str,
    flags: OFlag,
    seen: &FileStat,
) -> Result<(OwnedFd, FileStat), ContextError> {
    let fd = nix::fcntl::openat(
        dirfd,
        name,
        OFlag::O_RDONLY | flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ELOOP => ContextError::Changed { path: path.into() },
        nix::errno::Errno::ENOTDIR if flags.contains(OFlag::O_DIRECTORY) => {
            ContextError::Changed { path: path.into() }
        }
        e => io_err(path, e),
    })?;
    let now = fstat(&fd).map_err(|e| io_err(path, e))?;
    if !same_file(seen, &now) {
        return Err(ContextError::Changed { path: path.into() });
    }
    Ok((fd, now))
}

fn kind_name(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFIFO => "FIFO (named pipe)",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        _ => "special file",
    }
}

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn same_file(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino && file_type(a) == file_type(b)
}

/// Reads a small build file (`.dockerignore`, a Dockerfile) at `name` under `dir`
/// without following a link. `Ok(None)` when it does not exist.
fn read_small(dir: &OwnedFd, name: &str, max: u64) -> Result<Option<Vec<u8>>, ContextError> {
    let fd = match nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(nix::errno::Errno::ELOOP) => {
            return Err(ContextError::BadBuildFile {
                path: name.into(),
                why: "is a symbolic link; name the file it points to".into(),
            })
        }
        Err(e) => return Err(io_err(name, e)),
    };
    let st = fstat(&fd).map_err(|e| io_err(name, e))?;
    if file_type(&st) != SFlag::S_IFREG {
        return Err(ContextError::BadBuildFile {
            path: name.into(),
            why: "is not a regular file".into(),
        });
    }
    if st.st_size as u64 > max {
        return Err(ContextError::BadBuildFile {
            path: name.into(),
            why: format!("is larger than {max} bytes"),
        });
    }
    let mut buf = Vec::new();
    File::from(fd)
        .take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_err(name, e))?;
    if buf.len() as u64 > max {
        return Err(ContextError::Changed { path: name.into() });
    }
    Ok(Some(buf))
}

impl Builder {
    /// A context rooted at `root` (a directory), with its Dockerfile.
    pub fn new(root: impl Into<PathBuf>, dockerfile: Dockerfile) -> Builder {
        Builder {
            root: root.into(),
            dockerfile,
            limit: DEFAULT_LIMIT,
        }
    }

    /// The largest stream allowed, in bytes (the archive's end marker included).
    pub fn limit(mut self, bytes: u64) -> Builder {
        self.limit = bytes;
        self
    }

    /// The name an added Dockerfile gets: `.dockerfile.` and the first 20 hexadecimal
    /// digits of its sha256.
    pub fn added_name(content: &[u8]) -> String {
        format!(".dockerfile.{}", &hex(&Sha256::digest(content))[..20])
    }

    /// Walks the context and writes the archive into `out`. `progress` is called with
    /// the bytes written so far (at most every 256 KiB, and at the end). On error the
    /// output holds a truncated archive that the reader must discard.
    pub fn write_to<W: Write>(
        &self,
        out: W,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Summary, ContextError> {
        let root_name = self.root.display().to_string();
        let root = nix::fcntl::open(
            &self.root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(&root_name, e))?;
        let dockerignore = read_small(&root, ".dockerignore", MAX_DOCKERIGNORE)?;
        let patterns = dockerignore_patterns(dockerignore.as_deref())?;
        let (dockerfile_in, added) = self.dockerfile_place()?;
        let patterns = ignore::keep_build_files(patterns, dockerfile_in.as_deref())
            .map_err(ContextError::Pattern)?;
        let matcher = ignore::Matcher::new(&patterns).map_err(ContextError::Pattern)?;
        let meter = Meter {
            out,
            written: 0,
            limit: self.limit,
            over: false,
            hash: Sha256::new(),
            progress,
            last_progress: 0,
        };
        let mut tar = tar::Builder::new(meter);
        tar.mode(tar::HeaderMode::Deterministic);
        tar.follow_symlinks(false);
        let mut walk = Walk {
            tar,
            matcher,
            dockerfile_in: dockerfile_in.as_deref(),
            dockerfile_hash: None,
            added,
            dockerignore,
            dockerignore_sent: false,
            links: HashMap::new(),
            entries: 0,
            limit: self.limit,
        };
        let result = walk.dir(&root, "").and_then(|()| walk.finish());
        walk.summary(result)
    }

    /// Where the Dockerfile goes (see [`Placed`]).
    fn dockerfile_place(&self) -> Result<Placed<'_>, ContextError> {
        match &self.dockerfile {
            Dockerfile::InContext(p) => {
                let clean = ignore::clean(p);
                if clean.starts_with("../")
                    || clean == ".."
                    || clean.starts_with('/')
                    || clean == "."
                {
                    return Err(ContextError::DockerfileMissing { name: p.clone() });
                }
                Ok((Some(clean), None))
            }
            Dockerfile::Content(c) => {
                if c.len() as u64 > MAX_DOCKERFILE {
                    return Err(ContextError::BadBuildFile {
                        path: "the Dockerfile".into(),
                        why: format!("is larger than {MAX_DOCKERFILE} bytes"),
                    });
                }
                Ok((None, Some((Self::added_name(c), c.as_slice()))))
            }
        }
    }
}

/// Where the Dockerfile goes: its clean path in the context, or the name and content
/// of the one to add.
type Placed<'a> = (Option<String>, Option<(String, &'a [u8])>);

/// The patterns of a `.dockerignore` (none without one).
fn dockerignore_patterns(dockerignore: Option<&[u8]>) -> Result<Vec<String>, ContextError> {
    let Some(b) = dockerignore else {
        return Ok(Vec::new());
    };
    let text = std::str::from_utf8(b).map_err(|_| ContextError::BadBuildFile {
        path: ".dockerignore".into(),
        why: "is not UTF-8 text".into(),
    })?;
    Ok(ignore::read_dockerignore(text))
}

impl<W: Write> Walk<'_, '_, W> {
    fn written(&self) -> u64 {
        self.tar.get_ref().written
    }

    /// Refuses an entry of `size` data bytes that would pass the limit.
    fn room(&self, path: &str, size: u64) -> Result<(), ContextError> {
        // header, long-name header and its block, data padded to 512, end marker
        let need = 512 * 3 + size.div_ceil(512) * 512 + 1024;
        if self.written().saturating_add(need) > self.limit {
            return Err(ContextError::TooLarge {
                limit: self.limit,
                path: path.to_string(),
            });
        }
        Ok(())
    }

    fn header(&self, st: &FileStat, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(size);
        h
    }

    fn append(
        &mut self,
        path: &str,
        mut header: tar::Header,
        data: impl Read,
    ) -> Result<(), ContextError> {
        if self.added.as_ref().is_some_and(|(n, _)| n == path) {
            return Err(ContextError::NameTaken {
                name: path.to_string(),
            });
        }
        self.room(path, header.size().unwrap_or(0))?;
        self.tar
            .append_data(&mut header, path, data)
            .map_err(|e| io_err(path, e))?;
        self.entries += 1;
        Ok(())
    }

    /// Walks one directory (`rel` is its path in the context, "" for the root).
    fn dir(&mut self, dirfd: &OwnedFd, rel: &str) -> Result<(), ContextError> {
        let shown = if rel.is_empty() { "." } else { rel };
        let listing = nix::fcntl::openat(
            dirfd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .and_then(Dir::from_fd)
        .map_err(|e| io_err(shown, e))?;
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut listing = listing;
        for entry in listing.iter() {
            let entry = entry.map_err(|e| io_err(shown, e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort();
        for raw in names {
            let lossy = String::from_utf8_lossy(&raw).into_owned();
            let shown_path = if rel.is_empty() {
                lossy.clone()
            } else {
                format!("{rel}/{lossy}")
            };
            let Ok(name) = String::from_utf8(raw) else {
                return Err(ContextError::NotUtf8 { path: shown_path });
            };
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            self.entry(dirfd, &name, &path)?;
        }
        Ok(())
    }

    /// One directory entry.
    fn entry(&mut self, dirfd: &OwnedFd, name: &str, path: &str) -> Result<(), ContextError> {
        let st = fstatat(dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| io_err(path, e))?;
        let kind = file_type(&st);
        if self.matcher.matches(path) {
            if kind != SFlag::S_IFDIR
                || !self.matcher.has_exclusions()
                || !self.matcher.must_walk(path)
            {
                return Ok(());
            }
            // excluded, but an exception below it: walk it, do not archive it
            let sub = open_seen(dirfd, name, path, OFlag::O_DIRECTORY, &st)?.0;
            return self.dir(&sub, path);
        }
        match kind {
            SFlag::S_IFDIR => {
                let sub = open_seen(dirfd, name, path, OFlag::O_DIRECTORY, &st)?.0;
                let h = self.header(&st, tar::EntryType::Directory, 0);
                self.append(&format!("{path}/"), h, io::empty())?;
                self.dir(&sub, path)
            }
            SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(dirfd, name).map_err(|e| io_err(path, e))?;
                let mut h = self.header(&st, tar::EntryType::Symlink, 0);
                self.room(path, 0)?;
                self.tar
                    .append_link(
                        &mut h,
                        path,
                        Path::new(OsStr::from_bytes(target.as_bytes())),
                    )
                    .map_err(|e| io_err(path, e))?;
                self.entries += 1;
                Ok(())
            }
            SFlag::S_IFREG => self.file(dirfd, name, path, &st),
            _ => Err(ContextError::Special {
                path: path.to_string(),
                kind: kind_name(st.st_mode),
            }),
        }
    }

    fn file(
        &mut self,
        dirfd: &OwnedFd,
        name: &str,
        path: &str,
        seen: &FileStat,
    ) -> Result<(), ContextError> {
        let is_dockerfile = self.dockerfile_in == Some(path);
        let key = (seen.st_dev, seen.st_ino);
        if seen.st_nlink > 1 {
            if let Some(first) = self.links.get(&key).cloned() {
                return self.hard_link(dirfd, name, path, seen, &first);
            }
        }
        if path == ".dockerignore" && self.added.is_some() {
            return self.send_dockerignore(Some(seen));
        }
        let fd = self.open_file(dirfd, name, path, seen)?;
        let size = seen.st_size as u64;
        if is_dockerfile && size > MAX_DOCKERFILE {
            return Err(ContextError::BadBuildFile {
                path: path.into(),
                why: format!("is larger than {MAX_DOCKERFILE} bytes"),
            });
        }
        let h = self.header(seen, tar::EntryType::Regular, size);
        let mut hash = is_dockerfile.then(Sha256::new);
        let mut reader = Hashing {
            inner: File::from(fd).take(size),
            hash: hash.as_mut(),
        };
        let mut counted = CountingReader {
            inner: &mut reader,
            n: 0,
        };
        self.append(path, h, &mut counted)?;
        // a file that shrank while read would have been padded by the archive writer
        // with nothing: the tar crate fails then; a file that grew is cut at its size
        if counted.n != size {
            return Err(ContextError::Changed { path: path.into() });
        }
        if seen.st_nlink > 1 {
            self.links.insert(key, path.to_string());
        }
        if path == ".dockerignore" {
            self.dockerignore_sent = true;
        }
        if let Some(h) = hash {
            self.dockerfile_hash = Some(h);
        }
        Ok(())
    }

    /// A second or later name of a file archived already as `first`: a link to it.
    fn hard_link(
        &mut self,
        dirfd: &OwnedFd,
        name: &str,
        path: &str,
        seen: &FileStat,
        first: &str,
    ) -> Result<(), ContextError> {
        let mut h = self.header(seen, tar::EntryType::Link, 0);
        self.room(path, 0)?;
        self.tar
            .append_link(&mut h, path, first)
            .map_err(|e| io_err(path, e))?;
        self.entries += 1;
        if self.dockerfile_in == Some(path) {
            // its content is the first name's; read it for the digest
            let fd = self.open_file(dirfd, name, path, seen)?;
            let mut hash = Sha256::new();
            let mut reader = Hashing {
                inner: File::from(fd).take(seen.st_size as u64),
                hash: Some(&mut hash),
            };
            io::copy(&mut reader, &mut io::sink()).map_err(|e| io_err(path, e))?;
            self.dockerfile_hash = Some(hash);
        }
        Ok(())
    }

    fn open_file(
        &self,
        dirfd: &OwnedFd,
        name: &str,
        path: &str,
        seen: &FileStat,
    ) -> Result<OwnedFd, ContextError> {
        let (fd, now) = open_seen(dirfd, name, path, OFlag::O_NONBLOCK | OFlag::O_NOCTTY, seen)?;
        if now.st_size != seen.st_size {
            return Err(ContextError::Changed { path: path.into() });
        }
        Ok(fd)
    }

    /// `.dockerignore` with the added Dockerfile's name appended (docker's
    /// `AddDockerfileToBuildContext`); created when the context has none.
    fn send_dockerignore(&mut self, seen: Option<&FileStat>) -> Result<(), ContextError> {
        let name = self
            .added
            .as_ref()
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        let mut content = match self.dockerignore.take() {
            Some(c) => c,
            None => b".dockerignore".to_vec(),
        };
        content.extend_from_slice(format!("\n{name}\n").as_bytes());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(seen.map_or(0o600, |s| s.st_mode & 0o7777));
        h.set_mtime(seen.map_or(0, |s| s.st_mtime.max(0) as u64));
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(content.len() as u64);
        self.append(".dockerignore", h, content.as_slice())?;
        self.dockerignore_sent = true;
        Ok(())
    }

    /// After the walk: the added Dockerfile (and `.dockerignore`), and the digests.
    fn finish(&mut self) -> Result<(String, String), ContextError> {
        if let Some((name, content)) = self.added.clone() {
            if !self.dockerignore_sent {
                self.send_dockerignore(None)?;
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o600);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(content.len() as u64);
            self.added = None;
            self.append(&name, h, content)?;
            return Ok((name, hex(&Sha256::digest(content))));
        }
        let name = self.dockerfile_in.unwrap_or("Dockerfile").to_string();
        match self.dockerfile_hash.take() {
            Some(h) => Ok((name, hex(&h.finalize()))),
            None => Err(ContextError::DockerfileMissing { name }),
        }
    }

    /// The archive's end and its summary, once the walk has given `result` (the
    /// Dockerfile's name and sha256): an I/O error past the limit is the limit's.
    fn summary(
        self,
        result: Result<(String, String), ContextError>,
    ) -> Result<Summary, ContextError> {
        let over = self.tar.get_ref().over;
        let limit = self.limit;
        let result = result.map_err(|e| match e {
            ContextError::Io { path, .. } if over => ContextError::TooLarge { limit, path },
            e => e,
        });
        let (dockerfile_name, dockerfile_sha256) = result?;
        let entries = self.entries;
        let mut meter = self.tar.into_inner().map_err(|e| {
            if over {
                ContextError::TooLarge {
                    limit,
                    path: "the end of the archive".into(),
                }
            } else {
                io_err("", e)
            }
        })?;
        meter.flush().map_err(|e| io_err("", e))?;
        let bytes = meter.written;
        (meter.progress)(bytes);
        Ok(Summary {
            bytes,
            sha256: hex(&meter.hash.finalize()),
            dockerfile_name,
            dockerfile_sha256,
            entries,
        })
    }
}

struct CountingReader<R: Read> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Where docker looks for the Dockerfile (`GetContextFromLocalDir`): `-f PATH` is
/// relative to the current directory; without it, `Dockerfile` in the context (or
/// `dockerfile` when only that exists). A path inside the context is sent as part of
/// it; one outside is read here (the final component must not be a link) and added.
/// `-f -` is for the caller to read from standard input into [`Dockerfile::Content`].
pub fn locate_dockerfile(
    context: &Path,
    file: Option<&Path>,
    cwd: &Path,
) -> Result<Dockerfile, ContextError> {
    let context_abs = ignore::clean(&cwd.join(context).to_string_lossy());
    let Some(file) = file else {
        let exists = |n: &str| std::fs::symlink_metadata(Path::new(&context_abs).join(n)).is_ok();
        let name = if !exists("Dockerfile") && exists("dockerfile") {
            "dockerfile"
        } else {
            "Dockerfile"
        };
        return Ok(Dockerfile::InContext(name.into()));
    };
    let abs = ignore::clean(&cwd.join(file).to_string_lossy());
    if let Some(rel) = abs.strip_prefix(&format!("{}/", context_abs.trim_end_matches('/'))) {
        return Ok(Dockerfile::InContext(rel.to_string()));
    }
    let shown = file.display().to_string();
    let (dir, name) = abs
        .rsplit_once('/')
        .ok_or_else(|| ContextError::DockerfileMissing {
            name: shown.clone(),
        })?;
    let dir = if dir.is_empty() { "/" } else { dir };
    let dirfd = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(&shown, e))?;
    match read_small(&dirfd, name, MAX_DOCKERFILE) {
        Ok(Some(c)) => Ok(Dockerfile::Content(c)),
        Ok(None) => Err(ContextError::DockerfileMissing { name: shown }),
        Err(ContextError::BadBuildFile { why, .. }) => {
            Err(ContextError::BadBuildFile { path: shown, why })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
