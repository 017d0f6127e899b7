//! The working-directory mount, pure parts: the `-v` spec as the client parses it, the
//! container-side paths both sides validate, and the helper's rules for a directory it
//! was handed (inside an allowed root, not a system path, the caller's). No I/O: the
//! facts about a descriptor come from `system::dir_facts`, the decisions are made here.
//! See SECURITY.md, "Working directory".
#![forbid(unsafe_code)]

use crate::policy::rule::{refuse, Refusal, Rule};
use crate::policy::MountAccess;
use std::path::{Component, Path, PathBuf};

/// What `-v SRC:DST[:ro|rw]` asks for, before the source is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// The host path as typed (absolute, or relative to the current directory).
    pub source: String,
    /// Where it appears in the container.
    pub target: String,
    pub read_only: bool,
}

/// Parses a docker `-v`/`--volume` value. Only a host directory is accepted: named
/// volumes, anonymous volumes and mount options other than `ro`/`rw` are refused.
pub fn parse_volume(spec: &str) -> Result<VolumeSpec, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, mode) = match parts[..] {
        [s, t] => (s, t, None),
        [s, t, m] => (s, t, Some(m)),
        [_] => {
            return Err(format!(
                "-v {spec:?}: anonymous volumes are not supported; use -v \"$PWD\":/work"
            ))
        }
        _ => {
            return Err(format!(
            "-v {spec:?}: expected HOST-DIR:CONTAINER-DIR[:ro] (paths with ':' are not supported)"
        ))
        }
    };
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(m) => {
            return Err(format!(
                "-v {spec:?}: mount option {m:?} is not supported (only ro or rw)"
            ))
        }
    };
    if source.is_empty() || !(source.starts_with('/') || source.starts_with('.')) {
        return Err(format!(
            "-v {spec:?}: named volumes are not supported; only your current directory \
             (or one below it) can be mounted, e.g. -v \"$PWD\":/work or -v ./sub:/work"
        ));
    }
    validate_target(target).map_err(|e| format!("-v {spec:?}: {e}"))?;
    Ok(VolumeSpec {
        source: source.to_string(),
        target: target.to_string(),
        read_only,
    })
}

/// Container paths a mount may not cover: the container's own machinery and the
/// identity files urund provides.
const TARGET_DENY: &[&str] = &["/proc", "/sys", "/dev", "/etc"];

/// Container paths the forced settings mount something on: `docker-init` (PID 1;
/// twice, because in a merged-/usr image `/sbin` leads to `/usr/sbin`), the identity
/// files and the `/tmp` tmpfs. No other mount may be one of them, above one (it would
/// hide it: a mount over `/sbin` replaces the init) or below one. (`$HOME` is not
/// here: mounting the working directory exactly there makes it the home.)
pub const FORCED_TARGETS: &[&str] = &[
    "/sbin/docker-init",
    "/usr/sbin/docker-init",
    "/etc/passwd",
    "/etc/group",
    "/tmp",
];

/// Checks a container-side mount target: absolute, normal (no `.`/`..`/`//`), not `/`,
/// not over `/proc`, `/sys`, `/dev`, `/etc`, and not the same as, above or below a
/// forced mount ([`FORCED_TARGETS`]). Used by the client for its message and by the
/// judge, which never trusts the client's check.
pub fn validate_target(t: &str) -> Result<(), String> {
    validate_container_path(t)?;
    if t == "/" {
        return Err("cannot mount over the container's root".into());
    }
    if let Some(d) = TARGET_DENY
        .iter()
        .find(|d| under(Path::new(t), Path::new(d)))
    {
        return Err(format!("cannot mount over {d} in the container"));
    }
    let p = Path::new(t);
    if let Some(f) = FORCED_TARGETS
        .iter()
        .find(|f| under(p, Path::new(f)) || under(Path::new(f), p))
    {
        return Err(format!(
            "cannot mount at {t}: urun mounts {f} itself (the init, the identity files \
             and /tmp stay as they are)"
        ));
    }
    Ok(())
}

/// An absolute, normal path inside the container (for `-w` as well).
pub fn validate_container_path(t: &str) -> Result<(), String> {
    if t.len() > 4096 || t.contains('\0') || t.contains('\n') {
        return Err(format!("{t:?} is not a usable path"));
    }
    if !t.starts_with('/') {
        return Err(format!("{t:?} must be an absolute path in the container"));
    }
    if !is_normal(Path::new(t)) || (t.len() > 1 && t.ends_with('/')) || t.contains("//") {
        return Err(format!(
            "{t:?} must be a plain absolute path (no '.', '..', or repeated '/')"
        ));
    }
    Ok(())
}

/// True if `p` is absolute and made only of normal components.
fn is_normal(p: &Path) -> bool {
    let mut c = p.components();
    c.next() == Some(Component::RootDir)
        && c.all(|c| matches!(c, Component::Normal(_)))
        // `components()` silently drops inner `.` and repeated `/`
        && !p
            .to_string_lossy()
            .split('/')
            .skip(1)
            .any(|c| c == "." || (c.is_empty() && p != Path::new("/")))
}

/// True if `p` is `dir` or below it (component-wise, not by string prefix).
pub fn under(p: &Path, dir: &Path) -> bool {
    p.starts_with(dir)
}

/// Where a working directory lies with respect to the mount target, cleaned as Docker
/// cleans it (Go's `filepath.Clean`). runc creates whatever of it is missing, as root,
/// after the mounts: below a bind target, that is in the caller's host directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkdirPlace {
    /// The target itself (its mount point exists).
    AtTarget,
    /// Below the target: this part of it is in the caller's directory.
    Below(PathBuf),
    /// Anywhere else, lexically: the image's symlinks may still lead it into the target.
    Elsewhere,
}

pub fn workdir_place(target: &str, workdir: &str) -> WorkdirPlace {
    let Some(w) = crate::policy::reference::clean_path(workdir) else {
        return WorkdirPlace::Elsewhere;
    };
    match Path::new(&w).strip_prefix(target) {
        Ok(rel) if rel.as_os_str().is_empty() => WorkdirPlace::AtTarget,
        Ok(rel) => WorkdirPlace::Below(rel.to_path_buf()),
        Err(_) => WorkdirPlace::Elsewhere,
    }
}

/// The client's rule: the resolved source must be the current directory or below it.
/// Both paths are already canonical (symlinks and `..` resolved by the kernel).
pub fn check_below_cwd(cwd: &Path, source: &Path) -> Result<(), String> {
    if under(source, cwd) {
        Ok(())
    } else {
        Err(format!(
            "{} is not your current directory or below it ({}): only that can be mounted; \
             cd there first",
            source.display(),
            cwd.display()
        ))
    }
}

/// Host paths that are never mounted, whatever the roots say, and that may not be a
/// root: the system's own directories, the runtime and Docker's state.
pub const SYSTEM_PATHS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib",
    "/var/run",
    "/var/log",
    "/var/spool",
    "/var/cache",
    "/var/mail",
];

/// The system path `p` is (or is below), if any. `/` itself counts.
pub fn system_path(p: &Path) -> Option<&'static str> {
    if p == Path::new("/") {
        return Some("/");
    }
    SYSTEM_PATHS
        .iter()
        .copied()
        .find(|s| under(p, Path::new(s)))
}

/// Checks an administrator's `roots` entry: absolute, normal, not `/`, not a system
/// path, not above one (`/var` would contain `/var/lib`).
pub fn validate_root(r: &str) -> Result<(), String> {
    let p = Path::new(r);
    if !r.starts_with('/') || !is_normal(p) || r.ends_with('/') && r != "/" {
        return Err(format!(
            "root {r:?} must be a plain absolute path (no '.', '..', trailing '/')"
        ));
    }
    if let Some(s) = system_path(p) {
        return Err(format!("root {r:?} is (inside) the system path {s}"));
    }
    if let Some(s) = SYSTEM_PATHS.iter().find(|s| under(Path::new(s), p)) {
        return Err(format!("root {r:?} contains the system path {s}"));
    }
    Ok(())
}

/// What the helper learnt about a passed descriptor, from the kernel (`fstat`, and
/// `readlink /proc/self/fd/N` for where it is now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirFacts {
    /// The flags of the mount it is on (`fstatvfs`, the `ST_*` bits).
    pub mount_flags: u64,
    pub is_dir: bool,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// The directory's current path; `None` if it has been deleted or is not
    /// reachable from the helper's root.
    pub path: Option<PathBuf>,
}

/// How much a caller must have on a directory other than their own.
/// The helper's check of a passed directory, or the refusal naming its rule: where it
/// is ([`check_place`]), who may use it ([`check_access`]), and a read-only source
/// mount only read-only.
pub fn check_dir(
    f: &DirFacts,
    uid: u32,
    gids: &[u32],
    read_only: bool,
    roots: &[String],
    access: MountAccess,
) -> Result<(), Refusal> {
    let path = check_place(f, roots)?;
    check_access(f, path, uid, gids, read_only, access)?;
    if !read_only && f.mount_flags & ST_RDONLY != 0 {
        return refuse(
            Rule::MountsReadonly,
            format!(
                "{} is on a read-only mount, so it can only be mounted read-only \
                 (mounts.readonly): use -v SRC:DST:ro",
                path.display()
            ),
        );
    }
    Ok(())
}

/// A directory still reachable where it was opened, not a system path, under one of
/// the policy's `roots`: its path.
fn check_place<'f>(f: &'f DirFacts, roots: &[String]) -> Result<&'f Path, Refusal> {
    if !f.is_dir {
        return refuse(
            Rule::MountsWorkdir,
            "the descriptor passed for -v is not a directory",
        );
    }
    let Some(path) = f.path.as_deref().filter(|p| is_normal(p)) else {
        return refuse(
            Rule::MountsWorkdir,
            "the directory passed for -v was deleted or moved while urund checked it, or is \
             not reachable from urund; try again",
        );
    };
    if let Some(s) = system_path(path) {
        return refuse(
            Rule::MountsRoots,
            format!(
                "{} is a system path ({s}): it is never mounted, whatever policy mounts.roots says",
                path.display()
            ),
        );
    }
    if !roots.iter().any(|r| under(path, Path::new(r))) {
        return refuse(
            Rule::MountsRoots,
            format!(
                "{} is outside the directories that may be mounted (policy mounts.roots = {:?})",
                path.display(),
                roots
            ),
        );
    }
    Ok(path)
}

/// `mounts.access`: owned by the caller, or usable by the mode bits.
fn check_access(
    f: &DirFacts,
    path: &Path,
    uid: u32,
    gids: &[u32],
    read_only: bool,
    access: MountAccess,
) -> Result<(), Refusal> {
    let ok = match access {
        MountAccess::Owner => f.uid == uid && class_allows(f, uid, gids, read_only),
        MountAccess::Mode => class_allows(f, uid, gids, read_only),
    };
    if ok {
        return Ok(());
    }
    let what = match access {
        MountAccess::Owner => "owned by you (policy mounts.access = \"owner\")",
        MountAccess::Mode if read_only => "readable and searchable by you",
        MountAccess::Mode => "readable, writable and searchable by you",
    };
    refuse(
        Rule::MountsAccess,
        format!(
            "{} is not {what} (owner uid {}, mode {:o})",
            path.display(),
            f.uid,
            f.mode & 0o7777
        ),
    )
}

/// `statvfs` flags (`f_flag`) that restrict what can be done through a mount, with
/// their mount option names. A pinned working directory keeps every one its source
/// mount has.
pub const RESTRICTIONS: &[(u64, &str)] = &[
    (ST_RDONLY, "ro"),
    (ST_NOSUID, "nosuid"),
    (ST_NODEV, "nodev"),
    (ST_NOEXEC, "noexec"),
    (0x10, "sync"),
    (0x40, "mand"),
    (0x400, "noatime"),
    (0x800, "nodiratime"),
    (0x1000, "relatime"),
    (ST_NOSYMFOLLOW, "nosymfollow"),
];

/// The kernel's `statvfs` flag bits (statvfs(3)) urund acts on.
pub const ST_RDONLY: u64 = 0x1;
pub const ST_NOSUID: u64 = 0x2;
pub const ST_NODEV: u64 = 0x4;
pub const ST_NOEXEC: u64 = 0x8;
pub const ST_NOSYMFOLLOW: u64 = 0x2000;

/// Whether a pinned mount with flags `pin` is at least as strict as its source
/// mount (`source`) plus what urund adds: `nosuid,nodev`, and `ro` for `read_only`.
/// The message names what is missing.
pub fn pin_strict_enough(source: u64, pin: u64, read_only: bool) -> Result<(), String> {
    let mut want = source | ST_NOSUID | ST_NODEV;
    if read_only {
        want |= ST_RDONLY;
    }
    let missing: Vec<&str> = RESTRICTIONS
        .iter()
        .filter(|(bit, _)| want & bit != 0 && pin & bit == 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("lacks {}", missing.join(",")))
    }
}

/// The classic permission check for uid/gids on mode bits (ACLs are not consulted,
/// which can only refuse more): the owner class if the uid owns it, else the group
/// class if one of the gids is its group, else other.
fn class_allows(f: &DirFacts, uid: u32, gids: &[u32], read_only: bool) -> bool {
    let bits = if f.uid == uid {
        (f.mode >> 6) & 7
    } else if gids.contains(&f.gid) {
        (f.mode >> 3) & 7
    } else {
        f.mode & 7
    };
    let need = if read_only { 0o5 } else { 0o7 };
    bits & need == need
}

/// Mount points (field 5 of `/proc/self/mountinfo`, unescaped) at or below `dir`,
/// deepest first, so they can be unmounted in that order. Bytes, not text: a mount
/// point anywhere on the host (a user's FUSE mount, a USB stick's label) may have any
/// name but `\0`.
pub fn mount_points_under(mountinfo: &[u8], dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let mut v: Vec<PathBuf> = mountinfo
        .split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').nth(4))
        .map(|m| PathBuf::from(std::ffi::OsString::from_vec(unescape_octal(m))))
        .filter(|m| under(m, dir))
        .collect();
    v.sort_by(|a, b| (b.components().count().cmp(&a.components().count())).then_with(|| a.cmp(b)));
    v.dedup();
    v
}

/// The mount id a `/proc/self/fdinfo/N` text gives (its `mnt_id:` line).
pub fn fdinfo_mount_id(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The filesystem type (the field after ` - `) of the mount with id `id` (field 1) in
/// a `/proc/self/mountinfo` text; `None` if that mount is not in it (a mount of
/// another mount namespace).
pub fn mount_fs_type(mountinfo: &[u8], id: u64) -> Option<String> {
    mountinfo.split(|&b| b == b'\n').find_map(|l| {
        let text = String::from_utf8_lossy(l);
        let mut fields = text.split(' ');
        if fields.next()?.parse::<u64>().ok()? != id {
            return None;
        }
        let mut fields = fields.skip_while(|f| *f != "-");
        fields.next()?;
        fields.next().map(str::to_string)
    })
}

/// Whether a filesystem type is served by a process rather than the kernel: FUSE
/// (`fuse`, `fuseblk`, `fuse.<subtype>` such as `fuse.sshfs`), which any user may
/// mount where `/etc/fuse.conf` has `user_allow_other`. Every call into it (`fstat`,
/// `statfs`, a lookup, an open) waits for its server's answer, uninterruptibly once
/// the server has read the request: such a directory is never examined or mounted.
pub fn served_by_a_process(fs_type: &str) -> bool {
    fs_type == "fuse" || fs_type == "fuseblk" || fs_type.starts_with("fuse.")
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline, backslash). Only those
/// that make one byte (`\000` to `\377`): anything else is kept as it is.
fn unescape_octal(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && (b'0'..=b'3').contains(&b[i + 1])
            && b[i + 2..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_on_fuse_is_found_from_proc_alone() {
        let fdinfo = "pos:\t0\nflags:\t02300000\nmnt_id:\t46\nino:\t1\n";
        assert_eq!(fdinfo_mount_id(fdinfo), Some(46));
        assert_eq!(fdinfo_mount_id("pos:\t0\n"), None);
        let info = b"27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
46 27 0:40 / /home/a/my\\040dir rw,relatime - fuse.sshfs a@b:/ rw,user_id=1000\n\
47 27 0:41 / /srv rw shared:5 master:2 - nfs4 h:/srv rw\n";
        assert_eq!(mount_fs_type(info, 27).as_deref(), Some("ext4"));
        assert_eq!(mount_fs_type(info, 46).as_deref(), Some("fuse.sshfs"));
        assert_eq!(mount_fs_type(info, 47).as_deref(), Some("nfs4"));
        assert_eq!(mount_fs_type(info, 4), None);
        for t in ["fuse", "fuseblk", "fuse.sshfs"] {
            assert!(served_by_a_process(t), "{t}");
        }
        for t in ["ext4", "nfs4", "tmpfs", "fusectl", "overlay"] {
            assert!(!served_by_a_process(t), "{t}");
        }
    }

    #[test]
    fn a_workdir_is_placed_against_the_target_after_cleaning() {
        use WorkdirPlace::*;
        let below = |s: &str| Below(PathBuf::from(s));
        assert_eq!(workdir_place("/work", "/work/a/b"), below("a/b"));
        assert_eq!(workdir_place("/work", "/x/../work//a/./b/"), below("a/b"));
        assert_eq!(workdir_place("/work", "/work/a/.."), AtTarget);
        assert_eq!(workdir_place("/work", "/work"), AtTarget);
        assert_eq!(workdir_place("/work", "/workshop"), Elsewhere);
        assert_eq!(workdir_place("/work", "/"), Elsewhere);
        assert_eq!(workdir_place("/work", "/work/../etc"), Elsewhere);
        assert_eq!(workdir_place("/work", "relative"), Elsewhere);
        assert_eq!(workdir_place("/", "/a"), below("a"));
    }

    #[test]
    fn volume_specs() {
        assert_eq!(
            parse_volume("/home/a/p:/work").unwrap(),
            VolumeSpec {
                source: "/home/a/p".into(),
                target: "/work".into(),
                read_only: false
            }
        );
        assert!(parse_volume("./x:/work:ro").unwrap().read_only);
        assert!(!parse_volume(".:/work:rw").unwrap().read_only);
        for bad in [
            "/work",
            "data:/work",
            "/a:/b:z",
            "/a:/b:ro:x",
            "/a:relative",
            "/a:/",
            "/a:/etc",
            "/a:/etc/passwd",
            "/a:/proc/x",
            "/a:/w/../etc",
            "/a:/w/",
            ":/w",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets() {
        assert!(validate_target("/work").is_ok());
        assert!(validate_target("/home/alice/src").is_ok());
        assert!(validate_target("/etcetera").is_ok());
        assert!(validate_target("/sys").is_err());
        // the forced mounts: the init, the identity files, /tmp; above or below them
        for bad in [
            "/sbin",
            "/sbin/docker-init",
            "/usr",
            "/usr/sbin",
            "/usr/sbin/docker-init",
            "/tmp",
            "/tmp/x",
        ] {
            let e = validate_target(bad).unwrap_err();
            assert!(e.contains("urun mounts"), "{bad}: {e}");
        }
        for ok in [
            "/sbinx",
            "/usr2",
            "/usr/local",
            "/usr/local/sbin",
            "/tmpx",
            "/home/alice",
        ] {
            assert!(validate_target(ok).is_ok(), "{ok}");
        }
        assert!(validate_target("/w//x").is_err());
        assert!(validate_target("/w/./x").is_err());
        assert!(validate_container_path("/").is_ok());
        assert!(validate_container_path("w").is_err());
    }

    #[test]
    fn below_cwd_is_by_component() {
        let cwd = Path::new("/home/a/proj");
        assert!(check_below_cwd(cwd, Path::new("/home/a/proj")).is_ok());
        assert!(check_below_cwd(cwd, Path::new("/home/a/proj/src")).is_ok());
        assert!(check_below_cwd(cwd, Path::new("/home/a/project2")).is_err());
        assert!(check_below_cwd(cwd, Path::new("/home/a")).is_err());
    }

    #[test]
    fn roots_cannot_be_or_contain_system_paths() {
        for ok in ["/home", "/srv", "/data/projects", "/var/tmp/work"] {
            assert!(validate_root(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/",
            "/etc",
            "/var",
            "/run/user",
            "/usr/local",
            "home",
            "/home/",
            "/a/../etc",
        ] {
            assert!(validate_root(bad).is_err(), "{bad}");
        }
    }

    fn facts(path: &str, uid: u32, mode: u32) -> DirFacts {
        DirFacts {
            mount_flags: 0x1000,
            is_dir: true,
            uid,
            gid: 100,
            mode,
            path: Some(path.into()),
        }
    }

    #[test]
    fn dir_checks() {
        let roots = vec!["/home".to_string(), "/srv".to_string()];
        let c = |f: &DirFacts, ro, a| check_dir(f, 1000, &[1000, 100], ro, &roots, a);
        assert!(c(&facts("/home/a/p", 1000, 0o700), false, MountAccess::Owner).is_ok());
        // outside roots, system paths, not a directory, deleted
        assert_eq!(
            c(&facts("/tmp/p", 1000, 0o700), false, MountAccess::Owner)
                .unwrap_err()
                .rule
                .id(),
            "mounts.roots"
        );
        assert_eq!(
            c(&facts("/etc", 1000, 0o755), true, MountAccess::Mode)
                .unwrap_err()
                .rule
                .id(),
            "mounts.roots"
        );
        let mut f = facts("/home/a/p", 1000, 0o700);
        f.is_dir = false;
        assert_eq!(
            c(&f, false, MountAccess::Owner).unwrap_err().rule.id(),
            "mounts.workdir"
        );
        f.is_dir = true;
        f.path = None;
        assert_eq!(
            c(&f, false, MountAccess::Owner).unwrap_err().rule.id(),
            "mounts.workdir"
        );
        // someone else's directory: refused under "owner", by mode bits under "mode"
        let other = facts("/home/b/shared", 2000, 0o775);
        assert_eq!(
            c(&other, true, MountAccess::Owner).unwrap_err().rule.id(),
            "mounts.access"
        );
        assert!(c(&other, false, MountAccess::Mode).is_ok()); // group 100 has rwx
        let other = facts("/home/b/pub", 2000, 0o755);
        assert!(c(&other, true, MountAccess::Mode).is_ok());
        assert!(c(&other, false, MountAccess::Mode).is_err());
        assert!(c(&facts("/home/b", 2000, 0o700), true, MountAccess::Mode).is_err());
        // the owner class decides for the owner even if others have more
        assert!(c(&facts("/home/a/x", 1000, 0o077), true, MountAccess::Mode).is_err());
    }

    #[test]
    fn a_read_only_source_is_mounted_read_only_or_not_at_all() {
        let roots = vec!["/home".to_string()];
        let mut f = facts("/home/a/p", 1000, 0o700);
        f.mount_flags |= ST_RDONLY | ST_NOEXEC;
        let c = |ro| check_dir(&f, 1000, &[1000], ro, &roots, MountAccess::Owner);
        assert_eq!(c(false).unwrap_err().rule.id(), "mounts.readonly");
        assert!(c(false).unwrap_err().message.contains(":ro"));
        assert!(c(true).is_ok());
    }

    #[test]
    fn a_pin_keeps_every_restriction_of_its_source_and_adds_nosuid_nodev() {
        let ro_noexec_nosymfollow = ST_RDONLY | ST_NOEXEC | ST_NOSYMFOLLOW | 0x1000;
        let added = ST_NOSUID | ST_NODEV;
        assert!(
            pin_strict_enough(ro_noexec_nosymfollow, ro_noexec_nosymfollow | added, false).is_ok()
        );
        // what the old remount produced: rw, no noexec, no nosymfollow
        assert_eq!(
            pin_strict_enough(ro_noexec_nosymfollow, 0x1000 | added, false),
            Err("lacks ro,noexec,nosymfollow".into())
        );
        assert_eq!(
            pin_strict_enough(0, ST_NOSUID, false),
            Err("lacks nodev".into())
        );
        assert_eq!(pin_strict_enough(0, added, true), Err("lacks ro".into()));
        assert!(pin_strict_enough(0, added | ST_RDONLY | ST_NOEXEC, true).is_ok());
    }

    #[test]
    fn mountinfo_points() {
        let mi = "22 1 8:1 / / rw - ext4 /dev/sda rw\n\
                  90 22 8:1 /home/a/p /run/urun/run/r1/work rw,nosuid - ext4 /dev/sda rw\n\
                  91 90 8:1 /x /run/urun/run/r1/work/sub rw - ext4 /dev/sda rw\n\
                  92 22 8:1 /y /run/urun/run2/w rw - ext4 /dev/sda rw\n\
                  93 22 8:1 /z /run/urun/run/a\\040b rw - ext4 /dev/sda rw\n";
        assert_eq!(
            mount_points_under(mi.as_bytes(), Path::new("/run/urun/run")),
            vec![
                PathBuf::from("/run/urun/run/r1/work/sub"),
                PathBuf::from("/run/urun/run/r1/work"),
                PathBuf::from("/run/urun/run/a b"),
            ]
        );
    }

    #[test]
    fn mountinfo_with_any_bytes_is_read() {
        use std::os::unix::ffi::OsStrExt;
        // a mount point elsewhere whose name is not UTF-8 (a user's FUSE mount) must not
        // stop urund from finding its own; a non-byte escape stays as it is
        let mi = b"22 1 8:1 / /home/m/\xff\xfe rw - fuse x rw\n\
                   90 22 8:1 / /run/urun/run/\xff\\040\\777 rw - ext4 /dev/sda rw\n";
        let got = mount_points_under(mi, Path::new("/run/urun/run"));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_os_str().as_bytes(), b"/run/urun/run/\xff \\777");
    }
}

/// Property tests: the `-v` spec and mountinfo from arbitrary text (bounded cases, run
/// with the unit tests).
#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};

    /// A `-v` value made of the pieces that matter, or anything at all.
    fn spec() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/"),
            Just("."),
            Just(".."),
            Just(":"),
            Just("ro"),
            Just("rw"),
            Just("z"),
            Just("work"),
            Just("etc"),
            Just("proc"),
            Just("home"),
            Just("//"),
            Just("\n"),
            Just("\0"),
            Just(" "),
            Just("sys"),
            Just("dev"),
            Just("sbin"),
        ];
        prop_oneof![
            ".{0,40}",
            proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat()),
        ]
    }

    /// mountinfo's escaping of a mount point: space, tab, newline and backslash as `\ooo`.
    fn escape(p: &[u8]) -> Vec<u8> {
        let mut s = Vec::new();
        for &b in p {
            match b {
                b' ' | b'\t' | b'\n' | b'\\' => s.extend(format!("\\{b:03o}").bytes()),
                b => s.push(b),
            }
        }
        s
    }

    fn path_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b"run".to_vec()),
                Just(b"u".to_vec()),
                Just(b"a b".to_vec()),
                Just(b"t\tn\nb\\".to_vec()),
                Just(b"\\040".to_vec()),
                Just(b"\xff\xfe".to_vec()),
                "[a-z]{1,3}".prop_map(String::into_bytes),
            ],
            1..5,
        )
        .prop_map(|c| {
            let mut p = Vec::new();
            for x in c {
                p.push(b'/');
                p.extend(x);
            }
            p
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_volume_never_panics_and_accepts_only_safe_specs(s in spec()) {
            if let Ok(v) = parse_volume(&s) {
                prop_assert!(validate_target(&v.target).is_ok(), "{:?}", v);
                prop_assert!(v.source.starts_with('/') || v.source.starts_with('.'), "{:?}", v);
                prop_assert!(!v.source.contains(':') && !v.target.contains(':'));
                let mode = if v.read_only { ":ro" } else { "" };
                prop_assert_eq!(parse_volume(&format!("{}:{}{mode}", v.source, v.target)), Ok(v));
            }
        }

        #[test]
        fn mount_points_under_never_panics_and_keeps_only_paths_below_dir(
            info in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                proptest::collection::vec(
                    proptest::sample::select(vec![
                        &b" "[..], b"\n", b"\\", b"\\777", b"\\400", b"\\040", b"\\0",
                        b"/run/urun/run", b"/", b"x", b"\xff", b"1 2 3 4 ",
                    ]),
                    0..40,
                )
                .prop_map(|v| v.concat()),
            ],
            dir in prop_oneof![Just("/run/urun/run"), Just("/"), Just("/a b")],
        ) {
            let got = mount_points_under(&info, Path::new(dir));
            for p in &got {
                prop_assert!(p.starts_with(dir), "{p:?}");
            }
            let depths: Vec<usize> = got.iter().map(|p| p.components().count()).collect();
            prop_assert!(depths.windows(2).all(|w| w[0] >= w[1]), "not deepest first: {got:?}");
            let mut unique = got.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), got.len(), "duplicates: {:?}", got);
        }

        #[test]
        fn mount_points_round_trip_through_mountinfo_escapes(
            points in proptest::collection::vec(path_bytes(), 0..8),
            dir in prop_oneof![Just("/run"), Just("/run/u"), Just("/a b")],
        ) {
            let info: Vec<u8> = points
                .iter()
                .enumerate()
                .flat_map(|(i, p)| {
                    [format!("{} 1 8:1 / ", 20 + i).into_bytes(), escape(p), b" rw - ext4 /dev/sda rw\n".to_vec()]
                        .concat()
                })
                .collect();
            let got = mount_points_under(&info, Path::new(dir));
            let mut want: Vec<PathBuf> = points
                .iter()
                .map(|p| PathBuf::from(OsString::from_vec(p.clone())))
                .filter(|p| p.starts_with(dir))
                .collect();
            want.sort_by(|a, b| b.components().count().cmp(&a.components().count()).then(a.cmp(b)));
            want.dedup();
            let mut got_sorted = got.clone();
            got_sorted.sort_by(|a, b| b.components().count().cmp(&a.components().count()).then(a.cmp(b)));
            prop_assert_eq!(&got_sorted, &want, "{}", String::from_utf8_lossy(&info));
            prop_assert!(got.iter().all(|p| !p.as_os_str().as_bytes().is_empty()));
        }
    }
}
