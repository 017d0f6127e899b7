//! The administrator's policy file (`/etc/urun/policy.toml`): its model, defaults,
//! parser and the ownership checks done before it is trusted.
//!
//! Every error names the file, the line and the key, so an administrator can fix it
//! without guessing; `urund` refuses to start on any of them.
#![forbid(unsafe_code)]

use serde::{de, Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::policy::build::Build;
pub use crate::policy::imagepattern::ImagePattern;
pub use crate::policy::runtime::{Runtime, RuntimeName, RuntimeOverride};
pub use crate::policy::units::{Bytes, Seconds};

pub const DEFAULT_PATH: &str = "/etc/urun/policy.toml";

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub access: Access,
    pub images: Images,
    pub pull: Pull,
    pub limits: Limits,
    pub network: Network,
    pub env: Env,
    pub audit: Audit,
    /// `[group.NAME.limits]`: limits for members of group NAME.
    pub group: BTreeMap<GroupName, Override>,
    /// `[user.NAME.limits]`: limits for user NAME (or numeric uid).
    pub user: BTreeMap<String, Override>,
    pub identity: Identity,
    pub mounts: Mounts,
    pub connections: Connections,
    /// `[runtime]`: the OCI runtime containers run under (see [`crate::policy::runtime`]).
    pub runtime: Runtime,
    /// `[build]`: `urun build` and where its images go (see [`crate::policy::build`]).
    pub build: Build,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Access {
    /// Members of this group may connect; it is also the socket's group.
    pub group: GroupName,
    /// If not empty, only these users (names or numeric uids) among the group's
    /// members are served.
    pub users: Vec<String>,
    /// Whether uid 0 callers are served.
    pub allow_root: bool,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            group: GroupName("urun".into()),
            users: Vec::new(),
            allow_root: false,
        }
    }
}

/// Which images may run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Images {
    /// Glob patterns (`*`, `?`) on the reference as typed, with `:latest` added when
    /// it names neither a tag nor a digest; `{user}` stands for the caller's own
    /// namespace component (see [`crate::policy::imagepattern`]).
    pub allow: Vec<ImagePattern>,
    /// Only references pinned by digest (`name@sha256:...` or `sha256:...`).
    pub require_digest: bool,
    /// What an image's declared `VOLUME`s get: never Docker's disk-backed anonymous
    /// volume.
    pub volumes: ImageVolumes,
}

impl Default for Images {
    fn default() -> Self {
        Images {
            allow: vec![ImagePattern::parse("*").expect("a valid pattern")],
            require_digest: false,
            volumes: ImageVolumes::Tmpfs,
        }
    }
}

/// `images.volumes`: what each `VOLUME` an image declares gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageVolumes {
    /// A tmpfs of `limits.tmpfs_size`, `nosuid,nodev,noexec`, owned by the caller
    /// (its pages count against the container's memory limit).
    #[default]
    Tmpfs,
    /// Images that declare a volume are refused.
    Refuse,
}

/// Whether urund pulls a missing image, and from where.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pull {
    pub mode: PullMode,
    /// Registries (host[:port], `docker.io` for Docker Hub) images may be pulled from.
    pub registries: Vec<Pattern>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullMode {
    #[default]
    Never,
    Missing,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    pub mode: NetworkMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// No network at all: only `lo`.
    #[default]
    None,
    /// The helper-managed bridge [`ISOLATED_NETWORK`], inter-container traffic off.
    Isolated,
}

/// The bridge network urund manages for `network.mode = "isolated"`.
pub const ISOLATED_NETWORK: &str = "urun-isolated";

/// Environment variables a user may pass.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Env {
    /// Glob patterns on variable names.
    pub allow: Vec<Pattern>,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            allow: ["TERM", "LANG", "LC_*", "TZ"]
                .map(|p| Pattern(p.into()))
                .to_vec(),
        }
    }
}

/// Where audit records go besides urund's standard error.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// Absolute path of a file the records are appended to (created root-only 0600,
    /// reopened on SIGHUP).
    pub file: Option<AbsPath>,
    /// Also send each record to syslog/journald (`/dev/log`, facility authpriv).
    pub syslog: bool,
}

/// An absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsPath(pub PathBuf);

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.starts_with('/') && !s.contains('\0') {
            Ok(AbsPath(PathBuf::from(s)))
        } else {
            Err(de::Error::custom(format!("{s:?} is not an absolute path")))
        }
    }
}

/// A glob pattern: `*` matches any run of characters (also `/`), `?` one character.
/// No braces: placeholders such as `{user}` are understood only in `images.allow`
/// ([`ImagePattern`]), and a `{user}` anywhere else must not pass for a literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(pub String);

impl Pattern {
    pub fn matches(&self, s: &str) -> bool {
        glob_match(self.0.as_bytes(), s.as_bytes())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok =
            !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic() && b != b'[');
        if ok && s.contains(['{', '}']) {
            Err(de::Error::custom(format!(
                "invalid pattern {s:?}: placeholders such as {{user}} are understood only in \
                 images.allow, and braces are not allowed here"
            )))
        } else if ok {
            Ok(Pattern(s))
        } else {
            Err(de::Error::custom(format!(
                "invalid pattern {s:?}: printable characters only, `*` and `?` as wildcards"
            )))
        }
    }
}

/// Matches `s` against glob `p` (`*` any run, `?` one byte). Backtracking over the
/// last `*` only, so no pattern can make it slow: at most (|p|+1)·(|s|+1) steps, linear
/// in the subject (patterns are at most 255 bytes). Pure.
pub fn glob_match(p: &[u8], s: &[u8]) -> bool {
    glob_steps(p, s).0
}

/// [`glob_match`] and the number of steps it took (for its property test).
fn glob_steps(p: &[u8], s: &[u8]) -> (bool, usize) {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    let mut steps = 0;
    while si < s.len() {
        steps += 1;
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return (false, steps),
            },
        }
    }
    (p[pi..].iter().all(|&c| c == b'*'), steps)
}

/// Resource limits applied to every container. Always set: there is no "unlimited".
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub memory: Bytes,
    pub cpus: Cpus,
    pub pids: Count,
    pub nofile: Count,
    pub nproc: Count,
    pub tmpfs_size: Bytes,
    /// Wall-clock time a run may take; then the container is killed (exit 124).
    pub max_runtime: Seconds,
    /// Runs one user may have at once; the next is refused.
    pub max_concurrent: Count,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: Bytes(512 << 20),
            cpus: Cpus(1.0),
            pids: Count(256),
            nofile: Count(1024),
            nproc: Count(256),
            tmpfs_size: Bytes(64 << 20),
            max_runtime: Seconds(24 * 3600),
            max_concurrent: Count(8),
        }
    }
}

/// An override table: `[group.NAME.limits]` or `[user.NAME.limits]`, and
/// `[group.NAME.runtime]` or `[user.NAME.runtime]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Override {
    pub limits: LimitsOverride,
    pub runtime: Option<RuntimeOverride>,
}

/// Limits an override table sets; the others come from a less specific table.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsOverride {
    pub memory: Option<Bytes>,
    pub cpus: Option<Cpus>,
    pub pids: Option<Count>,
    pub nofile: Option<Count>,
    pub nproc: Option<Count>,
    pub tmpfs_size: Option<Bytes>,
    pub max_runtime: Option<Seconds>,
    pub max_concurrent: Option<Count>,
}

impl Policy {
    /// The limits that apply to a caller: the most specific table wins, field by
    /// field: `[user.NAME]` (by name or uid), else the caller's `[group.NAME]`
    /// tables (when several of the caller's groups set a field, the largest value),
    /// else `[limits]`. Everything comes from this file; nothing from the request.
    /// `member_of(group)` says whether the caller is in the named group. Pure.
    pub fn effective_limits(
        &self,
        uid: u32,
        name: Option<&str>,
        member_of: impl Fn(&str) -> bool,
    ) -> Limits {
        let user = self
            .user
            .iter()
            .find(|(k, _)| Some(k.as_str()) == name || *k == &uid.to_string())
            .map(|(_, o)| &o.limits);
        let groups: Vec<&LimitsOverride> = self
            .group
            .iter()
            .filter(|(g, _)| member_of(&g.0))
            .map(|(_, o)| &o.limits)
            .collect();
        fn pick<T: Copy + PartialOrd>(
            base: T,
            user: Option<T>,
            groups: impl Iterator<Item = Option<T>>,
        ) -> T {
            if let Some(v) = user {
                return v;
            }
            groups
                .flatten()
                .fold(None, |m: Option<T>, v| match m {
                    Some(m) if m >= v => Some(m),
                    _ => Some(v),
                })
                .unwrap_or(base)
        }
        let b = &self.limits;
        macro_rules! field {
            ($f:ident) => {
                pick(b.$f, user.and_then(|u| u.$f), groups.iter().map(|g| g.$f))
            };
        }
        Limits {
            memory: field!(memory),
            cpus: field!(cpus),
            pids: field!(pids),
            nofile: field!(nofile),
            nproc: field!(nproc),
            tmpfs_size: field!(tmpfs_size),
            max_runtime: field!(max_runtime),
            max_concurrent: field!(max_concurrent),
        }
    }
}

/// `[connections]`: how many connections that are not running a container (waiting
/// for their request, or for urund's answer to it) urund keeps, so that one member
/// holding connections open cannot take the descriptors everyone else needs. A
/// connection counts from `accept` until it runs a container or is closed; the next
/// one over a cap is refused at once.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Connections {
    /// Per uid.
    pub per_user: Count,
    /// All users together.
    pub total: Count,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            per_user: Count(64),
            total: Count(512),
        }
    }
}

/// `[identity]`: who the caller is inside the container beyond uid and gid.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Identity {
    /// Supplementary groups: `"primary"` (none) or `"caller"` (the caller's, minus
    /// the denied ones).
    pub groups: GroupsMode,
    /// Groups never passed, in addition to the built-in list
    /// (`identity::DEFAULT_DENY_GROUPS`) and `access.group`.
    pub deny_groups: Vec<GroupName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupsMode {
    #[default]
    Primary,
    Caller,
}

/// `[mounts]`: whether and where the caller's working directory may be mounted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mounts {
    /// `-v "$PWD":DIR` and `--here` are allowed at all.
    pub workdir: bool,
    /// Directories below which a working directory may be mounted.
    pub roots: Vec<MountRoot>,
    /// `"owner"`: only directories the caller owns; `"mode"`: also those their mode
    /// bits let the caller use.
    pub access: MountAccess,
}

impl Default for Mounts {
    fn default() -> Self {
        Mounts {
            workdir: false,
            roots: vec![MountRoot("/home".into())],
            access: MountAccess::Owner,
        }
    }
}

impl Mounts {
    pub fn root_strings(&self) -> Vec<String> {
        self.roots.iter().map(|r| r.0.clone()).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountAccess {
    #[default]
    Owner,
    Mode,
}

/// A `mounts.roots` entry: absolute, normal, neither a system path nor above one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRoot(pub String);

impl<'de> Deserialize<'de> for MountRoot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::policy::mounts::validate_root(&s).map_err(de::Error::custom)?;
        Ok(MountRoot(s))
    }
}

/// A group name as the user database would accept it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupName(pub String);

impl<'de> Deserialize<'de> for GroupName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if crate::policy::names::group_name(&s) {
            Ok(GroupName(s))
        } else {
            Err(de::Error::custom(format!("invalid group name {s:?}")))
        }
    }
}

/// A number of CPUs, fractional, in (0, 1024].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Cpus(pub f64);

impl Cpus {
    /// As docker's `NanoCpus`.
    pub fn nano(self) -> i64 {
        (self.0 * 1e9).round() as i64
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v > 0.0 && v <= 1024.0 && (v * 1e9).round() >= 1e6 {
            Ok(Cpus(v))
        } else {
            Err(de::Error::custom(format!(
                "cpus = {v} is out of range (0.001 to 1024)"
            )))
        }
    }
}

/// A positive count (pids, open files, processes), at most 2^22.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Count(pub u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if (1..=1 << 22).contains(&v) {
            Ok(Count(v as u32))
        } else {
            Err(de::Error::custom(format!(
                "{v} is out of range (1 to 4194304): no value means unlimited"
            )))
        }
    }
}

/// A policy that could not be loaded, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": key {k}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// Parses policy text. Pure.
    pub fn parse(text: &str, file: &Path) -> Result<Policy, PolicyError> {
        toml::from_str::<Policy>(text).map_err(|e| {
            let (line, key) = match e.span() {
                Some(span) => locate(text, span.start),
                None => (None, None),
            };
            PolicyError {
                file: file.to_path_buf(),
                line,
                key,
                message: e.message().trim().to_string(),
            }
        })
    }
}

/// Finds the 1-based line of byte offset `at` and the dotted key defined on it
/// (`section.key`), for error messages. Pure.
fn locate(text: &str, at: usize) -> (Option<usize>, Option<String>) {
    let at = at.min(text.len());
    let before = &text[..at];
    // At the very end of a text that ends with a newline, the last line (not a line
    // past the end).
    let line_no = (before.matches('\n').count() + 1).min(text.lines().count().max(1));
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let header = |l: &str| {
        let l = l.trim();
        (l.starts_with('[') && !l.starts_with("[["))
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    };
    if let Some(h) = header(line) {
        return (Some(line_no), Some(h));
    }
    let section = before[..line_start].lines().rev().find_map(header);
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string());
    let dotted = match (section, key) {
        (Some(s), Some(k)) => Some(format!("{s}.{k}")),
        (None, k) => k,
        (Some(s), None) => Some(s),
    };
    (Some(line_no), dotted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Policy, PolicyError> {
        Policy::parse(t, Path::new("/etc/urun/policy.toml"))
    }

    #[test]
    fn defaults_are_the_documented_values() {
        let p = parse("").unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.access.group.0, "urun");
        assert!(!p.access.allow_root);
        assert_eq!(p.limits.memory, Bytes(512 << 20));
        assert_eq!(p.limits.cpus, Cpus(1.0));
        assert_eq!(p.limits.pids, Count(256));
        assert_eq!(p.limits.nofile, Count(1024));
        assert_eq!(p.limits.nproc, Count(256));
        assert_eq!(p.limits.tmpfs_size, Bytes(64 << 20));
        assert_eq!(p.connections.per_user, Count(64));
        assert_eq!(p.connections.total, Count(512));
    }

    #[test]
    fn the_issue_example_parses() {
        let p = parse(
            "[access]\ngroup = \"urun\"\nallow_root = false\n[limits]\nmemory = \"512m\"\n\
             cpus = 1.0\npids = 256\nnofile = 1024\nnproc = 256\ntmpfs_size = \"64m\"\n",
        )
        .unwrap();
        assert_eq!(p, Policy::default());
    }

    #[test]
    fn the_packaged_example_is_the_defaults() {
        let text = include_str!("../../packaging/policy.toml");
        assert_eq!(parse(text).unwrap(), Policy::default());
        // and its commented-out examples parse too
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(r) if r.starts_with('[') || (r.contains(" = ") && !r.starts_with(' ')) => r,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let p = parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert!(
            p.user.contains_key("alice") && p.group.contains_key(&GroupName("builders".into()))
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(Bytes::parse("1g"), Ok(Bytes(1 << 30)));
        assert_eq!(Bytes::parse("64M"), Ok(Bytes(64 << 20)));
        assert_eq!(Bytes::parse("8388608"), Ok(Bytes(8 << 20)));
        assert!(Bytes::parse("1k").is_err());
        assert!(Bytes::parse("12x").is_err());
        assert!(Bytes::parse("-5m").is_err());
        assert!(Bytes::parse("99999999999999999999g").is_err());
        assert_eq!(Bytes(512 << 20).to_string(), "512m");
        assert_eq!(Bytes(1 << 30).to_string(), "1g");
    }

    #[test]
    fn error_names_file_line_and_key() {
        let e = parse("[access]\ngroup = \"urun\"\n\n[limits]\nmemory = \"lots\"\n").unwrap_err();
        assert_eq!(e.line, Some(5));
        assert_eq!(e.key.as_deref(), Some("limits.memory"));
        let s = e.to_string();
        assert!(
            s.starts_with("policy /etc/urun/policy.toml:5: key limits.memory: "),
            "{s}"
        );
        assert!(s.contains("invalid size"), "{s}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = parse("[limits]\npids = 10\nswap = \"1g\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("limits.swap"));
        assert!(e.message.contains("unknown field"), "{e}");
        let e = parse("[nonsense]\n").unwrap_err();
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn identity_and_mounts_sections() {
        let p = parse(
            "[identity]\ngroups = \"caller\"\ndeny_groups = [\"video\"]\n\
             [mounts]\nworkdir = true\nroots = [\"/home\", \"/srv\"]\naccess = \"mode\"\n",
        )
        .unwrap();
        assert_eq!(p.identity.groups, GroupsMode::Caller);
        assert_eq!(p.identity.deny_groups, vec![GroupName("video".into())]);
        assert!(p.mounts.workdir);
        assert_eq!(p.mounts.root_strings(), ["/home", "/srv"]);
        assert_eq!(p.mounts.access, MountAccess::Mode);
        let d = parse("").unwrap();
        assert_eq!(d.identity.groups, GroupsMode::Primary);
        assert!(!d.mounts.workdir);
        for bad in [
            "[identity]\ngroups = \"all\"",
            "[mounts]\nroots = [\"/\"]",
            "[mounts]\nroots = [\"/var\"]",
            "[mounts]\nroots = [\"/etc\"]",
            "[mounts]\naccess = \"anyone\"",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.line, Some(2), "{bad}: {e}");
        }
    }

    #[test]
    fn ranges_are_checked() {
        for bad in [
            "[limits]\npids = 0",
            "[limits]\nnofile = -1",
            "[limits]\ncpus = 0.0",
            "[limits]\ncpus = 5000.0",
            "[limits]\nmemory = 1024",
            "[access]\ngroup = \"\"",
            "[access]\ngroup = \"a b\"",
            "[access]\nallow_root = \"yes\"",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.line, Some(2), "{bad}: {e}");
        }
    }
    #[test]
    fn globs() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
        assert!(m("*", ""));
        assert!(m("*", "anything/at:all"));
        assert!(m("debian:*", "debian:12"));
        assert!(!m("debian:*", "debian"));
        assert!(!m("debian:*", "xdebian:12"));
        assert!(m(
            "registry.example.org/team/*",
            "registry.example.org/team/a/b:1"
        ));
        assert!(!m(
            "registry.example.org/team/*",
            "registry.example.org/other/a:1"
        ));
        assert!(m("LC_*", "LC_ALL"));
        assert!(!m("LC_*", "XLC_ALL"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*a*b*c", "xxaxxbxxc"));
        assert!(!m("*a*b*c", "xxaxxbxx"));
        assert!(m("TERM", "TERM"));
        assert!(!m("TERM", "TERMX"));
        // no blow-up on adversarial input
        let long = "a".repeat(5000);
        assert!(!m("*a*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn new_sections_parse() {
        let p = parse(
            "[access]\nusers = [\"alice\", \"1005\"]\n\
             [images]\nallow = [\"debian:*\", \"127.0.0.1:5000/*\"]\nrequire_digest = true\n\
             volumes = \"refuse\"\n\
             [pull]\nmode = \"missing\"\nregistries = [\"127.0.0.1:*\"]\n\
             [limits]\nmax_runtime = \"90s\"\nmax_concurrent = 2\n\
             [network]\nmode = \"isolated\"\n\
             [env]\nallow = [\"FOO\"]\n\
             [audit]\nfile = \"/var/log/urun/audit.log\"\nsyslog = true\n\
             [group.builders.limits]\nmemory = \"2g\"\n\
             [user.alice.limits]\npids = 10\n\
             [connections]\nper_user = 4\ntotal = 16\n",
        )
        .unwrap();
        assert_eq!(p.connections.per_user, Count(4));
        assert_eq!(p.connections.total, Count(16));
        assert_eq!(p.access.users, ["alice", "1005"]);
        assert!(p.images.require_digest);
        assert_eq!(p.images.volumes, ImageVolumes::Refuse);
        assert_eq!(Policy::default().images.volumes, ImageVolumes::Tmpfs);
        assert_eq!(p.pull.mode, PullMode::Missing);
        assert_eq!(p.limits.max_runtime, Seconds(90));
        assert_eq!(p.limits.max_concurrent, Count(2));
        assert_eq!(p.network.mode, NetworkMode::Isolated);
        assert_eq!(p.env.allow, [Pattern("FOO".into())]);
        assert_eq!(
            p.audit.file,
            Some(AbsPath("/var/log/urun/audit.log".into()))
        );
        assert_eq!(
            p.group[&GroupName("builders".into())].limits.memory,
            Some(Bytes(2 << 30))
        );
        assert_eq!(p.user["alice"].limits.pids, Some(Count(10)));
    }

    #[test]
    fn image_patterns_know_only_the_user_placeholder_and_say_so_with_the_line() {
        let p = parse("[images]\nallow = [\"r:1/urun/{user}/*\", \"debian:*\"]\n").unwrap();
        assert!(p.images.allow[0].is_owner() && !p.images.allow[1].is_owner());
        let e = parse("[images]\nallow = [\n  \"debian:*\",\n  \"r:1/urun/{uid}/*\",\n]\n")
            .unwrap_err();
        // the array's line: where the key is
        assert_eq!(e.line, Some(2), "{e}");
        assert_eq!(e.key.as_deref(), Some("images.allow"), "{e}");
        let s = e.to_string();
        assert!(
            s.contains("unknown placeholder {uid}") && s.contains("{user}") && !s.contains('\n'),
            "{s}"
        );
        // elsewhere a placeholder is no literal
        let e = parse("[[runtime.image]]\nmatch = \"r/{user}/*\"\nname = \"runc\"\n").unwrap_err();
        assert!(e.to_string().contains("only in images.allow"), "{e}");
    }

    #[test]
    fn new_section_errors_name_line_and_key() {
        for (bad, line, key) in [
            ("[pull]\nmode = \"always\"\n", 2, "pull.mode"),
            ("[network]\nmode = \"host\"\n", 2, "network.mode"),
            ("[limits]\nmax_runtime = \"5y\"\n", 2, "limits.max_runtime"),
            ("[limits]\nmax_runtime = 0\n", 2, "limits.max_runtime"),
            ("[audit]\nfile = \"rel/log\"\n", 2, "audit.file"),
            ("[connections]\nper_user = 0\n", 2, "connections.per_user"),
            ("[images]\nallow = [\"a[b]\"]\n", 2, "images.allow"),
            (
                "[images]\nallow = [\"r:1/urun/{users}/*\"]\n",
                2,
                "images.allow",
            ),
            ("[env]\nallow = [\"{user}\"]\n", 2, "env.allow"),
            ("[pull]\nregistries = [\"{user}\"]\n", 2, "pull.registries"),
            ("[images]\nvolumes = \"disk\"\n", 2, "images.volumes"),
            (
                "\n[group.builders.limits]\nswap = 1\n",
                3,
                "group.builders.limits.swap",
            ),
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.line, Some(line), "{bad}: {e}");
            assert_eq!(e.key.as_deref(), Some(key), "{bad}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(Seconds::parse("2h"), Ok(Seconds(7200)));
        assert_eq!(Seconds::parse("45"), Ok(Seconds(45)));
        assert!(Seconds::parse("0s").is_err());
        assert!(Seconds::parse("31d").is_err());
        assert_eq!(Seconds(5400).to_string(), "90m");
        assert_eq!(Seconds(61).to_string(), "61s");
    }

    #[test]
    fn effective_limits_most_specific_wins() {
        let p = parse(
            "[limits]\nmemory = \"256m\"\npids = 100\n\
             [group.builders.limits]\nmemory = \"1g\"\npids = 500\n\
             [group.big.limits]\nmemory = \"2g\"\n\
             [user.alice.limits]\npids = 50\n\
             [user.1234.limits]\nmemory = \"8m\"\n",
        )
        .unwrap();
        let none = |_: &str| false;
        let builders = |g: &str| g == "builders";
        let both = |g: &str| g == "builders" || g == "big";
        // nobody special: the base table
        let l = p.effective_limits(1000, Some("bob"), none);
        assert_eq!((l.memory, l.pids), (Bytes(256 << 20), Count(100)));
        // group member: the group's values
        let l = p.effective_limits(1000, Some("bob"), builders);
        assert_eq!((l.memory, l.pids), (Bytes(1 << 30), Count(500)));
        // several groups: the largest value of each field
        let l = p.effective_limits(1000, Some("bob"), both);
        assert_eq!((l.memory, l.pids), (Bytes(2 << 30), Count(500)));
        // a user table beats the groups, field by field
        let l = p.effective_limits(1000, Some("alice"), both);
        assert_eq!((l.memory, l.pids), (Bytes(2 << 30), Count(50)));
        // by uid
        let l = p.effective_limits(1234, None, none);
        assert_eq!(l.memory, Bytes(8 << 20));
        // fields no table sets stay the base's
        assert_eq!(l.nofile, Limits::default().nofile);
    }
}

/// Property tests: the policy file from arbitrary and mutated text, and the glob
/// matcher against a reference (bounded cases, run with the unit tests).
#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;

    fn parse(t: &str) -> Result<Policy, PolicyError> {
        Policy::parse(t, Path::new("/etc/urun/policy.toml"))
    }

    /// The packaged example with its commented-out examples turned on: a policy that
    /// sets nearly every key.
    fn example() -> String {
        include_str!("../../packaging/policy.toml")
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(r) if r.starts_with('[') || (r.contains(" = ") && !r.starts_with(' ')) => r,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn limits_in_range(l: &Limits) -> bool {
        let bytes = |b: Bytes| (Bytes::MIN..=Bytes::MAX).contains(&b.0);
        let count = |c: Count| (1..=1 << 22).contains(&c.0);
        bytes(l.memory)
            && bytes(l.tmpfs_size)
            && l.cpus.0 > 0.0
            && l.cpus.0 <= 1024.0
            && l.cpus.nano() >= 1_000_000
            && [l.pids, l.nofile, l.nproc, l.max_concurrent]
                .into_iter()
                .all(count)
            && (1..=Seconds::MAX).contains(&l.max_runtime.0)
    }

    fn pattern_ok(p: &str) -> bool {
        !p.is_empty() && p.len() <= 255 && p.bytes().all(|b| b.is_ascii_graphic() && b != b'[')
    }

    fn group_ok(g: &GroupName) -> bool {
        !g.0.is_empty()
            && g.0.len() <= 32
            && !g.0.starts_with('-')
            && g.0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    }

    /// What every accepted policy must satisfy, whatever the text.
    fn invariants(p: &Policy) -> Result<(), String> {
        let all_limits = std::iter::once(p.limits.clone()).chain(
            p.group.values().chain(p.user.values()).map(|o| {
                let o = &o.limits;
                let b = &p.limits;
                Limits {
                    memory: o.memory.unwrap_or(b.memory),
                    cpus: o.cpus.unwrap_or(b.cpus),
                    pids: o.pids.unwrap_or(b.pids),
                    nofile: o.nofile.unwrap_or(b.nofile),
                    nproc: o.nproc.unwrap_or(b.nproc),
                    tmpfs_size: o.tmpfs_size.unwrap_or(b.tmpfs_size),
                    max_runtime: o.max_runtime.unwrap_or(b.max_runtime),
                    max_concurrent: o.max_concurrent.unwrap_or(b.max_concurrent),
                }
            }),
        );
        for l in all_limits {
            if !limits_in_range(&l) {
                return Err(format!("limits out of range: {l:?}"));
            }
        }
        for r in &p.mounts.roots {
            crate::policy::mounts::validate_root(&r.0)?;
            if crate::policy::mounts::system_path(Path::new(&r.0)).is_some() {
                return Err(format!("root {:?} is a system path", r.0));
            }
        }
        let globs = p.pull.registries.iter().chain(&p.env.allow);
        if let Some(bad) = globs
            .map(|x| x.0.as_str())
            .find(|x| !pattern_ok(x) || x.contains(['{', '}']))
        {
            return Err(format!("bad pattern {bad:?}"));
        }
        for a in &p.images.allow {
            let s = a.as_str();
            let bad_braces = s.replacen("{user}", "", 1).contains(['{', '}']);
            if !pattern_ok(s) || bad_braces || a.is_owner() != s.contains("{user}") {
                return Err(format!("bad image pattern {s:?}"));
            }
        }
        let groups = std::iter::once(&p.access.group)
            .chain(p.group.keys())
            .chain(&p.identity.deny_groups);
        if let Some(bad) = groups.into_iter().find(|g| !group_ok(g)) {
            return Err(format!("bad group name {bad:?}"));
        }
        if let Some(f) = &p.audit.file {
            if !f.0.is_absolute() || f.0.as_os_str().as_encoded_bytes().contains(&0) {
                return Err(format!("audit file {f:?}"));
            }
        }
        Ok(())
    }

    /// A line a policy might have: a section header or `key = value`, from pools of
    /// real keys and of values both valid and not.
    fn line() -> impl Strategy<Value = String> {
        let sections = prop_oneof![
            Just("access"),
            Just("images"),
            Just("pull"),
            Just("limits"),
            Just("network"),
            Just("env"),
            Just("audit"),
            Just("identity"),
            Just("mounts"),
            Just("group.builders.limits"),
            Just("user.alice.limits"),
            Just("user.1001.limits"),
            Just("nonsense"),
            Just("group.a b.limits"),
        ];
        let keys = prop_oneof![
            Just("group"),
            Just("users"),
            Just("allow_root"),
            Just("allow"),
            Just("require_digest"),
            Just("mode"),
            Just("registries"),
            Just("memory"),
            Just("cpus"),
            Just("pids"),
            Just("nofile"),
            Just("nproc"),
            Just("tmpfs_size"),
            Just("max_runtime"),
            Just("max_concurrent"),
            Just("file"),
            Just("syslog"),
            Just("groups"),
            Just("deny_groups"),
            Just("workdir"),
            Just("roots"),
            Just("access"),
            Just("swap"),
        ];
        let values = prop_oneof![
            Just("\"urun\"".to_string()),
            Just("true".into()),
            Just("false".into()),
            Just("\"512m\"".into()),
            Just("\"1t\"".into()),
            Just("\"2t\"".into()),
            Just("\"3k\"".into()),
            Just("0".into()),
            Just("-1".into()),
            Just("4194304".into()),
            Just("4194305".into()),
            Just("0.0009".into()),
            Just("1024.0".into()),
            Just("1024.5".into()),
            Just("nan".into()),
            Just("inf".into()),
            Just("1.5".into()),
            Just("\"30d\"".into()),
            Just("\"31d\"".into()),
            Just("\"90s\"".into()),
            Just("\"missing\"".into()),
            Just("\"isolated\"".into()),
            Just("\"caller\"".into()),
            Just("\"mode\"".into()),
            Just("\"owner\"".into()),
            Just("[\"/home\", \"/srv/x\"]".into()),
            Just("[\"/\"]".into()),
            Just("[\"/var\"]".into()),
            Just("[\"/usr/local\"]".into()),
            Just("[\"/home/../etc\"]".into()),
            Just("[\"debian:*\", \"a?b\"]".into()),
            Just("[\"a[b]\"]".into()),
            Just("[\"r:1/urun/{user}/*\"]".into()),
            Just("[\"r:1/urun/{uid}/*\"]".into()),
            Just("[\"*/{user}/*\"]".into()),
            Just("[\"{user}\"]".into()),
            Just("[\"\"]".into()),
            Just("\"/var/log/u.log\"".into()),
            Just("\"rel/log\"".into()),
            Just("\"/a\\u0000b\"".into()),
            Just("[\"video\", \"-x\"]".into()),
            Just("{}".into()),
            "[0-9]{1,25}".prop_map(String::from),
            "\"[ -~]{0,12}\"".prop_map(String::from),
        ];
        prop_oneof![
            1 => sections.prop_map(|s| format!("[{s}]")),
            3 => (keys, values).prop_map(|(k, v)| format!("{k} = {v}")),
        ]
    }

    /// A mutation of a text: a character replaced, a range removed, or text inserted.
    fn mutate(text: &str, at: usize, len: usize, how: u8, with: &str) -> String {
        let mut c: Vec<char> = text.chars().collect();
        let i = at % (c.len() + 1);
        let j = (i + len).min(c.len());
        match how % 3 {
            0 => {
                c.splice(i..j, with.chars().take(1));
            }
            1 => {
                c.drain(i..j);
            }
            _ => {
                c.splice(i..i, with.chars());
            }
        }
        c.into_iter().collect()
    }

    /// Reference glob matcher: by dynamic programming over (pattern, subject) prefixes.
    fn reference_glob(p: &[u8], s: &[u8]) -> bool {
        let mut m = vec![vec![false; s.len() + 1]; p.len() + 1];
        m[0][0] = true;
        for i in 1..=p.len() {
            for j in 0..=s.len() {
                m[i][j] = match p[i - 1] {
                    b'*' => m[i - 1][j] || (j > 0 && m[i][j - 1]),
                    b'?' => j > 0 && m[i - 1][j - 1],
                    c => j > 0 && m[i - 1][j - 1] && s[j - 1] == c,
                };
            }
        }
        m[p.len()][s.len()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn policy_parsing_of_arbitrary_text_never_panics_and_errors_name_a_line(
            text in prop_oneof![".{0,200}", "[\\[\\]a-z_.=\" \n0-9\\\\{},#]{0,200}"],
        ) {
            match parse(&text) {
                Ok(p) => prop_assert!(invariants(&p).is_ok(), "{:?}", invariants(&p)),
                Err(e) => prop_assert!(e.line.is_some(), "{e}"),
            }
        }

        #[test]
        fn every_accepted_policy_satisfies_the_invariants_and_errors_name_a_line(
            lines in prop_oneof![
                proptest::collection::vec(line(), 0..16),
                proptest::collection::vec(line(), 0..5),
            ],
        ) {
            let text = lines.join("\n");
            match parse(&text) {
                Ok(p) => prop_assert!(invariants(&p).is_ok(), "{text}\n{:?}", invariants(&p)),
                Err(e) => {
                    let n = e.line.unwrap_or(0);
                    prop_assert!(n >= 1 && n <= text.lines().count().max(1), "{text}\n{e}");
                }
            }
        }

        #[test]
        fn a_mutated_example_policy_never_panics_and_errors_name_a_line(
            at in any::<usize>(),
            len in 0usize..40,
            how in any::<u8>(),
            with in prop_oneof!["[ -~]{0,8}", Just("\n[limits]\n".to_string()), Just("\"".to_string())],
        ) {
            let text = mutate(&example(), at, len, how, &with);
            match parse(&text) {
                Ok(p) => prop_assert!(invariants(&p).is_ok(), "{:?}", invariants(&p)),
                Err(e) => {
                    let n = e.line.unwrap_or(0);
                    prop_assert!(n >= 1 && n <= text.lines().count().max(1), "{e}");
                }
            }
        }

        #[test]
        fn glob_match_agrees_with_a_reference_matcher(
            p in "[ab*?]{0,12}",
            s in "[ab]{0,16}",
        ) {
            prop_assert_eq!(glob_match(p.as_bytes(), s.as_bytes()), reference_glob(p.as_bytes(), s.as_bytes()));
        }

        #[test]
        fn glob_match_takes_at_most_pattern_times_subject_steps(
            p in "[a*?]{0,255}",
            s in "a{0,3000}b?",
        ) {
            let (_, steps) = glob_steps(p.as_bytes(), s.as_bytes());
            prop_assert!(steps <= (p.len() + 1) * (s.len() + 1), "{steps}");
        }
    }
}
