//! Shared end-to-end test harness: real users and groups (useradd/groupadd), a real
//! urund on a private socket, the real urun run as those users, the real Docker daemon.
//! Everything created here is removed in `Drop`, so also when a test panics.
//! Needs root (tests/setup.sh prepares the machine and is run once per test binary).
#![allow(dead_code)]

pub mod engine;
pub mod raw;
pub mod registry;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const URUN: &str = env!("CARGO_BIN_EXE_urun");
pub const URUND: &str = env!("CARGO_BIN_EXE_urund");

/// Runs tests/setup.sh once per test binary; returns the test image's name.
pub fn image() -> &'static str {
    static DONE: OnceLock<String> = OnceLock::new();
    DONE.get_or_init(|| {
        let name =
            std::env::var("URUN_TEST_IMAGE").unwrap_or_else(|_| "urun-test/busybox:latest".into());
        let st = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/setup.sh"))
            .env("URUN_TEST_IMAGE", &name)
            .status()
            .expect("running tests/setup.sh");
        assert!(st.success(), "tests/setup.sh failed");
        name
    })
}

/// A short unique suffix for names of things a test creates.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n}", std::process::id() % 0xfffff)
}

pub fn sh(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn must(cmd: &str, args: &[&str]) {
    let o = sh(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A system group that exists for the life of the value.
pub struct TestGroup {
    pub name: String,
    pub gid: u32,
}

impl TestGroup {
    pub fn new(prefix: &str) -> TestGroup {
        let name = format!("{prefix}{}", unique());
        must("groupadd", &[&name]);
        let gid = id_of("getent", &["group", &name], 2);
        TestGroup { name, gid }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = sh("groupdel", &[&self.name]);
    }
}

/// A real unprivileged user with a home directory, removed with its files on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// A user in the given supplementary groups.
    pub fn new(groups: &[&TestGroup]) -> TestUser {
        let name = format!("urt{}", unique());
        let g: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        let mut args = vec!["-m", "-s", "/bin/sh"];
        let joined = g.join(",");
        if !g.is_empty() {
            args.extend(["-G", &joined]);
        }
        args.push(&name);
        must("useradd", &args);
        let uid = id_of("id", &["-u", &name], 0);
        let gid = id_of("id", &["-g", &name], 0);
        TestUser { name, uid, gid }
    }

    /// A command run as this user (real and effective ids, its groups).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={}", self.uid),
            &format!("--regid={}", self.gid),
            "--init-groups",
            "--reset-env",
            "--",
            program,
        ]);
        c
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = sh("pkill", &["-KILL", "-u", &self.name]);
        let _ = sh("userdel", &["-r", "-f", &self.name]);
    }
}

fn id_of(cmd: &str, args: &[&str], field: usize) -> u32 {
    let o = sh(cmd, args);
    let s = String::from_utf8_lossy(&o.stdout);
    let f = if field == 0 {
        s.trim().to_string()
    } else {
        s.trim().split(':').nth(field).unwrap_or("").to_string()
    };
    f.parse()
        .unwrap_or_else(|_| panic!("{cmd} {args:?} gave {s:?}"))
}

/// A running urund on a private socket with a given policy.
pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub policy: PathBuf,
    pub log: PathBuf,
    /// Its `--state-dir` (the installation's secret), private to this daemon.
    pub state: PathBuf,
    /// Its `--docker-host`; `None`: the machine's main daemon.
    pub docker_host: Option<String>,
    /// A copy of the urun binary every test user can execute.
    pub urun: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts urund with `policy` (TOML text). Panics with its log if it does not come up.
    pub fn start(policy: &str) -> Daemon {
        let d = Daemon::prepare(policy);
        d.launch()
    }

    /// Creates the directory, policy and client copy without starting urund.
    pub fn prepare(policy: &str) -> Daemon {
        image();
        let dir = PathBuf::from(format!("/run/urun-test-{}", unique()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let policy_path = dir.join("policy.toml");
        write_mode(&policy_path, policy.as_bytes(), 0o644);
        let urun = dir.join("urun");
        fs::copy(URUN, &urun).unwrap();
        fs::set_permissions(&urun, fs::Permissions::from_mode(0o755)).unwrap();
        Daemon {
            socket: dir.join("sock/urun.sock"),
            policy: policy_path,
            log: dir.join("urund.log"),
            state: dir.join("state"),
            docker_host: None,
            urun,
            dir,
            child: None,
        }
    }

    /// urund's own arguments for this daemon: socket, policy, state directory, and
    /// the Docker host if it is not the main daemon.
    pub fn urund_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--socket".into(),
            self.socket.display().to_string(),
            "--policy".into(),
            self.policy.display().to_string(),
            "--state-dir".into(),
            self.state.display().to_string(),
        ];
        if let Some(h) = &self.docker_host {
            a.extend(["--docker-host".into(), h.clone()]);
        }
        a
    }

    /// The docker CLI against this daemon's engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        let mut c = Command::new("docker");
        if let Some(h) = &self.docker_host {
            c.arg("-H").arg(h);
        }
        c.args(args).output().expect("docker CLI")
    }

    /// urund with this daemon's arguments (plus `extra`), stderr to the log.
    pub fn urund_command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(URUND);
        c.args(self.urund_args())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&self.log).unwrap());
        c
    }

    pub fn launch(mut self) -> Daemon {
        self.child = Some(self.urund_command(&[]).spawn().expect("spawning urund"));
        self.wait_ready();
        self
    }

    pub fn wait_ready(&mut self) {
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("urund exited ({st}) at start:\n{}", self.log_text());
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "urund did not come up:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until urund's log contains `needle` (audit records are written after the
    /// client has its exit status, so a test must wait for them), up to `limit`.
    pub fn wait_log(&self, needle: &str, limit: Duration) {
        let t = Instant::now();
        while !self.log_text().contains(needle) {
            assert!(
                t.elapsed() < limit,
                "{needle:?} not logged:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops urund with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = sh("kill", &["-TERM", &c.id().to_string()]);
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `urun ARGS` as `user`, talking to this daemon.
    pub fn urun(&self, user: &TestUser, args: &[&str]) -> Command {
        let mut c = user.command(self.urun.to_str().unwrap());
        c.arg("--socket").arg(&self.socket).args(args);
        c
    }

    /// Runs `urun ARGS` as `user` with `input` on stdin; returns its output.
    pub fn run(&self, user: &TestUser, args: &[&str], input: &[u8]) -> Output {
        run_with_input(self.urun(user, args), input)
    }

    /// IDs of containers (any state) this daemon labelled.
    pub fn containers(&self) -> Vec<String> {
        let filter = format!("label=io.urun.helper={}", self.socket.display());
        let o = self.docker(&["ps", "-aq", "--no-trunc", "--filter", &filter]);
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    }

    /// Waits until this daemon has no container left, up to `limit`; returns how long it took.
    pub fn wait_no_containers(&self, limit: Duration) -> Result<Duration, Vec<String>> {
        let t = Instant::now();
        loop {
            let c = self.containers();
            if c.is_empty() {
                return Ok(t.elapsed());
            }
            if t.elapsed() > limit {
                return Err(c);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until this daemon has `n` running containers.
    pub fn wait_running(&self, n: usize, limit: Duration) {
        let filter = format!("label=io.urun.helper={}", self.socket.display());
        let t = Instant::now();
        loop {
            let o = self.docker(&["ps", "-q", "--filter", &filter]);
            if String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .count()
                >= n
            {
                return;
            }
            assert!(t.elapsed() < limit, "{n} container(s) did not start");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        for id in self.containers() {
            let _ = self.docker(&["rm", "-f", "-v", &id]);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn write_mode(path: &Path, data: &[u8], mode: u32) {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `cmd` with `input` fed on stdin from a thread; collects its output.
pub fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("waiting");
    let _ = feeder.join();
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The default policy with the access group set.
pub fn policy_for(group: &TestGroup) -> String {
    format!("[access]\ngroup = \"{}\"\n", group.name)
}

impl Daemon {
    /// Starts urund with extra environment variables (e.g. debug-build test hooks).
    pub fn launch_env(mut self, vars: &[(&str, &str)]) -> Daemon {
        let mut c = self.urund_command(&[]);
        c.envs(vars.iter().copied());
        self.child = Some(c.spawn().expect("spawning urund"));
        self.wait_ready();
        self
    }

    /// Starts urund under a wrapper command (e.g. `setpriv ... --`), with this
    /// daemon's arguments.
    pub fn launch_wrapped(mut self, wrapper: &[&str]) -> Daemon {
        let mut c = Command::new(wrapper[0]);
        c.args(&wrapper[1..])
            .arg(URUND)
            .args(self.urund_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&self.log).unwrap());
        self.child = Some(c.spawn().expect("spawning urund"));
        self.wait_ready();
        self
    }

    /// Kills urund with SIGKILL (it gets no chance to clean up) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts urund again (after `stop` or `kill9`) with the same arguments.
    pub fn relaunch(&mut self) {
        assert!(self.child.is_none(), "urund is still running");
        self.child = Some(self.urund_command(&[]).spawn().expect("spawning urund"));
        self.wait_ready();
    }
}

/// Mount points (unescaped) listed in this process's mountinfo at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(String::from)
        .collect()
}

/// The full ID (`sha256:...`) of a local image.
pub fn image_id(reference: &str) -> String {
    let o = sh("docker", &["image", "inspect", "-f", "{{.Id}}", reference]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_string()
}

/// A docker image or tag a test created, removed (`docker rmi -f`) on drop.
pub struct TestImage(pub String);

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = sh("docker", &["rmi", "-f", &self.0]);
    }
}

impl TestImage {
    /// Builds `name` from `dockerfile` in a fresh context directory that `fill` puts
    /// the files to copy into; the directory is removed afterwards.
    pub fn build(name: &str, dockerfile: &str, fill: impl FnOnce(&Path)) -> TestImage {
        let dir = std::env::temp_dir().join(format!("urun-img-{}", unique()));
        fs::create_dir_all(&dir).unwrap();
        fill(&dir);
        fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        let image = TestImage(name.to_string());
        let o = Command::new("docker")
            .args(["build", "-q", "-t", name])
            .arg(&dir)
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("docker build");
        let _ = fs::remove_dir_all(&dir);
        assert!(o.status.success(), "docker build: {}", stderr(&o));
        image
    }
}

/// Spawns `cmd` (a `urun -i ...` whose container never reads stdin) with a thread
/// writing to its stdin until the pipe breaks, so urund's write to the container's
/// stdin blocks. stdout is discarded; stderr goes to `stderr`.
pub fn spawn_flooding_stdin(mut cmd: Command, stderr: Stdio) -> Child {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawning");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 16];
        while stdin.write_all(&chunk).is_ok() {}
    });
    child
}
