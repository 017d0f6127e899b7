//! End-to-end tests of the administrator's policy (issue 4): image patterns, pulls from
//! a real local registry, limits, override tables, networks, the audit log, `urund
//! check` and `urun --policy`. Real urund, real urun as real users, real Docker.

mod common;

use common::*;
use serial_test::serial;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A member of a fresh access group and a helper with `extra` appended to its policy.
fn setup(extra: &str) -> (TestGroup, TestUser, Daemon) {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::start(&format!("{}{extra}", policy_for(&g)));
    (g, u, d)
}

fn audit_path(d: &Daemon) -> PathBuf {
    d.dir.join("audit/audit.log")
}

fn audit_section(d: &Daemon) -> String {
    format!("[audit]\nfile = \"{}\"\n", audit_path(d).display())
}

/// The policy with an audit file inside the daemon's directory.
fn start_with_audit(g: &TestGroup, extra: &str) -> Daemon {
    let d = Daemon::prepare("");
    let text = format!("{}{extra}{}", policy_for(g), audit_section(&d));
    write_mode(&d.policy, text.as_bytes(), 0o644);
    d.launch()
}

/// The audit records of how test users' requests ended (not those of the harness's
/// readiness probe, which connects as root and sends nothing, nor the `admitted`
/// record a run also gets when its container is created: tests/audit.rs checks those).
fn audit_lines(d: &Daemon) -> Vec<serde_json::Value> {
    std::fs::read_to_string(audit_path(d))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .filter(|v: &serde_json::Value| v["uid"] != 0 && v["decision"] != "admitted")
        .collect()
}

/// The audit records once there are at least `n` (urund writes a record after the
/// client has seen its exit status, so a test may look a moment too early).
fn audit_wait(d: &Daemon, n: usize) -> Vec<serde_json::Value> {
    let t = Instant::now();
    loop {
        let v = audit_lines(d);
        if v.len() >= n || t.elapsed() > Duration::from_secs(10) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn must(cmd: &str, args: &[&str]) -> String {
    let o = sh(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

/// An image built FROM the test image with /marker containing `marker`.
fn marked_image(name: &str, marker: &str) -> TestImage {
    TestImage::build(
        name,
        &format!("FROM {}\nCOPY marker /marker\n", image()),
        |dir| std::fs::write(dir.join("marker"), format!("{marker}\n")).unwrap(),
    )
}

// ── images ──

#[test]
#[serial]
fn image_patterns_allow_and_refuse_and_the_refusal_is_audited() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = start_with_audit(&g, "[images]\nallow = [\"urun-test/*\"]\n");
    let o = d.run(&u, &[image(), "echo", "ok"], b"");
    assert_eq!(stdout(&o), "ok\n", "{}", stderr(&o));
    let o = d.run(&u, &["debian:12", "id"], b"");
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(
        e.contains("images.allow") && e.contains("\"debian:12\"") && e.contains("urun-test/*"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(d.containers().is_empty());
    let lines = audit_wait(&d, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let refused = &lines[1];
    assert_eq!(refused["decision"], "refused");
    assert_eq!(refused["rule"], "images.allow");
    assert_eq!(refused["image"], "debian:12");
    assert_eq!(refused["uid"], u.uid);
    assert_eq!(refused["status"], 125);
}

/// Review S3: on a run host `allow = ["<registry>/urun/*"]` let every member run every
/// other member's promoted images. `{user}` stands for the caller's own namespace
/// component: each member runs their own and is refused the other's (125, one line
/// naming images.allow, no container), `urun --policy` says what `{user}` is, and an
/// unknown placeholder keeps urund from starting and fails `urund check` with the line.
#[test]
#[serial]
fn s3_an_owner_pattern_lets_each_member_run_only_their_own_promoted_images() {
    let g = TestGroup::new("urg");
    let alice = TestUser::new(&[&g]);
    let bob = TestUser::new(&[&g]);
    let reg = "registry.example.org:5000";
    // as a run host has them after pulling: built elsewhere, named in the registry
    let imgs: Vec<TestImage> = [&alice, &bob]
        .iter()
        .map(|u| marked_image(&format!("{reg}/urun/{}/app:1", u.name), &u.name))
        .collect();
    let d = start_with_audit(
        &g,
        &format!("[images]\nallow = [\"{reg}/urun/{{user}}/*\"]\n"),
    );
    for (me, other) in [(&alice, &bob), (&bob, &alice)] {
        let mine = format!("{reg}/urun/{}/app:1", me.name);
        let o = d.run(me, &[&mine, "cat", "/marker"], b"");
        assert_eq!(stdout(&o), format!("{}\n", me.name), "{}", stderr(&o));
        let theirs = format!("{reg}/urun/{}/app:1", other.name);
        let o = d.run(me, &[&theirs, "cat", "/marker"], b"");
        assert_eq!(o.status.code(), Some(125));
        assert!(stdout(&o).is_empty());
        assert_eq!(
            stderr(&o),
            format!(
                "urun: image {theirs:?} is not allowed (policy images.allow: \
                 {reg}/urun/{{user}}/*, where {{user}} is {}); ask your administrator\n",
                me.name
            )
        );
    }
    assert!(d.containers().is_empty());
    let refused: Vec<_> = audit_wait(&d, 4)
        .into_iter()
        .filter(|r| r["decision"] == "refused")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(|r| r["rule"] == "images.allow"));
    let o = d.run(&alice, &["--policy"], b"");
    assert!(
        stdout(&o).contains(&format!(
            "Images you may run: {reg}/urun/{{user}}/*, where {{user}} is {}\n",
            alice.name
        )),
        "{}",
        stdout(&o)
    );
    drop(imgs);

    // an unknown placeholder: urund check fails naming the line; urund does not start
    let bad = Daemon::prepare(&format!(
        "{}[images]\nallow = [\"{reg}/urun/{{uid}}/*\"]\n",
        policy_for(&g)
    ));
    let o = Command::new(URUND)
        .args(["check", "--policy"])
        .arg(&bad.policy)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let line = stdout(&o)
        .lines()
        .find(|l| l.starts_with("FAIL policy:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains(&format!("{}:4: key images.allow", bad.policy.display()))
            && line.contains("unknown placeholder {uid}"),
        "{}",
        stdout(&o)
    );
    let o = bad.urund_command(&[]).status().unwrap();
    assert_eq!(o.code(), Some(1));
    assert!(
        bad.log_text().contains("unknown placeholder {uid}"),
        "{}",
        bad.log_text()
    );
}

#[test]
#[serial]
fn require_digest_refuses_tags_and_runs_the_pinned_image() {
    let (_g, u, d) = setup("[images]\nrequire_digest = true\n");
    let o = d.run(&u, &[image(), "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("images.require_digest"),
        "{}",
        stderr(&o)
    );
    let id = image_id(image());
    let o = d.run(&u, &[&id, "echo", "pinned"], b"");
    assert_eq!(stdout(&o), "pinned\n", "{}", stderr(&o));
}

#[test]
#[serial]
fn retagging_after_admission_cannot_change_what_runs() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = start_with_audit(&g, "");
    let n = unique();
    let a = marked_image(&format!("urun-test/mark-a{n}:1"), "A");
    let b = marked_image(&format!("urun-test/mark-b{n}:1"), "B");
    let tag = TestImage(format!("urun-test/moving{n}:latest"));
    must("docker", &["tag", &a.0, &tag.0]);
    let id_a = image_id(&a.0);
    // Admitted while the tag points to A; the tag moves to B while it runs.
    let child = d
        .urun(&u, &[&tag.0, "sh", "-c", "sleep 2; cat /marker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_running(1, Duration::from_secs(20));
    let cid = d.containers()[0].clone();
    assert_eq!(
        must("docker", &["inspect", "-f", "{{.Config.Image}}", &cid]).trim(),
        id_a,
        "the container must be created from the ID, not the tag"
    );
    must("docker", &["tag", &b.0, &tag.0]);
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "A\n", "{}", stderr(&o));
    let rec = audit_wait(&d, 1).pop().unwrap();
    assert_eq!(rec["image_id"], id_a.as_str());
    assert_eq!(rec["image"], tag.0.as_str());
    // The next run is admitted with the tag's new target.
    let o = d.run(&u, &[&tag.0, "cat", "/marker"], b"");
    assert_eq!(stdout(&o), "B\n", "{}", stderr(&o));
}

// ── pulls ──

/// Debian's docker-registry on 127.0.0.1, stopped and its storage removed on drop.
struct Registry {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Registry {
    fn start() -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let dir = std::env::temp_dir().join(format!("urun-registry-{}", unique()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let cfg = dir.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .expect("docker-registry (tests/setup.sh installs it)");
        let r = Registry { child, dir, addr };
        let t = Instant::now();
        while std::net::TcpStream::connect(&r.addr).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// Pushes a fresh image (the test image plus a layer of its own) as `name` and
    /// removes it locally, so a pull must download that layer; returns the reference.
    fn push_fresh_image(&self, name: &str) -> TestImage {
        let local = marked_image(&format!("urun-test/{name}"), name);
        let r = format!("{}/{name}", self.addr);
        must("docker", &["tag", &local.0, &r]);
        let t = TestImage(r.clone());
        must("docker", &["push", &r]);
        must("docker", &["rmi", &r]);
        drop(local);
        t
    }
}

/// A detached tmux session, killed on drop.
struct Tmux(String);

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = sh("tmux", &["kill-session", "-t", &self.0]);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[serial]
fn missing_images_are_pulled_from_an_allowed_registry_with_progress() {
    let reg = Registry::start();
    let n = unique();
    let pulled = reg.push_fresh_image(&format!("urt-pull{n}:v1"));
    let other = reg.push_fresh_image(&format!("urt-other{n}:v1"));
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = start_with_audit(
        &g,
        "[pull]\nmode = \"missing\"\nregistries = [\"127.0.0.1:*\"]\n",
    );
    let o = d.run(&u, &[&pulled.0, "echo", "pulled"], b"");
    let e = stderr(&o);
    assert_eq!(stdout(&o), "pulled\n", "{e}");
    assert!(e.contains("Pulling from"), "progress shown: {e}");
    assert!(
        e.contains(": Pull complete"),
        "per-layer progress shown: {e}"
    );
    assert!(e.contains("Downloaded newer image"), "progress shown: {e}");
    assert!(
        !e.contains('\x1b'),
        "no terminal codes when not a terminal: {e}"
    );
    let id = image_id(&pulled.0);
    assert_eq!(audit_wait(&d, 1).pop().unwrap()["image_id"], id.as_str());

    // On a terminal: one line updated in place, then the final status.
    let tty = reg.push_fresh_image(&format!("urt-tty{n}:v1"));
    let session = Tmux(format!("urt{n}"));
    let cmd = format!(
        "setpriv --reuid={} --regid={} --init-groups -- {} --socket {} {} echo tty-done; sleep 30",
        u.uid,
        u.gid,
        d.urun.display(),
        d.socket.display(),
        tty.0
    );
    must(
        "tmux",
        &[
            "new-session",
            "-d",
            "-s",
            &session.0,
            "-x",
            "160",
            "-y",
            "20",
            &cmd,
        ],
    );
    let t = Instant::now();
    let screen = loop {
        let screen = must("tmux", &["capture-pane", "-p", "-t", &session.0]);
        if screen.contains("tty-done") || t.elapsed() > Duration::from_secs(30) {
            break screen;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(screen.contains("tty-done"), "{screen}");
    assert!(
        screen.contains(&format!("Pulling {}: 2/2 layers complete", tty.0)),
        "{screen}"
    );
    assert!(screen.contains("Downloaded newer image"), "{screen}");
    drop(d);

    // A registry that is not listed.
    let (_g2, u2, d2) =
        setup("[pull]\nmode = \"missing\"\nregistries = [\"registry.example.org\"]\n");
    let o = d2.run(&u2, &[&other.0, "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("pull.registries"), "{}", stderr(&o));
    drop(d2);

    // mode = "never" (the default).
    let (_g3, u3, d3) = setup("");
    let o = d3.run(&u3, &[&other.0, "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("pull.mode"), "{}", stderr(&o));
    assert!(
        sh("docker", &["image", "inspect", &other.0]).status.code() != Some(0),
        "refused pulls pull nothing"
    );
}

// ── limits ──

#[test]
#[serial]
fn limits_are_visible_from_inside() {
    let (_g, u, d) = setup(
        "[limits]\nmemory = \"96m\"\npids = 77\nnofile = 333\nnproc = 55\ntmpfs_size = \"12m\"\n",
    );
    let script = "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
                  cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max; \
                  ulimit -n; ulimit -u; df -k /tmp | tail -1 | awk '{print $2}'";
    let o = d.run(&u, &[image(), "sh", "-c", script], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(
        l,
        [&(96u64 << 20).to_string(), "77", "333", "55", "12288"],
        "{out}"
    );
}

#[test]
#[serial]
fn fork_bomb_and_memory_hog_are_contained_and_the_helper_keeps_serving() {
    let (_g, u, d) = setup("[limits]\nmemory = \"32m\"\npids = 24\nmax_runtime = \"6s\"\n");
    let t = Instant::now();
    let o = d.run(
        &u,
        &[image(), "sh", "-c", "b() { b | b & }; b; sleep 30"],
        b"",
    );
    // The bomb cannot get past 24 processes; max_runtime (exit 124) or a failed
    // fork of the final sleep ends it.
    assert!(o.status.code().is_some(), "{:?} {}", o.status, stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(40));
    let o = d.run(
        &u,
        &[
            image(),
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=200M",
            "count=1",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(137), "OOM-killed: {}", stderr(&o));
    let o = d.run(&u, &[image(), "echo", "still here"], b"");
    assert_eq!(stdout(&o), "still here\n", "{}", stderr(&o));
    assert!(d.wait_no_containers(Duration::from_secs(10)).is_ok());
}

#[test]
#[serial]
fn max_runtime_kills_with_its_own_status() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = start_with_audit(&g, "[limits]\nmax_runtime = 2\n");
    let t = Instant::now();
    let o = d.run(&u, &[image(), "sleep", "60"], b"");
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "killed within seconds, took {:?}",
        t.elapsed()
    );
    assert!(stderr(&o).contains("limits.max_runtime"), "{}", stderr(&o));
    assert!(d.wait_no_containers(Duration::from_secs(10)).is_ok());
    let rec = audit_wait(&d, 1).pop().unwrap();
    assert_eq!(rec["status"], 124);
    assert_eq!(rec["rule"], "limits.max_runtime");
}

#[test]
#[serial]
fn max_concurrent_plus_one_is_refused_while_the_others_run() {
    let (g, u, d) = setup("[limits]\nmax_concurrent = 2\n");
    let other = TestUser::new(&[&g]);
    let mut kids: Vec<Child> = (0..2)
        .map(|_| {
            d.urun(&u, &[image(), "sleep", "30"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    d.wait_running(2, Duration::from_secs(20));
    let o = d.run(&u, &[image(), "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(e.contains("limits.max_concurrent = 2"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    // the limit is per user
    let o = d.run(&other, &[image(), "echo", "mine"], b"");
    assert_eq!(stdout(&o), "mine\n", "{}", stderr(&o));
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    assert!(d.wait_no_containers(Duration::from_secs(10)).is_ok());
    // a slot is freed when a run ends
    let o = d.run(&u, &[image(), "echo", "again"], b"");
    assert_eq!(stdout(&o), "again\n", "{}", stderr(&o));
}

#[test]
#[serial]
fn override_group_members_get_the_higher_limit_and_others_do_not() {
    let g = TestGroup::new("urg");
    let big = TestGroup::new("urb");
    let member = TestUser::new(&[&g, &big]);
    let plain = TestUser::new(&[&g]);
    let d = Daemon::start(&format!(
        "{}[limits]\npids = 64\n[group.{}.limits]\npids = 128\n",
        policy_for(&g),
        big.name
    ));
    let pids = "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max";
    let o = d.run(&member, &[image(), "sh", "-c", pids], b"");
    assert_eq!(stdout(&o), "128\n", "{}", stderr(&o));
    let o = d.run(&plain, &[image(), "sh", "-c", pids], b"");
    assert_eq!(stdout(&o), "64\n", "{}", stderr(&o));
    // and each sees it in urun --policy
    let o = d.run(&member, &["--policy"], b"");
    assert!(stdout(&o).contains("pids = 128"), "{}", stdout(&o));
    let o = d.run(&plain, &["--policy"], b"");
    assert!(stdout(&o).contains("pids = 64"), "{}", stdout(&o));
}

// ── network ──

#[test]
#[serial]
fn network_none_has_only_lo() {
    let (_g, u, d) = setup("[network]\nmode = \"none\"\n");
    let o = d.run(&u, &[image(), "ls", "/sys/class/net"], b"");
    assert_eq!(stdout(&o), "lo\n", "{}", stderr(&o));
}

/// Removes the isolated network on drop (if no container uses it any more).
struct IsolatedNet;

impl Drop for IsolatedNet {
    fn drop(&mut self) {
        let _ = sh("docker", &["network", "rm", "urun-isolated"]);
    }
}

#[test]
#[serial]
fn isolated_containers_cannot_reach_each_other() {
    let _net = IsolatedNet;
    let (_g, u, d) = setup("[network]\nmode = \"isolated\"\n");
    let icc = must(
        "docker",
        &[
            "network",
            "inspect",
            "-f",
            "{{index .Options \"com.docker.network.bridge.enable_icc\"}} {{index .Labels \"io.urun.network\"}}",
            "urun-isolated",
        ],
    );
    assert_eq!(icc.trim(), "false isolated");
    let server = d
        .urun(&u, &[image(), "sh", "-c", "nc -l -p 8080 -e echo reached"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_running(1, Duration::from_secs(20));
    let cid = d.containers()[0].clone();
    let ip = must(
        "docker",
        &[
            "inspect",
            "-f",
            "{{(index .NetworkSettings.Networks \"urun-isolated\").IPAddress}}",
            &cid,
        ],
    )
    .trim()
    .to_string();
    assert!(
        ip.contains('.'),
        "server has an address on urun-isolated: {ip:?}"
    );
    let probe = format!(
        "ls /sys/class/net | tr '\\n' ' '; echo; nc -w 3 {ip} 8080 </dev/null && echo CONNECTED || echo BLOCKED"
    );
    let o = d.run(&u, &[image(), "sh", "-c", &probe], b"");
    let out = stdout(&o);
    assert!(out.contains("eth0"), "the client has a network: {out}");
    assert!(out.contains("BLOCKED") && !out.contains("reached"), "{out}");
    // Control: the server was listening all along (the host, not a container, reaches it).
    let o = Command::new("busybox")
        .args(["nc", "-w", "5", &ip, "8080"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o),
        "reached\n",
        "control connection: {}",
        stderr(&o)
    );
    let o = server.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.wait_no_containers(Duration::from_secs(10)).is_ok());
}

#[test]
#[serial]
fn a_foreign_network_with_the_isolated_name_is_refused() {
    let _net = IsolatedNet;
    let _ = sh("docker", &["network", "rm", "urun-isolated"]);
    must("docker", &["network", "create", "urun-isolated"]);
    let g = TestGroup::new("urg");
    let d = Daemon::prepare(&format!(
        "{}[network]\nmode = \"isolated\"\n",
        policy_for(&g)
    ));
    let o = d.urund_command(&[]).output().unwrap();
    assert!(!o.status.success());
    let log = d.log_text();
    assert!(
        log.contains("not created by urund") && log.contains("docker network rm"),
        "{log}"
    );
}

// ── audit ──

#[test]
#[serial]
fn audit_file_has_one_line_per_run_is_root_only_and_survives_rotation() {
    use std::os::unix::fs::MetadataExt;
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = start_with_audit(&g, "");
    let o = d.run(
        &u,
        &[
            "-i",
            image(),
            "sh",
            "-c",
            "cat; printf 'hid%s\\n' den-output",
        ],
        b"hidden-input\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = std::fs::metadata(audit_path(&d)).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
    let rec = audit_wait(&d, 1).pop().unwrap();
    let text = std::fs::read_to_string(audit_path(&d)).unwrap();
    assert!(
        !text.contains("hidden"),
        "no stream data in the log: {text}"
    );
    for k in [
        "time",
        "uid",
        "user",
        "pid",
        "image",
        "image_id",
        "argv",
        "container",
        "decision",
        "status",
        "duration_ms",
        "bytes_in",
        "bytes_out",
    ] {
        assert!(!rec[k].is_null(), "{k} missing: {rec}");
    }
    assert_eq!(rec["user"], u.name.as_str());
    assert_eq!(rec["decision"], "allowed");
    assert_eq!(rec["argv"][0], "sh");
    assert_eq!(rec["bytes_in"], 13);
    assert_eq!(rec["bytes_out"], 13 + 14);
    // Rotation while runs go on: every run is in exactly one of the two files.
    let runs = 12;
    let rotated = audit_path(&d).with_extension("log.1");
    let writer = {
        let socket = d.socket.clone();
        let urun_bin = d.urun.clone();
        let (uid, gid) = (u.uid, u.gid);
        std::thread::spawn(move || {
            for _ in 0..runs {
                let st = Command::new("setpriv")
                    .args([
                        &format!("--reuid={uid}"),
                        &format!("--regid={gid}"),
                        "--init-groups",
                        "--",
                    ])
                    .arg(&urun_bin)
                    .arg("--socket")
                    .arg(&socket)
                    .args([image(), "true"])
                    .status()
                    .unwrap();
                assert!(st.success());
            }
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    std::fs::rename(audit_path(&d), &rotated).unwrap();
    must("kill", &["-HUP", &d.pid().to_string()]);
    writer.join().unwrap();
    let count_of = |p: &Path, admitted: bool| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("valid JSON"))
            .filter(|v| v["uid"] == u.uid && (v["decision"] == "admitted") == admitted)
            .count()
    };
    let count = |p: &Path| count_of(p, false);
    let t = Instant::now();
    while count(&rotated) + count(&audit_path(&d)) < 1 + runs
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count(&rotated) + count(&audit_path(&d)), 1 + runs);
    // and each run's admission, once
    assert_eq!(
        count_of(&rotated, true) + count_of(&audit_path(&d), true),
        1 + runs
    );
    assert!(
        count(&audit_path(&d)) > 0,
        "the new file is used after SIGHUP"
    );
    let meta = std::fs::metadata(audit_path(&d)).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert!(d.log_text().contains("audit log reopened"));
}

// ── urund check and urun --policy ──

#[test]
#[serial]
fn urund_check_prints_its_table_and_fails_on_an_invalid_policy() {
    let g = TestGroup::new("urg");
    let d = Daemon::prepare(&policy_for(&g));
    let o = Command::new(URUND)
        .args(["check", "--policy"])
        .arg(&d.policy)
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    for item in [
        "policy:",
        "docker socket:",
        "docker group:",
        "tcp listener:",
        "seccomp:",
        "apparmor/selinux:",
        "userns-remap:",
        "icc:",
        "live-restore:",
        "no-new-privileges:",
        "engine version:",
    ] {
        let line = out.lines().find(|l| l.contains(item));
        assert!(
            line.is_some_and(|l| l.starts_with("OK ") || l.starts_with("WARN ")),
            "{item}: {out}"
        );
    }
    write_mode(
        &d.policy,
        b"[access]\ngroup = \"x\"\n\n[limits]\nmax_runtime = \"forever\"\n",
        0o644,
    );
    let o = Command::new(URUND)
        .args(["check", "--policy"])
        .arg(&d.policy)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{}:5: key limits.max_runtime", d.policy.display())),
        "{out}"
    );
}

#[test]
#[serial]
fn urun_policy_shows_the_callers_effective_policy() {
    let (_g, u, d) = setup(
        "[images]\nallow = [\"urun-test/*\", \"debian:*\"]\n[limits]\nmemory = \"128m\"\nmax_runtime = \"1h\"\n",
    );
    let o = d.run(&u, &["--policy"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        &format!("for {} (uid {})", u.name, u.uid),
        "memory = 128m",
        "max_runtime = 1h (then killed, exit status 124)",
        "Images you may run: urun-test/*, debian:*",
        "Network: none",
        "Environment variables you may pass: TERM, LANG, LC_*, TZ",
        "CapDrop / CapAdd: ALL / none",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // non-members learn nothing
    let outsider = TestUser::new(&[]);
    std::fs::set_permissions(
        &d.socket,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o666),
    )
    .unwrap();
    let o = d.run(&outsider, &["--policy"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(stdout(&o).is_empty());
}

#[test]
#[serial]
fn access_users_restricts_the_groups_members() {
    let g = TestGroup::new("urg");
    let listed = TestUser::new(&[&g]);
    let unlisted = TestUser::new(&[&g]);
    let d = Daemon::start(&format!(
        "[access]\ngroup = \"{}\"\nusers = [\"{}\"]\n",
        g.name, listed.name
    ));
    let o = d.run(&listed, &[image(), "echo", "in"], b"");
    assert_eq!(stdout(&o), "in\n", "{}", stderr(&o));
    let o = d.run(&unlisted, &[image(), "echo", "in"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("access.users"), "{}", stderr(&o));
    assert!(d.containers().is_empty());
}
