//! What urund can prove is its own, and nothing else: the lock that makes it the only
//! urund of its socket directory, the runtime directory it created and marked, and the
//! per-installation secret that labels every container it creates.
//!
//! The order at start (see `server::run`) is the argument: the lock is taken before
//! anything is cleaned up, so a second urund on a live socket exits without touching
//! the first one's containers or mounts; the runtime directory is used only if it
//! carries urund's marker (a directory urund did not create is refused and left
//! untouched); the clean-up trusts only containers labelled with the secret, which no
//! image and no other user can know.
#![forbid(unsafe_code)]

use crate::system::{self, meta_owner_and_mode as trusted};
use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where urund keeps what must survive a reboot (exited containers do): the secret.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/urun";
/// The secret's file in the state directory.
const SECRET_FILE: &str = "instance";
/// The lock file in the socket's directory.
const LOCK_FILE: &str = "urund.lock";
/// The runtime directory's name in the socket's directory.
const RUNTIME_DIR: &str = "run";
/// The marker file in a runtime directory urund created, and its exact content.
const MARKER: &str = ".urund-runtime";
const MARKER_TEXT: &str = "runtime directory of urund: created by it, removed by it\n";
/// Secret length: 128 bits, written as 32 lowercase hex digits.
const SECRET_BYTES: usize = 16;

/// The exclusive lock of a socket directory: one urund per directory (its socket, its
/// runtime directory). Held for the life of the process; released and its file removed
/// on drop.
pub struct Lock {
    /// Holds the lock until dropped (after `path` is removed).
    _file: Flock<File>,
    path: PathBuf,
}

impl Lock {
    /// Takes `<dir>/urund.lock` without waiting. `dir` has been checked (root-owned,
    /// not writable by group or others). Another urund holding it is an error naming
    /// its pid.
    pub fn acquire(dir: &Path) -> Result<Lock> {
        let path = dir.join(LOCK_FILE);
        // A file unlinked by a urund that was stopping while we opened it is locked in
        // vain: then the path names another inode, and we try again.
        for _ in 0..8 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .with_context(|| format!("opening the lock file {}", path.display()))?;
            let meta = file.metadata()?;
            if !meta.file_type().is_file() || trusted(&meta, system::Owner::Us, 0).is_err() {
                bail!(
                    "lock file {}: not a regular file owned by urund's user; remove it",
                    path.display()
                );
            }
            let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
                    let mut text = String::new();
                    let _ = f.read_to_string(&mut text);
                    let holder = match text.trim().parse::<u32>() {
                        Ok(pid) => format!("another urund (pid {pid})"),
                        Err(_) => "another urund".to_string(),
                    };
                    bail!(
                        "{holder} is already running for {} (it holds {}): stop it first; \
                         nothing was cleaned up or changed",
                        dir.display(),
                        path.display()
                    );
                }
                Err((_, e)) => bail!("locking {}: {e}", path.display()),
            };
            let same = std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
            if !same {
                continue;
            }
            file.set_len(0)?;
            file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
            return Ok(Lock { _file: file, path });
        }
        bail!("lock file {} keeps being replaced", path.display())
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Still held here, so nobody else is using the file: removing it first and
        // unlocking after (when `file` closes) is safe (see `acquire`).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The runtime directory `<socket dir>/run`: created 0700 by urund with a marker file,
/// and only then used. Holds one directory per run (named by its request id).
#[derive(Debug, Clone)]
pub struct RuntimeDir {
    pub path: PathBuf,
}

impl RuntimeDir {
    /// Creates `<dir>/run` with its marker, or takes an existing one that carries the
    /// marker and is urund's (a directory, owned by urund's user, not accessible to
    /// others). An empty directory of urund's user without the marker (what an urund
    /// from before the marker left) is removed with rmdir(2) and made anew. Anything
    /// else there is refused and left as it is.
    pub fn open(dir: &Path) -> Result<RuntimeDir> {
        let path = dir.join(RUNTIME_DIR);
        let me = nix::unistd::geteuid().as_raw();
        let refuse = |why: String| -> anyhow::Error {
            anyhow::anyhow!(
                "runtime directory {}: {why}; urund uses only a directory it created itself \
                 and leaves this one untouched: move it away, or give urund a socket in \
                 another directory (--socket)",
                path.display()
            )
        };
        // At most twice: once more after removing an empty unmarked directory.
        for _ in 0..2 {
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    write_new(&path.join(MARKER), MARKER_TEXT.as_bytes()).with_context(|| {
                        format!("marking the runtime directory {}", path.display())
                    })?;
                    return Ok(RuntimeDir { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("creating the runtime directory {}", path.display())
                    })
                }
            }
            let m = std::fs::symlink_metadata(&path)?;
            if !m.file_type().is_dir() {
                return Err(refuse("exists and is not a directory".into()));
            }
            match read_small(&path.join(MARKER), me) {
                Ok(text) if text == MARKER_TEXT => {
                    if trusted(&m, system::Owner::Us, 0o077).is_err() {
                        return Err(refuse(format!(
                            "has owner uid {} and mode {:o}, not urund's (uid {me}, 0700)",
                            m.uid(),
                            m.mode() & 0o7777
                        )));
                    }
                    return Ok(RuntimeDir { path });
                }
                Ok(_) => return Err(refuse(format!("its marker {MARKER} is not urund's"))),
                // What an urund from before the marker leaves at a clean stop: the
                // directory, empty. rmdir(2) removes only an empty directory that is
                // not a mount point, so nothing in it can be lost; anything else fails
                // here and is refused below.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && m.uid() == me => {
                    match std::fs::remove_dir(&path) {
                        Ok(()) => eprintln!(
                            "urund: removed the empty runtime directory {} without urund's \
                             marker (an older urund's); making its own",
                            path.display()
                        ),
                        Err(re) => {
                            return Err(refuse(format!(
                                "exists without urund's marker {MARKER}, and is not an empty \
                                 directory it could replace ({re})"
                            )))
                        }
                    }
                }
                Err(e) => {
                    return Err(refuse(format!(
                        "exists without urund's marker {MARKER} ({e})"
                    )))
                }
            }
        }
        Err(refuse("keeps being replaced".into()))
    }

    /// Where one run's directory goes.
    pub fn run_dir(&self, request: &str) -> PathBuf {
        self.path.join(request)
    }

    /// Entries a urund left behind: the per-run directories (by urund's own name
    /// format, real directories, never a symlink), and anything else it finds (which
    /// it leaves alone).
    pub fn leftovers(&self) -> std::io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
        let mut runs = Vec::new();
        let mut other = Vec::new();
        for e in std::fs::read_dir(&self.path)? {
            let e = e?;
            let name = e.file_name();
            if name == MARKER {
                continue;
            }
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            match name.to_str() {
                Some(n) if is_dir && is_request_id(n) => runs.push(e.path()),
                _ => other.push(e.path()),
            }
        }
        runs.sort();
        other.sort();
        Ok((runs, other))
    }

    /// On a clean stop: removes the marker and the directory if nothing else is left in
    /// it. Otherwise it stays, marked, for the next start; the error says what is there.
    pub fn remove(&self) -> Result<()> {
        let (runs, other) = self.leftovers()?;
        if !runs.is_empty() || !other.is_empty() {
            let mut left: Vec<String> = runs
                .iter()
                .chain(&other)
                .map(|p| p.display().to_string())
                .collect();
            left.truncate(8);
            bail!(
                "runtime directory {} kept: it still holds {}",
                self.path.display(),
                left.join(", ")
            );
        }
        std::fs::remove_file(self.path.join(MARKER))?;
        std::fs::remove_dir(&self.path)
            .with_context(|| format!("removing the runtime directory {}", self.path.display()))
    }
}

/// A request id as urund makes them, `<boot time hex>-<pid>-<counter>`: also the name
/// of the run's directory, which is how clean-up recognises the directories it made.
pub fn request_id(boot: u64, pid: u32, n: u64) -> String {
    format!("{boot:x}-{pid}-{n}")
}

/// Whether `s` has the form [`request_id`] makes. Pure.
pub fn is_request_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let digits = |p: &str, hex: bool, max: usize| {
        !p.is_empty()
            && p.len() <= max
            && p.bytes().all(|b| {
                if hex {
                    matches!(b, b'0'..=b'9' | b'a'..=b'f')
                } else {
                    b.is_ascii_digit()
                }
            })
    };
    matches!(parts[..], [b, p, n] if digits(b, true, 16) && digits(p, false, 10) && digits(n, false, 20))
}

pub use crate::policy::forced::Owner;

/// The per-installation secret in `<state dir>/instance`: every container urund
/// creates carries it as a label, and clean-up removes only containers that do (and
/// whose image does not). Created on first start (128 bits from the kernel's random
/// source), root-only, kept across restarts and reboots.
pub fn load_or_create_secret(state_dir: &Path) -> Result<String> {
    let me = nix::unistd::geteuid().as_raw();
    let fail = |why: String| -> anyhow::Error {
        anyhow::anyhow!("state directory {}: {why}", state_dir.display())
    };
    if let Some(parent) = state_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        let m = std::fs::metadata(parent).map_err(|e| fail(format!("its parent: {e}")))?;
        if trusted(&m, system::Owner::RootOrUs, 0o022).is_err() {
            return Err(fail(format!(
                "its parent {} must be owned by root and not writable by group or others",
                parent.display()
            )));
        }
    }
    match std::fs::DirBuilder::new().mode(0o700).create(state_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(format!("cannot create it: {e}"))),
    }
    let m = std::fs::symlink_metadata(state_dir).map_err(|e| fail(e.to_string()))?;
    if !m.file_type().is_dir() || trusted(&m, system::Owner::Us, 0o022).is_err() {
        return Err(fail(format!(
            "must be a directory owned by urund's user (uid {me}) and not writable by group \
             or others (owner {}, mode {:o})",
            m.uid(),
            m.mode() & 0o7777
        )));
    }
    let path = state_dir.join(SECRET_FILE);
    let text = match read_small(&path, me) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; SECRET_BYTES];
            getrandom::fill(&mut bytes).map_err(|e| fail(format!("random source: {e}")))?;
            let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            // Written whole under a temporary name, then linked into place: a reader
            // never sees half a secret, and of two urunds starting at once one wins.
            let tmp = state_dir.join(format!(".{SECRET_FILE}.{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            write_new(&tmp, format!("{fresh}\n").as_bytes()).map_err(|e| fail(e.to_string()))?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(fail(format!("creating {}: {e}", path.display()))),
            }
            File::open(state_dir).and_then(|d| d.sync_all()).ok();
            read_small(&path, me).map_err(|e| fail(format!("{}: {e}", path.display())))?
        }
        Err(e) => return Err(fail(format!("{}: {e}", path.display()))),
    };
    parse_secret(&text).ok_or_else(|| {
        fail(format!(
            "{} is not urund's secret (32 hex digits): remove it and urund makes a new one \
             (containers labelled with the old one are then never removed by urund)",
            path.display()
        ))
    })
}

/// The secret in a file's text: exactly 32 lowercase hex digits and a newline. Pure.
pub fn parse_secret(text: &str) -> Option<String> {
    let s = text.strip_suffix('\n')?;
    (s.len() == SECRET_BYTES * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| s.to_string())
}

/// Creates `path` (never an existing file, never through a symlink), mode 0600, with
/// `data`, flushed to disk.
fn write_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Reads a small file that must be a regular file owned by `uid` and not accessible to
/// group or others, opened without following a symlink.
fn read_small(path: &Path, uid: u32) -> std::io::Result<String> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    let m = f.metadata()?;
    if !m.file_type().is_file() || trusted(&m, system::Owner::Uid(uid), 0o077).is_err() {
        return Err(std::io::Error::other(format!(
            "{} must be a regular file owned by uid {uid} with mode 0600 (owner {}, mode {:o})",
            path.display(),
            m.uid(),
            m.mode() & 0o7777
        )));
    }
    let mut text = String::new();
    f.take(4096).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::forced::{LABEL_HELPER, LABEL_INSTANCE};
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn request_ids_are_recognised_and_nothing_else() {
        assert!(is_request_id(&request_id(0x6560a1b2, 4242, 0)));
        assert!(is_request_id("1-2-3"));
        for bad in [
            "",
            "run",
            ".urund-runtime",
            "1-2",
            "1-2-3-4",
            "g-2-3",
            "1-x-3",
            "1--3",
            "-1-2",
            "1-2-3/..",
            "../1-2-3",
            "A-2-3",
            "1-2-3 ",
            "12345678901234567-1-1",
        ] {
            assert!(!is_request_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_the_secret_on_the_container_and_not_on_its_image_proves_ownership() {
        let me = Owner {
            helper: "/run/urun/urun.sock".into(),
            secret: "0123456789abcdef0123456789abcdef".into(),
        };
        let mine = me.labels("1-2-3");
        let none = HashMap::new();
        assert_eq!(me.proves(&mine, &none), Ok(()));
        // The helper label alone, as any image or docker user can set it.
        let helper_only = HashMap::from([(LABEL_HELPER.to_string(), me.helper.clone())]);
        assert!(me.proves(&helper_only, &none).is_err());
        // The right secret from another socket.
        let other = Owner {
            helper: "/run/x.sock".into(),
            ..me.clone()
        };
        assert!(me.proves(&other.labels("1-2-3"), &none).is_err());
        // A wrong secret.
        let wrong = Owner {
            secret: "f".repeat(32),
            ..me.clone()
        };
        assert!(me.proves(&wrong.labels("1-2-3"), &none).is_err());
        // An image that carries the secret itself: its containers have it without
        // their creator knowing it, never trusted.
        let img = HashMap::from([(LABEL_INSTANCE.to_string(), me.secret.clone())]);
        assert!(me.proves(&mine, &img).is_err());
        // An image with the key and another value: the container's value is its
        // creator's (Docker's merge), so the secret there still proves it.
        for v in ["", "x", &me.secret[1..], &me.secret.to_uppercase()] {
            let img = HashMap::from([
                (LABEL_INSTANCE.to_string(), v.to_string()),
                (LABEL_HELPER.to_string(), me.helper.clone()),
            ]);
            assert_eq!(me.proves(&mine, &img), Ok(()), "{v:?}");
            // and a container that has only the image's value is not proven
            let theirs: HashMap<String, String> = mine
                .iter()
                .map(|(k, x)| {
                    (
                        k.clone(),
                        if k == LABEL_INSTANCE {
                            v.to_string()
                        } else {
                            x.clone()
                        },
                    )
                })
                .collect();
            assert!(me.proves(&theirs, &img).is_err(), "{v:?}");
        }
    }

    #[test]
    fn secrets_are_exactly_32_lowercase_hex_digits() {
        let s = "0123456789abcdef0123456789abcdef";
        assert_eq!(parse_secret(&format!("{s}\n")).as_deref(), Some(s));
        for bad in [
            s.to_string(),
            format!("{s}\n\n"),
            format!("{}\n", &s[1..]),
            format!("{}\n", s.to_uppercase()),
            format!(" {s}\n"),
            "\n".into(),
        ] {
            assert_eq!(parse_secret(&bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn every_request_id_is_recognised(boot in any::<u64>(), pid in any::<u32>(), n in any::<u64>()) {
            prop_assert!(is_request_id(&request_id(boot, pid, n)));
        }

        #[test]
        fn a_recognised_name_is_one_plain_path_component(s in "[-0-9a-f./]{0,40}") {
            if is_request_id(&s) {
                prop_assert!(!s.contains('/') && !s.contains('.') && !s.is_empty());
            }
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("urun-inst-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        d
    }

    #[test]
    fn the_secret_is_made_once_and_kept() {
        let d = scratch("secret");
        let state = d.join("state");
        let a = load_or_create_secret(&state).unwrap();
        let b = load_or_create_secret(&state).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        let m = std::fs::metadata(state.join(SECRET_FILE)).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        // Readable by others: refused, not silently fixed.
        std::fs::set_permissions(
            state.join(SECRET_FILE),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        assert!(load_or_create_secret(&state).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_second_lock_names_the_holder_and_the_file_goes_with_the_lock() {
        let d = scratch("lock");
        let l = Lock::acquire(&d).unwrap();
        let e = Lock::acquire(&d).err().unwrap().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(l);
        assert!(!d.join(LOCK_FILE).exists());
        let _l = Lock::acquire(&d).unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_runtime_directory_without_the_marker_is_refused_and_left_alone() {
        let d = scratch("rt");
        let rt = RuntimeDir::open(&d).unwrap();
        assert_eq!(std::fs::metadata(&rt.path).unwrap().mode() & 0o777, 0o700);
        // Taken again while marked.
        let rt = RuntimeDir::open(&d).unwrap();
        rt.remove().unwrap();
        assert!(!rt.path.exists());
        // Someone else's directory, with a file in it.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&rt.path)
            .unwrap();
        std::fs::write(rt.path.join("data"), "keep").unwrap();
        let e = RuntimeDir::open(&d).unwrap_err().to_string();
        assert!(e.contains("without urund's marker"), "{e}");
        assert_eq!(
            std::fs::read_to_string(rt.path.join("data")).unwrap(),
            "keep"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
