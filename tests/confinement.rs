//! Regression tests for confinement weaknesses found by an adversarial review: the
//! pinned working directory, image references and VOLUMEs, the caller's gid, container
//! names on the isolated network, mounts over the forced ones, /tmp, /etc/group. Each
//! runs the real urund and urun as real users against the real Docker daemon, and
//! fails on the code before its fix. Everything a test creates on the host (mounts,
//! namespaces, images, networks, users) is removed by a guard, also when it fails.

mod common;

use common::*;
use serial_test::serial;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const MOUNTS_ON: &str = "[mounts]\nworkdir = true\nroots = [\"/home\"]\n";

fn setup(extra_policy: &str) -> (TestGroup, TestUser, Daemon) {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::start(&format!("{}{extra_policy}", policy_for(&g)));
    (g, u, d)
}

/// urund's runtime directory (pinned mounts live below it).
fn runtime(d: &Daemon) -> PathBuf {
    d.socket.parent().unwrap().join("run")
}

fn home(u: &TestUser) -> PathBuf {
    PathBuf::from(format!("/home/{}", u.name))
}

/// A directory owned by `u` (0755) with an executable `true` (busybox: it picks its
/// applet by name) and a `marker` file.
fn user_dir(u: &TestUser, path: &Path) -> PathBuf {
    fs::create_dir_all(path).unwrap();
    fs::write(path.join("marker"), "original").unwrap();
    fs::copy("/bin/busybox", path.join("true")).unwrap();
    fs::set_permissions(path.join("true"), fs::Permissions::from_mode(0o755)).unwrap();
    for p in [path.to_path_buf(), path.join("marker"), path.join("true")] {
        std::os::unix::fs::chown(&p, Some(u.uid), Some(u.gid)).unwrap();
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

/// `urun ARGS` as `u`, started in `cwd`.
fn run_in(d: &Daemon, u: &TestUser, cwd: &Path, args: &[&str]) -> Output {
    let mut c = d.urun(u, args);
    c.current_dir(cwd);
    run_with_input(c, b"")
}

fn assert_refused(o: &Output, words: &[&str]) {
    let e = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(125),
        "stdout {} stderr {e}",
        stdout(o)
    );
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    for w in words {
        assert!(e.contains(w), "{w:?} not in {e}");
    }
}

fn must(cmd: &str, args: &[&str]) -> String {
    let o = sh(cmd, args);
    assert!(o.status.success(), "{cmd} {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// The per-mount options (field 6 of mountinfo) of the mount at `target`, from a
/// mountinfo text.
fn options_at(mountinfo: &str, target: &str) -> Option<Vec<String>> {
    mountinfo
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .filter(|f| f.len() > 5 && f[4] == target)
        .map(|f| f[5].split(',').map(String::from).collect())
        .last()
}

/// A bind mount of a directory onto itself, with per-mount flags an administrator
/// chose; lazily unmounted on drop.
struct BindMount(PathBuf);

impl BindMount {
    fn new(dir: &Path, options: &str) -> BindMount {
        let p = dir.to_str().unwrap();
        must("mount", &["--bind", p, p]);
        let m = BindMount(dir.to_path_buf());
        must("mount", &["-o", &format!("remount,bind,{options}"), p]);
        m
    }

    fn remount(&self, options: &str) {
        let p = self.0.to_str().unwrap();
        must("mount", &["-o", &format!("remount,bind,{options}"), p]);
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = sh("umount", &["-l", self.0.to_str().unwrap()]);
    }
}

/// A process in a mount namespace of its own that receives mounts propagated from
/// the host's shared mounts (`unshare -m --propagation slave`); killed on drop.
struct SlaveNamespace(Child);

impl SlaveNamespace {
    fn new() -> SlaveNamespace {
        let c = Command::new("unshare")
            .args(["-m", "--propagation", "slave", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let ns = SlaveNamespace(c);
        let mine = fs::read_link("/proc/self/ns/mnt").unwrap();
        let t = Instant::now();
        // unshare has made its namespace once its own differs from ours
        while fs::read_link(format!("/proc/{}/ns/mnt", ns.0.id())).ok() == Some(mine.clone()) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "unshare did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        ns
    }

    fn mountinfo(&self) -> String {
        fs::read_to_string(format!("/proc/{}/mountinfo", self.0.id())).unwrap_or_default()
    }
}

impl Drop for SlaveNamespace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ───────────────────────── the pinned working directory ─────────────────────────

#[test]
#[serial]
fn a_readonly_noexec_directory_stays_readonly_and_noexec_through_the_pin() {
    let (_g, u, d) = setup(MOUNTS_ON);
    let dir = user_dir(&u, &home(&u).join("ro"));
    let bind = BindMount::new(&dir, "ro,noexec");
    let probe = "grep ' /w ' /proc/self/mountinfo | cut -d' ' -f6; \
                 ./true && echo EXECUTED; touch new 2>/dev/null && echo WROTE; cat marker";
    let o = run_in(
        &d,
        &u,
        &dir,
        &["-v", ".:/w:ro", "-w", "/w", image(), "sh", "-c", probe],
    );
    let out = stdout(&o);
    let l: Vec<&str> = out.lines().collect();
    assert!(!l.is_empty(), "{}", stderr(&o));
    let opts: Vec<&str> = l[0].split(',').collect();
    for want in ["ro", "noexec", "nosuid", "nodev"] {
        assert!(opts.contains(&want), "{want} missing: {out} {}", stderr(&o));
    }
    assert!(!out.contains("EXECUTED") && !out.contains("WROTE"), "{out}");
    assert!(out.ends_with("original"), "{out}");
    // Read-write is refused outright: the source is read-only.
    let o = run_in(&d, &u, &dir, &["-v", ".:/w", image(), "touch", "/w/new"]);
    assert_refused(&o, &["mounts.readonly", ":ro"]);
    let o = run_in(&d, &u, &dir, &["--here", image(), "true"]);
    assert_refused(&o, &["mounts.readonly"]);
    assert!(!dir.join("new").exists());
    // A read-write source keeps its noexec and nosymfollow.
    bind.remount("rw,noexec,nosymfollow");
    fs::write(dir.join("x"), "").unwrap();
    std::os::unix::fs::symlink("x", dir.join("link")).unwrap();
    let o = run_in(
        &d,
        &u,
        &dir,
        &[
            "-v",
            ".:/w",
            "-w",
            "/w",
            image(),
            "sh",
            "-c",
            "grep ' /w ' /proc/self/mountinfo | cut -d' ' -f6; ./true && echo EXECUTED; \
             cat link 2>/dev/null && echo FOLLOWED; touch new && echo WROTE",
        ],
    );
    let out = stdout(&o);
    let opts: Vec<&str> = out.lines().next().unwrap_or("").split(',').collect();
    for want in ["rw", "noexec", "nosymfollow", "nosuid", "nodev"] {
        assert!(opts.contains(&want), "{want} missing: {out} {}", stderr(&o));
    }
    assert!(
        !out.contains("EXECUTED") && !out.contains("FOLLOWED"),
        "{out}"
    );
    assert!(out.contains("WROTE"), "{out} {}", stderr(&o));
    assert!(mounts_under(&runtime(&d)).is_empty());
    assert!(d.containers().is_empty());
}

#[test]
#[serial]
fn the_pin_never_appears_unrestricted_in_another_mount_namespace() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::prepare(&format!("{}{MOUNTS_ON}", policy_for(&g)));
    // The runtime directory on a shared mount, as /run is on systemd hosts.
    let sock_dir = d.socket.parent().unwrap().to_path_buf();
    fs::create_dir_all(&sock_dir).unwrap();
    fs::set_permissions(&sock_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let shared = BindMount::new(&sock_dir, "rw");
    must("mount", &["--make-shared", sock_dir.to_str().unwrap()]);
    let d = d.launch();
    // (dropped before the daemon, which then removes its directory)
    let shared = shared;
    let ns = SlaveNamespace::new();
    let dir = user_dir(&u, &home(&u).join("src"));
    let _source = BindMount::new(&dir, "ro,noexec");
    let mut run = d
        .urun(&u, &["-v", ".:/w:ro", image(), "sleep", "3"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Watch the other namespace for as long as the run lasts.
    let rt = runtime(&d).display().to_string();
    let mut seen = Vec::new();
    let t = Instant::now();
    while run.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(60), "run did not end");
        for l in ns.mountinfo().lines() {
            if l.split(' ').nth(4).is_some_and(|m| m.starts_with(&rt)) {
                seen.push(l.to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = run.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for l in &seen {
        let opts: Vec<&str> = l.split(' ').nth(5).unwrap().split(',').collect();
        for want in ["ro", "noexec", "nosuid", "nodev"] {
            assert!(opts.contains(&want), "visible without {want}: {l}");
        }
    }
    // And once the run is over it is gone there too.
    let left: Vec<String> = ns
        .mountinfo()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&rt)))
        .map(String::from)
        .collect();
    assert!(left.is_empty(), "left in the other namespace: {left:?}");
    assert!(mounts_under(&runtime(&d)).is_empty());
    drop(shared);
}
