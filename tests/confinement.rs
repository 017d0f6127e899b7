//! Regression tests for confinement weaknesses found by an adversarial review: the
//! pinned working directory, image references and VOLUMEs (also in the identity
//! probe), image healthchecks, a working directory runc would create in the mount,
//! the caller's gid, container names on the isolated network, mounts over the forced
//! ones, /tmp, /etc/group. Each runs the real urund and urun as real users against
//! the real Docker daemon, and fails on the code before its fix. Everything a test
//! creates on the host (mounts, namespaces, images, networks, users) is removed by a
//! guard, also when it fails.

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

/// One line of mountinfo: (per-mount options, file system type, super options).
fn mount_line(line: &str) -> (Vec<String>, String, String) {
    let (left, right) = line.split_once(" - ").unwrap_or((line, ""));
    let opts = left.split(' ').nth(5).unwrap_or("");
    let r: Vec<&str> = right.split(' ').collect();
    (
        opts.split(',').map(String::from).collect(),
        r.first().unwrap_or(&"").to_string(),
        r.get(2).unwrap_or(&"").to_string(),
    )
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

// ───────────────────────────── images ─────────────────────────────

#[test]
#[serial]
fn an_image_id_prefix_cannot_get_past_the_image_allow_list() {
    let img = TestImage::build(
        &format!("urun-test/idprefix{}:v1", unique()),
        &format!("FROM {}\nCOPY marker /marker\n", image()),
        |dir| fs::write(dir.join("marker"), "not-allowed\n").unwrap(),
    );
    let id = image_id(&img.0);
    let hex = id.strip_prefix("sha256:").unwrap().to_string();
    let short = hex[..12].to_string();
    // Only :latest tags are allowed; the image's only tag is :v1.
    let (g, u, d) = setup("[images]\nallow = [\"*:latest\"]\n");
    for typed in [short.as_str(), &format!("sha256:{short}"), &hex] {
        let o = d.run(&u, &[typed, "cat", "/marker"], b"");
        assert!(!stdout(&o).contains("not-allowed"), "{typed} ran it");
        assert_refused(&o, &["images.reference"]);
    }
    let o = d.run(&u, &[&img.0, "cat", "/marker"], b"");
    assert_refused(&o, &["images.allow"]);
    let o = d.run(&u, &[&id, "cat", "/marker"], b"");
    assert_refused(&o, &["images.allow"]);
    assert!(d.containers().is_empty());
    drop(d);
    // Where every image is allowed, the full ID runs it; a prefix still does not.
    let d = Daemon::start(&format!("{}[images]\nallow = [\"*\"]\n", policy_for(&g)));
    let o = d.run(&u, &[&id, "cat", "/marker"], b"");
    assert_eq!(stdout(&o), "not-allowed\n", "{}", stderr(&o));
    let o = d.run(&u, &[&short, "cat", "/marker"], b"");
    assert_refused(&o, &["images.reference"]);
}

/// The test image with `VOLUME`s (and content in one of them).
fn image_with_volumes(volumes: &[&str]) -> TestImage {
    TestImage::build(
        &format!("urun-test/volumes{}:latest", unique()),
        &format!(
            "FROM {}\nCOPY marker /data/marker\nVOLUME {}\n",
            image(),
            serde_json::to_string(volumes).unwrap()
        ),
        |dir| fs::write(dir.join("marker"), "image content\n").unwrap(),
    )
}

#[test]
#[serial]
fn an_image_volume_is_a_sized_tmpfs_never_a_disk_backed_docker_volume() {
    let img = image_with_volumes(&["/data", "/cache/"]);
    let (g, u, d) = setup(&format!("[limits]\ntmpfs_size = \"8m\"\n{MOUNTS_ON}"));
    let probe = "for v in /data /cache; do grep \" $v \" /proc/self/mountinfo; done; \
                 dd if=/dev/zero of=/data/big bs=1M count=16 2>/dev/null || echo FULL; \
                 ls /data; sleep 3";
    let run = d
        .urun(&u, &[&img.0, "sh", "-c", probe])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_running(1, Duration::from_secs(20));
    let cid = d.containers()[0].clone();
    let kinds = must(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}",
            &cid,
        ],
    );
    assert!(!kinds.contains("volume"), "Docker volumes: {kinds}");
    let o = run.wait_with_output().unwrap();
    let out = stdout(&o);
    let l: Vec<&str> = out.lines().collect();
    assert!(l.len() >= 3, "{out} {}", stderr(&o));
    for line in &l[..2] {
        let (opts, fs, sb) = mount_line(line);
        for want in ["rw", "nosuid", "nodev", "noexec"] {
            assert!(opts.iter().any(|o| o == want), "{want} missing: {line}");
        }
        assert_eq!(fs, "tmpfs", "{line}");
        assert!(sb.split(',').any(|o| o == "size=8192k"), "{line}");
    }
    // Writable by the caller, no bigger than tmpfs_size; the image's content is not there.
    assert_eq!(l[2], "FULL", "{out}");
    assert_eq!(l[3..], ["big"], "{out}");
    drop(d);
    // The policy can refuse such images instead.
    let d = Daemon::start(&format!(
        "{}[images]\nvolumes = \"refuse\"\n",
        policy_for(&g)
    ));
    let o = d.run(&u, &[&img.0, "true"], b"");
    assert_refused(&o, &["images.volumes", "/cache, /data"]);
    drop(d);
    // A volume that would hide a forced mount, and a working directory over a volume.
    let (_g, u, d) = setup(MOUNTS_ON);
    let bad = image_with_volumes(&["/sbin"]);
    let o = d.run(&u, &[&bad.0, "true"], b"");
    assert_refused(&o, &["images.volumes", "/sbin/docker-init"]);
    let dir = user_dir(&u, &home(&u).join("w"));
    let o = run_in(&d, &u, &dir, &["-v", ".:/data", &img.0, "true"]);
    assert_refused(&o, &["mounts.target", "VOLUME /data"]);
    assert!(d.containers().is_empty());
}

/// Seconds since the epoch, as `docker events --since/--until` take them.
fn epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Docker's volume `create` events between `since` and `until` (epoch seconds).
fn volumes_created(since: u64, until: u64) -> Vec<String> {
    let out = must(
        "docker",
        &[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
            "--filter",
            "type=volume",
            "--filter",
            "event=create",
            "--format",
            "{{.Actor.ID}}",
        ],
    );
    out.lines().map(String::from).collect()
}

#[test]
#[serial]
fn the_identity_probe_of_an_image_with_a_large_volume_creates_no_docker_volume() {
    // 256 MiB of image content under a VOLUME: Docker copies it into a fresh anonymous
    // volume for every container created from the image without a mount there.
    let img = TestImage::build(
        &format!("urun-test/bigvolume{}:latest", unique()),
        &format!(
            "FROM {}\nRUN mkdir /data && dd if=/dev/zero of=/data/big bs=1M count=256 \
             2>/dev/null\nVOLUME /data\n",
            image()
        ),
        |_| {},
    );
    let (_g, u, d) = setup("");
    let before = must("docker", &["volume", "ls", "-q"]);
    let since = epoch();
    let o = d.run(&u, &[&img.0, "du", "-s", "/data"], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The run sees an empty tmpfs, not the image's content.
    assert!(stdout(&o).starts_with("0\t"), "{}", stdout(&o));
    d.wait_no_containers(Duration::from_secs(20)).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let created = volumes_created(since, epoch());
    assert!(created.is_empty(), "volumes created: {created:?}");
    assert_eq!(must("docker", &["volume", "ls", "-q"]), before);
}

#[test]
#[serial]
fn an_image_healthcheck_never_runs() {
    // Every probe is an exec by dockerd; at 1 ms dockerd spins on them.
    let img = TestImage::build(
        &format!("urun-test/healthcheck{}:latest", unique()),
        &format!(
            "FROM {}\nHEALTHCHECK --interval=1ms --timeout=1s --retries=1 CMD true\n",
            image()
        ),
        |_| {},
    );
    let (_g, u, d) = setup("");
    let since = epoch();
    let run = d
        .urun(&u, &[&img.0, "sleep", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_running(1, Duration::from_secs(20));
    let cid = d.containers()[0].clone();
    std::thread::sleep(Duration::from_millis(1000));
    let seen = must(
        "docker",
        &[
            "inspect",
            "-f",
            "{{json .Config.Healthcheck}} {{json .State.Health}}",
            &cid,
        ],
    );
    // Docker keeps the image's interval beside the test; NONE switches it off.
    let seen = seen.trim();
    assert!(seen.starts_with("{\"Test\":[\"NONE\"]"), "{seen}");
    assert!(seen.ends_with("} null"), "{seen}");
    let o = run.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let execs = must(
        "docker",
        &[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &epoch().to_string(),
            "--filter",
            &format!("container={cid}"),
            "--filter",
            "event=exec_create",
            "--format",
            "{{.Action}}",
        ],
    );
    assert_eq!(execs.lines().count(), 0, "health probes ran: {execs}");
}

#[test]
#[serial]
fn a_missing_working_directory_below_the_mount_is_refused_not_created_as_root() {
    let (_g, u, d) = setup(MOUNTS_ON);
    let dir = user_dir(&u, &home(&u).join("w"));
    // runc would create /work/a/b as root, i.e. root-owned a/ and a/b in the user's directory.
    let o = run_in(
        &d,
        &u,
        &dir,
        &["-v", ".:/work", "-w", "/work/a/b", image(), "pwd"],
    );
    assert_refused(&o, &["workdir", "a/b", "does not create"]);
    assert!(!dir.join("a").exists(), "created in the caller's directory");
    // Written differently, and through a symlink of the user's: the same.
    let o = run_in(
        &d,
        &u,
        &dir,
        &["-v", ".:/work", "-w", "/x/../work/./a", image(), "pwd"],
    );
    assert_refused(&o, &["workdir"]);
    std::os::unix::fs::symlink("/tmp", dir.join("l")).unwrap();
    let o = run_in(
        &d,
        &u,
        &dir,
        &["-v", ".:/work", "-w", "/work/l/new", image(), "pwd"],
    );
    assert_refused(&o, &["workdir"]);
    assert!(!dir.join("a").exists() && !Path::new("/tmp/new").exists());
    // A path that only the image's symlinks lead into the mount (/lnk -> /work; in a
    // merged-/usr image /lib/x is /usr/lib/x): with a mount, -w elsewhere is refused.
    let img = TestImage::build(
        &format!("urun-test/worklink{}:latest", unique()),
        &format!(
            "FROM {}\nRUN ln -s /work /lnk\nWORKDIR /work/app\n",
            image()
        ),
        |_| {},
    );
    for w in ["/lnk/a/b", "/srv/x"] {
        let o = run_in(&d, &u, &dir, &["-v", ".:/work", "-w", w, &img.0, "pwd"]);
        assert_refused(&o, &["workdir", "must be the mount target /work"]);
    }
    // The image's WORKDIR below the target is checked the same way.
    let o = run_in(&d, &u, &dir, &["-v", ".:/work", &img.0, "pwd"]);
    assert_refused(&o, &["workdir", "WORKDIR", "app does not exist"]);
    assert!(!dir.join("a").exists(), "created in the caller's directory");
    assert!(
        !dir.join("app").exists(),
        "created in the caller's directory"
    );
    assert!(d.containers().is_empty());
    // An existing directory or the target itself works; without a mount, -w anywhere.
    for p in ["a", "a/b", "app"] {
        fs::create_dir_all(dir.join(p)).unwrap();
        std::os::unix::fs::chown(dir.join(p), Some(u.uid), Some(u.gid)).unwrap();
    }
    for (w, want) in [("/work/a/b", "/work/a/b\n"), ("/work", "/work\n")] {
        let o = run_in(&d, &u, &dir, &["-v", ".:/work", "-w", w, image(), "pwd"]);
        assert_eq!(stdout(&o), want, "{}", stderr(&o));
    }
    let o = run_in(&d, &u, &dir, &["-v", ".:/work", &img.0, "pwd"]);
    assert_eq!(stdout(&o), "/work/app\n", "{}", stderr(&o));
    let o = run_in(&d, &u, &dir, &["-w", "/srv/x", image(), "pwd"]);
    assert_eq!(stdout(&o), "/srv/x\n", "{}", stderr(&o));
}

// ───────────────────────────── identity ─────────────────────────────

#[test]
#[serial]
fn a_denied_group_as_the_callers_gid_is_refused() {
    let access = TestGroup::new("urg");
    let denied = TestGroup::new("urno");
    let u = TestUser::new(&[&access, &denied]);
    let d = Daemon::start(&format!(
        "{}[identity]\ndeny_groups = [\"{}\"]\n",
        policy_for(&access),
        denied.name
    ));
    // As `sg GROUP -c 'urun ...'` runs it: the group as the real and effective gid.
    let as_gid = |gid: u32| {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={}", u.uid),
            &format!("--regid={gid}"),
            "--init-groups",
            "--reset-env",
            "--",
        ])
        .arg(&d.urun)
        .arg("--socket")
        .arg(&d.socket)
        .args([image(), "id", "-g"]);
        run_with_input(c, b"")
    };
    let o = as_gid(u.gid);
    assert_eq!(stdout(&o), format!("{}\n", u.gid), "{}", stderr(&o));
    for g in [&denied, &access] {
        let o = as_gid(g.gid);
        assert!(
            !stdout(&o).contains(&g.gid.to_string()),
            "ran as gid {}",
            g.gid
        );
        assert_refused(
            &o,
            &["identity.deny_groups", &format!("gid {}", g.gid), "sg"],
        );
    }
    assert!(d.containers().is_empty());
}

#[test]
#[serial]
fn an_image_group_listing_the_caller_as_a_member_does_not_keep_them() {
    let (_g, u, d) = setup("");
    let n = &u.name;
    let img = TestImage::build(
        &format!("urun-test/members{}:latest", unique()),
        &format!("FROM {}\nCOPY group /etc/group\n", image()),
        |dir| {
            fs::write(
                dir.join("group"),
                format!("root:x:0:\nwheel:x:10:{n}\nadm:x:4:other,{n},third\n"),
            )
            .unwrap()
        },
    );
    let o = d.run(&u, &[&img.0, "cat", "/etc/group"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("wheel:x:10:\n"), "{out}");
    assert!(out.contains("adm:x:4:other,third\n"), "{out}");
    for l in out.lines() {
        let members = l.split(':').nth(3).unwrap_or("");
        assert!(
            !members.split(',').any(|m| m == n.as_str()),
            "listed as a member: {l}"
        );
    }
}

#[test]
#[serial]
fn an_image_group_listing_the_caller_padded_with_whitespace_does_not_keep_them() {
    // glibc's nss_files skips whitespace before a member: " alice" is alice to it.
    let (_g, u, d) = setup("");
    let n = &u.name;
    let img = TestImage::build(
        &format!("urun-test/members{}:latest", unique()),
        &format!("FROM {}\nCOPY group /etc/group\n", image()),
        |dir| {
            fs::write(
                dir.join("group"),
                format!(
                    "root:x:0:\nwheel:x:10: {n}\nadm:x:4:bob, {n}\t,carol\nstaff:x:50:\t{n} \r\n"
                ),
            )
            .unwrap()
        },
    );
    let o = d.run(&u, &[&img.0, "cat", "/etc/group"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("wheel:x:10:\n"), "{out}");
    assert!(out.contains("adm:x:4:bob,carol\n"), "{out}");
    assert!(out.contains("staff:x:50:\n"), "{out}");
    for l in out.lines() {
        let members = l.split(':').nth(3).unwrap_or("");
        assert!(
            !members.split(',').any(|m| m.trim() == n.as_str()) || l.starts_with(&format!("{n}:")),
            "listed as a member: {l:?}"
        );
    }
}

// ─────────────────────────── names and network ───────────────────────────

/// Removes the isolated network on drop (if no container uses it any more).
struct IsolatedNet;

impl Drop for IsolatedNet {
    fn drop(&mut self) {
        let _ = sh("docker", &["network", "rm", "urun-isolated"]);
    }
}

#[test]
#[serial]
fn another_users_container_name_does_not_resolve_on_the_isolated_network() {
    let _net = IsolatedNet;
    let (g, a, d) = setup("[network]\nmode = \"isolated\"\n");
    let b = TestUser::new(&[&g]);
    let name = format!("web{}", unique());
    let mut server = d
        .urun(&a, &["--name", &name, image(), "sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    d.wait_running(1, Duration::from_secs(20));
    let cid = d.containers()[0].clone();
    // Another user's container: neither the name urun used to give Docker nor the
    // --name resolves; its short ID shows that DNS works (another member can learn it
    // by a reverse lookup of the address: SECURITY.md, "What is not enforced").
    let probe = format!(
        "for n in urun-{}-{name} {name} {}; do nslookup $n >/dev/null 2>&1 && echo RESOLVED $n; done; echo done",
        a.uid,
        &cid[..12]
    );
    let o = d.run(&b, &[image(), "sh", "-c", &probe], b"");
    assert_eq!(
        stdout(&o),
        format!("RESOLVED {}\ndone\n", &cid[..12]),
        "{}",
        stderr(&o)
    );
    let labels = must(
        "docker",
        &[
            "inspect",
            "-f",
            "{{index .Config.Labels \"io.urun.name\"}} {{.Name}}",
            &cid,
        ],
    );
    assert!(labels.starts_with(&format!("{name} /")), "{labels}");
    assert!(!labels.contains(&format!("urun-{}", a.uid)), "{labels}");
    // One user cannot have two runs of one name at once.
    let o = d.run(&a, &["--name", &name, image(), "true"], b"");
    assert_refused(&o, &["already in use"]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(d.wait_no_containers(Duration::from_secs(20)).is_ok());
}

// ───────────────────────────── forced mounts ─────────────────────────────

/// A crafted client (whatever the real client would check): `dir` mounted at `target`.
fn crafted_run(d: &Daemon, u: &TestUser, dir: &Path, target: &str) -> Output {
    let request = serde_json::json!({"version": 1, "image": image(), "command": ["true"],
        "mount": {"target": target, "read_only": false}});
    common::raw::crafted(d, u, &request, &[("dir", dir)])
}

#[test]
#[serial]
fn a_mount_over_sbin_usr_or_tmp_cannot_replace_the_init_or_the_scratch_space() {
    let (_g, u, d) = setup(MOUNTS_ON);
    let dir = user_dir(&u, &home(&u).join("w"));
    for target in [
        "/sbin",
        "/sbin/docker-init",
        "/usr",
        "/usr/sbin",
        "/usr/sbin/docker-init",
        "/tmp",
        "/tmp/x",
    ] {
        let o = run_in(
            &d,
            &u,
            &dir,
            &[
                "-v",
                &format!(".:{target}"),
                image(),
                "cat",
                "/proc/1/cmdline",
            ],
        );
        assert_refused(&o, &["-v", "urun mounts"]);
        // urund refuses it too, whatever a client checked.
        let o = crafted_run(&d, &u, &dir, target);
        assert_refused(&o, &["mounts.target", "urun mounts"]);
    }
    // From inside: PID 1 is docker-init, also with the directory mounted at $HOME.
    let at_home = format!(".:{}", home(&u).display());
    let o = run_in(
        &d,
        &u,
        &dir,
        &[
            "-v",
            &at_home,
            image(),
            "sh",
            "-c",
            "tr '\\0' ' ' </proc/1/cmdline; cat ~/marker",
        ],
    );
    assert_eq!(
        stdout(&o),
        "/sbin/docker-init -- sh -c tr '\\0' ' ' </proc/1/cmdline; cat ~/marker original",
        "{}",
        stderr(&o)
    );
    assert!(d.containers().is_empty());
}

#[test]
#[serial]
fn tmp_is_writable_even_when_the_images_tmp_is_not_1777() {
    // Built with RUN, without a network (the build needs none).
    let dir = std::env::temp_dir().join(format!("urun-img-{}", unique()));
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        format!("FROM {}\nRUN chmod 0755 /tmp\n", image()),
    )
    .unwrap();
    let img = TestImage(format!("urun-test/tmp755{}:latest", unique()));
    let o = Command::new("docker")
        .args(["build", "-q", "--network", "none", "-t", &img.0])
        .arg(&dir)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    let _ = fs::remove_dir_all(&dir);
    assert!(o.status.success(), "docker build: {}", stderr(&o));
    let mode = must(
        "docker",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &img.0,
            "stat",
            "-c",
            "%a",
            "/tmp",
        ],
    );
    assert_eq!(mode.trim(), "755", "the test image's /tmp");
    let (_g, u, d) = setup("");
    let o = d.run(
        &u,
        &[
            &img.0,
            "sh",
            "-c",
            "echo ok > /tmp/f && cat /tmp/f; grep ' /tmp ' /proc/self/mountinfo",
        ],
        b"",
    );
    let out = stdout(&o);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l.first(), Some(&"ok"), "{out} {}", stderr(&o));
    let (opts, fs, _) = mount_line(l[1]);
    assert_eq!(fs, "tmpfs", "{out}");
    for want in ["rw", "nosuid", "nodev", "noexec"] {
        assert!(opts.iter().any(|o| o == want), "{want} missing: {out}");
    }
}
