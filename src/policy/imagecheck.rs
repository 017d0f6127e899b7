//! The checks of a built image, before it is tagged: pure (the only input is a
//! generic [`Read`]; urund hands it the `docker save` stream of the image).
//!
//! [`scan`] reads the archive that Docker's `GET /images/{id}/get` returns for one
//! image (the docker 20.10 layout: `manifest.json`, `<config digest>.json`,
//! `<dir>/layer.tar`, where a layer saved twice is a symlink to the first copy) as
//! hostile input: every name, size and count bounded ([`MAX_LAYERS`],
//! [`MAX_ENTRIES`], [`MAX_SPECIAL`], [`MAX_JSON`], [`identity::MAX_FILE`]), every
//! path normalised and refused if it climbs (`..`), each layer's bytes hashed and
//! compared with the config's `rootfs.diff_ids` (so what was read is exactly the
//! image), and the config's digest returned as the image ID (so urund can check it
//! scanned the image it built). It returns a [`Scan`]: the config's `User` and `Env`,
//! the final `/etc/passwd` and `/etc/group` (the topmost layer that has them wins;
//! OCI whiteouts `.wh.NAME` and opaque directories `.wh..wh..opq` honoured), and the
//! files with setuid or setgid bits or file capabilities that the build's layers (all
//! but the first `base_layers`) added and that are still in the final filesystem (a
//! later layer that removes the bits, deletes or replaces the file hides it, as in the
//! running container).
//!
//! [`check`] turns a scan into findings, each with a rule id ([`ImageRule`]):
//! - `image.user-root` (error): the configured user is root as Docker resolves it
//!   (`GetExecUser` of libcontainer, through the image's own `/etc/passwd`, then the
//!   uid truncated to 32 bits as dockerd does): empty, `root`, a number Go's `Atoi`
//!   reads as 0, or a name whose first passwd entry has uid 0 (Go's reading of the
//!   file: lines trimmed, a missing or non-numeric uid field is 0). A name the file
//!   does not resolve is an error too: the check cannot tell who it is.
//! - `image.setuid` (severity from `[build] setuid`): the files above, listed.
//! - `image.secret-env` (warning): `Env` names that look like secrets (names only;
//!   values never appear in a message).
#![forbid(unsafe_code)]

pub mod tar;

use crate::policy::dockerfile::{go_atoi, is_root_user, Severity};
use crate::policy::identity;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::io::{self, Read};
use tar::{Entry, Kind, Reader};

/// Most layers an image may have (overlayfs stacks at most 128).
pub const MAX_LAYERS: usize = 256;
/// Most entries in all layers together.
pub const MAX_ENTRIES: usize = 2_000_000;
/// Most entries in the outer archive.
pub const MAX_OUTER: usize = 8 * MAX_LAYERS;
/// Most files with setuid/setgid bits or capabilities recorded over all layers.
pub const MAX_SPECIAL: usize = 10_000;
/// Largest `manifest.json` or image config read.
pub const MAX_JSON: u64 = 8 << 20;
/// Names listed in one finding; the rest are counted.
const LIST: usize = 20;

/// The final state of `/etc/passwd` or `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdFile {
    Absent,
    /// A regular file, its bytes.
    File(Vec<u8>),
    /// Present but not readable as Docker would read it here (a symlink, a hard link,
    /// a directory, larger than [`identity::MAX_FILE`], or `/etc` not a directory).
    Unreadable(String),
}

/// A file with setuid/setgid bits or file capabilities that the build added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialFile {
    /// Absolute path, lossily decoded (escape it for display: `{:?}`).
    pub path: String,
    /// Permission and set-id bits.
    pub mode: u32,
    /// A `security.capability` attribute.
    pub capabilities: bool,
    /// Index of the layer (0 = the lowest) that added it.
    pub layer: usize,
}

impl SpecialFile {
    /// `setuid`, `setgid`, `capabilities`, joined by `+`.
    pub fn what(&self) -> String {
        let mut w = Vec::new();
        if self.mode & 0o4000 != 0 {
            w.push("setuid");
        }
        if self.mode & 0o2000 != 0 {
            w.push("setgid");
        }
        if self.capabilities {
            w.push("capabilities");
        }
        w.join("+")
    }
}

/// What [`scan`] found in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// `sha256:<hex>` of the config: the image ID.
    pub image_id: String,
    /// Layers of the image, and how many of them are the base image's.
    pub layers: usize,
    /// Bytes of all its layers (uncompressed, as saved): its size on disk, about.
    pub bytes: u64,
    pub base_layers: usize,
    /// `config.User` (empty when unset).
    pub user: String,
    /// `config.Env`, `NAME=value` entries.
    pub env: Vec<String>,
    pub passwd: IdFile,
    pub group: IdFile,
    /// In the final filesystem, added by the layers above the base's; by layer, then
    /// archive order.
    pub special: Vec<SpecialFile>,
}

/// Why an image could not be scanned.
#[derive(Debug)]
pub enum ScanError {
    /// Reading the stream failed (the engine's error, not the image's).
    Read(io::Error),
    /// The archive is not a well-formed save of one image, or exceeds a bound: the
    /// image is refused.
    Refused(String),
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Read(e) => write!(f, "reading the saved image: {e}"),
            ScanError::Refused(m) => write!(f, "the saved image cannot be checked: {m}"),
        }
    }
}

impl std::error::Error for ScanError {}

impl From<tar::Error> for ScanError {
    fn from(e: tar::Error) -> Self {
        match e {
            tar::Error::Io(e) => ScanError::Read(e),
            tar::Error::Bad(m) => ScanError::Refused(m),
        }
    }
}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> Self {
        tar::Error::from(e).into()
    }
}

fn refuse<T>(m: impl Into<String>) -> Result<T, ScanError> {
    Err(ScanError::Refused(m.into()))
}

// Marks on a path in one layer.
const DIR: u8 = 1;
const NONDIR: u8 = 2;
const WHITEOUT: u8 = 4;
const OPAQUE: u8 = 8;

/// The paths whose final content the scan keeps.
const TRACKED: [&[u8]; 3] = [b"etc", b"etc/passwd", b"etc/group"];

/// What one layer has at a tracked path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Other(&'static str),
}

struct Special {
    path: Vec<u8>,
    mode: u32,
    capabilities: bool,
}

/// One layer, summarised: a mark per path (keyed by a per-scan random hash of the
/// path, so memory stays small and an image cannot aim a collision), the tracked
/// files, the special files, and the digest of its bytes.
#[derive(Default)]
struct Layer {
    marks: HashMap<u64, u8>,
    tracked: [Option<Node>; 3],
    special: Vec<Special>,
    digest: String,
}

/// What a layer does to a path of the layers below it.
enum Effect {
    /// It has an entry at the path.
    Entry,
    /// It deletes or hides the path (a whiteout, an opaque or non-directory parent).
    Removed,
}

struct Scanner {
    keys: RandomState,
    entries: usize,
    special: usize,
}

impl Scanner {
    fn key(&self, path: &[u8]) -> u64 {
        self.keys.hash_one(path)
    }

    /// The path's own key and its ancestors' (root `""` first).
    fn chain(&self, path: &[u8]) -> Vec<u64> {
        let mut v = vec![self.key(b"")];
        for (i, &b) in path.iter().enumerate() {
            if b == b'/' {
                v.push(self.key(&path[..i]));
            }
        }
        v.push(self.key(path));
        v
    }

    fn effect(&self, layer: &Layer, chain: &[u64]) -> Option<Effect> {
        let own = layer.marks.get(chain.last()?).copied().unwrap_or(0);
        if own & (DIR | NONDIR) != 0 {
            return Some(Effect::Entry);
        }
        if own & WHITEOUT != 0 {
            return Some(Effect::Removed);
        }
        let parents = &chain[..chain.len() - 1];
        parents
            .iter()
            .any(|k| {
                layer
                    .marks
                    .get(k)
                    .is_some_and(|m| m & (WHITEOUT | OPAQUE | NONDIR) != 0)
            })
            .then_some(Effect::Removed)
    }

    /// Reads one `layer.tar`, hashing every byte.
    fn layer(&mut self, data: impl Read) -> Result<Layer, ScanError> {
        let mut hashing = Hashing {
            r: data,
            h: Sha256::new(),
        };
        let mut layer = Layer::default();
        let mut t = Reader::new(&mut hashing);
        while let Some(e) = t.next_entry()? {
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return refuse(format!("more than {MAX_ENTRIES} files in its layers"));
            }
            let path = normalise(&e.path)?;
            if path.is_empty() {
                continue;
            }
            let (dir, base) = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => (&b""[..], &path[..]),
            };
            if base == b".wh..wh..opq" {
                *layer.marks.entry(self.key(dir)).or_default() |= OPAQUE;
                continue;
            }
            if base.starts_with(b".wh..wh.") {
                continue; // other AUFS metadata: Docker skips it
            }
            if let Some(name) = base.strip_prefix(b".wh.") {
                if name.is_empty() {
                    return refuse("a whiteout without a name");
                }
                let target = if dir.is_empty() {
                    name.to_vec()
                } else {
                    [dir, b"/", name].concat()
                };
                let m = layer.marks.entry(self.key(&target)).or_default();
                if *m & (DIR | NONDIR) != 0 {
                    return refuse(format!("a layer both has and deletes {}", display(&target)));
                }
                *m |= WHITEOUT;
                continue;
            }
            let mark = if e.kind == Kind::Dir { DIR } else { NONDIR };
            let m = layer.marks.entry(self.key(&path)).or_default();
            if *m & WHITEOUT != 0 || *m & NONDIR != 0 || (*m & DIR != 0 && mark == NONDIR) {
                return refuse(format!("a layer has {} twice", display(&path)));
            }
            *m |= mark;
            if let Some(i) = TRACKED.iter().position(|t| *t == path.as_slice()) {
                layer.tracked[i] = Some(self.node(&e, &mut t)?);
            }
            let set_id = e.mode & 0o6000 != 0;
            if matches!(e.kind, Kind::File | Kind::HardLink) && (set_id || e.capability) {
                self.special += 1;
                if self.special > MAX_SPECIAL {
                    return refuse(format!(
                        "more than {MAX_SPECIAL} files with setuid/setgid bits or capabilities"
                    ));
                }
                layer.special.push(Special {
                    path,
                    mode: e.mode,
                    capabilities: e.capability,
                });
            }
        }
        // what follows the end of the archive is hashed too, and must be padding
        let mut rest = [0u8; 8192];
        loop {
            let n = hashing.read(&mut rest)?;
            if n == 0 {
                break;
            }
            if rest[..n].iter().any(|&b| b != 0) {
                return refuse("data after the end of a layer");
            }
        }
        layer.digest = format!("sha256:{}", hex(&hashing.h.finalize()));
        Ok(layer)
    }

    fn node<R: Read>(&self, e: &Entry, t: &mut Reader<R>) -> Result<Node, ScanError> {
        Ok(match e.kind {
            Kind::Dir => Node::Dir,
            Kind::File if e.size <= identity::MAX_FILE as u64 => {
                let mut v = Vec::with_capacity(e.size as usize);
                t.data().read_to_end(&mut v)?;
                Node::File(v)
            }
            Kind::File => Node::Other("larger than 1 MiB"),
            Kind::Symlink => Node::Other("a symbolic link"),
            Kind::HardLink => Node::Other("a hard link"),
            _ => Node::Other("a special file"),
        })
    }

    /// The final state of tracked path `i` in `layers` (lowest first).
    fn tracked(&self, layers: &[&Layer], i: usize) -> Option<Node> {
        let chain = self.chain(TRACKED[i]);
        for l in layers.iter().rev() {
            match self.effect(l, &chain) {
                Some(Effect::Entry) => return l.tracked[i].clone(),
                Some(Effect::Removed) => return None,
                None => {}
            }
        }
        None
    }
}

/// Reads through and hashes.
struct Hashing<R> {
    r: R,
    h: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.h.update(&buf[..n]);
        Ok(n)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A path as Docker's unpacking reads it, relative to the root: `.` and empty
/// components dropped; `..` refused.
fn normalise(p: &[u8]) -> Result<Vec<u8>, ScanError> {
    let mut out: Vec<u8> = Vec::with_capacity(p.len());
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return refuse(format!("a path with `..`: {}", display(p))),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

/// Where a relative symlink in directory `dir` points, inside the archive.
fn resolve_link(dir: &[u8], link: &[u8]) -> Option<Vec<u8>> {
    if link.starts_with(b"/") {
        return None;
    }
    let mut parts: Vec<&[u8]> = dir
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    for c in link.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join(&b'/'))
}

/// A path for messages: absolute, escaped (`{:?}` of its lossy decoding).
fn display(p: &[u8]) -> String {
    format!("{:?}", format!("/{}", String::from_utf8_lossy(p)))
}

#[derive(Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize, Default)]
struct ImageConfig {
    #[serde(default)]
    config: Option<ContainerConfig>,
    rootfs: RootFs,
}

#[derive(Deserialize, Default)]
struct ContainerConfig {
    #[serde(rename = "User", default)]
    user: Option<String>,
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Scans the `docker save` archive of one image whose lowest `base_layers` layers
/// are the base image's (0 for `FROM scratch`).
pub fn scan(r: impl Read, base_layers: usize) -> Result<Scan, ScanError> {
    scan_bounded(r, base_layers, u64::MAX)
}

/// [`scan`], refusing (as soon as it is read) an image whose layers hold more than
/// `max_bytes` (`[build] max_image_size`).
pub fn scan_bounded(r: impl Read, base_layers: usize, max_bytes: u64) -> Result<Scan, ScanError> {
    let mut s = Scanner {
        keys: RandomState::new(),
        entries: 0,
        special: 0,
    };
    let mut layers: HashMap<Vec<u8>, Layer> = HashMap::new();
    let mut aliases: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut json: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut outer = Reader::new(r);
    let mut n = 0;
    let mut bytes: u64 = 0;
    while let Some(e) = outer.next_entry()? {
        n += 1;
        if n > MAX_OUTER {
            return refuse(format!("more than {MAX_OUTER} entries"));
        }
        let path = normalise(&e.path)?;
        let is_layer =
            path.ends_with(b"/layer.tar") && path.iter().filter(|&&b| b == b'/').count() == 1;
        match e.kind {
            Kind::File if is_layer => {
                if layers.len() + aliases.len() >= MAX_LAYERS {
                    return refuse(format!("more than {MAX_LAYERS} layers"));
                }
                bytes = bytes.saturating_add(e.size);
                if bytes > max_bytes {
                    return refuse(format!(
                        "its layers hold more than {max_bytes} bytes ([build] max_image_size)"
                    ));
                }
                let l = s.layer(outer.data())?;
                if layers.insert(path.clone(), l).is_some() {
                    return refuse(format!("{} twice", display(&path)));
                }
            }
            Kind::Symlink if is_layer => {
                // a layer saved twice: `<dir>/layer.tar -> ../<first>/layer.tar`
                let dir = &path[..path.iter().position(|&b| b == b'/').unwrap_or(0)];
                let Some(target) = resolve_link(dir, &e.link) else {
                    return refuse(format!("a layer link to {}", display(&e.link)));
                };
                if layers.len() + aliases.len() >= MAX_LAYERS {
                    return refuse(format!("more than {MAX_LAYERS} layers"));
                }
                aliases.insert(path, target);
            }
            Kind::File if !path.contains(&b'/') && path.ends_with(b".json") => {
                if json.len() >= 4 {
                    return refuse("more than one image in the archive");
                }
                let mut v = Vec::new();
                if e.size > MAX_JSON {
                    return refuse(format!("{} is larger than 8 MiB", display(&path)));
                }
                outer.data().read_to_end(&mut v)?;
                json.insert(path, v);
            }
            _ => {}
        }
    }
    // what follows the end of the archive is not looked at: the layers and the config
    // are checked against their digests

    let manifest: Vec<ManifestEntry> = match json.get(&b"manifest.json"[..]) {
        Some(m) => serde_json::from_slice(m)
            .map_err(|e| ScanError::Refused(format!("manifest.json: {e}")))?,
        None => return refuse("no manifest.json"),
    };
    let [m] = &manifest[..] else {
        return refuse("manifest.json does not describe exactly one image");
    };
    let config_path = normalise(m.config.as_bytes())?;
    let Some(config_bytes) = json.get(&config_path) else {
        return refuse(format!("no config {}", display(&config_path)));
    };
    let digest = hex(&Sha256::digest(config_bytes));
    if config_path != format!("{digest}.json").as_bytes() {
        return refuse("the config's name is not its digest");
    }
    let config: ImageConfig = serde_json::from_slice(config_bytes)
        .map_err(|e| ScanError::Refused(format!("the image config: {e}")))?;

    if m.layers.len() > MAX_LAYERS {
        return refuse(format!("more than {MAX_LAYERS} layers"));
    }
    if m.layers.len() != config.rootfs.diff_ids.len() {
        return refuse("the manifest and the config list different numbers of layers");
    }
    if base_layers > m.layers.len() {
        return refuse(format!(
            "it has {} layers, fewer than its base image's {base_layers}",
            m.layers.len()
        ));
    }
    let mut ordered: Vec<&Layer> = Vec::with_capacity(m.layers.len());
    for (name, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
        let p = normalise(name.as_bytes())?;
        let p = aliases.get(&p).unwrap_or(&p);
        let Some(l) = layers.get(p) else {
            return refuse(format!("no layer {}", display(p)));
        };
        if &l.digest != diff_id {
            return refuse(format!("layer {} does not match its digest", display(p)));
        }
        ordered.push(l);
    }

    let etc = match s.tracked(&ordered, 0) {
        Some(Node::Other(w)) => Some(w),
        Some(Node::File(_)) => Some("a file"),
        _ => None,
    };
    let id_file = |i: usize| -> IdFile {
        match (etc, s.tracked(&ordered, i)) {
            (Some(w), _) => IdFile::Unreadable(format!("/etc is {w}")),
            (None, None) => IdFile::Absent,
            (None, Some(Node::File(v))) => IdFile::File(v),
            (None, Some(Node::Dir)) => IdFile::Unreadable("it is a directory".into()),
            (None, Some(Node::Other(w))) => IdFile::Unreadable(format!("it is {w}")),
        }
    };
    let passwd = id_file(1);
    let group = id_file(2);

    let mut special = Vec::new();
    for (i, l) in ordered.iter().enumerate().skip(base_layers) {
        for f in &l.special {
            let chain = s.chain(&f.path);
            if ordered[i + 1..]
                .iter()
                .any(|up| s.effect(up, &chain).is_some())
            {
                continue;
            }
            special.push(SpecialFile {
                path: format!("/{}", String::from_utf8_lossy(&f.path)),
                mode: f.mode,
                capabilities: f.capabilities,
                layer: i,
            });
        }
    }

    let c = config.config.unwrap_or_default();
    Ok(Scan {
        image_id: format!("sha256:{digest}"),
        layers: ordered.len(),
        bytes,
        base_layers,
        user: c.user.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        passwd,
        group,
        special,
    })
}

/// A [`Read`] over chunks sent through a channel: urund's async side sends the
/// `docker save` stream's chunks, [`scan`] reads them on a blocking thread (a closed
/// channel is the end of the stream; an `Err` chunk is the engine's error).
pub struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChunkReader {
    pub fn new(rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        ChunkReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c?;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The image check rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImageRule {
    UserRoot,
    Setuid,
    SecretEnv,
}

impl ImageRule {
    pub fn id(self) -> &'static str {
        match self {
            ImageRule::UserRoot => "image.user-root",
            ImageRule::Setuid => "image.setuid",
            ImageRule::SecretEnv => "image.secret-env",
        }
    }
}

impl fmt::Display for ImageRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// One finding on the built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: ImageRule,
    pub severity: Severity,
    /// One line; every image-supplied string in it escaped, no `Env` value.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] {}", self.severity, self.rule, self.message)
    }
}

/// Whether any finding refuses the image.
pub fn refused(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

/// Who the image's configured user is, as Docker resolves it when a container starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecUser {
    /// The uid the process gets.
    Uid(u32),
    /// Docker would refuse to start the container (a numeric user out of range).
    Invalid,
    /// A name the image's `/etc/passwd` does not resolve here; why.
    Unresolved(String),
}

/// `GetExecUser` (libcontainer, vendored in dockerd 20.10) for the user part of
/// `spec`, then dockerd's `uint32(uid)`: a user that parses as a number (Go's `Atoi`)
/// is that uid (in `0..=2^31-1`, else the start fails); otherwise the first passwd
/// line whose name matches, read as Go reads it; the root cases of
/// [`is_root_user`] (empty, `root`) are uid 0 whatever the file says.
pub fn exec_user(spec: &str, passwd: &IdFile) -> ExecUser {
    if is_root_user(spec) {
        return ExecUser::Uid(0);
    }
    let user = spec.split(':').next().unwrap_or("");
    if let Some(n) = go_atoi(user) {
        return match u32::try_from(n) {
            Ok(u) if u <= i32::MAX as u32 => ExecUser::Uid(u),
            _ => ExecUser::Invalid,
        };
    }
    let text = match passwd {
        IdFile::File(t) => t,
        IdFile::Absent => return ExecUser::Unresolved("the image has no /etc/passwd".into()),
        IdFile::Unreadable(why) => {
            return ExecUser::Unresolved(format!("its /etc/passwd cannot be read: {why}"))
        }
    };
    for line in text.split(|&b| b == b'\n') {
        // bufio.Scanner: a line of 64 KiB or more fails the whole lookup
        if line.len() >= 64 * 1024 - 1 {
            return ExecUser::Unresolved("its /etc/passwd has a line of 64 KiB or more".into());
        }
        let line = go_trim_space(line);
        if line.is_empty() {
            continue;
        }
        let mut f = line.split(|&b| b == b':');
        if f.next() != Some(user.as_bytes()) {
            continue;
        }
        let uid = f.nth(1).map_or(0, go_atoi_ignoring_errors);
        return ExecUser::Uid(uid as u32);
    }
    ExecUser::Unresolved(format!(
        "its /etc/passwd has no entry {:?}",
        user.chars().take(64).collect::<String>()
    ))
}

/// Go's `strconv.Atoi` with the error ignored, as libcontainer's passwd parser reads
/// a uid: 0 when not a number, clamped to 64 bits when out of range.
fn go_atoi_ignoring_errors(b: &[u8]) -> i64 {
    let Ok(s) = std::str::from_utf8(b) else {
        return 0;
    };
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|d| d.is_ascii_digit()) {
        return 0;
    }
    match s.parse::<i64>() {
        Ok(n) => n,
        Err(_) if s.starts_with('-') => i64::MIN,
        Err(_) => i64::MAX,
    }
}

/// Go's `bytes.TrimSpace`: Unicode white space (what Rust's `char::is_whitespace`
/// knows) off both ends; bytes that are not UTF-8 stop the trimming.
fn go_trim_space(mut b: &[u8]) -> &[u8] {
    let first = |b: &[u8]| -> Option<(char, usize)> {
        (1..=b.len().min(4)).find_map(|n| {
            std::str::from_utf8(&b[..n])
                .ok()
                .and_then(|s| s.chars().next().map(|c| (c, n)))
        })
    };
    let last = |b: &[u8]| -> Option<(char, usize)> {
        (1..=b.len().min(4)).find_map(|n| {
            std::str::from_utf8(&b[b.len() - n..])
                .ok()
                .and_then(|s| s.chars().next().map(|c| (c, n)))
        })
    };
    while let Some((c, n)) = first(b).filter(|(c, _)| c.is_whitespace()) {
        let _ = c;
        b = &b[n..];
    }
    while let Some((_, n)) = last(b).filter(|(c, _)| c.is_whitespace()) {
        b = &b[..b.len() - n];
    }
    b
}

/// Whether an environment variable's name looks like it holds a secret.
pub fn secret_name(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        "SECRET",
        "TOKEN",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
        "ACCESS_KEY",
        "CREDENTIAL",
    ];
    let up = name.to_ascii_uppercase();
    WORDS.iter().any(|w| up.contains(w))
}

/// `a, b, c` for at most [`LIST`] items, then `and N more`.
fn list(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(LIST)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > LIST {
        s.push_str(&format!(" and {} more", items.len() - LIST));
    }
    s
}

/// The findings on a scanned image; `setuid` is the policy's `[build] setuid`.
pub fn check(scan: &Scan, setuid: Severity) -> Vec<Finding> {
    let mut out = Vec::new();
    let user: String = scan.user.chars().take(128).collect();
    let root = |message: String| Finding {
        rule: ImageRule::UserRoot,
        severity: Severity::Error,
        message,
    };
    match exec_user(&scan.user, &scan.passwd) {
        ExecUser::Uid(0) if scan.user.is_empty() => out.push(root(
            "the image has no USER: its processes would run as root".into(),
        )),
        ExecUser::Uid(0) => out.push(root(format!(
            "the image's user {user:?} is root (uid 0) as Docker resolves it through the \
             image's /etc/passwd"
        ))),
        ExecUser::Uid(_) | ExecUser::Invalid => {}
        ExecUser::Unresolved(why) => out.push(root(format!(
            "the image's user {user:?} cannot be resolved to a uid: {why}"
        ))),
    }
    if setuid != Severity::Off && !scan.special.is_empty() {
        let files: Vec<String> = scan
            .special
            .iter()
            .map(|f| format!("{:?} ({} {:04o})", f.path, f.what(), f.mode))
            .collect();
        out.push(Finding {
            rule: ImageRule::Setuid,
            severity: setuid,
            message: format!(
                "{} file(s) with setuid/setgid bits or file capabilities added by the build: {}",
                files.len(),
                list(&files)
            ),
        });
    }
    let mut names: Vec<String> = scan
        .env
        .iter()
        .map(|e| e.split('=').next().unwrap_or(""))
        .filter(|n| secret_name(n))
        .map(|n| format!("{:?}", n.chars().take(128).collect::<String>()))
        .collect();
    names.dedup();
    if !names.is_empty() {
        out.push(Finding {
            rule: ImageRule::SecretEnv,
            severity: Severity::Warning,
            message: format!(
                "environment variable(s) that look like secrets: {} (anyone who can pull the \
                 image reads their values; pass secrets at run time instead)",
                list(&names)
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests;
