//! urund's life cycle as a hostile member (or a stray image) would exercise it: what it
//! cleans up and what it must leave alone, a second urund, a runtime directory it did
//! not make, and the Docker daemon going away mid-run (against an extra dockerd this
//! test starts, stops and restarts: never the machine's main daemon).
//! Real urund and urun, real users, real daemons. Needs root.

mod common;

use common::engine::{EngineConfig, ExtraEngine};
use common::*;
use serial_test::serial;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Containers a test made with the plain docker CLI, removed (with their volumes) on
/// drop.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = sh("docker", &["rm", "-f", "-v", id]);
        }
    }
}

/// A process a test started, killed and reaped on drop (also when the test fails).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn docker_ok(args: &[&str]) -> String {
    let o = sh("docker", args);
    assert!(o.status.success(), "docker {args:?}: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

fn running(id: &str) -> bool {
    let o = sh("docker", &["inspect", "-f", "{{.State.Running}}", id]);
    o.status.success() && stdout(&o).trim() == "true"
}

fn wait_log(d: &Daemon, needle: &str, limit: Duration) {
    let t = Instant::now();
    while !d.log_text().contains(needle) {
        assert!(
            t.elapsed() < limit,
            "{needle:?} not in urund's log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `urun ARGS` as `user`, in the background, output discarded.
fn spawn_run(d: &Daemon, u: &TestUser, args: &[&str]) -> Child {
    d.urun(u, args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_exit(c: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

// ── Item: urund reaps only what it can prove it created ──

/// An image any docker user can build carries `io.urun.helper=<urund's socket>`, the
/// label urund used to reap by; a docker-group user runs it with data in a volume, and
/// another sets that label on the container itself. urund's start and its reconcile
/// passes leave both alone (and the volume), and also a container from an image that
/// carries the real secret label (an image committed from one of urund's containers).
#[test]
#[serial]
fn containers_others_labelled_as_urunds_survive_its_start_and_reconcile() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::prepare(&policy_for(&g));
    let sock = d.socket.display().to_string();
    let labelled = TestImage::build(
        &format!("urun-test/helper-label-{}", unique()),
        &format!(
            "FROM {}\nLABEL io.urun.helper=\"{sock}\" io.urun.uid=\"4242\"\nVOLUME /data\n",
            image()
        ),
        |_| {},
    );
    let mut guard = Containers(Vec::new());
    // The image's label, a volume with someone's data in it.
    let c1 = docker_ok(&[
        "run",
        "-d",
        &labelled.0,
        "sh",
        "-c",
        "echo precious >/data/f; exec sleep 300",
    ]);
    guard.0.push(c1.clone());
    // The label set on the container by a docker user.
    let label = format!("io.urun.helper={sock}");
    let c2 = docker_ok(&["run", "-d", "--label", &label, image(), "sleep", "300"]);
    guard.0.push(c2.clone());
    let t = Instant::now();
    while docker_ok(&["exec", &c1, "cat", "/data/f"]) != "precious" {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    let volume = docker_ok(&["inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", &c1]);

    let d = d.launch_env(&[("URUND_TEST_RECONCILE_MS", "200")]);
    assert!(
        d.log_text().contains("0 leftover container(s) removed"),
        "{}",
        d.log_text()
    );
    assert!(
        running(&c1) && running(&c2),
        "urund's start removed others' containers:\n{}",
        d.log_text()
    );

    // A container from an image that carries the real secret label: an image
    // committed from a container (`docker commit`), as one could be from urund's.
    let secret = fs::read_to_string(d.state.join("instance")).unwrap();
    let base = docker_ok(&["create", image(), "true"]);
    guard.0.push(base.clone());
    let committed = TestImage(format!("urun-test/instance-label-{}", unique()));
    docker_ok(&[
        "commit",
        "--change",
        &format!(
            "LABEL io.urun.helper=\"{sock}\" io.urun.instance=\"{}\"",
            secret.trim()
        ),
        &base,
        &committed.0,
    ]);
    let c3 = docker_ok(&["run", "-d", &committed.0, "sleep", "300"]);
    guard.0.push(c3.clone());
    // The reconcile pass sees c3 (it carries the secret) and leaves it alone.
    wait_log(
        &d,
        &format!("container {c3} left alone: its image carries the instance label"),
        Duration::from_secs(20),
    );
    // A run of urund's own still works and is removed as usual, meanwhile.
    let o = d.run(&u, &[image(), "id", "-u"], b"");
    assert_eq!(stdout(&o), format!("{}\n", u.uid), "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(800)); // several more passes
    for c in [&c1, &c2, &c3] {
        assert!(running(c), "container {c} was removed:\n{}", d.log_text());
    }
    assert_eq!(docker_ok(&["exec", &c1, "cat", "/data/f"]), "precious");
    assert!(sh("docker", &["volume", "inspect", &volume])
        .status
        .success());
    assert!(
        !d.log_text().contains("removed container"),
        "{}",
        d.log_text()
    );
    // The test's own clean-up removes the volume with its container.
    drop(d);
    drop(guard);
    assert!(!sh("docker", &["volume", "inspect", &volume])
        .status
        .success());
}

/// An image any member can use carries the key `io.urun.instance` (any value but the
/// secret). Docker gives the container urund's value for it, so the run is urund's and
/// is proven so: when urund dies during the run, its next start removes the container
/// (it used to be left running forever, past `max_runtime`).
#[test]
#[serial]
fn a_run_of_an_image_carrying_the_instance_label_is_reaped_after_urund_dies() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let img = TestImage::build(
        &format!("urun-test/instance-key-{}", unique()),
        &format!(
            "FROM {}\nLABEL io.urun.instance=\"not-the-secret\"\n",
            image()
        ),
        |_| {},
    );
    let mut d = Daemon::start(&policy_for(&g));
    let mut child = spawn_run(&d, &u, &[&img.0, "sleep", "300"]);
    d.wait_running(1, Duration::from_secs(20));
    let cid = d.containers()[0].clone();
    // Docker's merge: the container carries urund's value, not the image's.
    let secret = fs::read_to_string(d.state.join("instance")).unwrap();
    let label = docker_ok(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"io.urun.instance\"}}",
        &cid,
    ]);
    assert_eq!(label, secret.trim());
    d.kill9();
    let _ = wait_exit(&mut child, Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    assert!(running(&cid), "the run stopped with urund");
    d.relaunch();
    if let Err(left) = d.wait_no_containers(Duration::from_secs(20)) {
        panic!(
            "left running after urund's restart: {left:?}\n{}",
            d.log_text()
        );
    }
    assert!(
        d.log_text().contains("1 leftover container(s) removed"),
        "{}",
        d.log_text()
    );
}

/// A run's container whose labels prove nothing (its image carries the installation's
/// secret, so the label proof refuses it; an image deleted during the run is the other
/// case) is still urund's: urund recorded its ID in its root-only run directory, so
/// when urund dies during the run its next start removes it by that record.
#[test]
#[serial]
fn a_run_urund_recorded_is_reaped_after_it_dies_whatever_its_image_labels_say() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let mut d = Daemon::start(&policy_for(&g));
    let secret = fs::read_to_string(d.state.join("instance")).unwrap();
    let img = TestImage::build(
        &format!("urun-test/instance-secret-{}", unique()),
        &format!(
            "FROM {}\nLABEL io.urun.instance=\"{}\"\n",
            image(),
            secret.trim()
        ),
        |_| {},
    );
    let mut child = spawn_run(&d, &u, &[&img.0, "sleep", "300"]);
    d.wait_running(1, Duration::from_secs(20));
    let cid = d.containers()[0].clone();
    d.kill9();
    let _ = wait_exit(&mut child, Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    assert!(running(&cid), "the run stopped with urund");
    d.relaunch();
    if let Err(left) = d.wait_no_containers(Duration::from_secs(20)) {
        panic!(
            "left running after urund's restart: {left:?}\n{}",
            d.log_text()
        );
    }
    assert!(
        d.log_text()
            .contains(&format!("removed container {cid}, recorded by run")),
        "{}",
        d.log_text()
    );
    assert!(
        d.log_text().contains("1 leftover container(s) removed"),
        "{}",
        d.log_text()
    );
}

/// The positive side of the proof, while urund runs: a container carrying its secret
/// and socket labels from an image that does not (as urund's own would be if it lost
/// track of it, e.g. a create whose answer the dying daemon never sent) is removed by
/// the periodic clean-up pass and recorded as `reaped`.
#[test]
#[serial]
fn a_container_urund_lost_track_of_is_removed_by_the_periodic_clean_up() {
    let g = TestGroup::new("urg");
    let d = Daemon::prepare(&policy_for(&g)).launch_env(&[("URUND_TEST_RECONCILE_MS", "200")]);
    let secret = fs::read_to_string(d.state.join("instance")).unwrap();
    let mut guard = Containers(Vec::new());
    // Created, not started: the pass would remove it between docker run's create and
    // start.
    let lost = docker_ok(&[
        "create",
        "--label",
        &format!("io.urun.helper={}", d.socket.display()),
        "--label",
        &format!("io.urun.instance={}", secret.trim()),
        "--label",
        "io.urun.request=lost-1",
        "--label",
        "io.urun.uid=4242",
        image(),
        "sleep",
        "300",
    ]);
    guard.0.push(lost.clone());
    wait_log(
        &d,
        &format!("removed container {lost}"),
        Duration::from_secs(20),
    );
    assert!(!sh("docker", &["inspect", &lost]).status.success());
    let log = d.log_text();
    let record = log
        .lines()
        .find(|l| l.contains("\"reaped\"") && l.contains(&lost))
        .unwrap_or_else(|| panic!("no reaped record:\n{log}"));
    assert!(record.contains("\"io.urun.uid\":\"4242\""), "{record}");
}

// ── Item: start-up order and the runtime directory ──

/// A second urund started on the socket of a running one exits with a clear message
/// before it cleans up anything: the first one's container keeps running and its run
/// ends normally.
#[test]
#[serial]
fn a_second_urund_on_a_live_socket_exits_and_the_first_ones_run_goes_on() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::start(&policy_for(&g));
    let c = d
        .urun(&u, &[image(), "sh", "-c", "sleep 3; echo finished"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_running(1, Duration::from_secs(20));
    let first = d.containers();
    let o = Command::new(URUND).args(d.urund_args()).output().unwrap();
    let said = stderr(&o);
    assert!(
        running(&first[0]),
        "the second urund removed the first one's container: {said}"
    );
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "another urund (pid {}) is already running",
            d.pid()
        )),
        "{said}"
    );
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "finished\n");
}

/// The same with a socket systemd passes (socket activation) for another socket in the
/// same directory: the runtime directory there is the first urund's, so the second one
/// exits before touching it (its pinned working directory and run files stay).
#[test]
#[serial]
fn a_socket_activated_urund_beside_a_running_one_exits_before_touching_its_runs() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::start(&format!(
        "{}[mounts]\nworkdir = true\nroots = [\"/home\"]\n",
        policy_for(&g)
    ));
    let proj = PathBuf::from(format!("/home/{}/proj", u.name));
    fs::create_dir(&proj).unwrap();
    std::os::unix::fs::chown(&proj, Some(u.uid), Some(u.gid)).unwrap();
    let mut c = u.command(d.urun.to_str().unwrap());
    c.current_dir(&proj)
        .args([
            "--socket",
            d.socket.to_str().unwrap(),
            "--here",
            image(),
            "sh",
            "-c",
            "sleep 3; cat /etc/passwd >/dev/null && echo finished",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let c = c.spawn().unwrap();
    d.wait_running(1, Duration::from_secs(20));
    let runtime = d.socket.parent().unwrap().join("run");
    let pins = mounts_under(&runtime);
    assert_eq!(pins.len(), 1, "the working directory is pinned");
    let run_dirs: Vec<PathBuf> = fs::read_dir(&runtime)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(run_dirs.len(), 1);

    let other = d.socket.with_file_name("other.sock");
    let mut second = KillOnDrop(
        Command::new("systemd-socket-activate")
            .args(["-l", other.to_str().unwrap(), URUND])
            .args(
                d.urund_args()
                    .iter()
                    .map(|a| a.replace(d.socket.to_str().unwrap(), other.to_str().unwrap())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("systemd-socket-activate (Debian package systemd)"),
    );
    let t = Instant::now();
    while !other.exists() {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    // What SocketGroup= and SocketMode=0660 do in urund.socket, so it passes the
    // socket checks; the first connection starts it.
    std::os::unix::fs::chown(&other, None, Some(g.gid)).unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o660)).unwrap();
    // The socket file exists from bind(); connections are refused until listen().
    let t = Instant::now();
    let _conn = loop {
        match std::os::unix::net::UnixStream::connect(&other) {
            Ok(c) => break c,
            Err(_) if t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connecting to {}: {e}", other.display()),
        }
    };
    let st = wait_exit(&mut second.0, Duration::from_secs(20));
    if st.is_none() {
        let _ = second.0.kill();
        let _ = second.0.wait();
    }
    let mut said = String::new();
    std::io::Read::read_to_string(second.0.stderr.as_mut().unwrap(), &mut said).unwrap();
    let _ = fs::remove_file(&other);
    assert_eq!(
        mounts_under(&runtime),
        pins,
        "the first urund's pin was touched: {said}"
    );
    for r in &run_dirs {
        assert!(r.join("passwd").exists(), "{} was cleaned", r.display());
    }
    assert_eq!(st.and_then(|s| s.code()), Some(1), "{said}");
    assert!(said.contains("is already running"), "{said}");
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), d.log_text());
    assert_eq!(stdout(&out), "finished\n");
}

/// A bind mount a test made, unmounted (and its directory removed) on drop.
struct TestMount(PathBuf);

impl Drop for TestMount {
    fn drop(&mut self) {
        let _ = sh("umount", &["-l", self.0.to_str().unwrap()]);
    }
}

/// `<socket dir>/run` already exists and urund did not make it (no marker): urund
/// refuses to start and leaves it exactly as it was: its file, a directory that looks
/// like a run's (with a `passwd`), and a bind mount in it; a file in its place; an
/// empty directory with something mounted on it. Only an empty, unmounted directory
/// without the marker (what an older urund leaves) is replaced.
#[test]
#[serial]
fn a_runtime_directory_urund_did_not_create_is_refused_and_left_untouched() {
    let g = TestGroup::new("urg");
    let d = Daemon::prepare(&policy_for(&g));
    let dir = d.socket.parent().unwrap();
    fs::DirBuilder::new().mode(0o755).create(dir).unwrap();
    let runtime = dir.join("run");
    fs::DirBuilder::new().mode(0o700).create(&runtime).unwrap();
    fs::write(runtime.join("notes"), "someone's file").unwrap();
    fs::create_dir_all(runtime.join("1-2-3/work")).unwrap();
    fs::write(runtime.join("1-2-3/passwd"), "not urund's").unwrap();
    let src = d.dir.join("mounted-data");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "data").unwrap();
    fs::create_dir(runtime.join("mnt")).unwrap();
    let o = sh(
        "mount",
        &[
            "--bind",
            src.to_str().unwrap(),
            runtime.join("mnt").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let _m = TestMount(runtime.join("mnt"));
    let before = fs::metadata(&runtime).unwrap();

    // It must exit at once; one that serves instead is stopped after a while (and has
    // done its clean-up by then), so what it did is checked either way.
    let mut urund = d.urund_command(&[]).spawn().unwrap();
    let st = wait_exit(&mut urund, Duration::from_secs(15));
    if st.is_none() {
        let _ = sh("kill", &["-TERM", &urund.id().to_string()]);
        let _ = urund.wait();
    }
    let log = d.log_text();
    assert_eq!(
        fs::read_to_string(runtime.join("notes")).unwrap(),
        "someone's file"
    );
    assert_eq!(
        fs::read_to_string(runtime.join("1-2-3/passwd")).unwrap(),
        "not urund's"
    );
    assert!(runtime.join("1-2-3/work").is_dir());
    assert_eq!(
        mounts_under(&runtime).len(),
        1,
        "the bind mount was removed"
    );
    assert_eq!(fs::read_to_string(runtime.join("mnt/f")).unwrap(), "data");
    let after = fs::metadata(&runtime).unwrap();
    assert_eq!((after.mode(), after.uid()), (before.mode(), before.uid()));
    assert_eq!(st.and_then(|s| s.code()), Some(1), "{log}");
    assert!(
        log.contains(&format!("runtime directory {}", runtime.display()))
            && log.contains("without urund's marker"),
        "{log}"
    );
    assert_eq!(log.trim().lines().count(), 1, "{log}");
    assert!(!d.socket.exists());
    // A non-directory in its place is refused the same way.
    drop(_m);
    fs::remove_dir_all(&runtime).unwrap();
    fs::write(&runtime, "a file").unwrap();
    let mut urund = d.urund_command(&[]).spawn().unwrap();
    let st = wait_exit(&mut urund, Duration::from_secs(15));
    if st.is_none() {
        let _ = sh("kill", &["-TERM", &urund.id().to_string()]);
        let _ = urund.wait();
    }
    assert_eq!(st.and_then(|s| s.code()), Some(1), "{}", d.log_text());
    assert!(
        d.log_text().contains("is not a directory"),
        "{}",
        d.log_text()
    );
    assert_eq!(fs::read_to_string(&runtime).unwrap(), "a file");
    // An empty directory with something mounted on it: refused, still mounted.
    fs::remove_file(&runtime).unwrap();
    fs::DirBuilder::new().mode(0o700).create(&runtime).unwrap();
    let empty = d.dir.join("empty");
    fs::create_dir(&empty).unwrap();
    let o = sh(
        "mount",
        &["--bind", empty.to_str().unwrap(), runtime.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = TestMount(runtime.clone());
    let mut urund = d.urund_command(&[]).spawn().unwrap();
    let st = wait_exit(&mut urund, Duration::from_secs(15));
    if st.is_none() {
        let _ = sh("kill", &["-TERM", &urund.id().to_string()]);
        let _ = urund.wait();
    }
    assert_eq!(mounts_under(&runtime).len(), 1, "{}", d.log_text());
    assert_eq!(st.and_then(|s| s.code()), Some(1), "{}", d.log_text());
    assert!(
        d.log_text().contains("without urund's marker"),
        "{}",
        d.log_text()
    );
    drop(m);
    // An empty one without the marker, as an urund from before the marker leaves it
    // at a clean stop: replaced by urund's own (rmdir removes only an empty directory).
    assert!(mounts_under(&runtime).is_empty());
    let d = d.launch();
    assert!(runtime.join(".urund-runtime").is_file(), "{}", d.log_text());
    assert!(
        d.log_text().contains("removed the empty runtime directory"),
        "{}",
        d.log_text()
    );
}

/// On a clean stop urund removes what it made: its runtime directory (after a run
/// that used it), its lock file, its socket; the next start makes them again.
#[test]
#[serial]
fn a_clean_stop_removes_the_runtime_directory_and_the_lock_it_made() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let mut d = Daemon::start(&policy_for(&g));
    let dir = d.socket.parent().unwrap().to_path_buf();
    let runtime = dir.join("run");
    let m = fs::metadata(&runtime).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o700, 0));
    let had_lock = dir.join("urund.lock").exists();
    let o = d.run(&u, &[image(), "id", "-un"], b"");
    assert_eq!(stdout(&o), format!("{}\n", u.name), "{}", stderr(&o));
    let st = d.stop().unwrap();
    assert!(st.success(), "{}", d.log_text());
    let left: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        left.is_empty(),
        "left in {}: {left:?}\n{}",
        dir.display(),
        d.log_text()
    );
    assert!(had_lock, "no lock file while it ran");
    d.relaunch();
    assert!(runtime.is_dir());
}

// ── Item: the Docker daemon going away ──

fn engine_and_daemon(g: &TestGroup, extra_policy: &str) -> (ExtraEngine, Daemon) {
    let engine = ExtraEngine::start(EngineConfig::default());
    engine.load_image(image());
    let d = Daemon::prepare_on(&format!("{}{extra_policy}", policy_for(g)), &engine)
        .launch_env(&[("URUND_TEST_RECONCILE_MS", "500")]);
    (engine, d)
}

/// Containers of `d` on its engine, with their state.
fn states(d: &Daemon) -> Vec<String> {
    let filter = format!("label=io.urun.helper={}", d.socket.display());
    let o = d.docker(&[
        "ps",
        "-a",
        "--filter",
        &filter,
        "--format",
        "{{.ID}} {{.State}}",
    ]);
    stdout(&o).lines().map(String::from).collect()
}

fn one_line(o: &std::process::Output) -> String {
    let e = stderr(o);
    assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e:?}");
    e
}

/// dockerd is stopped (as `systemctl restart docker` does) while a member's container
/// runs: the member gets one clear line and status 125; urund keeps serving (a run
/// while the daemon is down gets a clear 125 line); once the daemon is back urund
/// removes the container it left behind, and runs work again.
#[test]
#[serial]
fn the_docker_daemon_stopping_mid_run_gives_one_clear_line_and_its_container_goes_when_it_is_back()
{
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let (mut engine, mut d) = engine_and_daemon(&g, "");
    let o = d.run(&u, &[image(), "id", "-u"], b"");
    assert_eq!(
        stdout(&o),
        format!("{}\n", u.uid),
        "{}\n{}",
        stderr(&o),
        d.log_text()
    );

    let c = spawn_run(&d, &u, &[image(), "sleep", "300"]);
    d.wait_running(1, Duration::from_secs(20));
    engine.stop();
    let out = c.wait_with_output().unwrap();
    let line = one_line(&out);
    assert_eq!(out.status.code(), Some(125), "{line}\n{}", d.log_text());
    assert!(
        line.contains("the Docker daemon stopped during the run"),
        "{line}"
    );

    // urund serves on: a clear line while the daemon is away.
    assert!(d.is_running(), "{}", d.log_text());
    let o = d.run(&u, &[image(), "true"], b"");
    let line = one_line(&o);
    assert_eq!(o.status.code(), Some(125), "{line}");
    assert!(
        line.contains("the Docker daemon is not answering"),
        "{line}"
    );

    engine.start_again();
    // The container it could not remove (exited when dockerd stopped it) goes.
    let t = Instant::now();
    while !states(&d).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "left behind: {:?}\n{}",
            states(&d),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        d.log_text().contains("urund: clean-up:"),
        "{}",
        d.log_text()
    );
    let o = d.run(&u, &[image(), "id", "-u"], b"");
    assert_eq!(
        stdout(&o),
        format!("{}\n", u.uid),
        "{}\n{}",
        stderr(&o),
        d.log_text()
    );
    assert!(states(&d).is_empty());
    let st = d.stop().unwrap();
    assert!(st.success(), "{}", d.log_text());
}

/// The same when dockerd crashes (SIGKILL): the container goes on running under its
/// shim, the member gets the clear line at once, and when dockerd is back (and stops
/// what it no longer manages) urund removes it.
#[test]
#[serial]
fn the_docker_daemon_crashing_mid_run_gives_one_clear_line_and_its_container_goes_when_it_is_back()
{
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let (mut engine, mut d) = engine_and_daemon(&g, "");
    let mut c = spawn_run(&d, &u, &[image(), "sleep", "300"]);
    d.wait_running(1, Duration::from_secs(20));
    engine.kill_hard();
    let st = wait_exit(&mut c, Duration::from_secs(30)).expect("urun did not end");
    let out = c.wait_with_output().unwrap();
    let line = one_line(&out);
    assert_eq!(st.code(), Some(125), "{line}\n{}", d.log_text());
    assert!(
        line.contains("the Docker daemon stopped during the run"),
        "{line}"
    );
    assert!(d.is_running(), "{}", d.log_text());
    engine.start_again();
    let t = Instant::now();
    while !states(&d).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "left behind: {:?}\n{}",
            states(&d),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = d.run(&u, &[image(), "true"], b"");
    assert!(o.status.success(), "{}\n{}", stderr(&o), d.log_text());
    drop(d);
    let check = engine.leftovers_checker();
    drop(engine);
    let left = check();
    assert!(left.is_empty(), "left on the host: {left:?}");
}

/// The harness itself: an extra engine with a container and a network of its own
/// leaves nothing on the host (processes, mounts, interfaces, cgroups, directories,
/// firewall rules), and the host's docker0 is still there.
#[test]
#[serial]
fn an_extra_engine_leaves_nothing_on_the_host() {
    let docker0 = sh("ip", &["link", "show", "docker0"]).status.success();
    let mut engine = ExtraEngine::start(EngineConfig::default());
    engine.load_image(image());
    engine.must(&["run", "-d", image(), "sleep", "300"]);
    engine.network_create(&[&format!("urx-net-{}", unique())]);
    assert!(engine.answers());
    let check = engine.leftovers_checker();
    drop(engine);
    let left = check();
    assert!(left.is_empty(), "left on the host: {left:?}");
    assert_eq!(
        sh("ip", &["link", "show", "docker0"]).status.success(),
        docker0
    );
}
