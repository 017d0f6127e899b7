//! The OS boundary: who is on the other end of a socket (from the kernel), the user
//! database, the helper's listening socket, descriptors passed over it (SCM_RIGHTS)
//! and the pinned working-directory mounts. The only module with `unsafe`.

use crate::policy::mounts::DirFacts;
use crate::policy::{Policy, PolicyError};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::sockopt::{AcceptConn, PeerCredentials, SockType};
use nix::sys::socket::{getsockname, getsockopt, SockaddrStorage};
use nix::unistd::{Gid, Group, Uid, User};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

pub use crate::policy::Caller;

/// Identifies the process on the other end of `sock` from the kernel's records
/// (`SO_PEERCRED`, `SO_PEERGROUPS`). Must be called before any byte is read.
pub fn peer_caller(sock: BorrowedFd<'_>) -> io::Result<Caller> {
    let cred = getsockopt(&sock, PeerCredentials).map_err(io::Error::from)?;
    let name = User::from_uid(Uid::from_raw(cred.uid()))
        .ok()
        .flatten()
        .map(|u| u.name);
    let groups = match peer_groups(sock) {
        Ok(g) => g,
        Err(_) => match &name {
            Some(n) => user_db_groups(n, cred.gid()),
            None => Vec::new(),
        },
    };
    Ok(Caller {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
        groups,
        name,
        group: group_name(cred.gid()),
    })
}

/// The process on the other end of `sock` by its ids alone (`SO_PEERCRED`): no
/// supplementary groups and no name, so none of the user-database lookups of
/// [`peer_caller`]. Cheap enough for every `accept`, where urund counts connections
/// per uid before it reads anything; never enough to judge a request by.
pub fn peer_ids(sock: BorrowedFd<'_>) -> io::Result<Caller> {
    let cred = getsockopt(&sock, PeerCredentials).map_err(io::Error::from)?;
    Ok(Caller {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
        groups: Vec::new(),
        name: None,
        group: None,
    })
}

/// `getsockopt(SO_PEERGROUPS)`: the peer's supplementary groups at connect time.
fn peer_groups(sock: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    let mut buf: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (buf.len() * GID) as libc::socklen_t;
        // SAFETY: `buf` is a live, writable allocation of exactly `len` bytes for the
        // whole call; the kernel writes at most `len` bytes into it and stores the
        // size it needs in `len`. The descriptor is borrowed, so it stays open.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let need = len as usize / GID;
        if r == 0 {
            buf.truncate(need.min(buf.len()));
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && need > buf.len() && need <= 1 << 16 {
            buf.resize(need, 0);
            continue;
        }
        return Err(e);
    }
}

fn user_db_groups(name: &str, gid: u32) -> Vec<u32> {
    let Ok(cname) = std::ffi::CString::new(name) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&cname, Gid::from_raw(gid))
        .map(|v| v.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default()
}

/// Looks up a group's gid by name.
pub fn group_gid(name: &str) -> io::Result<Option<u32>> {
    Group::from_name(name)
        .map(|g| g.map(|g| g.gid.as_raw()))
        .map_err(io::Error::from)
}

/// Creates the helper's listening socket at `path`: owned by the helper's user and
/// group `gid`, mode 0660, in a directory nobody else can write to. A stale socket
/// is removed; a live one (another urund answers) or any other file is an error.
pub fn bind_socket(path: &Path, gid: u32) -> io::Result<UnixListener> {
    let fail = |m: String| io::Error::other(format!("socket {}: {m}", path.display()));
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| fail("needs an absolute path".into()))?;
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    check_socket_dir(path).map_err(fail)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(fail("another urund is already listening there".into()));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => return Err(fail("exists and is not a socket; remove it".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // urund runs with umask 077, so the socket is born 0600 and only opened up to
    // the group after its group is set.
    let listener = UnixListener::bind(path)?;
    std::os::unix::fs::lchown(path, None, Some(gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// The socket's directory, checked as [`bind_socket`] and [`check_inherited_socket`]
/// require it (owned by root, not writable by group or others); created 0755 first if
/// `create` and it does not exist. Where urund's lock and runtime directory go.
pub fn socket_dir(path: &Path, create: bool) -> io::Result<std::path::PathBuf> {
    let fail = |m: String| io::Error::other(format!("socket {}: {m}", path.display()));
    let dir = path
        .parent()
        .filter(|d| d.is_absolute())
        .ok_or_else(|| fail("needs an absolute path".into()))?;
    if create && !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    check_socket_dir(path).map_err(fail)?;
    Ok(dir.to_path_buf())
}

/// The size of the terminal on `fd` (`TIOCGWINSZ`), `None` if it is not a terminal
/// or reports no size.
pub fn terminal_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points
    // to a live, writable `libc::winsize` on our stack; the descriptor is borrowed, so
    // it stays open for the call. On failure nothing is written.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Whether the peer of the stream socket `fd` has closed it or shut down its writing
/// side (`POLLHUP`/`POLLRDHUP`/`POLLERR`), whatever data is still queued. Does not block.
pub fn peer_done_writing(fd: BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // nix has no name for POLLRDHUP: it is asked for by its bits, and `revents()` is
    // `None` exactly when the kernel reports it (the only flag nix does not know that
    // can come back for this request).
    let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
    let mut fds = [PollFd::new(fd, rdhup)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && match fds[0].revents() {
            None => true,
            Some(r) => r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR),
        }
}

/// Whether the peer of the stream socket `fd` has sent anything (or closed it):
/// `recv(MSG_PEEK|MSG_DONTWAIT)` of one byte, which stays queued. `WouldBlock` if not.
pub fn peek_byte(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::sys::socket::{recv, MsgFlags};
    let mut b = [0u8; 1];
    recv(
        fd.as_raw_fd(),
        &mut b,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    )
    .map(|_| ())
    .map_err(io::Error::from)
}

/// The first descriptor systemd passes with socket activation (`SD_LISTEN_FDS_START`).
const SD_LISTEN_FDS_START: i32 = 3;

/// Takes the listening socket systemd passed by socket activation, if any.
///
/// The protocol (sd_listen_fds(3)): `LISTEN_PID` names this process and
/// `LISTEN_FDS` counts the descriptors, starting at 3. urund takes exactly one: a
/// listening `AF_UNIX` stream socket. The variables are removed in every case so that
/// nothing this process starts could mistake them for its own. Variables meant for
/// another process (`LISTEN_PID` differs) are ignored: `Ok(None)`.
///
/// Call before any thread is started (it changes the environment).
pub fn socket_from_systemd() -> io::Result<Option<UnixListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(v);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let fail = |m: &str| io::Error::other(format!("socket activation: {m}"));
    if fds.trim() != "1" {
        return Err(fail(&format!(
            "LISTEN_FDS={fds}, but urund takes exactly one socket \
             (one ListenStream= in urund.socket)"
        )));
    }
    // Check, without touching the descriptor, that it is open and is a socket.
    let fd_path = format!("/proc/self/fd/{SD_LISTEN_FDS_START}");
    match std::fs::metadata(&fd_path) {
        Ok(m) if m.file_type().is_socket() => {}
        Ok(_) => return Err(fail("descriptor 3 is not a socket")),
        Err(e) => return Err(fail(&format!("descriptor 3 is not open: {e}"))),
    }
    // SAFETY: descriptor 3 is open (checked just above) and was handed to this process
    // by systemd for it to own (LISTEN_PID is our pid, LISTEN_FDS is 1). Nothing else in
    // this process refers to it: this runs once, before any thread starts, and the
    // variables that announced it are gone, so nobody else can take it a second time.
    let fd = unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) };
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
    let kind = getsockopt(&fd, SockType).map_err(io::Error::from)?;
    let listening = getsockopt(&fd, AcceptConn).map_err(io::Error::from)?;
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(io::Error::from)?;
    if addr.as_unix_addr().is_none() {
        return Err(fail(
            "descriptor 3 is not an AF_UNIX socket (use ListenStream=/path)",
        ));
    }
    if kind != nix::sys::socket::SockType::Stream || !listening {
        return Err(fail(
            "descriptor 3 is not a listening stream socket (use ListenStream=, Accept=no)",
        ));
    }
    Ok(Some(UnixListener::from(fd)))
}

/// Who may own a file or directory urund trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// root, or the user urund runs as.
    RootOrUs,
    /// The user urund runs as.
    Us,
    /// This uid.
    Uid(u32),
}

/// What [`owner_and_mode`] found wrong: the owner, the mode (`& 0o7777`), and which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Untrusted {
    pub uid: u32,
    pub mode: u32,
    /// The owner is not the one asked for (else a `forbidden` mode bit is set).
    pub bad_owner: bool,
}

/// The one owner/mode check of what urund trusts: owned as `owner` says, and none of
/// the `forbidden` mode bits set (`0o022`: not writable by group or others). Callers
/// word their own message from the [`Untrusted`] it returns.
pub fn owner_and_mode(uid: u32, mode: u32, owner: Owner, forbidden: u32) -> Result<(), Untrusted> {
    let me = nix::unistd::geteuid().as_raw();
    let owner_ok = match owner {
        Owner::RootOrUs => uid == 0 || uid == me,
        Owner::Us => uid == me,
        Owner::Uid(u) => uid == u,
    };
    if owner_ok && mode & forbidden == 0 {
        return Ok(());
    }
    Err(Untrusted {
        uid,
        mode: mode & 0o7777,
        bad_owner: !owner_ok,
    })
}

/// [`owner_and_mode`] of what `meta` describes.
pub fn meta_owner_and_mode(
    meta: &std::fs::Metadata,
    owner: Owner,
    forbidden: u32,
) -> Result<(), Untrusted> {
    owner_and_mode(meta.uid(), meta.mode(), owner, forbidden)
}

/// Loads the policy from `path`: built-in defaults if the file does not exist;
/// an error if it cannot be read, is not owned by root (or by the user running
/// urund), or is writable by group or others (the file or its directory).
pub fn load_policy(path: &Path) -> Result<Policy, PolicyError> {
    let err = |m: String| PolicyError {
        file: path.to_path_buf(),
        line: None,
        key: None,
        message: m,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Policy::default()),
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
    trusted_policy_file(&meta, "the file").map_err(&err)?;
    trusted_policy_file(&dir_meta, "its directory").map_err(&err)?;
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    Policy::parse(&text, path)
}

/// Reads the registry credentials file (`[build] registry_auth`): a regular file
/// (symlinks not followed) owned by root (or the user running urund) that neither
/// group nor others may read or write, in a directory they cannot write to. Errors
/// name the file and what to do, never its content.
pub fn load_registry_auth(path: &Path) -> Result<crate::policy::build::RegistryAuth, String> {
    let err = |m: String| format!("registry credentials {}: {m}", path.display());
    let meta = std::fs::symlink_metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(err(
            "is not a regular file (symlinks are not followed)".into()
        ));
    }
    match meta_owner_and_mode(&meta, Owner::RootOrUs, 0o077) {
        Err(u) if u.bad_owner => {
            return Err(err(format!(
                "is owned by uid {}, not root: chown root",
                u.uid
            )))
        }
        Err(u) => {
            return Err(err(format!(
                "is open to group or others (mode {:o}): chmod 600",
                u.mode
            )))
        }
        Ok(()) => {}
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir_meta = std::fs::metadata(dir.unwrap_or(Path::new(".")))
        .map_err(|e| err(format!("cannot inspect its directory: {e}")))?;
    trusted_policy_file(&dir_meta, "its directory").map_err(&err)?;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| {
            use std::io::Read;
            f.take(crate::policy::build::MAX_REGISTRY_AUTH as u64 + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| err(format!("cannot read: {e}")))?;
    crate::policy::build::RegistryAuth::parse(&text).map_err(err)
}

fn trusted_policy_file(meta: &std::fs::Metadata, what: &str) -> Result<(), String> {
    match meta_owner_and_mode(meta, Owner::RootOrUs, 0o022) {
        Ok(()) => Ok(()),
        Err(u) if u.bad_owner => Err(format!(
            "{what} is owned by uid {}, not root: chown root {what}",
            u.uid
        )),
        Err(u) => Err(format!(
            "{what} is writable by group or others (mode {:o}): chmod go-w",
            u.mode
        )),
    }
}

/// Checks a socket urund did not create itself (socket activation): bound to `path`,
/// a socket file owned by root (or us) with group `gid` and mode 0660 or stricter, in a
/// directory only root can write to. urund does not change it: whoever created it
/// (systemd, from `SocketMode=`/`SocketGroup=`) must get it right, or urund refuses to
/// serve rather than serve the wrong people.
pub fn check_inherited_socket(listener: &UnixListener, path: &Path, gid: u32) -> io::Result<()> {
    let fail =
        |m: String| io::Error::other(format!("socket {} (from systemd): {m}", path.display()));
    let bound = listener.local_addr()?;
    if bound.as_pathname() != Some(path) {
        return Err(fail(format!(
            "systemd passed a socket bound to {:?}; make ListenStream= and urund --socket agree",
            bound.as_pathname()
        )));
    }
    check_socket_dir(path).map_err(fail)?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| fail(format!("cannot stat it: {e}")))?;
    let mode = meta.mode() & 0o7777;
    if !meta.file_type().is_socket() {
        return Err(fail("is not a socket".into()));
    }
    if meta_owner_and_mode(&meta, Owner::RootOrUs, 0).is_err() {
        return Err(fail(format!("is owned by uid {}, not root", meta.uid())));
    }
    if meta.gid() != gid {
        return Err(fail(format!(
            "has group {}, but the policy's access.group has gid {gid}: set SocketGroup= to it",
            meta.gid()
        )));
    }
    if mode & !0o660 != 0 {
        return Err(fail(format!(
            "has mode {mode:o}, more open than 0660: set SocketMode=0660"
        )));
    }
    Ok(())
}

/// The socket's directory must be owned by root (or us) and not writable by group or
/// others, so nobody else can replace the socket. The message says what is wrong.
fn check_socket_dir(path: &Path) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| "needs an absolute path".to_string())?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("directory {}: {e}", dir.display()))?;
    meta_owner_and_mode(&meta, Owner::RootOrUs, 0o022).map_err(|u| {
        format!(
            "directory {} must be owned by root and not writable by group or others \
             (owner {}, mode {:o})",
            dir.display(),
            u.uid,
            u.mode
        )
    })
}

/// The soft limit on open descriptors (`RLIMIT_NOFILE`).
pub fn nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, Resource};
    Ok(getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(io::Error::from)?
        .0)
}

/// Raises the soft limit on open descriptors to the hard limit (systemd starts
/// services with a soft limit of 1024, far below what urund may need: one descriptor
/// per connection, several per run) and returns the soft limit now in effect. When
/// they are equal already (as `LimitNOFILE=` in urund.service makes them) nothing is
/// called: `setrlimit` is in systemd's `@resources`, which the unit denies (glibc
/// makes it the `prlimit64` system call, which the unit allows).
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft >= hard {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    Ok(hard)
}

/// Sets the process umask so every file the helper creates is private by default.
pub fn private_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// A user's login shell from the user database.
pub fn user_shell(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .and_then(|u| u.shell.to_str().map(String::from))
}

/// A group's name from the user database.
pub fn group_name(gid: u32) -> Option<String> {
    Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

// ── descriptor passing ──

/// Sends `data` with `fd` attached (SCM_RIGHTS) on a blocking stream socket. The
/// descriptor travels with the first bytes; the rest follows as plain data.
pub fn send_with_fd(sock: &UnixStream, data: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    send_with_fds(sock, data, &[fd])
}

/// Sends `data` with `fds` attached (SCM_RIGHTS, in this order) on a blocking stream
/// socket. The descriptors travel with the first bytes; the rest follows as plain data.
pub fn send_with_fds(sock: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    send_with_fds_waiting(sock, data, fds, std::time::Duration::ZERO)
}

/// [`send_with_fds`] on a new connection to urund, which takes descriptors only once it
/// has admitted the connection: until then (for at most `wait`) the kernel refuses
/// them with EPERM, and they are sent again.
pub fn send_with_fds_waiting(
    sock: &UnixStream,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
    wait: std::time::Duration,
) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::io::Write;
    let fds: Vec<std::os::fd::RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [io::IoSlice::new(data)];
    // urund's connections take descriptors only once it has admitted them (its
    // listening socket has SO_PASSRIGHTS off, which a new connection inherits, and urund
    // turns it on for the connections it admits): until then the kernel refuses them
    // with EPERM, and the descriptors are sent again. A refused connection never turns
    // it on: urund's answer and close end the wait (EPIPE, ECONNRESET).
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_micros(50);
    let n = loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EPERM) if started.elapsed() < wait => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
            r => break r.map_err(io::Error::from)?,
        }
    };
    (&*sock).write_all(&data[n..])
}

/// How long urun waits for urund to take descriptors on a new connection
/// ([`send_with_fds_waiting`]).
pub const NOT_ADMITTED_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether the socket `sock` takes descriptors from its peer (`SO_PASSRIGHTS`, Linux
/// 6.16+). `Err` on older kernels.
pub fn pass_rights(sock: BorrowedFd<'_>) -> io::Result<bool> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `sock` is a valid descriptor for the call; `v` and `len` live across it,
    // `len` holds `v`'s size, and the kernel writes at most that much into `v`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSRIGHTS,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(v != 0)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Puts descriptors a client passed (whose last references these are) into one
/// descriptor of urund's own: they are sent over a fresh socket pair and left in
/// flight there, and the copies here that are pipes or sockets are closed (never a
/// last reference: each sent one is held by the message). Closing the returned
/// descriptor releases them all, in that one `close`, on whichever thread closes it;
/// until then the pipes and sockets take one slot of urund's descriptor table, not one
/// each. Any other file is given back as well, unclosed: every `close` of a file, not
/// only its last, runs its filesystem's `flush`, which a FUSE server (mounted in a
/// member's own user namespace, say) may never answer, so urund's event loop, which
/// calls this, must not close it ([`closes_without_waiting`]). If the parking cannot
/// be done (no descriptors for the pair), `fds` are given back as they are.
pub fn park_fds(fds: Vec<OwnedFd>) -> Vec<OwnedFd> {
    use nix::sys::socket::{
        sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
    };
    if fds.len() <= 1 {
        return fds;
    }
    let Ok((a, b)) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    ) else {
        return fds;
    };
    let raw: Vec<std::os::fd::RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    // SCM_MAX_FD per message.
    for chunk in raw.chunks(253) {
        let cmsg = [ControlMessage::ScmRights(chunk)];
        let iov = [io::IoSlice::new(b"p")];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        if sendmsg::<()>(a.as_raw_fd(), &iov, &cmsg, flags, None) != Ok(1) {
            // What was sent is held by `b` too: closing `b` with `fds` is no worse.
            let mut fds = fds;
            fds.push(b);
            return fds;
        }
    }
    drop(a);
    let mut kept: Vec<OwnedFd> = fds
        .into_iter()
        .filter(|fd| !closes_without_waiting(fd.as_fd()))
        .collect();
    kept.push(b);
    kept
}

/// Whether closing `fd` (not its last reference) can never wait: a pipe or a socket,
/// which have no `flush`, told by the kernel's name for the open file
/// (`/proc/self/fd/N`, which asks no filesystem). Anything else may wait.
pub fn closes_without_waiting(fd: BorrowedFd<'_>) -> bool {
    match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        Ok(name) => {
            let name = name.as_os_str().as_encoded_bytes();
            name.starts_with(b"pipe:[") || name.starts_with(b"socket:[")
        }
        Err(_) => false,
    }
}

/// Most descriptors a request may carry: the working directory and stdin.
pub const MAX_PASSED_FDS: usize = 2;

/// One non-blocking `recvmsg` into `buf`, accepting at most [`MAX_PASSED_FDS`] passed
/// descriptors (close-on-exec). Returns the byte count and the descriptors received, in
/// the order sent; more is an error (all are closed: only for callers that own the
/// client's files, never urund's event loop, see [`recv_fds`]).
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let got = recv_fds(sock, buf)?;
    if let Some(why) = got.bad {
        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
    }
    if got.fds.len() > MAX_PASSED_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more than two descriptors passed",
        ));
    }
    Ok((got.bytes, got.fds))
}

/// What one [`recv_fds`] took from a socket.
#[derive(Debug)]
pub struct Received {
    pub bytes: usize,
    /// Every descriptor that came with the bytes, in the order sent, owned here.
    pub fds: Vec<OwnedFd>,
    /// Set if the control data was not only descriptors (the descriptors are still
    /// in `fds`).
    pub bad: Option<&'static str>,
}

/// One non-blocking `recvmsg` into `buf` with room for as many descriptors as one
/// message can carry (SCM_MAX_FD), close-on-exec: the kernel never truncates (and so
/// never closes a descriptor inside this call, on the caller's thread), and every one
/// received is returned, whatever the caller does with it. Never fails once the
/// kernel has given descriptors: they are in [`Received::fds`].
pub fn recv_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 253]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let bytes = msg.bytes;
    let mut fds = Vec::new();
    let mut bad = None;
    match msg.cmsgs() {
        Ok(it) => {
            for c in it {
                match c {
                    ControlMessageOwned::ScmRights(raw) => {
                        for r in raw {
                            // SAFETY: the kernel has just installed `r` in our table
                            // for this message; nothing else owns it, so taking
                            // ownership here is the only way it is ever closed.
                            fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                        }
                    }
                    _ => bad = Some("unexpected control message"),
                }
            }
        }
        Err(_) => bad = Some("truncated control message"),
    }
    Ok(Received { bytes, fds, bad })
}

/// `SO_PASSRIGHTS` (Linux 6.16+, include/uapi/asm-generic/socket.h).
const SO_PASSRIGHTS: libc::c_int = 83;

/// Turns `SO_PASSRIGHTS` of the socket `sock` on or off: off, a peer's `sendmsg` with
/// descriptors fails (`EPERM`) and nothing more can be queued for urund to receive or
/// close. `Err` (`ENOPROTOOPT`) on kernels before 6.16.
pub fn set_pass_rights(sock: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let v: libc::c_int = on.into();
    // SAFETY: `sock` is a valid descriptor for the call; `v` lives across it and its
    // size is passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSRIGHTS,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the kernel's send buffer of a connected socket to `bytes` (as root past
/// `wmem_max`, `SO_SNDBUFFORCE`): a batch of container output then goes to the client
/// in one write, and both sides wake up less often. Memory is charged only for bytes
/// in flight.
pub fn set_send_buffer(sock: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(&sock, sockopt::SndBufForce, &bytes)
        .or_else(|_| setsockopt(&sock, sockopt::SndBuf, &bytes))
        .map_err(io::Error::from)
}

// ── the attach connection, without waking for nothing ──

/// Waits until `fd` is ready for `interest`, with it registered in the event loop's
/// epoll for the wait only. A socket registered for good (as tokio's own are, for
/// reading and writing both) wakes urund at every write of its peer and every read
/// that frees room in it, even when nothing waits for that: on this kind of machine
/// a wake-up costs more than copying the bytes (bench/NOTES.md). Ready at once if the
/// condition already holds when it is registered. One waiter per descriptor at a time
/// (epoll takes a descriptor once): the attach connection's reader and writer each
/// have their own (`dup`).
pub async fn wait_ready(
    fd: std::sync::Arc<OwnedFd>,
    interest: tokio::io::Interest,
) -> io::Result<()> {
    // SAFETY: `fd` is an open descriptor owned by the `Arc` that the `AsyncFd` holds
    // for its whole life, so it stays open and names the same file description until
    // the `AsyncFd` is dropped (at the end of this function, which deregisters it), and
    // `as_raw_fd` of an `Arc<OwnedFd>` never changes.
    let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(|e| e.into_parts().1)?;
    let _ready = registered.ready(interest).await?;
    Ok(())
}

/// A one-shot timer finer than the event loop's (tokio's timers tick in whole
/// milliseconds, and a 1 ms sleep lasts up to 2): a `timerfd`, registered with epoll
/// for readability, which it gets only when it expires.
pub struct PauseTimer(tokio::io::unix::AsyncFd<TimerFd>);

/// A `timerfd` as tokio's `AsyncFd` takes it.
struct TimerFd(nix::sys::timerfd::TimerFd);

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl PauseTimer {
    pub fn new() -> io::Result<PauseTimer> {
        use nix::sys::timerfd::{ClockId, TimerFlags};
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        let t = nix::sys::timerfd::TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)?;
        // SAFETY: the `AsyncFd` owns the timer, whose descriptor stays open and
        // unchanged until the `AsyncFd` is dropped.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                TimerFd(t),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(PauseTimer(fd))
    }

    /// Returns after `d` (not zero).
    pub async fn sleep(&self, d: std::time::Duration) -> io::Result<()> {
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
        let timer = &self.0.get_ref().0;
        timer.set(
            Expiration::OneShot(TimeSpec::from_duration(d)),
            TimerSetTimeFlags::empty(),
        )?;
        loop {
            let mut ready = self.0.readable().await?;
            // The expiry count: readable once the timer has gone off (and armed anew
            // above, it starts from none).
            match ready.try_io(|t| {
                nix::unistd::read(t.get_ref().0.as_fd(), &mut [0u8; 8]).map_err(io::Error::from)
            }) {
                Ok(r) => return r.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}

/// One `recv` into `buf`'s spare capacity that never waits (`MSG_DONTWAIT`): `EAGAIN`
/// if nothing is there, 0 at end of stream. The bytes are appended to `buf`, which
/// is not zeroed first.
pub fn recv_nowait(fd: BorrowedFd<'_>, buf: &mut bytes::BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    loop {
        // SAFETY: `spare` is memory owned by `buf` and exclusively borrowed for the
        // call; `recv` writes at most `spare.len()` bytes into it; `fd` is open for the
        // life of its borrow.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: the kernel has initialised the first `n` bytes of the spare
            // capacity, right after `buf`'s initialised part.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `send` that never waits (`MSG_DONTWAIT`) and raises no `SIGPIPE`
/// (`MSG_NOSIGNAL`): `EAGAIN` if the socket is full.
pub fn send_nowait(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    use nix::sys::socket::{send, MsgFlags};
    loop {
        match send(
            fd.as_raw_fd(),
            buf,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Shuts down the sending side of a socket (the peer reads end of file).
pub fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Write)
        .map_err(io::Error::from)
}

// ── a passed stdin ──

/// What a client's stdin descriptor is, for the ways urund reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinKind {
    /// A pipe or FIFO: waited on with `poll`, spliced into urund's own pipe.
    Pipe,
    /// A socket: waited on with `poll`, read with `RWF_NOWAIT`.
    Socket,
    /// A regular file: always "ready"; a read that would wait for the disk is done off
    /// the event loop.
    File,
}

/// Why a passed stdin descriptor is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdinRefused(pub String);

/// Checks a descriptor a client passed as its stdin, from what the kernel says of it
/// (never changing it: its file description is shared with the client): it must be
/// open for reading (not `O_PATH`, not write-only), a pipe/FIFO, a socket or a regular
/// file, and a read of it must be able to not wait (`RWF_NOWAIT`: a file on a
/// filesystem that cannot say so, FUSE or NFS, could block a reader for ever).
pub fn check_passed_stdin(fd: BorrowedFd<'_>) -> Result<StdinKind, StdinRefused> {
    let refuse = |m: &str| Err(StdinRefused(m.to_string()));
    let flags = match fcntl(fd, FcntlArg::F_GETFL) {
        Ok(f) => f,
        Err(e) => return refuse(&format!("cannot read its flags: {e}")),
    };
    if flags & libc::O_PATH != 0 {
        return refuse("opened with O_PATH");
    }
    if flags & libc::O_ACCMODE == libc::O_WRONLY {
        return refuse("not open for reading");
    }
    let st = match nix::sys::stat::fstat(fd) {
        Ok(st) => st,
        Err(e) => return refuse(&format!("cannot stat it: {e}")),
    };
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO => StdinKind::Pipe,
        libc::S_IFSOCK => StdinKind::Socket,
        libc::S_IFREG => StdinKind::File,
        _ => return refuse("not a pipe, a socket or a regular file"),
    };
    if kind == StdinKind::File {
        // A one-byte read at offset 0 (the shared file position does not move):
        // EOPNOTSUPP if the filesystem cannot do RWF_NOWAIT, checked before it is asked.
        let mut b = [0u8; 1];
        match read_nowait(fd, &mut b, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                return refuse("a file on a filesystem whose reads cannot be made non-blocking")
            }
            _ => {}
        }
    }
    Ok(kind)
}

/// One read of at most `buf.len()` bytes that never waits (`preadv2` with
/// `RWF_NOWAIT`), whatever `O_NONBLOCK` says of the shared file description: `EAGAIN`
/// if nothing is there yet (for a regular file: not in the page cache). `offset` -1
/// reads at (and moves) the file position.
pub fn read_nowait(fd: BorrowedFd<'_>, buf: &mut [u8], offset: i64) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    loop {
        // SAFETY: `iov` describes `buf`, which is valid and exclusively borrowed for
        // the call; `fd` is a valid open descriptor for the life of the borrow.
        let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits at most `ms` milliseconds for `fd` to be readable (`write`: writable), or at
/// its end, or failed: `Ok(false)` if it was not. `poll` only: it takes no lock of the
/// file and changes nothing on its description (a passed stdin's is the client's).
/// Never called on the event loop.
pub fn poll_for(fd: BorrowedFd<'_>, write: bool, ms: u16) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags};
    let events = match write {
        true => PollFlags::POLLOUT,
        false => PollFlags::POLLIN,
    };
    let mut fds = [PollFd::new(fd, events)];
    loop {
        match poll(&mut fds, ms) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
        }
    }
}

/// One `write` to a non-blocking descriptor of urund's own (its staging pipe):
/// `EAGAIN` if it is full.
pub fn write_nowait(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::write(fd, buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// A pipe of urund's own (both ends non-blocking, 1 MiB if the kernel allows) that a
/// passed FIFO's bytes are spliced into: a named FIFO cannot do `RWF_NOWAIT`, and its
/// `O_NONBLOCK` is the client's, but `splice` with `SPLICE_F_NONBLOCK` never waits
/// on a pipe at either end.
pub fn staging_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(io::Error::from)?;
    let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(1 << 20));
    Ok((r, w))
}

/// Sets `O_NONBLOCK` on a descriptor of urund's own (never on one a client passed:
/// its file description is shared with the client).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::OFlag;
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    Ok(())
}

/// Moves at most `len` bytes from `from` into `to`, one of them a pipe, without the
/// kernel copying them (`splice`). It never waits on a pipe at either end
/// (`SPLICE_F_NONBLOCK`: `EAGAIN` if `from` is an empty pipe or `to` a full one), nor
/// on a socket `to` that is non-blocking (`EAGAIN` when it has no room); a regular
/// file `from` is read as `read` would (so not on the event loop). 0 at end of file.
/// A socket `to` whose peer has gone gives `EPIPE` (and a `SIGPIPE`, which Rust
/// programs ignore).
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the life of their borrows; null offsets
        // (pipes have none); splice reads and writes no memory of ours.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One ordinary (possibly waiting) read at the file position: for a regular file on a
/// filesystem that can do `RWF_NOWAIT`, after it said the data is not in memory yet.
/// Never called on the event loop.
pub fn read_waiting(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

// ── the working-directory mount ──

/// What the kernel says about a passed descriptor: `fstat`, its mount's flags, and where it is now
/// (`readlink /proc/self/fd/N`; `None` unless that path, looked up without following
/// a final symlink, is this same inode). Every call but the first step can wait for
/// the descriptor's filesystem: never called on the event loop (see
/// `daemon::workdir`). First, from `/proc` alone (which never calls into the
/// filesystem): a descriptor on a mount urund's mount namespace does not have, or on
/// FUSE, is refused before anything touches it ([`dir_filesystem`]).
pub fn dir_facts(fd: BorrowedFd<'_>) -> io::Result<DirFacts> {
    dir_filesystem(fd)?;
    let st = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    // The path counts only if it leads to this very inode now: not deleted, not in
    // another mount namespace (where the name would mean something else here). A
    // helper confined without CAP_DAC_READ_SEARCH may not be able to look it up (a
    // 0700 home on the way): then the kernel's own name for the open file is used,
    // unless it is marked deleted. (A directory from another mount namespace cannot
    // be pinned anyway: the bind mount of its descriptor fails.)
    let path = match std::fs::symlink_metadata(&link) {
        _ if !link.is_absolute() => None,
        Ok(m) => (m.dev() == st.st_dev && m.ino() == st.st_ino).then_some(link),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            (!link.to_string_lossy().ends_with(" (deleted)")).then_some(link)
        }
        Err(_) => None,
    };
    Ok(DirFacts {
        mount_flags: mount_flags(fd)?,
        is_dir: st.st_mode & libc::S_IFMT == libc::S_IFDIR,
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode,
        path,
    })
}

/// The filesystem type of the mount `fd` is on, from `/proc/self/fdinfo/N` (its mount
/// id) and `/proc/self/mountinfo`: neither calls into the filesystem itself, so a FUSE
/// server that never answers cannot hold this. `Err` (a plain line) if the mount is
/// not in urund's mount namespace (nothing of it could be pinned, and it may be a
/// user's own mount wrapping anything) or is served by a process
/// ([`mounts::served_by_a_process`]).
pub fn dir_filesystem(fd: BorrowedFd<'_>) -> io::Result<String> {
    use crate::policy::mounts;
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    let id = mounts::fdinfo_mount_id(&fdinfo)
        .ok_or_else(|| io::Error::other("the kernel does not say which mount it is on"))?;
    let info = std::fs::read("/proc/self/mountinfo")?;
    let fs = mounts::mount_fs_type(&info, id)
        .ok_or_else(|| io::Error::other("on a mount of another mount namespace"))?;
    if mounts::served_by_a_process(&fs) {
        return Err(io::Error::other(format!(
            "on a FUSE filesystem ({fs}), whose server could leave urund waiting for ever: \
             never mounted (mounts.workdir)"
        )));
    }
    Ok(fs)
}

/// Checks that `rel` (relative, made of plain names) is a directory below `dir`,
/// looked up by the kernel without following any symlink, without leaving `dir` and
/// without crossing a mount (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_XDEV`, `O_PATH | O_DIRECTORY`): nothing is created.
pub fn existing_subdir(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<()> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    openat2(dir, rel, how).map(drop).map_err(io::Error::from)
}

/// Creates (or checks) a root-only directory: owned by us, mode 0700, not a symlink.
pub fn root_only_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(path)?;
    if !m.file_type().is_dir() || meta_owner_and_mode(&m, Owner::Us, 0).is_err() {
        return Err(io::Error::other(format!(
            "{} must be a directory owned by uid {}",
            path.display(),
            nix::unistd::geteuid().as_raw()
        )));
    }
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The bytes an unprivileged writer could still write on the filesystem of `fd`
/// (`fstatvfs`: `f_bavail * f_frsize`).
pub fn free_bytes(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = nix::sys::statvfs::fstatvfs(fd).map_err(io::Error::from)?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// The flags of the mount a descriptor is on (`fstatvfs`'s `f_flag`, the kernel's
/// `ST_*` bits: read-only, nosuid, nodev, noexec, nosymfollow, atime, ...), unmasked.
pub fn mount_flags(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `st` is writable memory for exactly one `struct statvfs`, which the
    // kernel fills in completely on success; it is read only after success. The
    // descriptor is borrowed, so it stays open for the call.
    let r = unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatvfs succeeded, so the struct is initialised.
    Ok(unsafe { st.assume_init() }.f_flag)
}

/// Pins exactly the directory `fd` refers to at `mountpoint` (an empty directory in
/// a root-only tree), keeping every restriction of the mount it is on and adding
/// `nosuid,nodev` (and `ro`), never taking one away:
///   1. `open_tree(OPEN_TREE_CLONE)` of the descriptor: a detached copy of that one
///      mount, rooted at the opened directory (the inode the caller opened, never a
///      path the caller could change), non-recursive (no submounts come along), with
///      the source mount's own flags (ro, noexec, nosymfollow, atime, ...);
///   2. `mount_setattr` on the copy, setting attributes only (`attr_clr` is 0, so
///      nothing the source has is cleared) and making it private;
///   3. checking the copy's flags ⊇ the source's ∪ the added ones, while it is still
///      attached nowhere;
///   4. `move_mount` to `mountpoint`. The copy is restricted before it ever appears
///      in a mount tree, so if `mountpoint` lies on a shared mount, the copies that
///      propagate to other mount namespaces are just as restricted (and go again when
///      it is unmounted);
///   5. checking the flags again at `mountpoint`; on any failure the mount is removed.
///
/// The old way (bind, then `MS_REMOUNT` with a fixed flag set) reset every per-mount
/// flag it did not list: a `ro,noexec` source came out writable and executable.
pub fn pin_dir(fd: BorrowedFd<'_>, mountpoint: &Path, read_only: bool) -> io::Result<()> {
    let fail = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let source = mount_flags(fd).map_err(|e| fail("reading the directory's mount flags", e))?;
    let tree = open_tree_clone(fd).map_err(|e| fail("copying the directory's mount", e))?;
    let mut set = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    if read_only {
        set |= libc::MOUNT_ATTR_RDONLY;
    }
    restrict_mount(tree.as_fd(), set).map_err(|e| fail("restricting the pinned mount", e))?;
    let check = |flags: u64| {
        crate::policy::mounts::pin_strict_enough(source, flags, read_only).map_err(io::Error::other)
    };
    check(mount_flags(tree.as_fd())?)
        .map_err(|e| fail("the pinned mount before attaching it", e))?;
    move_mount_to(tree.as_fd(), mountpoint).map_err(|e| fail("attaching the pinned mount", e))?;
    drop(tree);
    let attached = std::fs::File::open(mountpoint).and_then(|f| mount_flags(f.as_fd()));
    match attached.and_then(check) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = unmount_all(mountpoint);
            Err(fail("the pinned mount", e))
        }
    }
}

/// `open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH)`: a
/// detached, non-recursive copy of the mount `fd` is on, rooted at `fd`.
fn open_tree_clone(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32;
    // SAFETY: open_tree takes a descriptor (borrowed, open for the call), a
    // NUL-terminated path (the static empty string) and flags; it returns a new
    // descriptor or -1 and touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel has just installed this descriptor for us; nothing else owns
    // it, so it is closed exactly once, by the OwnedFd.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH, {attr_set: set, attr_clr: 0, propagation:
/// MS_PRIVATE})`: adds the attributes in `set`, clears none, makes the mount private.
fn restrict_mount(tree: BorrowedFd<'_>, set: u64) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: `attr` is a live, initialised `struct mount_attr` whose exact size is
    // passed; the kernel only reads it. The path is the static empty string, the
    // descriptor is borrowed and open for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `move_mount(tree, "", AT_FDCWD, to, MOVE_MOUNT_F_EMPTY_PATH)`: attaches the detached
/// mount `tree` at the path `to`.
fn move_mount_to(tree: BorrowedFd<'_>, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("mount point with a NUL byte"))?;
    // SAFETY: both paths are NUL-terminated strings that live across the call (the
    // static empty string and `to`); the descriptor is borrowed and open. The kernel
    // only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts everything mounted at or below `dir` (deepest first, each until it is
/// gone). Detached unmounts: a container still holding a copy keeps its own.
pub fn unmount_all(dir: &Path) -> io::Result<usize> {
    use nix::mount::{umount2, MntFlags};
    let mut n = 0;
    for _ in 0..16 {
        let info = std::fs::read("/proc/self/mountinfo")?;
        let points = crate::policy::mounts::mount_points_under(&info, dir);
        if points.is_empty() {
            return Ok(n);
        }
        for p in points {
            match umount2(&p, MntFlags::MNT_DETACH) {
                Ok(()) => n += 1,
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(io::Error::other(format!("unmounting {}: {e}", p.display()))),
            }
        }
    }
    Err(io::Error::other(format!(
        "mounts under {} keep coming back",
        dir.display()
    )))
}

/// Removes one run's directory `dir` (made by urund: the files `names` and the empty
/// mount point `work`), after unmounting anything below it. Never removes
/// recursively: if something is still mounted or unexpected, it is left and reported.
pub fn remove_run_dir(dir: &Path, names: &[&str], work: &str) -> io::Result<()> {
    unmount_all(dir)?;
    for n in names {
        match std::fs::remove_file(dir.join(n)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    for d in [dir.join(work), dir.to_path_buf()] {
        match std::fs::remove_dir(&d) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io::Error::other(format!("removing {}: {e}", d.display())))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::path::PathBuf;

    #[test]
    fn registry_credentials_must_be_a_file_only_its_owner_can_read() {
        let dir = std::env::temp_dir().join(format!("urun-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = dir.join("auth.json");
        std::fs::write(&f, r#"{"username":"u","password":"hunter2"}"#).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_registry_auth(&f).unwrap().username, "u");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load_registry_auth(&f).unwrap_err();
        assert!(e.contains("chmod 600") && !e.contains("hunter2"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(load_registry_auth(&link).unwrap_err().contains("symlinks"));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(load_registry_auth(&f)
            .unwrap_err()
            .contains("its directory"));
        assert!(load_registry_auth(&dir.join("none"))
            .unwrap_err()
            .contains("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_descriptor_passes_with_the_first_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let dir = std::fs::File::open("/").unwrap();
        send_with_fd(&a, b"hello", dir.as_fd()).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        let f = dir_facts(fds[0].as_fd()).unwrap();
        assert!(f.is_dir);
        assert_eq!(f.path.as_deref(), Some(Path::new("/")));
    }

    #[test]
    fn more_than_one_descriptor_is_refused() {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let (a, b) = UnixStream::pair().unwrap();
        let f = std::fs::File::open("/").unwrap();
        let fds = [f.as_raw_fd(), f.as_raw_fd(), f.as_raw_fd()];
        let iov = [io::IoSlice::new(b"x")];
        sendmsg::<()>(
            a.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let mut buf = [0u8; 4];
        let e = recv_with_fds(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn peer_of_a_socketpair_is_us() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = peer_caller(a.as_fd()).unwrap();
        assert_eq!(c.uid, nix::unistd::getuid().as_raw());
        assert_eq!(c.gid, nix::unistd::getgid().as_raw());
        assert_eq!(c.pid, std::process::id() as i32);
        let mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = c.groups.clone();
        got.sort();
        let mut want = mine;
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn recv_fds_returns_every_descriptor_passed_however_many() {
        let (a, b) = UnixStream::pair().unwrap();
        let files: Vec<std::fs::File> = (0..5).map(|_| std::fs::File::open("/").unwrap()).collect();
        let fds: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
        send_with_fds(&a, b"xy", &fds).unwrap();
        let mut buf = [0u8; 8];
        let got = recv_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((got.bytes, got.fds.len(), got.bad), (2, 5, None));
    }

    #[test]
    fn with_pass_rights_off_a_peer_cannot_queue_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        match set_pass_rights(b.as_fd(), false) {
            // before Linux 6.16
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => return,
            r => r.unwrap(),
        }
        let f = std::fs::File::open("/").unwrap();
        use std::io::Write;
        let e = send_with_fd(&a, b"x", f.as_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        // plain bytes still go through
        (&a).write_all(b"y").unwrap();
        let mut buf = [0u8; 8];
        let got = recv_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((got.bytes, got.fds.len()), (1, 0));
        set_pass_rights(b.as_fd(), true).unwrap();
        send_with_fd(&a, b"z", f.as_fd()).unwrap();
        assert_eq!(recv_fds(b.as_fd(), &mut buf).unwrap().fds.len(), 1);
    }

    #[test]
    fn a_connection_inherits_its_listeners_pass_rights_and_a_sender_waits_for_them() {
        let (path, l) = listener("passrights");
        match set_pass_rights(l.as_fd(), false) {
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => return,
            r => r.unwrap(),
        }
        let a = UnixStream::connect(&path).unwrap();
        let f = std::fs::File::open("/").unwrap();
        // before it is accepted, nothing can be queued on it
        let e = send_with_fd(&a, b"x", f.as_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        let (b, _) = l.accept().unwrap();
        assert!(!pass_rights(b.as_fd()).unwrap());
        // a sender that waits gets through once the connection takes descriptors
        let turn_on = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            set_pass_rights(b.as_fd(), true).unwrap();
            b
        });
        send_with_fds_waiting(&a, b"y", &[f.as_fd()], std::time::Duration::from_secs(5)).unwrap();
        let b = turn_on.join().unwrap();
        let mut buf = [0u8; 8];
        b.set_nonblocking(true).unwrap();
        let got = recv_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((got.bytes, got.fds.len()), (1, 1));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn parked_descriptors_take_one_slot_and_are_released_when_it_closes() {
        let pipes: Vec<(OwnedFd, OwnedFd)> =
            (0..300).map(|_| nix::unistd::pipe().unwrap()).collect();
        let (reads, writes): (Vec<_>, Vec<_>) = pipes.into_iter().unzip();
        let parked = park_fds(reads);
        assert_eq!(parked.len(), 1);
        // 300 read ends in one descriptor, still open: writing works
        for w in &writes {
            assert_eq!(nix::unistd::write(w, b"x"), Ok(1));
        }
        drop(parked);
        // released with that one close: the read ends are gone
        for w in &writes {
            assert_eq!(nix::unistd::write(w, b"x"), Err(nix::errno::Errno::EPIPE));
        }
        assert_eq!(park_fds(Vec::new()).len(), 0);
    }

    #[test]
    fn parking_gives_back_unclosed_what_a_close_could_wait_for() {
        let dir = std::env::temp_dir().join(format!("urun-sys-park-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let (s1, _s2) = std::os::unix::net::UnixStream::pair().unwrap();
        let f: OwnedFd = std::fs::File::open(&file).unwrap().into();
        assert!(closes_without_waiting(r.as_fd()));
        assert!(closes_without_waiting(s1.as_fd()));
        assert!(!closes_without_waiting(f.as_fd()));
        let f_ino = std::fs::metadata(&file).unwrap().ino();
        let kept = park_fds(vec![r, OwnedFd::from(s1), f]);
        // The regular file comes back (closed later, off the event loop), then the pair.
        assert_eq!(kept.len(), 2);
        let st = nix::sys::stat::fstat(&kept[0]).unwrap();
        assert_eq!(st.st_ino, f_ino);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A listening socket in a fresh root-owned-or-ours 0755 directory.
    fn listener(name: &str) -> (PathBuf, UnixListener) {
        let dir = std::env::temp_dir().join(format!("urun-sys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("urun.sock");
        let l = UnixListener::bind(&path).unwrap();
        (path, l)
    }

    fn mode(path: &Path, m: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn an_inherited_socket_must_have_the_policy_group_and_at_most_0660() {
        let (path, l) = listener("inh");
        let gid = std::fs::metadata(&path).unwrap().gid();
        mode(&path, 0o660);
        check_inherited_socket(&l, &path, gid).unwrap();
        mode(&path, 0o600);
        check_inherited_socket(&l, &path, gid).unwrap();
        mode(&path, 0o666);
        let e = check_inherited_socket(&l, &path, gid)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode 666, more open than 0660"), "{e}");
        mode(&path, 0o660);
        let e = check_inherited_socket(&l, &path, gid + 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SocketGroup="), "{e}");
        let e = check_inherited_socket(&l, &path.with_file_name("other.sock"), gid)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("make ListenStream= and urund --socket agree"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn an_inherited_socket_in_a_writable_directory_is_refused() {
        let (path, l) = listener("dir");
        let gid = std::fs::metadata(&path).unwrap().gid();
        mode(&path, 0o660);
        mode(path.parent().unwrap(), 0o777);
        let e = check_inherited_socket(&l, &path, gid)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not writable by group or others"), "{e}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn peer_done_writing_sees_a_half_close_despite_queued_data() {
        use std::io::Write;
        let (a, mut b) = UnixStream::pair().unwrap();
        assert!(!peer_done_writing(a.as_fd()));
        b.write_all(b"queued").unwrap();
        assert!(!peer_done_writing(a.as_fd()));
        b.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(peer_done_writing(a.as_fd()));
        drop(b);
        assert!(peer_done_writing(a.as_fd()));
    }

    #[test]
    fn peek_byte_waits_for_a_byte_and_leaves_it_queued() {
        use std::io::{Read, Write};
        let (mut a, b) = UnixStream::pair().unwrap();
        let e = peek_byte(a.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        (&b).write_all(b"x").unwrap();
        peek_byte(a.as_fd()).unwrap();
        let mut got = [0u8; 1];
        a.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
        drop(b);
        peek_byte(a.as_fd()).unwrap();
    }

    #[test]
    fn membership() {
        let c = Caller {
            uid: 1000,
            gid: 1000,
            pid: 1,
            groups: vec![27, 1000],
            name: None,
            group: None,
        };
        assert!(c.in_group(1000) && c.in_group(27) && !c.in_group(0));
        assert_eq!(c.display_name(), "1000");
    }
}
