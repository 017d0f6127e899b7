//! Unit tests of the serve path's lifecycle, with the recording fake engine: a real
//! connection (a socket pair), the client's own frame writer, a policy in memory, the
//! runtime directory and the audit log in a temporary directory.
//!
//! What they pin: a refusal never reaches the engine's create; every ending (exit,
//! client gone, deadline, engine error, urund shutdown) removes the run's container
//! and its per-run directory; every connection's audit record has a decision.

use super::instance::{Owner, RuntimeDir};
use super::listen::Ticket;
use super::{audit, Helper, Parts};
use crate::engine::fake::{self, Fake, Op, Recorded, Script};
use crate::policy::Policy;
use crate::wire::{self, Kind, Query, Request};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// A policy that lets the test's own user (root, in the test environment or not) run
/// `busybox*` images with everything else as the packaged defaults.
fn policy(extra: &str) -> Policy {
    let text = format!(
        "[access]\ngroup = \"root\"\nallow_root = true\n\
         [images]\nallow = [\"busybox*\"]\n{extra}"
    );
    Policy::parse(&text, Path::new("/test/policy.toml")).expect("test policy parses")
}

/// The gid the policy's access group gets: root's own, or else a supplementary group
/// of the test's user (urund never runs a container with the access group as its gid).
/// `None`: urund would serve this user nothing, and the tests that need a caller are
/// skipped (they run as root in `tests/run.sh`).
fn access_gid() -> Option<u32> {
    let egid = nix::unistd::getegid();
    if nix::unistd::geteuid().is_root() {
        return Some(egid.as_raw());
    }
    let groups = nix::unistd::getgroups().ok()?;
    groups.into_iter().find(|g| *g != egid).map(|g| g.as_raw())
}

/// Whether this user cannot be a caller urund serves (see [`access_gid`]).
fn cannot_serve() -> bool {
    let no = access_gid().is_none();
    if no {
        eprintln!("skipped: the test's user has no group urund could admit it by");
    }
    no
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "urun-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Harness {
    helper: Arc<Helper>,
    fake: Fake,
    scratch: Scratch,
}

impl Harness {
    fn new(policy_extra: &str, script: Script) -> Harness {
        Harness::with_engines(policy_extra, script, None)
    }

    /// A helper whose build engine is `build`, another daemon than the run engine.
    fn with_build_engine(policy_extra: &str, script: Script, build: &Fake) -> Harness {
        Harness::with_engines(policy_extra, script, Some(build))
    }

    fn with_engines(policy_extra: &str, script: Script, build: Option<&Fake>) -> Harness {
        let scratch = Scratch::new();
        let fake = Fake::new(script);
        let audit = audit::Sink::with(Some(scratch.0.join("audit.log")), None).unwrap();
        let helper = Helper::new(Parts {
            engine: Arc::new(fake.clone()),
            build_engine: build.map(|b| Arc::new(b.clone()) as Arc<dyn crate::engine::Engine>),
            build_engine_userns: build.is_some(),
            policy: policy(policy_extra),
            policy_path: PathBuf::from("/test/policy.toml"),
            group_gid: access_gid().expect("a user urund can serve"),
            override_gids: Default::default(),
            audit: Arc::new(audit),
            owner: Owner {
                helper: "unit-test".into(),
                secret: "0".repeat(32),
            },
            runtime: RuntimeDir::open(&scratch.0).unwrap(),
            builds: Arc::new(crate::daemon::builds::Builds::open(&scratch.0).unwrap()),
            nofile: 1024,
        });
        Harness {
            helper: Arc::new(helper),
            fake,
            scratch,
        }
    }

    /// A client connection served by the helper, as the accept loop would.
    fn connect(&self) -> (UnixStream, JoinHandle<()>) {
        let (client, server) = UnixStream::pair().unwrap();
        (client, self.serve(server))
    }

    /// Serves `server` as the accept loop would.
    fn serve(&self, server: UnixStream) -> JoinHandle<()> {
        let uid = nix::unistd::geteuid().as_raw();
        let table = self.helper.conns.clone();
        table
            .lock()
            .unwrap()
            .admit(uid, &self.helper.policy.connections, 100, 1024)
            .unwrap();
        tokio::spawn(self.helper.clone().serve(server, Ticket::new(table, uid)))
    }

    /// The audit log's records, in order.
    fn audit(&self) -> Vec<serde_json::Value> {
        self.helper.audit.flush(true);
        std::fs::read_to_string(self.scratch.0.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The per-run directories left in the runtime directory.
    fn run_dirs_left(&self) -> Vec<PathBuf> {
        self.helper.runtime.leftovers().unwrap().0
    }

    /// Waits (a few seconds at most) until the fake has recorded `call`.
    async fn until(&self, call: impl Fn(&Recorded) -> bool) {
        for _ in 0..500 {
            if self.fake.calls().iter().any(&call) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never recorded; calls: {:?}", self.fake.calls());
    }

    /// Every container created was removed, and so was every per-run directory.
    fn assert_nothing_left(&self) {
        assert!(self.fake.live().is_empty(), "left: {:?}", self.fake.calls());
        for id in self.fake.created() {
            assert!(
                self.fake.calls().contains(&Recorded::Remove(id.clone())),
                "container {id} never removed: {:?}",
                self.fake.calls()
            );
        }
        assert!(self.run_dirs_left().is_empty());
    }
}

/// The client's request frame, written with the client's own frame writer.
async fn send(client: &mut UnixStream, kind: Kind, payload: &[u8]) {
    let mut bytes = Vec::new();
    wire::write_frame(&mut bytes, kind, payload).unwrap();
    client.write_all(&bytes).await.unwrap();
}

/// A request to run `true` in `image`.
fn run_request(image: &str) -> Request {
    Request::new(image.into(), vec!["true".into()])
}

/// Reads frames until urund closes its side.
pub(super) async fn frames(client: &mut UnixStream) -> Vec<(Kind, Vec<u8>)> {
    let mut got = Vec::new();
    loop {
        let mut h = [0u8; wire::HEADER];
        if client.read_exact(&mut h).await.is_err() {
            return got;
        }
        let (kind, len) = wire::parse_header(h).unwrap();
        let mut payload = vec![0u8; len];
        client.read_exact(&mut payload).await.unwrap();
        got.push((kind, payload));
    }
}

/// The last frame: an exit status, or an error's status.
fn last_status(frames: &[(Kind, Vec<u8>)]) -> (Kind, u8) {
    let (kind, payload) = frames.last().expect("a last frame");
    (*kind, payload[0])
}

/// Reads `client` until urund closes its side, then waits for the connection's end;
/// the frames the client got.
async fn finish(mut client: UnixStream, task: JoinHandle<()>) -> Vec<(Kind, Vec<u8>)> {
    let got = frames(&mut client).await;
    drop(client);
    task.await.unwrap();
    got
}

/// One connection to its end: `sent` (frame kinds and payloads), then what urund
/// answers.
async fn exchange(h: &Harness, sent: &[(Kind, &[u8])]) -> Vec<(Kind, Vec<u8>)> {
    let (mut client, task) = h.connect();
    for (kind, payload) in sent {
        send(&mut client, *kind, payload).await;
    }
    finish(client, task).await
}

/// Runs one request to its end; the frames the client got.
async fn run_to_end(h: &Harness, image: &str) -> Vec<(Kind, Vec<u8>)> {
    exchange(h, &[(Kind::Request, &run_request(image).encode())]).await
}

/// A connection whose run request `req` has got as far as its container's start.
async fn started(h: &Harness, req: &Request) -> (UnixStream, JoinHandle<()>) {
    let (mut client, task) = h.connect();
    send(&mut client, Kind::Request, &req.encode()).await;
    h.until(|c| matches!(c, Recorded::Start(_))).await;
    (client, task)
}

/// The fake's script for a container that runs until it is killed.
fn until_killed() -> Script {
    Script {
        exit: None,
        ..Script::default()
    }
}

fn decisions(h: &Harness) -> Vec<String> {
    h.audit()
        .iter()
        .map(|r| r["decision"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_image_reaches_no_engine_call_and_is_recorded_as_refused() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new("", Script::default());
    let got = run_to_end(&h, "alpine:latest").await;
    assert_eq!(last_status(&got), (Kind::Error, 125));
    assert!(h.fake.calls().is_empty(), "{:?}", h.fake.calls());
    let audit = h.audit();
    assert_eq!(decisions(&h), ["refused"]);
    assert_eq!(audit[0]["rule"], "images.allow");
    assert_eq!(audit[0]["status"], 125);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_policy_refuses_on_its_own_reaches_no_engine_call() {
    if cannot_serve() {
        return;
    }
    // Each is refused on the request and the caller alone: admission comes before the
    // engine is asked anything (not even whether the image is there).
    let with = |change: fn(&mut Request)| {
        let mut req = run_request("busybox:latest");
        change(&mut req);
        req
    };
    let cases = [
        (
            "images.reference",
            with(|r| r.image = "Not A Reference".into()),
        ),
        ("env.allow", with(|r| r.env = vec!["SECRET=x".into()])),
        ("user", with(|r| r.user = Some("12345:12345".into()))),
        ("network.mode", with(|r| r.network = Some("host".into()))),
        ("name", with(|r| r.name = Some("not a name!".into()))),
        (
            "mounts.workdir",
            with(|r| {
                r.mount = Some(wire::MountRequest {
                    target: "/work".into(),
                    read_only: true,
                })
            }),
        ),
    ];
    for (rule, req) in cases {
        let h = Harness::new("", Script::default());
        let got = exchange(&h, &[(Kind::Request, &req.encode())]).await;
        assert_eq!(last_status(&got), (Kind::Error, 125), "{rule}");
        assert!(h.fake.calls().is_empty(), "{rule}: {:?}", h.fake.calls());
        assert_eq!(decisions(&h), ["refused"], "{rule}");
        assert_eq!(h.audit()[0]["rule"], rule);
    }
}

/// The fake's script for an image that is not there until it is pulled.
fn missing_until_pulled() -> Script {
    Script {
        image: None,
        pulled: Some(fake::image("busybox:latest")),
        ..Script::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pull_creates_nothing() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new("", missing_until_pulled());
    let got = run_to_end(&h, "busybox:latest").await;
    assert_eq!(last_status(&got), (Kind::Error, 125));
    assert_eq!(
        h.fake.calls(),
        [Recorded::InspectImage("busybox:latest".into())]
    );
    assert_eq!(decisions(&h), ["refused"]);
    assert_eq!(h.audit()[0]["rule"], "pull.mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_pull_sends_progress_then_runs() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new(
        "[pull]\nmode = \"missing\"\nregistries = [\"*\"]\n",
        missing_until_pulled(),
    );
    let got = run_to_end(&h, "busybox:latest").await;
    assert!(got.iter().any(|(k, _)| *k == Kind::Progress), "{got:?}");
    assert_eq!(last_status(&got), (Kind::Exit, 0));
    assert!(h
        .fake
        .calls()
        .iter()
        .any(|c| matches!(c, Recorded::Pull(_))));
    h.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_exit_relays_output_and_status_then_removes_everything() {
    if cannot_serve() {
        return;
    }
    let script = Script {
        output: vec![b"hello\n"],
        exit: Some(3),
        ..Script::default()
    };
    let h = Harness::new("", script);
    let got = run_to_end(&h, "busybox:latest").await;
    assert_eq!(got[0], (Kind::Stdout, b"hello\n".to_vec()));
    assert_eq!(last_status(&got), (Kind::Exit, 3));
    let created = h.fake.created();
    assert_eq!(created.len(), 2, "the probe, then the run");
    let (probe, run) = (created[0].clone(), created[1].clone());
    let calls = h.fake.calls();
    let at = |c: Recorded| calls.iter().position(|x| *x == c).expect("recorded");
    // The probe is removed before the run's container exists; the run's container
    // is attached before it starts, and removed after its status.
    assert!(
        at(Recorded::Remove(probe.clone()))
            < at(Recorded::Create {
                image: fake::image("busybox:latest").id,
                id: run.clone()
            })
    );
    assert!(
        at(Recorded::Attach {
            id: run.clone(),
            stdin: false,
            tty: false
        }) < at(Recorded::Start(run.clone()))
    );
    assert!(at(Recorded::Start(run.clone())) < at(Recorded::Wait(run.clone())));
    assert!(at(Recorded::Wait(run.clone())) < at(Recorded::Remove(run.clone())));
    h.assert_nothing_left();
    assert_eq!(decisions(&h), ["admitted", "allowed"]);
    let end = &h.audit()[1];
    assert_eq!(end["status"], 3);
    assert_eq!(end["container"], run.as_str());
    assert_eq!(end["bytes_out"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_gets_its_container_removed() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new("", until_killed());
    let (client, task) = started(&h, &run_request("busybox:latest")).await;
    // While it runs, its directory holds the generated identity files.
    let dirs = h.run_dirs_left();
    assert_eq!(dirs.len(), 1);
    let passwd = std::fs::read_to_string(dirs[0].join("passwd")).unwrap();
    let uid = nix::unistd::geteuid().as_raw();
    assert!(
        passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(&uid.to_string())),
        "{passwd}"
    );
    assert!(dirs[0].join("group").exists());
    drop(client);
    task.await.unwrap();
    h.assert_nothing_left();
    let audit = h.audit();
    assert_eq!(decisions(&h), ["admitted", "allowed"]);
    assert_eq!(audit[1]["message"], "client went away; container removed");
}

/// Runs `busybox:latest` with `script` under a 1 s `limits.max_runtime`, which must
/// end it.
async fn run_past_the_deadline(script: Script) -> Harness {
    let h = Harness::new("[limits]\nmax_runtime = \"1s\"\n", script);
    let got = run_to_end(&h, "busybox:latest").await;
    assert_eq!(
        last_status(&got),
        (Kind::Error, crate::wire::status::MAX_RUNTIME)
    );
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_kills_and_removes_the_container() {
    if cannot_serve() {
        return;
    }
    let h = run_past_the_deadline(until_killed()).await;
    let run = h.fake.created()[1].clone();
    assert!(h.fake.calls().contains(&Recorded::Signal(run, "SIGKILL")));
    h.assert_nothing_left();
    assert_eq!(decisions(&h), ["admitted", "allowed"]);
    assert_eq!(h.audit()[1]["rule"], "limits.max_runtime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_never_returns_is_ended_by_the_deadline() {
    if cannot_serve() {
        return;
    }
    let script = Script {
        wait_hangs: true,
        ..Script::default()
    };
    let h = run_past_the_deadline(script).await;
    h.assert_nothing_left();
}

/// Runs one request with `op` failing from its `nth` call on; the last frame's status.
async fn failing(op: Op, nth: usize, unreachable: bool) -> (Harness, (Kind, u8)) {
    let script = Script {
        fail: [(op, nth)].into(),
        unreachable,
        ..Script::default()
    };
    let h = Harness::new("", script);
    let got = run_to_end(&h, "busybox:latest").await;
    let status = last_status(&got);
    (h, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_error_at_any_step_removes_what_was_made_and_is_recorded() {
    if cannot_serve() {
        return;
    }
    // The second create is the run's (the first is the probe's).
    for (op, nth) in [
        (Op::InspectImage, 0),
        (Op::Create, 0),
        (Op::ReadFiles, 0),
        (Op::Create, 1),
        (Op::Attach, 0),
        (Op::Start, 0),
        (Op::Wait, 0),
    ] {
        for unreachable in [false, true] {
            let (h, status) = failing(op, nth, unreachable).await;
            assert_eq!(status.0, Kind::Error, "{op:?} {nth} {unreachable}");
            assert_eq!(status.1, 125, "{op:?} {nth} {unreachable}");
            h.assert_nothing_left();
            let d = decisions(&h);
            let last = d.last().unwrap();
            assert!(last == "error", "{op:?} {nth}: {d:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_that_fails_is_left_to_the_janitor_and_the_run_still_ends() {
    if cannot_serve() {
        return;
    }
    let (h, status) = failing(Op::Remove, 1, true).await;
    // The daemon went away: the user is told, the janitor keeps the removal.
    assert_eq!(status, (Kind::Error, 125));
    assert_eq!(h.helper.janitor.pending(), 1);
    assert!(h.run_dirs_left().is_empty());
    assert_eq!(decisions(&h).last().unwrap(), "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urund_shutdown_removes_a_running_container() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new("", until_killed());
    let (client, task) = started(&h, &run_request("busybox:latest")).await;
    h.helper.shutdown().await;
    let run = h.fake.created()[1].clone();
    assert!(h.fake.calls().contains(&Recorded::Remove(run)));
    let got = finish(client, task).await;
    assert!(!got.is_empty());
    h.assert_nothing_left();
    assert!(decisions(&h).iter().all(|d| !d.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_query_is_answered_without_the_engine() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new("", Script::default());
    let got = exchange(&h, &[(Kind::Query, &Query::policy().encode())]).await;
    assert_eq!(got[0].0, Kind::Stdout);
    assert!(String::from_utf8_lossy(&got[0].1).contains("Images you may run: busybox*"));
    assert_eq!(last_status(&got), (Kind::Exit, 0));
    assert!(h.fake.calls().is_empty());
    assert_eq!(decisions(&h), ["allowed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_comes_is_refused_without_the_engine() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new("", Script::default());
    let got = exchange(&h, &[]).await;
    assert_eq!(last_status(&got), (Kind::Error, 125));
    assert!(h.fake.calls().is_empty());
    assert_eq!(decisions(&h), ["refused"]);
    assert_eq!(h.audit()[0]["rule"], "protocol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_and_signals_reach_the_container_and_a_second_interrupt_kills_it() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new("", until_killed());
    let mut req = Request::new("busybox:latest".into(), vec!["cat".into()]);
    req.interactive = true;
    let (mut client, task) = started(&h, &req).await;
    let run = h.fake.created()[1].clone();
    send(&mut client, Kind::Stdin, b"typed\n").await;
    send(&mut client, Kind::Signal, &wire::Signal::Term.encode()).await;
    h.until(|c| *c == Recorded::Signal(run.clone(), "SIGTERM"))
        .await;
    for _ in 0..500 {
        if h.fake.stdin() == b"typed\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.fake.stdin(), b"typed\n");
    // The client's SIGKILL: killed after the attach connection is closed, and the
    // status Docker reports is the run's.
    send(&mut client, Kind::Signal, &wire::Signal::Kill.encode()).await;
    let got = finish(client, task).await;
    assert_eq!(last_status(&got), (Kind::Exit, 137));
    assert!(h
        .fake
        .calls()
        .contains(&Recorded::Signal(run.clone(), "SIGKILL")));
    h.assert_nothing_left();
    assert_eq!(h.audit()[1]["bytes_in"], 6);
}

/// Whether `path` is a mount point now.
fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_directory_is_pinned_during_the_run_and_unmounted_at_its_end() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: pinning a mount needs root");
        return;
    }
    let mine = Scratch::new();
    std::fs::write(mine.0.join("hello.txt"), "hi").unwrap();
    let policy = format!("[mounts]\nworkdir = true\nroots = [{:?}]\n", mine.0);
    let h = Harness::new(&policy, until_killed());
    // The client's side: the request, with the directory's descriptor passed along.
    let (client, server) = std::os::unix::net::UnixStream::pair().unwrap();
    server.set_nonblocking(true).unwrap();
    let task = h.serve(UnixStream::from_std(server).unwrap());
    let mut req = Request::new("busybox:latest".into(), vec!["ls".into()]);
    req.mount = Some(wire::MountRequest {
        target: "/work".into(),
        read_only: true,
    });
    let mut frame = Vec::new();
    wire::write_frame(&mut frame, Kind::Request, &req.encode()).unwrap();
    let dir = std::fs::File::open(&mine.0).unwrap();
    crate::system::send_with_fd(&client, &frame, std::os::fd::AsFd::as_fd(&dir)).unwrap();
    drop(dir);
    h.until(|c| matches!(c, Recorded::Start(_))).await;
    let work = h.run_dirs_left()[0].join("work");
    assert!(mounted(&work));
    assert_eq!(
        std::fs::read_to_string(work.join("hello.txt")).unwrap(),
        "hi"
    );
    // The client goes away: the container is removed and the pin unmounted.
    drop(client);
    task.await.unwrap();
    assert!(!mounted(&work));
    h.assert_nothing_left();
    assert_eq!(decisions(&h), ["admitted", "allowed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_max_concurrent_or_with_a_name_in_use_creates_nothing() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new("[limits]\nmax_concurrent = 1\n", until_killed());
    let mut req = Request::new("busybox:latest".into(), vec!["sleep".into()]);
    req.name = Some("web".into());
    let (first, first_task) = started(&h, &req).await;
    let calls = h.fake.calls().len();
    let got = run_to_end(&h, "busybox:latest").await;
    assert_eq!(last_status(&got), (Kind::Error, 125));
    assert_eq!(h.fake.calls().len(), calls, "{:?}", h.fake.calls());
    assert_eq!(h.audit().last().unwrap()["rule"], "limits.max_concurrent");
    drop(first);
    first_task.await.unwrap();
    h.assert_nothing_left();

    // The name, now with room for two runs.
    let h = Harness::new("[limits]\nmax_concurrent = 2\n", until_killed());
    let (first, first_task) = started(&h, &req).await;
    let calls = h.fake.calls().len();
    let got = exchange(&h, &[(Kind::Request, &req.encode())]).await;
    assert_eq!(last_status(&got), (Kind::Error, 125));
    assert_eq!(h.fake.calls().len(), calls, "{:?}", h.fake.calls());
    assert_eq!(h.audit().last().unwrap()["rule"], "name");
    assert_eq!(h.audit().last().unwrap()["name"], "web");
    drop(first);
    first_task.await.unwrap();
    h.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_is_created_from_the_resolved_image_as_the_caller_with_the_forced_settings() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new("", Script::default());
    let mut req = Request::new("busybox:latest".into(), vec!["id".into()]);
    req.env = vec!["TERM=xterm".into()];
    let got = exchange(&h, &[(Kind::Request, &req.encode())]).await;
    assert_eq!(last_status(&got), (Kind::Exit, 0));
    let bodies = h.fake.bodies();
    let (probe, run) = (&bodies[0], &bodies[1]);
    // Both from the ID admission resolved, never from the tag.
    let id = fake::image("busybox:latest").id;
    assert_eq!(probe.image.as_deref(), Some(id.as_str()));
    assert_eq!(run.image.as_deref(), Some(id.as_str()));
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    assert_eq!(run.user, Some(format!("{uid}:{gid}")));
    assert_eq!(run.cmd, Some(vec!["id".to_string()]));
    let host = run.host_config.as_ref().unwrap();
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.readonly_rootfs, Some(true));
    // Labelled with this run's request, as the audit record has it.
    let request = h.audit()[0]["request"].as_str().unwrap().to_string();
    let labels = run.labels.as_ref().unwrap();
    assert!(labels.values().any(|v| *v == request), "{labels:?}");
    // The probe is never started and gets no network.
    assert_eq!(probe.network_disabled, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_runtime_reaches_the_probe_and_the_run_and_the_audit_record() {
    if cannot_serve() {
        return;
    }
    // busybox:latest matches the image rule: runsc for the probe and the run, whatever
    // the caller's own runtime (runc); the records name it.
    let h = Harness::new(
        "[[runtime.image]]\nmatch = \"busybox:*\"\nname = \"runsc\"\n",
        Script::default(),
    );
    let got = run_to_end(&h, "busybox:latest").await;
    assert_eq!(last_status(&got), (Kind::Exit, 0));
    assert_eq!(
        h.fake.create_runtimes(),
        [Some("runsc".to_string()), Some("runsc".to_string())]
    );
    let audit = h.audit();
    assert!(audit.iter().all(|r| r["runtime"] == "runsc"), "{audit:?}");
    // Without a rule: the default, runc, named explicitly.
    let h = Harness::new("", Script::default());
    run_to_end(&h, "busybox:latest").await;
    assert_eq!(
        h.fake.create_runtimes(),
        [Some("runc".to_string()), Some("runc".to_string())]
    );
    assert_eq!(h.audit()[1]["runtime"], "runc");
}

#[tokio::test]
async fn start_up_refuses_a_runtime_the_daemon_lacks_or_a_sandbox_with_few_pids() {
    use super::listen::check_runtimes;
    let fake = Fake::new(Script::default());
    assert!(check_runtimes(&policy(""), &fake).await.is_ok());
    let e = check_runtimes(&policy("[user.x.runtime]\nname = \"runsc\"\n"), &fake)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("names runtime runsc that the Docker daemon does not have")
            && e.contains("registered: io.containerd.runc.v2, runc"),
        "{e}"
    );
    fake.script(|s| s.runtimes.push("runsc".into()));
    let e = check_runtimes(&policy("[user.x.runtime]\nname = \"runsc\"\n"), &fake)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[limits] pids = 256") && e.contains("512"),
        "{e}"
    );
    let ok = policy("[limits]\npids = 512\n[user.x.runtime]\nname = \"runsc\"\n");
    assert!(check_runtimes(&ok, &fake).await.is_ok());
}

// ── urun push ──

/// One `Manage` request to its end; the frames the client got.
async fn manage_to_end(h: &Harness, op: wire::Op) -> Vec<(Kind, Vec<u8>)> {
    exchange(h, &[(Kind::Manage, &wire::Manage::new(op).encode())]).await
}

/// `urun push app:1` to its end.
async fn push_app(h: &Harness) -> Vec<(Kind, Vec<u8>)> {
    manage_to_end(
        h,
        wire::Op::Push {
            image: "app:1".into(),
        },
    )
    .await
}

/// A build record of the test's user for the fake's image, tagged `urun/<me>/app:1`.
fn own_build(h: &Harness) -> (String, String) {
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name;
    let id = fake::image("x").id;
    let tag = format!("urun/{me}/app:1");
    h.helper
        .builds
        .record(&crate::daemon::builds::BuildRecord {
            uid: nix::unistd::geteuid().as_raw(),
            user: me,
            image_id: id.clone(),
            tags: vec![tag.clone()],
            digests: vec![],
            created: 1,
            request: "r".into(),
            dockerfile: "d".repeat(64),
            context: "c".repeat(64),
        })
        .unwrap();
    (id, tag)
}

const PUSH_POLICY: &str = "[build]\nenabled = true\nregistry = \"127.0.0.1:5000\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_of_an_own_build_tags_pushes_untags_and_records_the_digest() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new(PUSH_POLICY, Script::default());
    let (id, tag) = own_build(&h);
    let got = push_app(&h).await;
    assert_eq!(last_status(&got), (Kind::Exit, 0), "{got:?}");
    let remote = format!("127.0.0.1:5000/{tag}");
    let result = got.iter().find(|(k, _)| *k == Kind::Result).unwrap();
    assert_eq!(
        wire::Outcome::decode(&result.1).unwrap(),
        wire::Outcome::Pushed {
            reference: remote.clone(),
            digest: fake::PUSHED_DIGEST.into()
        }
    );
    assert!(got.iter().any(|(k, _)| *k == Kind::Progress));
    let calls = h.fake.calls();
    let at = |c: &Recorded| calls.iter().position(|x| x == c).unwrap();
    assert!(
        at(&Recorded::Tag(id.clone(), remote.clone())) < at(&Recorded::Push(remote.clone(), None))
            && at(&Recorded::Push(remote.clone(), None))
                < at(&Recorded::RemoveImage(remote.clone())),
        "{calls:?}"
    );
    let uid = nix::unistd::geteuid().as_raw();
    let r = h.helper.builds.get(uid, &id).unwrap().unwrap();
    let (repo, _) = super::push::split_tag(&remote).unwrap();
    assert_eq!(r.digests, [format!("{repo}@{}", fake::PUSHED_DIGEST)]);
    let audit = h.audit();
    assert_eq!(audit[0]["decision"], "allowed");
    assert_eq!(audit[0]["image"], remote.as_str());
    assert_eq!(audit[0]["image_id"], id.as_str());
    assert!(audit[0]["message"]
        .as_str()
        .unwrap()
        .contains(fake::PUSHED_DIGEST));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_of_anything_but_an_own_build_is_refused_before_the_engine_is_asked() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new(PUSH_POLICY, Script::default());
    own_build(&h);
    for name in ["busybox:latest", "urun/someone/app:1", "app:2", "cccccccc"] {
        let got = manage_to_end(&h, wire::Op::Push { image: name.into() }).await;
        assert_eq!(last_status(&got), (Kind::Error, 125), "{name}");
        let (_, msg) = wire::decode_error(&got.last().unwrap().1).unwrap();
        assert!(msg.contains("nothing was pushed"), "{name}: {msg}");
    }
    assert!(
        !h.fake
            .calls()
            .iter()
            .any(|c| matches!(c, Recorded::Tag(..) | Recorded::Push(..))),
        "{:?}",
        h.fake.calls()
    );
    // no registry configured
    let h = Harness::new("[build]\nenabled = true\n", Script::default());
    own_build(&h);
    let got = push_app(&h).await;
    assert_eq!(last_status(&got), (Kind::Error, 125));
    assert_eq!(h.audit()[0]["rule"], "build.registry");
}

/// `urun push` needs what `urun build` needs now (`[build] enabled`, `[build] group`):
/// the same line and rule, before the engine or the records are asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_by_a_caller_who_may_not_build_now_is_refused_like_a_build() {
    if cannot_serve() {
        return;
    }
    for (policy, rule) in [
        ("[build]\nregistry = \"127.0.0.1:5000\"\n", "build.enabled"),
        (
            "[build]\nenabled = true\ngroup = \"no-such-group-urun\"\nregistry = \"127.0.0.1:5000\"\n",
            "build.group",
        ),
    ] {
        let h = Harness::new(policy, Script::default());
        own_build(&h);
        let pushed = manage_to_end(
            &h,
            wire::Op::Push {
                image: "app:1".into(),
            },
        )
        .await;
        assert_eq!(last_status(&pushed), (Kind::Error, 125), "{policy}");
        assert!(h.fake.calls().is_empty(), "{:?}", h.fake.calls());
        let built = build_to_end(&h, "FROM busybox\nUSER 1000\n", &[]).await;
        assert_eq!(
            wire::decode_error(&pushed.last().unwrap().1).unwrap(),
            wire::decode_error(&built.last().unwrap().1).unwrap(),
        );
        let audit = h.audit();
        assert_eq!(audit[0]["rule"], rule);
        assert_eq!(audit[1]["rule"], rule);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_push_removes_its_registry_name_and_records_no_digest() {
    if cannot_serve() {
        return;
    }
    let script = Script {
        fail: [(Op::Push, 0)].into(),
        ..Script::default()
    };
    let h = Harness::new(PUSH_POLICY, script);
    let (id, tag) = own_build(&h);
    let got = push_app(&h).await;
    assert_eq!(last_status(&got), (Kind::Error, 125));
    let remote = format!("127.0.0.1:5000/{tag}");
    assert!(h.fake.calls().contains(&Recorded::RemoveImage(remote)));
    let uid = nix::unistd::geteuid().as_raw();
    assert!(h
        .helper
        .builds
        .get(uid, &id)
        .unwrap()
        .unwrap()
        .digests
        .is_empty());
}

/// A urund that died mid-push left its registry name on the run engine: the next
/// start removes it (and audits it), and nothing else: not a name of the same image
/// that is no tag of the record, not another namespace's or registry's, not the build's
/// own tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_name_a_stopped_urund_left_is_removed_at_start_and_nothing_else() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new(PUSH_POLICY, Script::default());
    let (id, tag) = own_build(&h);
    let leftover = format!("127.0.0.1:5000/{tag}");
    let similar = [
        tag.clone(),
        format!("127.0.0.1:5000/{tag}x"),
        format!("127.0.0.1:5000/other/{tag}"),
        format!("127.0.0.1:5001/{tag}"),
        "127.0.0.1:5000/urun/someone/app:1".to_string(),
    ];
    h.fake.script(|s| {
        s.images = vec![crate::engine::ImageSummary {
            id: id.clone(),
            repo_tags: std::iter::once(leftover.clone())
                .chain(similar.iter().cloned())
                .collect(),
            ..Default::default()
        }]
    });
    assert_eq!(h.helper.sweep_push_names().await, 1);
    let removed: Vec<Recorded> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Recorded::RemoveImage(_)))
        .collect();
    assert_eq!(removed, [Recorded::RemoveImage(leftover.clone())]);
    let audit = h.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["decision"], "cleanup");
    assert!(audit[0]["message"]
        .as_str()
        .unwrap()
        .contains(&format!("removed {leftover}")));
    // a second start finds nothing
    assert_eq!(h.helper.sweep_push_names().await, 0);
    // without a registry in the policy, nothing is urund's
    let h = Harness::new("[build]\nenabled = true\n", Script::default());
    own_build(&h);
    assert_eq!(h.helper.sweep_push_names().await, 0);
    assert!(h.fake.calls().is_empty(), "{:?}", h.fake.calls());
}

/// A context archive with `dockerfile` as its `Dockerfile`.
fn context_tar(dockerfile: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(dockerfile.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())
        .unwrap();
    b.into_inner().unwrap()
}

/// Runs one build (as root, the unit tests' caller) to its end.
async fn build_to_end(h: &Harness, dockerfile: &str, tags: &[&str]) -> Vec<(Kind, Vec<u8>)> {
    let req = wire::BuildRequest {
        version: wire::VERSION,
        dockerfile: "Dockerfile".into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    };
    exchange(
        h,
        &[
            (Kind::Build, &req.encode()),
            (Kind::Context, &context_tar(dockerfile)),
            (Kind::ContextEnd, b""),
        ],
    )
    .await
}

/// Builds on, on the run engine (urund's own, root's, in these tests).
const BUILDS_ON: &str = "[build]\nenabled = true\nallow_root_engine = true\n";

fn stderr_text(frames: &[(Kind, Vec<u8>)]) -> String {
    frames
        .iter()
        .filter(|(k, _)| *k == Kind::Stderr)
        .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_that_fails_a_check_reaches_no_build() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new(BUILDS_ON, Script::default());
    let got = build_to_end(&h, "FROM busybox\nUSER root\n", &["x"]).await;
    assert_eq!(last_status(&got), (Kind::Error, 125));
    assert!(stderr_text(&got).contains("[user.root] Dockerfile:2:"));
    assert!(!h
        .fake
        .calls()
        .iter()
        .any(|c| matches!(c, Recorded::Build(..) | Recorded::Tag(..))));
    let rec = h.audit().pop().unwrap();
    assert_eq!(rec["rule"], "build.rules");
    let findings = rec["build"]["findings"].as_array().unwrap();
    assert!(findings.iter().any(|f| f == "user.root:error:2"), "{rec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_gets_the_forced_settings_and_an_image_that_cannot_be_checked_is_never_tagged() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new(
        "[build]\nenabled = true\nallow_root_engine = true\nmemory = \"512m\"\ncpus = 0.5\n",
        Script::default(),
    );
    let got = build_to_end(&h, "FROM busybox\nUSER 1000\n", &["app:1"]).await;
    // The fake's `docker save` is not an image archive: the check refuses it.
    assert_eq!(
        last_status(&got),
        (Kind::Error, 125),
        "{}",
        stderr_text(&got)
    );
    let calls = h.fake.calls();
    let settings = calls
        .iter()
        .find_map(|c| match c {
            Recorded::Build(s, n) => Some((s.clone(), *n)),
            _ => None,
        })
        .expect("a build");
    assert_eq!(settings.1, context_tar("FROM busybox\nUSER 1000\n").len());
    let s = settings.0;
    assert_eq!(s.network, "none");
    assert_eq!((s.memory, s.memswap), (512 << 20, 512 << 20));
    assert_eq!(s.cpu_quota, 50_000);
    assert!(s.rm && s.forcerm && !s.pull && s.legacy_builder);
    assert_eq!(
        s.labels.get(crate::policy::build::LABEL_UID),
        Some(&nix::unistd::geteuid().as_raw().to_string())
    );
    let built = format!("sha256:{}", "cd".repeat(32));
    assert!(
        calls.contains(&Recorded::DeleteUntagged(built)),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| matches!(c, Recorded::Tag(..))));
    let rec = h.audit().pop().unwrap();
    assert_eq!(rec["rule"], "build.image");
    assert_eq!(rec["build"]["context_bytes"], settings.1 as u64);
}

/// Defence in depth for B1: the builder is sent the archive's entries as urund read
/// them and the checked Dockerfile written last by urund, under the name it checked,
/// and nothing past the end of the archive urund read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_reads_the_checked_dockerfile_written_last_by_urund() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new(
        "[build]\nenabled = true\nallow_root_engine = true\n",
        Script::default(),
    );
    let df = "FROM busybox\nUSER 1000\n";
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [("./Dockerfile", df.as_bytes()), ("src/a", b"a".as_slice())] {
        let mut hd = tar::Header::new_gnu();
        hd.set_size(data.len() as u64);
        hd.set_mode(0o640);
        b.append_data(&mut hd, name, data).unwrap();
    }
    let mut archive = b.into_inner().unwrap();
    // After the end of the archive: another "Dockerfile" no tar reader should see.
    archive.extend_from_slice(&context_tar("FROM busybox\nUSER root\n"));
    let req = wire::BuildRequest {
        version: wire::VERSION,
        dockerfile: "./Dockerfile".into(),
        tags: vec!["x".into()],
        ..Default::default()
    };
    let _ = exchange(
        &h,
        &[
            (Kind::Build, &req.encode()),
            (Kind::Context, &archive),
            (Kind::ContextEnd, b""),
        ],
    )
    .await;
    let settings = h
        .fake
        .calls()
        .iter()
        .find_map(|c| match c {
            Recorded::Build(s, _) => Some(s.clone()),
            _ => None,
        })
        .expect("a build");
    assert_eq!(settings.dockerfile, "Dockerfile");
    let sent = h.fake.contexts().pop().unwrap();
    let mut ar = tar::Archive::new(&sent[..]);
    let entries: Vec<(String, u32, String)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).unwrap();
            let name = e.path().unwrap().display().to_string();
            (name, e.header().mode().unwrap(), text)
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("src/a".to_string(), 0o640, "a".to_string()),
            ("Dockerfile".to_string(), 0o640, df.to_string()),
        ]
    );
    assert!(!String::from_utf8_lossy(&sent).contains("USER root"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_are_off_unless_the_policy_turns_them_on() {
    if cannot_serve() {
        return;
    }
    let h = Harness::new("", Script::default());
    let got = build_to_end(&h, "FROM busybox\nUSER 1000\n", &[]).await;
    assert_eq!(last_status(&got), (Kind::Error, 125));
    assert!(h.fake.calls().is_empty(), "{:?}", h.fake.calls());
    assert_eq!(h.audit().pop().unwrap()["rule"], "build.enabled");
}

/// Docker reads a name that is no tag as the start of an image ID: a base the engine
/// found that does not carry the name typed (another member's image, reached by a
/// prefix of its ID) is refused before anything is copied or built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_image_that_does_not_carry_the_name_typed_is_refused_before_anything_is_built() {
    if cannot_serve() {
        return;
    }
    let not_it = Script {
        image: Some(fake::image("urun/bob/secret:latest")),
        ..Script::default()
    };
    // The build engine is the run engine.
    let h = Harness::new(BUILDS_ON, not_it.clone());
    let got = build_to_end(&h, "FROM busybox\nUSER 1000\n", &[]).await;
    assert_eq!(
        last_status(&got),
        (Kind::Error, 125),
        "{}",
        stderr_text(&got)
    );
    let calls = h.fake.calls();
    assert!(
        !calls.iter().any(|c| matches!(
            c,
            Recorded::Build(..) | Recorded::Save(_) | Recorded::Load(_) | Recorded::Pull(_)
        )),
        "{calls:?}"
    );
    assert_eq!(h.audit().pop().unwrap()["rule"], "build.base");

    // A separate build engine without it: the run engine's image is not copied.
    let build = Fake::new(Script {
        image: None,
        loaded: Some(fake::image("busybox:latest")),
        ..Script::default()
    });
    let h = Harness::with_build_engine(BUILDS_ON, not_it, &build);
    let got = build_to_end(&h, "FROM busybox\nUSER 1000\n", &[]).await;
    assert_eq!(
        last_status(&got),
        (Kind::Error, 125),
        "{}",
        stderr_text(&got)
    );
    let calls = [h.fake.calls(), build.calls()].concat();
    assert!(
        !calls.iter().any(|c| matches!(
            c,
            Recorded::Build(..) | Recorded::Save(_) | Recorded::Load(_) | Recorded::Pull(_)
        )),
        "{calls:?}"
    );
    assert_eq!(h.audit().pop().unwrap()["rule"], "build.base");
}

/// A base copied from the run engine to the build engine is saved by the full ID that
/// was checked (never the text typed) and given the checked name there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_is_copied_to_the_build_engine_by_its_checked_id_and_given_its_name() {
    if cannot_serve() {
        return;
    }
    let build = Fake::new(Script {
        image: None,
        loaded: Some(fake::image("busybox:latest")),
        ..Script::default()
    });
    let h = Harness::with_build_engine(BUILDS_ON, Script::default(), &build);
    let _ = build_to_end(&h, "FROM busybox\nUSER 1000\n", &[]).await;
    let id = fake::image("busybox:latest").id;
    assert!(
        h.fake.calls().contains(&Recorded::Save(id.clone())),
        "{:?}",
        h.fake.calls()
    );
    let calls = build.calls();
    let load = calls.iter().position(|c| matches!(c, Recorded::Load(_)));
    let tag = calls
        .iter()
        .position(|c| *c == Recorded::Tag(id.clone(), "busybox:latest".into()));
    let built = calls.iter().position(|c| matches!(c, Recorded::Build(..)));
    assert!(load < tag && tag < built && load.is_some(), "{calls:?}");
    assert!(
        !calls.iter().any(|c| matches!(c, Recorded::Pull(_))),
        "{calls:?}"
    );
}

/// A `docker save` archive of a one-layer image whose user is `user` and whose
/// `/etc/passwd` names uid 1000; its image ID.
fn saved_image(user: &str) -> (Vec<u8>, String) {
    use sha2::Digest;
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut layer = tar::Builder::new(Vec::new());
    let passwd = b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(passwd.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    layer
        .append_data(&mut h, "etc/passwd", &passwd[..])
        .unwrap();
    let layer = layer.into_inner().unwrap();
    let diff = hex(&sha2::Sha256::digest(&layer));
    let config = serde_json::json!({
        "config": {"User": user},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff}")]},
    })
    .to_string();
    let id = hex(&sha2::Sha256::digest(config.as_bytes()));
    let manifest = serde_json::json!([{
        "Config": format!("{id}.json"),
        "RepoTags": null,
        "Layers": [format!("{diff}/layer.tar")],
    }])
    .to_string();
    let mut out = tar::Builder::new(Vec::new());
    for (name, data) in [
        (format!("{diff}/layer.tar"), layer),
        (format!("{id}.json"), config.into_bytes()),
        ("manifest.json".to_string(), manifest.into_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append_data(&mut h, name, &data[..]).unwrap();
    }
    (out.into_inner().unwrap(), format!("sha256:{id}"))
}

fn script_building(user: &str) -> (Script, String) {
    let (saved, id) = saved_image(user);
    let script = Script {
        saved,
        build_end: Some(crate::engine::BuildEvent::Image(id.clone())),
        ..Script::default()
    };
    (script, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_build_is_tagged_in_the_callers_namespace_and_recorded() {
    if cannot_serve() {
        return;
    }
    let (script, id) = script_building("1000");
    let h = Harness::new(BUILDS_ON, script);
    let got = build_to_end(&h, "FROM scratch\nUSER 1000\n", &["app:1", "app"]).await;
    assert_eq!(last_status(&got), (Kind::Exit, 0), "{}", stderr_text(&got));
    let uid = nix::unistd::geteuid().as_raw();
    let user = crate::policy::build::namespace_user(&crate::system::Caller {
        uid,
        gid: 0,
        pid: 0,
        groups: vec![],
        name: nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.name),
        group: None,
    });
    let calls = h.fake.calls();
    for t in ["1", "latest"] {
        let want = Recorded::Tag(id.clone(), format!("urun/{user}/app:{t}"));
        assert!(calls.contains(&want), "{want:?} in {calls:?}");
    }
    let records = h.helper.builds.list(uid).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].image_id, id);
    assert_eq!(records[0].tags.len(), 2);
    // The built image is kept (build engine = run engine); nothing else to delete.
    assert!(!calls.contains(&Recorded::DeleteUntagged(id.clone())));
    let result = got.iter().find(|(k, _)| *k == Kind::Result).unwrap();
    let outcome = wire::Outcome::decode(&result.1).unwrap();
    assert!(matches!(outcome, wire::Outcome::Built { image_id, .. } if image_id == id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_fails_half_way_takes_its_tags_back_and_records_nothing() {
    if cannot_serve() {
        return;
    }
    let (mut script, id) = script_building("1000");
    script.fail.insert(Op::Tag, 1);
    let h = Harness::new(BUILDS_ON, script);
    let got = build_to_end(&h, "FROM scratch\nUSER 1000\n", &["app:1", "app:2"]).await;
    assert_eq!(last_status(&got), (Kind::Error, 125));
    let calls = h.fake.calls();
    let first = calls
        .iter()
        .find_map(|c| match c {
            Recorded::Tag(_, t) => Some(t.clone()),
            _ => None,
        })
        .unwrap();
    assert!(calls.contains(&Recorded::RemoveImage(first)), "{calls:?}");
    assert!(calls.contains(&Recorded::DeleteUntagged(id)), "{calls:?}");
    let uid = nix::unistd::geteuid().as_raw();
    assert!(h.helper.builds.list(uid).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_image_whose_user_is_root_is_deleted() {
    if cannot_serve() {
        return;
    }
    let (script, id) = script_building("0");
    let h = Harness::new(BUILDS_ON, script);
    let got = build_to_end(&h, "FROM scratch\nUSER 1000\n", &["app"]).await;
    assert_eq!(last_status(&got), (Kind::Error, 125));
    assert!(
        stderr_text(&got).contains("[image.user-root]"),
        "{}",
        stderr_text(&got)
    );
    let calls = h.fake.calls();
    assert!(calls.contains(&Recorded::DeleteUntagged(id)), "{calls:?}");
    assert!(!calls.iter().any(|c| matches!(c, Recorded::Tag(..))));
}
