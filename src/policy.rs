//! The administrator's policy file (`/etc/urun/policy.toml`): its model, defaults,
//! parser and the ownership checks done before it is trusted.
//!
//! Every error names the file, the line and the key, so an administrator can fix it
//! without guessing; `urund` refuses to start on any of them.
#![forbid(unsafe_code)]

use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/urun/policy.toml";

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub access: Access,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Access {
    /// Members of this group may connect; it is also the socket's group.
    pub group: GroupName,
    /// Whether uid 0 callers are served.
    pub allow_root: bool,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            group: GroupName("urun".into()),
            allow_root: false,
        }
    }
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
        }
    }
}

/// A group name as the user database would accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupName(pub String);

impl<'de> Deserialize<'de> for GroupName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !s.starts_with('-');
        if ok {
            Ok(GroupName(s))
        } else {
            Err(de::Error::custom(format!("invalid group name {s:?}")))
        }
    }
}

/// A byte size: an integer, or a string with a binary suffix as docker takes it
/// (`"512m"`, `"1g"`, `"64k"`, `"100b"`). At least 4 MiB, at most 1 TiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl Bytes {
    const MIN: u64 = 4 << 20;
    const MAX: u64 = 1 << 40;

    pub fn parse(s: &str) -> Result<Bytes, String> {
        let s = s.trim();
        let (num, mult) = match s.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let m: u64 = match c.to_ascii_lowercase() {
                    'b' => 1,
                    'k' => 1 << 10,
                    'm' => 1 << 20,
                    'g' => 1 << 30,
                    't' => 1 << 40,
                    _ => return Err(format!("invalid size {s:?}: unknown unit {c:?}")),
                };
                (&s[..i], m)
            }
            _ => (s, 1),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: expected e.g. \"512m\" or \"1g\""))?;
        Self::checked(n.saturating_mul(mult))
    }

    fn checked(n: u64) -> Result<Bytes, String> {
        if (Self::MIN..=Self::MAX).contains(&n) {
            Ok(Bytes(n))
        } else {
            Err(format!(
                "size {n} bytes is out of range (4m to 1t): no value means unlimited"
            ))
        }
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, shift) in [("g", 30), ("m", 20), ("k", 10)] {
            if n % (1 << shift) == 0 {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        write!(f, "{n}b")
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Int(n)) => Bytes::checked(n),
            Ok(Raw::Str(s)) => Bytes::parse(&s),
            Err(_) => Err("expected a size such as \"512m\" or a number of bytes".into()),
        }
        .map_err(de::Error::custom)
    }
}

/// A number of CPUs, fractional, in (0, 1024].
#[derive(Debug, Clone, Copy, PartialEq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// Loads the policy from `path`: built-in defaults if the file does not exist;
    /// an error if it cannot be read, is not owned by root (or by the user running
    /// urund), or is writable by group or others (the file or its directory).
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let err = |m: String| PolicyError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: m,
        };
        let meta = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Policy::default()),
            Err(e) => return Err(err(format!("cannot read: {e}"))),
            Ok(m) => m,
        };
        if !meta.file_type().is_file() {
            return Err(err(
                "is not a regular file (symlinks are not followed)".into()
            ));
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let dir_meta = std::fs::metadata(dir.unwrap_or(Path::new(".")))
            .map_err(|e| err(format!("cannot inspect its directory: {e}")))?;
        trusted_owner_and_mode(&meta, "the file").map_err(&err)?;
        trusted_owner_and_mode(&dir_meta, "its directory").map_err(&err)?;
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Policy::parse(&text, path)
    }
}

fn trusted_owner_and_mode(meta: &std::fs::Metadata, what: &str) -> Result<(), String> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "{what} is owned by uid {}, not root: chown root {what}",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{what} is writable by group or others (mode {:o}): chmod go-w",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Finds the 1-based line of byte offset `at` and the dotted key defined on it
/// (`section.key`), for error messages. Pure.
fn locate(text: &str, at: usize) -> (Option<usize>, Option<String>) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line_no = before.matches('\n').count() + 1;
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
}
