//! The record of every image a user built through urun: what makes an image "own".
//!
//! An image's labels prove nothing (a pulled image can carry `io.urun.build.uid = 1000`),
//! so ownership is decided only by this store, which urund alone writes: one small JSON
//! file per (user, image) under `<state dir>/builds/<uid>/<hex of the image ID>.json`,
//! root-only (directories 0700, files 0600, owned by urund's user), written whole under
//! a temporary name and renamed into place.
//!
//! Everything read back is checked as if hostile (a root-only file can still be
//! truncated, hand-edited or left by an older urund): the file must be a regular file of
//! urund's user, not accessible to others, at most [`MAX_RECORD`] bytes, opened without
//! following a symlink; its JSON must have exactly the known fields; its uid must be its
//! directory's and its image ID its file name's; every tag a reference in that user's
//! own form. A record that fails is ignored (and named on urund's stderr), never taken
//! as proof of anything, and never removed by urund. A user's directory holds at most
//! [`MAX_PER_USER`] records read back.
//!
//! Users: `record` (after a build), `list` / `get` / `owns` / `by_tag` (admission of
//! `run_own`, `urun images`, `urun rmi`), `untag` / `forget` (`urun rmi`), `holders`
//! (whether anyone else's record still needs an image before it is deleted).
#![forbid(unsafe_code)]

use crate::system::{self, meta_owner_and_mode as trusted};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The store's directory inside urund's state directory.
pub const BUILDS_DIR: &str = "builds";
/// Largest record file read back.
pub const MAX_RECORD: u64 = 64 * 1024;
/// Most records of one user read back (a policy's `max_images` is far below).
pub const MAX_PER_USER: usize = 1024;
/// Most tags or digests in one record.
pub const MAX_TAGS: usize = 64;
/// Longest tag, digest reference or user name in a record.
const MAX_TEXT: usize = 512;

/// One build of one user, as urund recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRecord {
    /// The builder's uid (from the kernel at build time).
    pub uid: u32,
    /// Their user name at build time (the namespace component of the tags).
    pub user: String,
    /// `sha256:<64 hex>`: the image on the run engine.
    pub image_id: String,
    /// Full references on the run engine (`urun/alice/app:1`) the build tagged and that
    /// still point to it as far as urund knows (a later build of the same tag takes it).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Registry references by digest (`host/urun/alice/app@sha256:…`) after `urun push`.
    #[serde(default)]
    pub digests: Vec<String>,
    /// Seconds since the epoch when the build finished.
    pub created: u64,
    /// The build's request id (links the record to its audit record).
    #[serde(default)]
    pub request: String,
    /// sha256 of the Dockerfile and of the context stream, hex.
    #[serde(default)]
    pub dockerfile: String,
    #[serde(default)]
    pub context: String,
}

#[cfg(test)]
impl BuildRecord {
    /// A record of `uid`/`user` for `image_id` with these tags and nothing else (no
    /// digests, request or hashes): for unit tests that never store it.
    pub fn for_test(uid: u32, user: &str, image_id: String, tags: &[&str]) -> BuildRecord {
        BuildRecord {
            uid,
            user: user.into(),
            image_id,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            digests: vec![],
            created: 1,
            request: String::new(),
            dockerfile: String::new(),
            context: String::new(),
        }
    }
}

impl BuildRecord {
    /// Whether `reference` is one of this record's tags (exactly as stored, or with the
    /// implied `:latest`).
    pub fn has_tag(&self, reference: &str) -> bool {
        let full = with_tag(reference);
        self.tags.contains(&full)
    }

    /// Checks a record as if hostile: the checks of the module comment that do not
    /// need the file. Pure.
    pub fn validate(&self) -> Result<(), String> {
        if !is_image_id(&self.image_id) {
            return Err(format!(
                "image ID {:?} is not sha256:<64 hex>",
                self.image_id
            ));
        }
        if !valid_user(&self.user) {
            return Err(format!("user name {:?} is not a plain name", self.user));
        }
        if self.tags.len() > MAX_TAGS || self.digests.len() > MAX_TAGS {
            return Err(format!("more than {MAX_TAGS} tags or digests"));
        }
        for t in &self.tags {
            if !valid_tag(t, &self.user) {
                return Err(format!("tag {t:?} is not a reference of {}'s", self.user));
            }
        }
        for d in &self.digests {
            if d.len() > MAX_TEXT || d.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!("digest reference {d:?} is malformed"));
            }
        }
        let hex_or_empty = |s: &str| s.is_empty() || is_hex64(s);
        if !hex_or_empty(&self.dockerfile) || !hex_or_empty(&self.context) {
            return Err("a digest is not 64 hex digits".into());
        }
        if self.request.len() > 64 || self.request.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(format!("request id {:?} is malformed", self.request));
        }
        Ok(())
    }
}

pub use crate::policy::build::is_image_id;

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A user name as it may appear in a repository path: what Docker's reference grammar
/// takes as a path component, at most [`MAX_TEXT`] bytes.
fn valid_user(u: &str) -> bool {
    u.len() <= MAX_TEXT && crate::policy::build::path_component(u)
}

/// A stored tag: `<namespace>/<user>/<name>:<tag>` (the namespace and the name may
/// have several components), no control characters or spaces. Pure.
fn valid_tag(t: &str, user: &str) -> bool {
    if t.len() > MAX_TEXT || t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    let Some((repo, tag)) = t.rsplit_once(':') else {
        return false;
    };
    if tag.is_empty() || tag.contains('/') {
        return false;
    }
    // <namespace, one or more components>/<user>/<name, one or more components>
    let parts: Vec<&str> = repo.split('/').collect();
    parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty())
        && parts[1..parts.len() - 1].contains(&user)
}

/// `name` with `:latest` if it has no tag (a `:` after the last `/`). Pure.
pub fn with_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// The store. One per urund; its own lock serialises writers within urund (one urund
/// per state directory is the supported set-up; every write is a whole-file rename, so a
/// reader never sees half a record whatever happens).
pub struct Builds {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl Builds {
    /// Opens (creating it 0700 if missing) `<state_dir>/builds`. The state directory
    /// has been checked by [`crate::daemon::instance::load_or_create_secret`]; the store
    /// directory must be a real directory of urund's user not accessible to others.
    pub fn open(state_dir: &Path) -> Result<Builds> {
        let dir = state_dir.join(BUILDS_DIR);
        make_private_dir(&dir)
            .with_context(|| format!("the build records directory {}", dir.display()))?;
        Ok(Builds {
            dir,
            lock: Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn user_dir(&self, uid: u32) -> PathBuf {
        self.dir.join(uid.to_string())
    }

    fn file(&self, uid: u32, image_id: &str) -> Result<PathBuf> {
        let hex = image_id
            .strip_prefix("sha256:")
            .filter(|h| is_hex64(h))
            .with_context(|| format!("image ID {image_id:?} is not sha256:<64 hex>"))?;
        Ok(self.user_dir(uid).join(format!("{hex}.json")))
    }

    /// Records a build (replacing an earlier record of the same user and image, whose
    /// tags are kept beside the new ones). The new record's tags are taken from every
    /// other record of the same user: Docker moved them to this image.
    pub fn record(&self, r: &BuildRecord) -> Result<()> {
        r.validate()
            .map_err(|e| anyhow::anyhow!("build record: {e}"))?;
        let _g = self.lock.lock().unwrap();
        make_private_dir(&self.user_dir(r.uid))?;
        let mut new = r.clone();
        for old in self.read_user(r.uid)? {
            if old.image_id == r.image_id {
                for t in old.tags {
                    if !new.tags.contains(&t) {
                        new.tags.push(t);
                    }
                }
                for d in old.digests {
                    if !new.digests.contains(&d) {
                        new.digests.push(d);
                    }
                }
                continue;
            }
            if old.tags.iter().any(|t| r.tags.contains(t)) {
                let mut kept = old.clone();
                kept.tags.retain(|t| !r.tags.contains(t));
                self.write(&kept)?;
            }
        }
        new.tags.truncate(MAX_TAGS);
        new.digests.truncate(MAX_TAGS);
        self.write(&new)
    }

    /// The user's records, newest first.
    pub fn list(&self, uid: u32) -> Result<Vec<BuildRecord>> {
        let _g = self.lock.lock().unwrap();
        let mut v = self.read_user(uid)?;
        v.sort_by(|a, b| b.created.cmp(&a.created).then(a.image_id.cmp(&b.image_id)));
        Ok(v)
    }

    /// How many images the user has on record (for `[build] max_images`).
    pub fn count(&self, uid: u32) -> Result<usize> {
        Ok(self.list(uid)?.len())
    }

    /// The user's record of this image ID, if any (and valid).
    pub fn get(&self, uid: u32, image_id: &str) -> Result<Option<BuildRecord>> {
        let _g = self.lock.lock().unwrap();
        self.get_locked(uid, image_id)
    }

    /// [`Builds::get`] with the lock held by the caller.
    fn get_locked(&self, uid: u32, image_id: &str) -> Result<Option<BuildRecord>> {
        let path = self.file(uid, image_id)?;
        match read_record(&path) {
            Ok(r) if r.uid == uid && r.image_id == image_id => Ok(Some(r)),
            Ok(_) => {
                eprintln!(
                    "urund: build record {} names another user or image; ignored",
                    path.display()
                );
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                eprintln!("urund: build record {}: {e}; ignored", path.display());
                Ok(None)
            }
        }
    }

    /// Whether the user built this image (a valid record of theirs names it).
    pub fn owns(&self, uid: u32, image_id: &str) -> Result<bool> {
        Ok(self.get(uid, image_id)?.is_some())
    }

    /// The user's record holding the tag `reference` (full, e.g. `urun/alice/app:1`;
    /// without a tag `:latest` is meant).
    pub fn by_tag(&self, uid: u32, reference: &str) -> Result<Option<BuildRecord>> {
        Ok(self.list(uid)?.into_iter().find(|r| r.has_tag(reference)))
    }

    /// Takes one tag off the user's record of `image_id` (after `urun rmi` untagged it).
    /// Returns whether the record had it.
    pub fn untag(&self, uid: u32, image_id: &str, reference: &str) -> Result<bool> {
        let _g = self.lock.lock().unwrap();
        let Some(mut r) = self.get_locked(uid, image_id)? else {
            return Ok(false);
        };
        let full = with_tag(reference);
        let before = r.tags.len();
        r.tags.retain(|t| *t != full);
        if r.tags.len() == before {
            return Ok(false);
        }
        self.write(&r)?;
        Ok(true)
    }

    /// Adds a pushed digest reference to the user's record of `image_id`.
    pub fn add_digest(&self, uid: u32, image_id: &str, digest_ref: &str) -> Result<()> {
        let _g = self.lock.lock().unwrap();
        let mut r = self
            .get_locked(uid, image_id)?
            .with_context(|| format!("no build record of uid {uid} for {image_id}"))?;
        if !r.digests.iter().any(|d| d == digest_ref) {
            r.digests.push(digest_ref.to_string());
        }
        r.validate()
            .map_err(|e| anyhow::anyhow!("build record: {e}"))?;
        self.write(&r)
    }

    /// Removes the user's record of `image_id` (after the image was deleted, or its
    /// last tag of theirs removed and nothing else needs it). Returns whether there
    /// was one. Only a file urund's own name scheme names is removed.
    pub fn forget(&self, uid: u32, image_id: &str) -> Result<bool> {
        let _g = self.lock.lock().unwrap();
        let path = self.file(uid, image_id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.user_dir(uid));
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// The uids with a valid record of `image_id` (before an image is deleted from the
    /// engine: if someone else still has it, only the caller's record and tags go).
    pub fn holders(&self, image_id: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
        {
            let e = e?;
            let Some(uid) = e.file_name().to_str().and_then(parse_uid) else {
                continue;
            };
            if self.owns(uid, image_id)? {
                out.push(uid);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Every valid record of `uid`, in no order; invalid ones are named on stderr and
    /// skipped. Caller holds the lock.
    fn read_user(&self, uid: u32) -> Result<Vec<BuildRecord>> {
        let dir = self.user_dir(uid);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        check_private_dir(&dir)?;
        let mut out = Vec::new();
        for e in rd {
            let e = e?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(hex) = name.strip_suffix(".json").filter(|h| is_hex64(h)) else {
                continue; // temporary files and anything urund did not name
            };
            if out.len() >= MAX_PER_USER {
                eprintln!(
                    "urund: {} holds more than {MAX_PER_USER} build records; the rest are ignored",
                    dir.display()
                );
                break;
            }
            let path = e.path();
            match read_record(&path) {
                Ok(r) if r.uid == uid && r.image_id == format!("sha256:{hex}") => out.push(r),
                Ok(_) => eprintln!(
                    "urund: build record {} names another user or image; ignored",
                    path.display()
                ),
                Err(e) => eprintln!("urund: build record {}: {e}; ignored", path.display()),
            }
        }
        Ok(out)
    }

    /// Writes a record whole: a temporary file in the same directory, flushed, renamed
    /// over the record's name. Caller holds the lock.
    fn write(&self, r: &BuildRecord) -> Result<()> {
        let path = self.file(r.uid, &r.image_id)?;
        let dir = self.user_dir(r.uid);
        let tmp = dir.join(format!(".tmp.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut text = serde_json::to_vec_pretty(r)?;
        text.push(b'\n');
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&text)?;
        f.sync_all()?;
        drop(f);
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
        sync_dir(&dir);
        Ok(())
    }
}

/// A uid directory's name: decimal, no sign, no leading zero. Pure.
fn parse_uid(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Creates `dir` 0700 if missing, then checks it (see [`check_private_dir`]).
fn make_private_dir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    check_private_dir(dir)
}

/// A real directory (not a symlink) of urund's user, not accessible to others.
fn check_private_dir(dir: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(dir).with_context(|| format!("{}", dir.display()))?;
    if !m.file_type().is_dir() || trusted(&m, system::Owner::Us, 0o077).is_err() {
        bail!(
            "{} must be a directory owned by urund's user with mode 0700 (owner {}, mode {:o})",
            dir.display(),
            m.uid(),
            m.mode() & 0o7777
        );
    }
    Ok(())
}

/// Reads and checks one record file (see the module comment).
fn read_record(path: &Path) -> std::io::Result<BuildRecord> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    let m = f.metadata()?;
    let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    if !m.file_type().is_file() || trusted(&m, system::Owner::Us, 0o077).is_err() {
        return Err(bad(format!(
            "not a regular file of urund's user with mode 0600 (owner {}, mode {:o})",
            m.uid(),
            m.mode() & 0o7777
        )));
    }
    if m.len() > MAX_RECORD {
        return Err(bad(format!("larger than {MAX_RECORD} bytes")));
    }
    let mut text = Vec::new();
    f.take(MAX_RECORD + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_RECORD {
        return Err(bad(format!("larger than {MAX_RECORD} bytes")));
    }
    let r: BuildRecord = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    r.validate().map_err(bad)?;
    Ok(r)
}

fn sync_dir(dir: &Path) {
    let _ = File::open(dir).and_then(|d| d.sync_all());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("urun-builds-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::DirBuilder::new().mode(0o700).create(&d).unwrap();
        d
    }

    fn id(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn rec(uid: u32, user: &str, n: u8, tags: &[&str], created: u64) -> BuildRecord {
        BuildRecord {
            uid,
            user: user.into(),
            image_id: id(n),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            digests: vec![],
            created,
            request: "1-2-3".into(),
            dockerfile: "a".repeat(64),
            context: "b".repeat(64),
        }
    }

    #[test]
    fn a_recorded_build_is_owned_by_its_user_only() {
        let d = scratch("own");
        let b = Builds::open(&d).unwrap();
        assert_eq!(std::fs::metadata(b.path()).unwrap().mode() & 0o777, 0o700);
        b.record(&rec(1000, "alice", 1, &["urun/alice/app:1"], 10))
            .unwrap();
        assert!(b.owns(1000, &id(1)).unwrap());
        assert!(!b.owns(1001, &id(1)).unwrap());
        assert!(!b.owns(1000, &id(2)).unwrap());
        assert_eq!(b.list(1001).unwrap(), vec![]);
        assert_eq!(b.count(1000).unwrap(), 1);
        assert_eq!(
            b.by_tag(1000, "urun/alice/app:1")
                .unwrap()
                .unwrap()
                .image_id,
            id(1)
        );
        assert_eq!(b.holders(&id(1)).unwrap(), vec![1000]);
        let f = b.file(1000, &id(1)).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        assert!(b.forget(1000, &id(1)).unwrap());
        assert!(!b.forget(1000, &id(1)).unwrap());
        assert!(!b.owns(1000, &id(1)).unwrap());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_rebuilt_tag_moves_to_the_new_image_and_list_is_newest_first() {
        let d = scratch("move");
        let b = Builds::open(&d).unwrap();
        b.record(&rec(
            7,
            "bob",
            1,
            &["urun/bob/app:latest", "urun/bob/app:1"],
            10,
        ))
        .unwrap();
        b.record(&rec(7, "bob", 2, &["urun/bob/app:latest"], 20))
            .unwrap();
        let l = b.list(7).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].image_id, id(2));
        assert_eq!(l[1].tags, vec!["urun/bob/app:1".to_string()]);
        assert_eq!(
            b.by_tag(7, "urun/bob/app").unwrap().unwrap().image_id,
            id(2)
        );
        // The same image built again keeps its earlier tags beside the new ones.
        b.record(&rec(7, "bob", 1, &["urun/bob/other:2"], 30))
            .unwrap();
        let r = b.get(7, &id(1)).unwrap().unwrap();
        assert_eq!(
            r.tags,
            vec!["urun/bob/other:2".to_string(), "urun/bob/app:1".to_string()]
        );
        assert!(b.untag(7, &id(1), "urun/bob/app:1").unwrap());
        assert!(!b.untag(7, &id(1), "urun/bob/app:1").unwrap());
        assert_eq!(b.get(7, &id(1)).unwrap().unwrap().tags.len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn records_that_fail_a_check_prove_nothing() {
        let d = scratch("hostile");
        let b = Builds::open(&d).unwrap();
        b.record(&rec(1000, "alice", 1, &[], 1)).unwrap();
        let udir = b.user_dir(1000);
        let write = |name: &str, text: &str, mode: u32| {
            let p = udir.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let json = |r: &BuildRecord| serde_json::to_string(r).unwrap();
        let hex = |n: u8| id(n)[7..].to_string();
        // Another uid inside, or another image than its name.
        write(
            &format!("{}.json", hex(2)),
            &json(&rec(1001, "alice", 2, &[], 1)),
            0o600,
        );
        write(
            &format!("{}.json", hex(3)),
            &json(&rec(1000, "alice", 4, &[], 1)),
            0o600,
        );
        // Readable by others.
        write(
            &format!("{}.json", hex(5)),
            &json(&rec(1000, "alice", 5, &[], 1)),
            0o644,
        );
        // Unknown field, garbage, a tag in someone else's namespace.
        let mut v: serde_json::Value =
            serde_json::from_str(&json(&rec(1000, "alice", 6, &[], 1))).unwrap();
        v["admin"] = true.into();
        write(&format!("{}.json", hex(6)), &v.to_string(), 0o600);
        write(&format!("{}.json", hex(7)), "{{{{", 0o600);
        write(
            &format!("{}.json", hex(8)),
            &json(&rec(1000, "alice", 8, &["urun/bob/app:1"], 1)),
            0o600,
        );
        // Too large.
        write(
            &format!("{}.json", hex(9)),
            &" ".repeat(MAX_RECORD as usize + 1),
            0o600,
        );
        // A symlink to a valid record elsewhere.
        let elsewhere = d.join("x.json");
        std::fs::write(&elsewhere, json(&rec(1000, "alice", 10, &[], 1))).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, udir.join(format!("{}.json", hex(10)))).unwrap();
        let l = b.list(1000).unwrap();
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0].image_id, id(1));
        for n in 2..=10 {
            assert!(!b.owns(1000, &id(n)).unwrap(), "{n}");
        }
        // A store directory others may enter is refused as a whole.
        std::fs::set_permissions(&udir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(b.list(1000).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_record_that_does_not_validate_is_not_written() {
        let d = scratch("invalid");
        let b = Builds::open(&d).unwrap();
        let mut r = rec(1, "alice", 1, &["urun/alice/a:1"], 1);
        r.image_id = "sha256:../../etc".into();
        assert!(b.record(&r).is_err());
        let r = rec(1, "../x", 1, &[], 1);
        assert!(b.record(&r).is_err());
        assert!(b.file(1, "abc").is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn uid_directory_names_are_plain_decimal() {
        assert_eq!(parse_uid("0"), Some(0));
        assert_eq!(parse_uid("1000"), Some(1000));
        for bad in ["", "01", "+1", "-1", "1 ", "4294967296", "a"] {
            assert_eq!(parse_uid(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_tag_is_in_its_users_namespace_with_any_number_of_components() {
        for ok in [
            "urun/alice/app:1",
            "urun/alice/team/app:1",
            "site/builds/alice/app:x",
        ] {
            assert!(valid_tag(ok, "alice"), "{ok}");
        }
        for bad in [
            "urun/bob/app:1",
            "alice/app:1",
            "urun/alice:1",
            "urun//alice/a:1",
            "urun/alice/a",
        ] {
            assert!(!valid_tag(bad, "alice"), "{bad}");
        }
    }

    #[test]
    fn tags_default_to_latest() {
        assert_eq!(with_tag("urun/a/app"), "urun/a/app:latest");
        assert_eq!(with_tag("urun/a/app:1"), "urun/a/app:1");
        assert_eq!(
            with_tag("host:5000/urun/a/app"),
            "host:5000/urun/a/app:latest"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn reading_arbitrary_record_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(r) = serde_json::from_slice::<BuildRecord>(&b) {
                let _ = r.validate();
            }
        }
    }
}
