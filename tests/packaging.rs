//! Installing urun like system software: the systemd units (verified, exposure score
//! checked), socket activation (LISTEN_FDS) with the unit's capability bounding set,
//! the Debian package (dpkg -i, a real run as a user, dpkg --purge, nothing left) and
//! packaging/install.sh (install, run, --uninstall, nothing left).
//!
//! The package and install-script tests use the real default socket
//! /run/urun/urun.sock and the real /etc/urun. They pass whether or not urun is
//! installed here (by install.sh, or as the package, installed or in state "rc") and
//! urund running (under systemd or not): `HostState` stops that urund, takes the
//! installation away for the test and afterwards puts everything back as it found it
//! (files byte for byte, the package in its state, the group and its members, urund
//! started again the same way), also when the test fails.

mod common;

use common::*;
use serial_test::serial;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SRC: &str = env!("CARGO_MANIFEST_DIR");
const DEFAULT_SOCKET: &str = "/run/urun/urun.sock";
/// Where an urund from before the runtime directory's marker left its (empty)
/// runtime directory.
const OLD_RUNTIME: &str = "/run/urun/run";

/// urund's default state directory (its secret).
const STATE_DIR: &str = "/var/lib/urun";

/// Paths in urund's state directory, which a purge or an uninstall removes.
fn is_state(p: &str) -> bool {
    Path::new(p).starts_with(STATE_DIR)
}
/// The highest `systemd-analyze security` exposure urund.service may have.
const EXPOSURE_THRESHOLD: &str = "3.0";

/// Policy for the confinement tests: everything that needs urund's privileges on
/// (the pinned working-directory mount, generated passwd/group, the caller's groups).
fn confined_policy(g: &TestGroup) -> String {
    format!(
        "{}[mounts]\nworkdir = true\nroots = [\"/home\"]\n[identity]\ngroups = \"caller\"\n",
        policy_for(g)
    )
}

/// A `--here` run from a directory in `u`'s home: the name inside comes from the
/// generated passwd file, the file written inside belongs to `u` on the host, and no
/// pinned mount is left under the daemon's directory afterwards.
fn here_run(d: &Daemon, u: &TestUser) {
    let proj = PathBuf::from(format!("/home/{}/proj", u.name));
    fs::create_dir_all(&proj).unwrap();
    std::os::unix::fs::chown(&proj, Some(u.uid), Some(u.gid)).unwrap();
    let mut c = d.urun(
        u,
        &["--here", image(), "sh", "-c", "whoami; touch made-inside"],
    );
    c.current_dir(&proj);
    let o = run_with_input(c, b"");
    ok(&o, &format!("--here run\n{}", d.log_text()));
    assert_eq!(stdout(&o), format!("{}\n", u.name));
    let m = fs::metadata(proj.join("made-inside")).unwrap();
    assert_eq!((m.uid(), m.gid()), (u.uid, u.gid));
    assert!(
        mounts_under(&d.dir).is_empty(),
        "{:?}",
        mounts_under(&d.dir)
    );
}

fn src(p: &str) -> PathBuf {
    Path::new(SRC).join(p)
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// The directory holding the urun and urund this test binary was built with.
fn bin_dir() -> PathBuf {
    Path::new(URUND).parent().unwrap().to_path_buf()
}

/// The capabilities urund.service keeps (its CapabilityBoundingSet=), as setpriv
/// wants them: `-all,+sys_admin,...`.
fn unit_bounding_set() -> String {
    let unit = fs::read_to_string(src("packaging/systemd/urund.service")).unwrap();
    let line = unit
        .lines()
        .find(|l| l.starts_with("CapabilityBoundingSet="))
        .expect("urund.service sets CapabilityBoundingSet=");
    let caps: Vec<String> = line["CapabilityBoundingSet=".len()..]
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.is_empty());
    format!("-all,{}", caps.join(","))
}

/// Capability names by number (linux/capability.h).
const CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Runs `systemd-analyze verify` on a socket and service unit; fails on any complaint.
fn verify_units(socket: &Path, service: &Path) {
    let o = sh(
        "systemd-analyze",
        &[
            "verify",
            "--man=no",
            socket.to_str().unwrap(),
            service.to_str().unwrap(),
        ],
    );
    ok(&o, "systemd-analyze verify");
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
}

#[test]
#[serial]
fn units_pass_systemd_analyze_verify() {
    image(); // tests/setup.sh installs the systemd tools if missing
             // verify checks that ExecStart= exists: point it at the binary just built.
    let dir = PathBuf::from(format!("/run/urun-test-units-{}", unique()));
    fs::create_dir_all(&dir).unwrap();
    let service = fs::read_to_string(src("packaging/systemd/urund.service"))
        .unwrap()
        .replace("ExecStart=/usr/sbin/urund", &format!("ExecStart={URUND}"));
    fs::write(dir.join("urund.service"), service).unwrap();
    fs::copy(
        src("packaging/systemd/urund.socket"),
        dir.join("urund.socket"),
    )
    .unwrap();
    let r = std::panic::catch_unwind(|| {
        verify_units(&dir.join("urund.socket"), &dir.join("urund.service"))
    });
    let _ = fs::remove_dir_all(&dir);
    r.unwrap();
}

#[test]
#[serial]
fn security_exposure_is_within_the_threshold_and_recorded_in_readme() {
    image();
    let o = sh(
        src("packaging/security-score.sh").to_str().unwrap(),
        &[EXPOSURE_THRESHOLD],
    );
    ok(&o, "packaging/security-score.sh");
    let out = stdout(&o);
    println!("{out}");
    let score = out
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no score in {out:?}"));
    assert!(score <= EXPOSURE_THRESHOLD.parse::<f64>().unwrap(), "{out}");
    let readme = fs::read_to_string(src("README.md")).unwrap();
    assert!(
        readme.contains(&format!("exposure score of **{score:.1}**")),
        "README.md must record the current score {score:.1}"
    );
}

/// `systemd-socket-activate` running urund (it execs urund in its own place, with
/// LISTEN_PID/LISTEN_FDS) as urund.service would run: in a private network namespace,
/// with only the unit's capabilities and no-new-privileges.
struct Activated {
    child: Child,
}

impl Activated {
    fn start(d: &Daemon) -> Activated {
        fs::create_dir_all(d.socket.parent().unwrap()).unwrap();
        fs::set_permissions(
            d.socket.parent().unwrap(),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // A network namespace of its own (PrivateNetwork=yes), but the host's mount
        // namespace; then only the unit's capabilities and no-new-privileges.
        let child = Command::new("unshare")
            .args([
                "--net",
                "--",
                "setpriv",
                "--bounding-set",
                &unit_bounding_set(),
                "--inh-caps=-all",
                "--no-new-privs",
                "--",
                "systemd-socket-activate",
                "-l",
                d.socket.to_str().unwrap(),
                URUND,
            ])
            .args(d.urund_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&d.log).unwrap())
            .spawn()
            .expect("systemd-socket-activate (Debian package systemd)");
        let t = Instant::now();
        while !d.socket.exists() {
            assert!(t.elapsed() < Duration::from_secs(10), "{}", d.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        Activated { child }
    }

    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[serial]
fn socket_activated_urund_serves_requests_with_the_units_capabilities() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::prepare(&confined_policy(&g));
    let mut a = Activated::start(&d);
    // What SocketGroup=urun and SocketMode=0660 do in urund.socket.
    std::os::unix::fs::chown(&d.socket, None, Some(g.gid)).unwrap();
    fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o660)).unwrap();

    // The first connection starts urund, which serves it on the inherited socket.
    let o = d.run(&u, &[image(), "sh", "-c", "id -u; id -g"], b"");
    ok(
        &o,
        &format!("urun through a socket-activated urund\n{}", d.log_text()),
    );
    assert_eq!(stdout(&o), format!("{}\n{}\n", u.uid, u.gid));
    assert!(d.log_text().contains("from systemd"), "{}", d.log_text());
    // It really ran confined like that: its own network namespace, the host's mount
    // namespace, the unit's bounding set, no-new-privileges.
    let pid = a.child.id();
    assert_ne!(
        fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        fs::read_link("/proc/self/ns/net").unwrap()
    );
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(),
        fs::read_link("/proc/self/ns/mnt").unwrap(),
        "urund must stay in the host's mount namespace"
    );
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .expect("CapBnd in /proc/PID/status");
    let names: Vec<&str> = (0..64)
        .filter(|b| bnd & (1u64 << b) != 0)
        .map(|b| CAPS.get(b).copied().unwrap_or("?"))
        .collect();
    let mut want: Vec<String> = unit_bounding_set()
        .split(',')
        .filter_map(|c| c.strip_prefix('+'))
        .map(|c| format!("CAP_{}", c.to_uppercase()))
        .collect();
    want.sort();
    let mut got: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    got.sort();
    assert_eq!(got, want, "urund's bounding set");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let o = d.run(&u, &["-i", image(), "tr", "a-z", "A-Z"], b"hello\n");
    ok(&o, "second request");
    assert_eq!(stdout(&o), "HELLO\n");
    assert!(d.containers().is_empty());
    // The working-directory mount and identity files work within the unit's
    // capabilities and without a mount namespace of its own.
    here_run(&d, &u);
    assert!(d.containers().is_empty());

    // urund did not touch the socket systemd made, and leaves it in place on exit.
    let m = fs::metadata(&d.socket).unwrap();
    assert_eq!((m.mode() & 0o7777, m.gid()), (0o660, g.gid));
    let _ = sh("kill", &["-TERM", &a.child.id().to_string()]);
    let st = a.wait(Duration::from_secs(15)).expect("urund did not stop");
    assert!(st.success(), "{st}: {}", d.log_text());
    assert!(
        d.socket.exists(),
        "urund removed systemd's socket on exit:\n{}",
        d.log_text()
    );
}

#[test]
#[serial]
fn socket_activated_urund_refuses_a_socket_more_open_than_0660() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::prepare(&policy_for(&g));
    let mut a = Activated::start(&d);
    std::os::unix::fs::chown(&d.socket, None, Some(g.gid)).unwrap();
    fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o666)).unwrap();
    let o = d.run(&u, &[image(), "true"], b"");
    assert!(!o.status.success());
    let st = a.wait(Duration::from_secs(15)).expect("urund kept running");
    assert_eq!(st.code(), Some(1), "{}", d.log_text());
    let log = d.log_text();
    assert!(
        log.contains("mode 666, more open than 0660") && log.contains("SocketMode=0660"),
        "{log}"
    );
    assert!(d.containers().is_empty());
}

#[test]
#[serial]
fn socket_activated_urund_refuses_a_socket_of_another_group() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let other = TestGroup::new("urx");
    let d = Daemon::prepare(&policy_for(&g));
    let mut a = Activated::start(&d);
    std::os::unix::fs::chown(&d.socket, None, Some(other.gid)).unwrap();
    fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o666)).unwrap();
    let o = d.run(&u, &[image(), "true"], b"");
    assert!(!o.status.success());
    let st = a.wait(Duration::from_secs(15)).expect("urund kept running");
    assert_eq!(st.code(), Some(1), "{}", d.log_text());
    assert!(d.log_text().contains("SocketGroup="), "{}", d.log_text());
}

/// Expands a systemd system-call set (`@name`) or a single call into call names.
fn syscall_set(item: &str, out: &mut std::collections::BTreeSet<String>) {
    if !item.starts_with('@') {
        out.insert(item.to_string());
        return;
    }
    let o = sh("systemd-analyze", &["syscall-filter", "--no-pager", item]);
    ok(&o, &format!("systemd-analyze syscall-filter {item}"));
    for l in stdout(&o).lines().skip(1) {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        syscall_set(l, out);
    }
}

/// The system calls urund.service allows: its first SystemCallFilter= (an allow-list)
/// minus every later `~` list.
fn unit_allowed_syscalls() -> std::collections::BTreeSet<String> {
    let unit = fs::read_to_string(src("packaging/systemd/urund.service")).unwrap();
    let mut allowed = std::collections::BTreeSet::new();
    let mut denied = std::collections::BTreeSet::new();
    for l in unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        match l.strip_prefix('~') {
            Some(d) => d
                .split_whitespace()
                .for_each(|i| syscall_set(i, &mut denied)),
            None => {
                assert!(denied.is_empty(), "the allow-list must come first");
                l.split_whitespace()
                    .for_each(|i| syscall_set(i, &mut allowed));
            }
        }
    }
    assert!(allowed.len() > 100, "{allowed:?}");
    allowed.retain(|c| !denied.contains(c));
    allowed
}

#[test]
#[serial]
fn every_system_call_urund_makes_is_allowed_by_the_units_filter() {
    // Not the seccomp filter itself (that needs systemd as PID 1), but the list it is
    // built from, checked against what urund really calls: socket activation, start
    // (with an audit file: its directory walked, created and checked; and with a soft
    // open-files limit below the hard one, so urund raises it), one run with stdin,
    // one --here run (pinned mount, identity files), shutdown.
    let allowed = unit_allowed_syscalls();
    let hard = fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(String::from))
        .unwrap();
    let nofile = format!("--nofile=1024:{hard}");
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::prepare("");
    let audit = d.dir.join("audit/audit.log");
    let policy = format!(
        "{}[audit]\nfile = \"{}\"\n",
        confined_policy(&g),
        audit.display()
    );
    write_mode(&d.policy, policy.as_bytes(), 0o644);
    fs::create_dir_all(d.socket.parent().unwrap()).unwrap();
    let trace = d.dir.join("strace.log");
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-o", trace.to_str().unwrap(), "--"])
        .args(["prlimit", &nofile, "--"])
        .args(["systemd-socket-activate", "-l", d.socket.to_str().unwrap()])
        .arg(URUND)
        .args(d.urund_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&d.log).unwrap())
        .spawn()
        .expect("strace (Debian package strace)");
    let t = Instant::now();
    while !d.socket.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::os::unix::fs::chown(&d.socket, None, Some(g.gid)).unwrap();
    fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o660)).unwrap();
    let o = d.run(&u, &["-i", image(), "sh", "-c", "cat; id -u"], b"hi\n");
    here_run(&d, &u);
    // SIGTERM to urund (strace's child), not to strace; strace exits with it.
    let urund = stdout(&sh("pgrep", &["-P", &child.id().to_string()]));
    let urund = urund.trim();
    assert!(!urund.is_empty(), "urund is not running under strace");
    let _ = sh("kill", &["-TERM", urund]);
    let st = child.wait().unwrap();
    ok(&o, &format!("urun under strace\n{}", d.log_text()));
    assert_eq!(stdout(&o), format!("hi\n{}\n", u.uid));
    assert!(st.success(), "{st}: {}", d.log_text());
    assert!(read(&audit).contains("\"admitted\""), "{}", read(&audit));

    // Every call after urund's own execve.
    let log = read(&trace);
    let exec = format!("execve(\"{URUND}\"");
    let start = log.find(&exec).expect("urund's execve in the trace");
    let mut used = std::collections::BTreeSet::new();
    for l in log[start..].lines().skip(1) {
        let rest = l.split_once(' ').map(|(_, r)| r.trim_start()).unwrap_or("");
        let name = match rest.strip_prefix("<... ") {
            Some(r) => r.split(' ').next().unwrap_or(""),
            None => rest.split('(').next().unwrap_or(""),
        };
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            used.insert(name.to_string());
        }
    }
    assert!(
        used.contains("accept4") || used.contains("accept"),
        "{used:?}"
    );
    // urund raised its soft open-files limit (glibc's setrlimit is prlimit64).
    assert!(
        log[start..].contains("prlimit64(0, RLIMIT_NOFILE, {"),
        "no raise of RLIMIT_NOFILE traced"
    );
    // The --here run pinned its directory with urund's own mount calls.
    assert!(
        ["mount", "move_mount", "mount_setattr"]
            .iter()
            .any(|c| used.contains(*c)),
        "no mount call traced: {used:?}"
    );
    let refused: Vec<&String> = used.iter().filter(|c| !allowed.contains(*c)).collect();
    assert!(
        refused.is_empty(),
        "urund makes system calls urund.service would refuse: {refused:?}"
    );
}

// ---------------------------------------------------------------------------------
// The real installation: default socket, /etc/urun, the `urun` group.

/// Paths whose name contains "urun" in the places a package or install.sh writes to,
/// plus everything under `extra`; other helpers' /run/urun-test-* directories and
/// users' homes are not included.
fn footprint(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<&str> = vec![
        "/etc",
        "/usr",
        "/lib/systemd",
        "/var/lib/systemd",
        "/var/lib/dpkg/info",
        "-xdev",
        "-path",
        "*urun*",
        "-print",
    ];
    let o = sh("find", &args);
    let mut v: Vec<String> = stdout(&o).lines().map(String::from).collect();
    // In /run only what is ours: other helpers keep their own directories there.
    // /run/urun and urund's state directory with everything in them.
    for p in ["/run/urun", STATE_DIR] {
        if Path::new(p).exists() {
            v.extend(stdout(&sh("find", &[p])).lines().map(String::from));
        }
    }
    for p in [DEFAULT_SOCKET, "/run/urund.pid"] {
        if Path::new(p).exists() {
            v.push(p.to_string());
        }
    }
    for e in extra {
        args = vec![e, "-print"];
        v.extend(stdout(&sh("find", &args)).lines().map(String::from));
    }
    v.sort();
    v.dedup();
    v
}

/// Fails with the paths that differ (not the whole listing) when `after != expected`.
fn assert_same(after: &[String], expected: &[String], what: &str) {
    let extra: Vec<&String> = after.iter().filter(|p| !expected.contains(p)).collect();
    let gone: Vec<&String> = expected.iter().filter(|p| !after.contains(p)).collect();
    assert!(
        extra.is_empty() && gone.is_empty(),
        "{what}: left behind {extra:?}, removed {gone:?}"
    );
}

/// A file, directory or symlink as it was, put back byte for byte (and with its
/// mode and owner) by `Tree::restore`.
#[derive(Clone, PartialEq)]
enum Saved {
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Link(PathBuf),
}

impl Saved {
    fn read(p: &Path) -> Option<Saved> {
        let m = fs::symlink_metadata(p).ok()?;
        let (mode, uid, gid) = (m.mode() & 0o7777, m.uid(), m.gid());
        Some(if m.file_type().is_symlink() {
            Saved::Link(fs::read_link(p).ok()?)
        } else if m.is_dir() {
            Saved::Dir { mode, uid, gid }
        } else {
            Saved::File {
                data: fs::read(p).ok()?,
                mode,
                uid,
                gid,
            }
        })
    }

    /// Makes `p` this again (its parent exists). Best effort: used in `Drop`.
    fn put(&self, p: &Path) {
        if Saved::read(p).as_ref() == Some(self) {
            return;
        }
        match (self, fs::symlink_metadata(p)) {
            (Saved::Dir { .. }, Ok(m)) if m.is_dir() => {}
            (_, Ok(m)) if m.is_dir() => {
                let _ = fs::remove_dir_all(p);
            }
            (_, Ok(_)) => {
                let _ = fs::remove_file(p);
            }
            (_, Err(_)) => {}
        }
        match self {
            Saved::Dir { mode, uid, gid } => {
                let _ = fs::create_dir(p);
                let _ = std::os::unix::fs::chown(p, Some(*uid), Some(*gid));
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(*mode));
            }
            Saved::File {
                data,
                mode,
                uid,
                gid,
            } => {
                let _ = fs::write(p, data);
                let _ = std::os::unix::fs::chown(p, Some(*uid), Some(*gid));
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(*mode));
            }
            Saved::Link(target) => {
                let _ = std::os::unix::fs::symlink(target, p);
            }
        }
    }
}

/// Everything at and below `root` as it was (`None`: `root` did not exist).
struct Tree {
    root: PathBuf,
    entries: Option<Vec<(PathBuf, Saved)>>,
}

/// `root` and everything below it, parents before children (symlinks not followed).
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if fs::symlink_metadata(root).is_err() {
        return out;
    }
    out.push(root.to_path_buf());
    if fs::symlink_metadata(root).is_ok_and(|m| m.is_dir()) {
        let mut children: Vec<PathBuf> = fs::read_dir(root)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        children.sort();
        for c in children {
            out.extend(walk(&c));
        }
    }
    out
}

impl Tree {
    fn save(root: &str) -> Tree {
        let root = PathBuf::from(root);
        let entries = fs::symlink_metadata(&root).is_ok().then(|| {
            walk(&root)
                .into_iter()
                .filter_map(|p| Saved::read(&p).map(|s| (p, s)))
                .collect()
        });
        Tree { root, entries }
    }

    /// Puts `root` back as it was: what was added goes, what changed or went is
    /// written again.
    fn restore(&self) {
        let Some(entries) = &self.entries else {
            match fs::symlink_metadata(&self.root) {
                Ok(m) if m.is_dir() => drop(fs::remove_dir_all(&self.root)),
                Ok(_) => drop(fs::remove_file(&self.root)),
                Err(_) => {}
            }
            return;
        };
        for p in walk(&self.root).into_iter().rev() {
            if !entries.iter().any(|(q, _)| *q == p) {
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => drop(fs::remove_dir_all(&p)),
                    _ => drop(fs::remove_file(&p)),
                }
            }
        }
        if let Some(parent) = self.root.parent() {
            let _ = fs::create_dir_all(parent);
        }
        for (p, s) in entries {
            s.put(p);
        }
    }
}

/// What `packaging/install.sh` (with the default PREFIX) installed here, recorded in
/// its manifest: the directories it created and its files (the manifest itself
/// among them). Its `user` and `image` lines (the demo's) are left alone.
struct InstallCopy {
    dirs: Vec<(PathBuf, Saved)>,
    files: Vec<(PathBuf, Saved)>,
}

const INSTALL_MANIFEST: &str = "/usr/local/share/urun/install-manifest";

impl InstallCopy {
    fn save() -> Option<InstallCopy> {
        let manifest = fs::read_to_string(INSTALL_MANIFEST).ok()?;
        let entries = |kind: &str| -> Vec<(PathBuf, Saved)> {
            manifest
                .lines()
                .filter_map(|l| l.strip_prefix(kind))
                .filter_map(|p| Saved::read(Path::new(p)).map(|s| (PathBuf::from(p), s)))
                .collect()
        };
        let mut dirs = entries("dir ");
        dirs.sort_by_key(|(p, _)| p.as_os_str().len());
        Some(InstallCopy {
            dirs,
            files: entries("file "),
        })
    }

    /// Removes it as `install.sh --uninstall` would (which would also remove the
    /// demo user and image, and urund's state: those stay).
    fn remove(&self) {
        for (p, _) in &self.files {
            let _ = fs::remove_file(p);
        }
        for (d, _) in self.dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }

    fn reinstate(&self) {
        for (p, s) in self.dirs.iter().chain(&self.files) {
            s.put(p);
        }
    }
}

/// The state of the `urun` package in dpkg's database (`ii`, `rc`, ...), if it knows it.
fn package_state() -> Option<String> {
    let o = sh("dpkg-query", &["-W", "-f=${db:Status-Abbrev}", "urun"]);
    let s = stdout(&o).trim().to_string();
    (o.status.success() && !s.is_empty() && s != "un").then_some(s)
}

/// A urund that served the default socket when a test began: how it ran, to be
/// started again the same way.
enum Serving {
    /// Under systemd: the units that were active (install.sh's or the package's).
    Systemd(Vec<&'static str>),
    /// A process started without systemd (by install.sh, which writes
    /// /run/urund.pid and appends to /var/log/urund.log, or by hand as the package's
    /// postinst says): its executable, arguments, environment, working directory and
    /// where its stdout and stderr went.
    Process {
        pid: u32,
        exe: PathBuf,
        args: Vec<std::ffi::OsString>,
        env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
        cwd: PathBuf,
        stdout: PathBuf,
        stderr: PathBuf,
        /// The mode of /run/urund.pid (install.sh's pid file), if it named it: written
        /// again.
        pid_file: Option<u32>,
    },
}

const PID_FILE: &str = "/run/urund.pid";
const URUND_UNITS: [&str; 2] = ["urund.socket", "urund.service"];

fn with_systemd() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Whether a socket listens on `path` (in /proc/net/unix, flag `__SO_ACCEPTCON`).
/// Unlike a connection, which urund would log and audit as an empty request, this
/// leaves no trace in the log of a urund the tests did not start.
fn listening(path: &str) -> bool {
    read(Path::new("/proc/net/unix")).lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 8
            && f[7] == path
            && u32::from_str_radix(f[3], 16).is_ok_and(|fl| fl & 0x10000 != 0)
    })
}

/// Whether the process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

impl Serving {
    /// The urund serving the default socket, if any: how it runs (nothing is changed).
    fn find() -> Option<Serving> {
        if with_systemd() {
            let active: Vec<&'static str> = URUND_UNITS
                .into_iter()
                .filter(|u| {
                    sh("systemctl", &["is-active", "--quiet", u])
                        .status
                        .success()
                })
                .collect();
            if !active.is_empty() {
                return Some(Serving::Systemd(active));
            }
        }
        if !listening(DEFAULT_SOCKET) {
            return None;
        }
        // urund writes its pid into the lock of its socket's directory.
        let lock = Path::new(DEFAULT_SOCKET).with_file_name("urund.lock");
        let pid: u32 = read(&lock).trim().parse().unwrap_or_else(|_| {
            panic!(
                "a urund serves {DEFAULT_SOCKET} but {} names no pid",
                lock.display()
            )
        });
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let exe = fs::read_link(proc.join("exe")).unwrap();
        // A binary replaced since it started reads "PATH (deleted)": start PATH again.
        let exe = PathBuf::from(exe.to_string_lossy().trim_end_matches(" (deleted)"));
        assert!(
            exe.ends_with("urund"),
            "pid {pid} in {} is {exe:?}",
            lock.display()
        );
        use std::os::unix::ffi::OsStrExt;
        let split = |b: Vec<u8>| -> Vec<std::ffi::OsString> {
            b.split(|c| *c == 0)
                .filter(|w| !w.is_empty())
                .map(|w| std::ffi::OsStr::from_bytes(w).to_os_string())
                .collect()
        };
        let args = split(fs::read(proc.join("cmdline")).unwrap())
            .into_iter()
            .skip(1)
            .collect();
        let env = split(fs::read(proc.join("environ")).unwrap_or_default())
            .into_iter()
            .filter_map(|kv| {
                let kv = kv.as_bytes();
                let eq = kv.iter().position(|c| *c == b'=')?;
                Some((
                    std::ffi::OsStr::from_bytes(&kv[..eq]).to_os_string(),
                    std::ffi::OsStr::from_bytes(&kv[eq + 1..]).to_os_string(),
                ))
            })
            .collect();
        // Where its output went, if that was a file (else nowhere).
        let target = |fd: u32| -> PathBuf {
            match fs::read_link(proc.join(format!("fd/{fd}"))) {
                Ok(p) if p.is_absolute() && p.is_file() => p,
                _ => PathBuf::from("/dev/null"),
            }
        };
        Some(Serving::Process {
            pid,
            exe,
            args,
            env,
            cwd: fs::read_link(proc.join("cwd")).unwrap_or_else(|_| PathBuf::from("/")),
            stdout: target(1),
            stderr: target(2),
            pid_file: (read(Path::new(PID_FILE)).trim() == pid.to_string())
                .then(|| fs::metadata(PID_FILE).map_or(0o600, |m| m.mode() & 0o7777)),
        })
    }

    /// Stops it cleanly (SIGTERM: urund removes its containers, runtime directory,
    /// lock and socket).
    fn stop(&self) {
        match self {
            Serving::Systemd(_) => ok(
                &sh("systemctl", &["stop", "urund.socket", "urund.service"]),
                "systemctl stop",
            ),
            Serving::Process { pid, .. } => {
                ok(
                    &sh("kill", &["-TERM", &pid.to_string()]),
                    "kill -TERM urund",
                );
                let t = Instant::now();
                while !gone(*pid) {
                    assert!(
                        t.elapsed() < Duration::from_secs(20),
                        "urund (pid {pid}) did not stop"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        assert!(!listening(DEFAULT_SOCKET), "urund still listens");
    }

    /// Starts it again the way it had been started. Best effort (used in `Drop`):
    /// says on stderr what failed.
    fn start(&self) {
        match self {
            Serving::Systemd(units) => {
                let _ = sh("systemctl", &["daemon-reload"]);
                for u in units {
                    let o = sh("systemctl", &["start", u]);
                    if !o.status.success() {
                        eprintln!("systemctl start {u}: {}", stderr(&o));
                    }
                }
            }
            Serving::Process {
                exe,
                args,
                env,
                cwd,
                stdout: out,
                stderr: err,
                pid_file,
                ..
            } => {
                // As install.sh does: umask 077, nohup in the background, appending to
                // the log; the same arguments and environment as before. In a session
                // of its own, so that nothing sent to the test's terminal reaches it.
                let script = r#"umask 077; out=$1; err=$2; shift 2
                    if [ "$out" = "$err" ]; then nohup setsid "$@" >>"$out" 2>&1 </dev/null &
                    else nohup setsid "$@" >>"$out" 2>>"$err" </dev/null & fi
                    echo $!"#;
                let o = Command::new("sh")
                    .args(["-c", script, "sh"])
                    .arg(out)
                    .arg(err)
                    .arg(exe)
                    .args(args)
                    .env_clear()
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .current_dir(cwd)
                    .output();
                let pid = match o {
                    Ok(o) if o.status.success() => stdout(&o).trim().to_string(),
                    other => {
                        eprintln!("starting {exe:?} again: {other:?}");
                        return;
                    }
                };
                if let Some(mode) = pid_file {
                    write_mode(Path::new(PID_FILE), format!("{pid}\n").as_bytes(), *mode);
                }
            }
        }
        let t = Instant::now();
        while !listening(DEFAULT_SOCKET) {
            if t.elapsed() > Duration::from_secs(20) {
                eprintln!("the urund started again does not serve {DEFAULT_SOCKET}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The footprint (see `footprint`) of the host as a test found it.
#[derive(Clone)]
struct Found {
    paths: Vec<String>,
    /// The package was there (installed or in state "rc").
    package: bool,
}

impl Found {
    /// Fails unless the host's footprint is what it was, except for dpkg's own
    /// records of a package that was there before (reinstating it rewrites them).
    fn assert_restored(&self, extra: &[&str]) {
        let comparable = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .filter(|p| !(self.package && p.starts_with("/var/lib/dpkg/info/urun.")))
                .collect()
        };
        assert_same(
            &comparable(footprint(extra)),
            &comparable(self.paths.clone()),
            "after restoring the host",
        );
    }
}

/// What the real installation tests change on this machine, restored on drop.
///
/// `save` finds an installation of urun as it is (a urund serving the default
/// socket, under systemd or started by install.sh or by hand; install.sh's copy; the
/// package installed or in state "rc"), records it, stops urund and takes the copy
/// and the package away, so that a test starts from a host without urun. `Drop`
/// removes what the test installed and puts everything back: the files byte for
/// byte, the package in its state, urund started again the same way.
struct HostState {
    /// The footprint as found, before anything was stopped.
    found: Found,
    /// The package's state in dpkg (`ii`, `rc`) as found.
    package: Option<String>,
    /// The package built from this tree, to reinstate `package`.
    reinstate_deb: Option<PathBuf>,
    /// Whether a package here now is the test's, to be purged on drop (not before
    /// the one found was recorded and taken away).
    purge_on_drop: bool,
    install_copy: Option<InstallCopy>,
    /// Likewise for an install.sh copy.
    uninstall_on_drop: bool,
    serving: Option<Serving>,
    /// `getent group urun` as found.
    group: Option<String>,
    /// /etc/urun, /var/lib/urun (urund's state), install.sh's log, the audit file.
    trees: Vec<Tree>,
    run_urun: bool,
    /// An empty /run/urun/run without urund's marker, as an urund from before the
    /// marker leaves it: urund replaces it (and removes its own at a clean stop), so
    /// the intermediate comparisons leave it out; it is put back on drop.
    old_runtime: bool,
    /// The urund a test started by hand, stopped if still running.
    urund: Option<Child>,
    user: Option<String>,
    dir: PathBuf,
}

impl HostState {
    /// `extra`: what the test adds to the footprint it compares.
    fn save(extra: &[&str]) -> HostState {
        image();
        let dir = PathBuf::from(format!("/run/urun-test-pkg-{}", unique()));
        fs::create_dir_all(&dir).unwrap();
        // Built first and filled step by step, each record before the change it
        // undoes, so that `Drop` puts back what was changed also when a step fails.
        let mut host = HostState {
            found: Found {
                paths: footprint(extra),
                package: false,
            },
            package: None,
            reinstate_deb: None,
            purge_on_drop: false,
            install_copy: None,
            uninstall_on_drop: false,
            serving: None,
            group: sh("getent", &["group", "urun"])
                .status
                .success()
                .then(|| stdout(&sh("getent", &["group", "urun"])).trim().to_string()),
            trees: vec![],
            run_urun: Path::new("/run/urun").is_dir(),
            old_runtime: fs::read_dir(OLD_RUNTIME).is_ok_and(|mut d| d.next().is_none()),
            urund: None,
            user: None,
            dir,
        };
        // Stopped first, so that its last words (log, audit summaries) are saved too.
        host.serving = Serving::find();
        if let Some(s) = &host.serving {
            s.stop();
        }

        let mut trees: Vec<Tree> = ["/etc/urun", STATE_DIR, "/var/log/urund.log"]
            .into_iter()
            .map(Tree::save)
            .collect();
        // The audit file the administrator's policy names (or its directory, if urund
        // would create that).
        let audit = fs::read_to_string("/etc/urun/policy.toml")
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| t.get("audit")?.get("file")?.as_str().map(PathBuf::from));
        if let Some(a) = audit {
            let p = match a.parent() {
                Some(d) if !d.exists() => d.to_path_buf(),
                _ => a,
            };
            trees.push(Tree::save(p.to_str().unwrap()));
        }
        host.trees = trees;

        host.install_copy = InstallCopy::save();
        if let Some(c) = &host.install_copy {
            c.remove();
        }
        // From here on an install.sh copy is the test's.
        host.uninstall_on_drop = true;
        let _ = fs::remove_file(PID_FILE);

        // The package is reinstated from this tree (with the binaries this test was
        // built with): dpkg cannot give back the .deb it was installed from. The
        // administrator's configuration files (/etc/urun) are put back byte for byte
        // afterwards, so only dpkg's own records (the conffile's recorded checksum,
        // the version, the size) may differ from before.
        if let Some(state) = package_state() {
            let o = sh(
                src("packaging/build-deb.sh").to_str().unwrap(),
                &[
                    "--bin-dir",
                    bin_dir().to_str().unwrap(),
                    "--out",
                    host.dir.join("reinstate").to_str().unwrap(),
                ],
            );
            ok(
                &o,
                "packaging/build-deb.sh (to reinstate the package afterwards)",
            );
            host.reinstate_deb = Some(PathBuf::from(stdout(&o).trim()));
            host.package = Some(state);
            host.found.package = true;
            host.purge_on_drop = true;
            ok(
                &dpkg(&["--purge", "urun"]),
                "dpkg --purge urun (reinstated afterwards)",
            );
        }
        // From here on the package is the test's.
        host.purge_on_drop = true;
        host
    }

    /// `v` without what urund replaces and removes by design (see `old_runtime`).
    fn expected(&self, v: Vec<String>) -> Vec<String> {
        v.into_iter()
            .filter(|p| !(self.old_runtime && p == OLD_RUNTIME))
            .collect()
    }

    /// A user in the `urun` group, as README says to add one (`usermod -aG urun`): a
    /// supplementary member with their own primary group (urund never gives a container
    /// the access group's gid). `userdel` takes them off the group's member list again.
    fn user(&mut self) -> (String, u32, u32) {
        let name = format!("urp{}", unique());
        ok(
            &sh("useradd", &["-m", "-G", "urun", "-s", "/bin/sh", &name]),
            "useradd",
        );
        self.user = Some(name.clone());
        let uid = stdout(&sh("id", &["-u", &name])).trim().parse().unwrap();
        let gid = stdout(&sh("id", &["-g", &name])).trim().parse().unwrap();
        (name, uid, gid)
    }

    fn wait_socket(&mut self, log: &Path) {
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(DEFAULT_SOCKET).is_err() {
            if let Some(c) = self.urund.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("urund exited ({st}):\n{}", read(log));
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "urund did not come up:\n{}",
                read(log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

/// dpkg, serialised with tests/setup.sh's apt-get through the same lock.
fn dpkg(args: &[&str]) -> Output {
    let mut a = vec!["/run/urun-test-setup.lock", "dpkg"];
    a.extend(args);
    Command::new("flock")
        .args(&a)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap()
}

impl Drop for HostState {
    fn drop(&mut self) {
        // 1. What the test installed and started goes.
        if let Some(mut c) = self.urund.take() {
            // SIGTERM first: urund then removes its socket and containers.
            let _ = sh("kill", &["-TERM", &c.id().to_string()]);
            let t = Instant::now();
            while matches!(c.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.purge_on_drop && package_state().is_some() {
            let _ = dpkg(&["--purge", "urun"]);
        }
        if self.uninstall_on_drop && Path::new(INSTALL_MANIFEST).exists() {
            let _ = Command::new(src("packaging/install.sh"))
                .arg("--uninstall")
                .output();
        }
        if let Some(u) = &self.user {
            let _ = sh("pkill", &["-KILL", "-u", u]);
            let _ = sh("userdel", &["-r", "-f", u]);
        }

        // 2. What was there comes back: the package in its state, install.sh's copy,
        // the files, the group, then urund.
        if let (Some(state), Some(deb)) = (&self.package, &self.reinstate_deb) {
            let o = dpkg(&[
                "-i",
                "--force-confdef",
                "--force-confold",
                deb.to_str().unwrap(),
            ]);
            if !o.status.success() {
                eprintln!("reinstating the package: {}", stderr(&o));
            }
            if state.starts_with('r') {
                // "rc": removed, its configuration files kept.
                let _ = dpkg(&["--remove", "urun"]);
            }
        }
        if let Some(c) = &self.install_copy {
            c.reinstate();
        }
        for t in &self.trees {
            t.restore();
        }
        if self.run_urun && !Path::new("/run/urun").exists() {
            let _ = fs::create_dir("/run/urun");
            let _ = fs::set_permissions("/run/urun", fs::Permissions::from_mode(0o755));
        }
        if self.old_runtime && !Path::new(OLD_RUNTIME).exists() {
            let _ = fs::create_dir_all(OLD_RUNTIME);
            let _ = fs::set_permissions(OLD_RUNTIME, fs::Permissions::from_mode(0o700));
        }
        match &self.group {
            None => {
                let _ = sh("groupdel", &["urun"]);
            }
            Some(line) => {
                // Its members as they were (userdel took the test's user off already).
                let members = line.rsplit(':').next().unwrap_or("");
                if stdout(&sh("getent", &["group", "urun"])).trim() != line {
                    let _ = sh("gpasswd", &["-M", members, "urun"]);
                }
            }
        }
        if let Some(s) = &self.serving {
            s.start();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs `program ARGS` as `user` (real and effective ids, their groups).
fn as_user(user: &str, program: &str, args: &[&str]) -> Output {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={user}"),
        &format!("--regid={}", stdout(&sh("id", &["-g", user])).trim()),
        "--init-groups",
        "--reset-env",
        "--",
        program,
    ])
    .args(args);
    run_with_input(c, b"")
}

#[test]
#[serial]
fn debian_package_installs_runs_for_a_member_and_purges_without_leftovers() {
    let mut host = HostState::save(&[]);
    let before = footprint(&[]);
    // An administrator's policy left by an earlier installation (install.sh keeps it).
    let theirs = fs::read("/etc/urun/policy.toml").ok();

    // Build the package from this tree and the binaries just built.
    let out = host.dir.join("deb");
    let o = sh(
        src("packaging/build-deb.sh").to_str().unwrap(),
        &[
            "--bin-dir",
            bin_dir().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    ok(&o, "packaging/build-deb.sh");
    let deb = stdout(&o).trim().to_string();
    let listing = stdout(&sh("dpkg-deb", &["-c", &deb]));
    for f in [
        "./usr/bin/urun",
        "./usr/sbin/urund",
        "./lib/systemd/system/urund.socket",
        "./lib/systemd/system/urund.service",
        "./usr/lib/sysusers.d/urun.conf",
        "./usr/lib/tmpfiles.d/urun.conf",
        "./etc/urun/policy.toml",
        "./usr/share/doc/urun/SECURITY.md",
    ] {
        assert!(
            listing.contains(f),
            "{f} missing from the package:\n{listing}"
        );
    }
    if src("examples/gen-docs.rs").exists() {
        for f in ["urun.1.gz", "urund.8.gz", "completions/urun"] {
            assert!(listing.contains(f), "{f} missing:\n{listing}");
        }
    }
    if src("packaging/shell/urun.sh").exists() {
        assert!(
            listing.contains("./usr/share/urun/shell/urun.sh"),
            "{listing}"
        );
    }
    assert!(
        !listing.contains("rws") && !listing.contains("r-s"),
        "no setuid/setgid file:\n{listing}"
    );
    let conffiles = stdout(&sh("dpkg-deb", &["-I", &deb, "conffiles"]));
    assert_eq!(conffiles.trim(), "/etc/urun/policy.toml");

    // Install.
    let o = dpkg(&["-i", "--force-confdef", "--force-confold", &deb]);
    ok(&o, "dpkg -i");
    assert!(
        stdout(&o).contains("systemd is not running here")
            || Path::new("/run/systemd/system").is_dir(),
        "postinst should say how to start urund without systemd:\n{}",
        stdout(&o)
    );
    assert!(sh("getent", &["group", "urun"]).status.success());
    assert!(
        Path::new("/etc/systemd/system/sockets.target.wants/urund.socket").exists(),
        "postinst did not enable urund.socket"
    );
    let policy = fs::metadata("/etc/urun/policy.toml").unwrap();
    assert_eq!((policy.uid(), policy.mode() & 0o7777), (0, 0o644));
    verify_units(
        Path::new("/lib/systemd/system/urund.socket"),
        Path::new("/lib/systemd/system/urund.service"),
    );

    // No systemd here: start the installed urund by hand, as postinst says, with the
    // installed policy and the default socket.
    let log = host.dir.join("urund.log");
    host.urund = Some(
        Command::new("/usr/sbin/urund")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    host.wait_socket(&log);
    let (user, uid, gid) = host.user();
    let o = as_user(
        &user,
        "/usr/bin/urun",
        &[image(), "sh", "-c", "id -u; id -g; exit 7"],
    );
    assert_eq!(o.status.code(), Some(7), "{}\n{}", stderr(&o), read(&log));
    assert_eq!(stdout(&o), format!("{uid}\n{gid}\n"));

    // Remove: prerm stops urund (cleanly); only the conffile stays, and dpkg's own
    // record of it (the package is in state "rc").
    let o = dpkg(&["--remove", "urun"]);
    ok(&o, "dpkg --remove");
    let mut urund = host.urund.take().unwrap();
    let t = Instant::now();
    let st = loop {
        if let Ok(Some(st)) = urund.try_wait() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "prerm did not stop urund"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "urund: {st}\n{}", read(&log));
    assert!(!Path::new(DEFAULT_SOCKET).exists());
    // /run/urun goes with the package when empty, even if it existed before.
    let without_run =
        |v: Vec<String>| -> Vec<String> { v.into_iter().filter(|p| p != "/run/urun").collect() };
    let mut after = without_run(footprint(&[]));
    after.retain(|p| !p.starts_with("/var/lib/dpkg/info/urun."));
    let mut expected = host.expected(without_run(before.clone()));
    // Kept on remove: the conffile, and urund's state (the secret its containers are
    // labelled with, so a reinstalled urund still removes them; the records of users'
    // builds, whose images stay on the engine).
    let mut kept = vec![
        "/etc/urun",
        "/etc/urun/policy.toml",
        STATE_DIR,
        "/var/lib/urun/instance",
        "/var/lib/urun/builds",
    ];
    // An administrator's policy that was there before and differs from the package's
    // is kept by dpkg (--force-confold), with the package's version beside it.
    let packaged = fs::read(src("packaging/policy.toml")).unwrap();
    if theirs.is_some_and(|data| data != packaged) {
        kept.push("/etc/urun/policy.toml.dpkg-dist");
    }
    for k in kept {
        if !expected.iter().any(|p| p == k) {
            expected.push(k.to_string());
        }
    }
    expected.sort();
    assert_same(&after, &expected, "dpkg --remove");
    assert!(
        Path::new("/etc/urun/policy.toml").exists(),
        "the conffile stays"
    );

    // Purge: the conffile goes too (restored by the test afterwards if it was there
    // before), and dpkg forgets the package.
    let o = dpkg(&["--purge", "urun"]);
    ok(&o, "dpkg --purge");
    let after = without_run(footprint(&[]));
    let mut expected = host.expected(without_run(before.clone()));
    expected.retain(|p| !p.starts_with("/etc/urun") && !is_state(p));
    assert_same(&after, &expected, "dpkg --purge");
    let found = host.found.clone();
    drop(host);
    found.assert_restored(&[]);
}

#[test]
#[serial]
fn install_script_installs_runs_for_a_member_and_uninstalls_without_leftovers() {
    let extra = [
        "/usr/local",
        "/etc/systemd/system",
        "/etc/sysusers.d",
        "/etc/tmpfiles.d",
    ];
    let mut host = HostState::save(&extra);
    let before = footprint(&extra);

    let o = Command::new(src("packaging/install.sh"))
        .args(["--bin-dir", bin_dir().to_str().unwrap()])
        .env("PREFIX", "/usr/local")
        .output()
        .unwrap();
    ok(&o, "packaging/install.sh");
    assert!(stdout(&o).contains("urund running (pid"), "{}", stdout(&o));
    for f in [
        "/usr/local/bin/urun",
        "/usr/local/sbin/urund",
        "/etc/systemd/system/urund.socket",
        "/etc/systemd/system/urund.service",
        "/etc/sysusers.d/urun.conf",
        "/etc/tmpfiles.d/urun.conf",
        "/etc/urun/policy.toml",
    ] {
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    if src("examples/gen-docs.rs").exists() {
        for f in [
            "/usr/local/share/man/man1/urun.1",
            "/usr/local/share/man/man8/urund.8",
            "/usr/local/share/bash-completion/completions/urun",
        ] {
            assert!(Path::new(f).exists(), "{f} not installed");
        }
    }
    if src("packaging/shell/urun.sh").exists() {
        assert!(Path::new("/usr/local/share/urun/shell/urun.sh").exists());
    }
    let unit = fs::read_to_string("/etc/systemd/system/urund.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/local/sbin/urund "), "{unit}");
    verify_units(
        Path::new("/etc/systemd/system/urund.socket"),
        Path::new("/etc/systemd/system/urund.service"),
    );
    let pid = fs::read_to_string("/run/urund.pid")
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        Path::new("/usr/local/sbin/urund")
    );

    let (user, uid, _gid) = host.user();
    let o = as_user(&user, "/usr/local/bin/urun", &[image(), "id", "-u"]);
    ok(&o, "urun after install.sh");
    assert_eq!(stdout(&o), format!("{uid}\n"));

    let o = Command::new(src("packaging/install.sh"))
        .arg("--uninstall")
        .output()
        .unwrap();
    ok(&o, "packaging/install.sh --uninstall");
    let t = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "urund still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!Path::new("/run/urund.pid").exists());
    let mut after = footprint(&extra);
    let mut expected = host.expected(before.clone());
    // Kept by design: the policy and the log (checked, then removed by the test).
    after.retain(|p| p != "/etc/urun" && p != "/etc/urun/policy.toml" && p != "/run/urun");
    expected.retain(|p| p != "/etc/urun" && p != "/etc/urun/policy.toml" && p != "/run/urun");
    // The uninstall removes urund's state (restored by the test if it was there).
    expected.retain(|p| !is_state(p));
    assert_same(&after, &expected, "install.sh --uninstall");
    assert!(
        Path::new("/etc/urun/policy.toml").exists(),
        "the policy is kept"
    );
    let found = host.found.clone();
    drop(host);
    found.assert_restored(&extra);
}
