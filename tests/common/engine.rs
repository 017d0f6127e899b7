//! An extra Docker engine for tests that need a differently configured daemon (a
//! userns-remap build engine, a gVisor runtime, a registry, a daemon that is stopped
//! and restarted under a running urund), beside the machine's main one, which is never
//! touched.
//!
//! Each engine has its own socket, `--data-root`, `--exec-root`, `--pidfile`,
//! `--config-file` (a daemon.json written here) and its own bridge interface, created
//! for it with an address from a private range no interface on the host uses (never
//! `--bridge none`: a daemon started that way deletes the host's `docker0`; nor
//! `default-address-pools`, with which a *restarted* dockerd deletes it too: see
//! [`FORBIDDEN_KEYS`]; every start checks that docker0 is still there). It starts
//! its own managed containerd under its exec-root. daemon.json turns off `iptables`,
//! `ip-masq` and `ip-forward`, so it changes no firewall rule and no host sysctl, and
//! gives containers a cgroup parent of their own. `Drop` leaves nothing on the host:
//! dockerd, its containerd and any shim stopped, everything mounted under its
//! directories unmounted, its bridge (and the bridges of networks created in it), its
//! cgroups and its directories removed ([`ExtraEngine::leftovers`] checks).
//!
//! containerd: no `--containerd`, so dockerd starts its own managed one under its
//! exec-root (the main daemon's is under /var/run/docker/containerd, untouched). After
//! a crash ([`ExtraEngine::kill_hard`]) that containerd dies too but can stay a zombie
//! for a while, its pid still in its pid file, and a new dockerd then waits for it and
//! fails: [`ExtraEngine::start_again`] clears that. Shims of containers that outlived a
//! crash are killed on drop, and their sockets in `/run/containerd/s` removed.
//!
//! Storage: overlay2 when the config names none (it works beside the main daemon's
//! fuse-overlayfs on this kind of VM); vfs if a daemon with overlay2 does not come up.
//! Not removed by `Drop`, because it is shared by every engine that uses it:
//! `userns-remap = "default"` makes dockerd add the system user `dockremap` (and its
//! subordinate id ranges) the first time.
#![allow(dead_code)]

use super::{unique, Daemon};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a starting dockerd may take to answer (it can be slow on a busy machine).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopping dockerd may take (it gives each container 10 s, then kills).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// daemon.json keys an extra engine must never get. `bridge: none` makes dockerd
/// delete the host's `docker0`; so does a *restart* of a dockerd configured with
/// `default-address-pools` (moby 20.10, `initNetworkController`: when it finds its
/// previous "bridge" network it removes the interface named `docker0`, whatever
/// `--bridge` says: seen on this machine). `bip` and `fixed-cidr` would configure
/// docker0-style addressing on the shared bridge namespace. Networks created in an
/// extra engine get the daemon's default pools (docker skips ranges the host routes).
const FORBIDDEN_KEYS: &[&str] = &["bridge", "default-address-pools", "bip", "fixed-cidr"];

/// An OCI runtime for daemon.json's `runtimes`.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    pub name: String,
    pub path: String,
    pub args: Vec<String>,
}

/// How the extra engine differs from a plain dockerd (daemon.json).
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// `userns-remap`, e.g. `"default"`.
    pub userns_remap: Option<String>,
    pub runtimes: Vec<Runtime>,
    pub default_runtime: Option<String>,
    /// `insecure-registries`, e.g. `["127.0.0.1:5000"]`.
    pub insecure_registries: Vec<String>,
    /// `storage-driver`; `None`: overlay2, falling back to vfs.
    pub storage_driver: Option<String>,
    /// More daemon.json keys, merged last (a JSON object).
    pub extra: Option<serde_json::Value>,
}

/// A running (or stopped) extra dockerd, removed with everything it made on drop.
pub struct ExtraEngine {
    pub name: String,
    /// Socket, pid file, daemon.json, log, and `exec/` (the exec-root).
    pub run_dir: PathBuf,
    /// The data-root.
    pub data_dir: PathBuf,
    pub bridge: String,
    /// The bridge's address, e.g. `10.213.77.1/24`.
    pub address: String,
    /// The storage driver it runs with.
    pub driver: String,
    config: EngineConfig,
    child: Option<Child>,
    /// IDs of networks created in it (their bridges go on drop).
    networks: Vec<String>,
    /// Containers that were running when dockerd was killed: their shims may have to
    /// be killed too, and then leave their sockets in containerd's socket directory.
    crashed: Vec<String>,
}

impl ExtraEngine {
    /// Starts a dockerd configured by `config`; panics with its log if it does not
    /// come up.
    pub fn start(config: EngineConfig) -> ExtraEngine {
        super::image();
        let u = unique();
        let name = format!("urx{u}");
        let mut e = ExtraEngine {
            run_dir: PathBuf::from(format!("/run/urun-test-engine-{u}")),
            data_dir: PathBuf::from(format!("/var/lib/urun-test-engine-{u}")),
            bridge: name.clone(),
            name,
            address: String::new(),
            driver: config
                .storage_driver
                .clone()
                .unwrap_or_else(|| "overlay2".into()),
            config,
            child: None,
            networks: Vec::new(),
            crashed: Vec::new(),
        };
        assert!(e.bridge.len() <= 15, "bridge name {} too long", e.bridge);
        fs::create_dir_all(&e.run_dir).unwrap();
        fs::create_dir_all(&e.data_dir).unwrap();
        // userns-remap: the remapped root must be able to traverse the data-root.
        fs::set_permissions(&e.data_dir, fs::Permissions::from_mode(0o711)).unwrap();
        e.add_bridge();
        match e.try_start() {
            Ok(()) => {}
            Err(why) if e.config.storage_driver.is_none() => {
                eprintln!(
                    "extra engine {}: overlay2 failed ({why}); trying vfs",
                    e.name
                );
                e.kill_everything();
                e.unmount_all();
                let _ = fs::remove_dir_all(&e.data_dir);
                fs::create_dir_all(&e.data_dir).unwrap();
                fs::set_permissions(&e.data_dir, fs::Permissions::from_mode(0o711)).unwrap();
                e.driver = "vfs".into();
                e.try_start()
                    .unwrap_or_else(|why| panic!("extra engine {}: {why}", e.name));
            }
            Err(why) => panic!("extra engine {}: {why}", e.name),
        }
        e
    }

    /// `unix://…` for `urund --docker-host` and `docker -H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("docker.sock")
    }

    fn pidfile(&self) -> PathBuf {
        self.run_dir.join("docker.pid")
    }

    fn exec_root(&self) -> PathBuf {
        self.run_dir.join("exec")
    }

    fn cgroup_parent(&self) -> String {
        format!("/{}", self.name)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(self.run_dir.join("dockerd.log")).unwrap_or_default()
    }

    /// The docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .args(args)
            .output()
            .expect("docker CLI")
    }

    /// Like [`ExtraEngine::docker`], panicking with stderr on failure; returns stdout.
    pub fn must(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker -H {} {args:?}: {}",
            self.host(),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Copies an image from the main daemon (`docker save | docker -H … load`).
    pub fn load_image(&self, name: &str) {
        let mut save = Command::new("docker")
            .args(["save", name])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let out = save.stdout.take().unwrap();
        let load = Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .arg("load")
            .stdin(out)
            .output()
            .expect("docker load");
        assert!(save.wait().unwrap().success(), "docker save {name}");
        assert!(
            load.status.success(),
            "docker load into {}: {}",
            self.name,
            String::from_utf8_lossy(&load.stderr)
        );
    }

    /// Creates a network in this engine (its bridge is removed on drop); returns its ID.
    pub fn network_create(&mut self, args: &[&str]) -> String {
        let mut a = vec!["network", "create"];
        a.extend(args);
        let id = self.must(&a).trim().to_string();
        self.networks.push(id.clone());
        id
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Whether it answers `GET /_ping`.
    pub fn answers(&self) -> bool {
        ping(&self.socket())
    }

    /// Stops dockerd gracefully (SIGTERM, as `systemctl stop docker`): it stops its
    /// containers and its containerd. Data stay for [`ExtraEngine::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), nix::sys::signal::Signal::SIGTERM);
            if wait_exit(&mut c, STOP_TIMEOUT).is_none() {
                eprintln!("extra engine {}: dockerd did not stop; SIGKILL", self.name);
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Kills dockerd with SIGKILL (a crash): containers and their shims go on running
    /// (its containerd dies with it).
    pub fn kill_hard(&mut self) {
        let ids = self.docker(&["ps", "-q", "--no-trunc"]);
        self.crashed.extend(
            String::from_utf8_lossy(&ids.stdout)
                .split_whitespace()
                .map(String::from),
        );
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts dockerd again with the same configuration and data.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "dockerd {} is still running",
            self.name
        );
        self.clear_stale_containerd();
        self.try_start()
            .unwrap_or_else(|why| panic!("extra engine {}: {why}", self.name));
    }

    /// After a crash, the pid file of its containerd (killed with dockerd) names a
    /// process that is gone or not yet reaped; dockerd would wait for that one instead
    /// of starting its own. Waits for it to go, then removes a stale pid file.
    fn clear_stale_containerd(&self) {
        let pidfile = self.exec_root().join("containerd/containerd.pid");
        let Some(pid) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            return;
        };
        let gone_or_zombie = || {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours = String::from_utf8_lossy(&cmd).contains(&self.run_dir.display().to_string());
            stat.is_empty() || state == Some("Z") || !ours
        };
        let t = Instant::now();
        while !gone_or_zombie() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if gone_or_zombie() {
            let _ = fs::remove_file(&pidfile);
        }
    }

    /// [`ExtraEngine::stop`], then [`ExtraEngine::start_again`].
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// What of this engine is still on the host: processes, mounts, bridge, cgroups,
    /// directories, firewall rules naming its bridge. Empty after drop.
    pub fn leftovers(&self) -> Vec<String> {
        leftovers_of(
            &self.name,
            &self.run_dir,
            &self.data_dir,
            &self.bridge,
            &self.networks,
            &self.crashed,
        )
    }

    /// A check to run after drop: [`ExtraEngine::leftovers`] of this engine as it is
    /// now (its networks so far included).
    pub fn leftovers_checker(&self) -> impl Fn() -> Vec<String> {
        let (name, run, data, bridge, nets, crashed) = (
            self.name.clone(),
            self.run_dir.clone(),
            self.data_dir.clone(),
            self.bridge.clone(),
            self.networks.clone(),
            self.crashed.clone(),
        );
        move || leftovers_of(&name, &run, &data, &bridge, &nets, &crashed)
    }

    fn daemon_json(&self) -> serde_json::Value {
        let mut j = serde_json::json!({
            "storage-driver": self.driver,
            "iptables": false,
            "ip-masq": false,
            "ip-forward": false,
            "cgroup-parent": self.cgroup_parent(),
            "log-driver": "json-file",
        });
        let m = j.as_object_mut().unwrap();
        let c = &self.config;
        if let Some(u) = &c.userns_remap {
            m.insert("userns-remap".into(), u.clone().into());
        }
        if !c.runtimes.is_empty() {
            let rt: serde_json::Map<String, serde_json::Value> = c
                .runtimes
                .iter()
                .map(|r| {
                    let mut v = serde_json::json!({ "path": r.path });
                    if !r.args.is_empty() {
                        v["runtimeArgs"] = serde_json::json!(r.args);
                    }
                    (r.name.clone(), v)
                })
                .collect();
            m.insert("runtimes".into(), rt.into());
        }
        if let Some(d) = &c.default_runtime {
            m.insert("default-runtime".into(), d.clone().into());
        }
        if !c.insecure_registries.is_empty() {
            m.insert(
                "insecure-registries".into(),
                serde_json::json!(c.insecure_registries),
            );
        }
        if let Some(serde_json::Value::Object(extra)) = &c.extra {
            for (k, v) in extra {
                assert!(
                    !FORBIDDEN_KEYS.contains(&k.as_str()),
                    "daemon.json key {k:?} is not allowed for an extra engine: {}",
                    "it deletes or changes the host's docker0 (see FORBIDDEN_KEYS)"
                );
                m.insert(k.clone(), v.clone());
            }
        }
        j
    }

    fn try_start(&mut self) -> Result<(), String> {
        let docker0 = host_has_docker0();
        let r = self.try_start_inner();
        // The host's docker0 must never be touched by an extra engine (see
        // FORBIDDEN_KEYS): stop at once, loudly, if it was.
        assert!(
            !docker0 || host_has_docker0(),
            "extra engine {} deleted the host's docker0: recreate it (ip link add docker0 \
             type bridge, its address, ip link set docker0 up) and fix the harness",
            self.name
        );
        r
    }

    fn try_start_inner(&mut self) -> Result<(), String> {
        let json = self.daemon_json();
        fs::write(
            self.run_dir.join("daemon.json"),
            serde_json::to_vec_pretty(&json).unwrap(),
        )
        .unwrap();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run_dir.join("dockerd.log"))
            .unwrap();
        let mut cmd = Command::new("dockerd");
        cmd.arg("-H")
            .arg(self.host())
            .arg("--data-root")
            .arg(&self.data_dir)
            .arg("--exec-root")
            .arg(self.exec_root())
            .arg("--pidfile")
            .arg(self.pidfile())
            .arg("--config-file")
            .arg(self.run_dir.join("daemon.json"))
            .arg("--bridge")
            .arg(&self.bridge)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group: a terminal's Ctrl-C to the tests does not reach
            // it; Drop stops it.
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| format!("spawning dockerd: {e}"))?;
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!(
                    "dockerd exited at start ({st}):\n{}",
                    tail(&self.log_text(), 20)
                ));
            }
            if ping(&self.socket()) {
                break;
            }
            if t.elapsed() > READY_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "dockerd did not answer within {READY_TIMEOUT:?}:\n{}",
                    tail(&self.log_text(), 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        let driver = self.must(&["info", "--format", "{{.Driver}}"]);
        if driver.trim() != self.driver {
            return Err(format!(
                "storage driver is {:?}, not {}",
                driver.trim(),
                self.driver
            ));
        }
        Ok(())
    }

    /// Creates the bridge with a /24 from 10.213.0.0/16 that no address or route on the
    /// host uses (chosen under a lock, so concurrent test processes pick different ones).
    fn add_bridge(&mut self) {
        let lock = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open("/run/urun-test-setup.lock")
            .unwrap();
        let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("flock /run/urun-test-setup.lock");
        let used = {
            let a = sh_out("ip", &["-4", "-o", "addr", "show"]);
            let r = sh_out("ip", &["-4", "route", "show", "table", "all"]);
            format!("{a}\n{r}")
        };
        let start = std::process::id() as usize % 200 + 20;
        let n = (0..230)
            .map(|i| (start + i) % 250 + 1)
            .find(|n| !used.contains(&format!("10.213.{n}.")))
            .expect("no free 10.213.N.0/24 on this host");
        self.address = format!("10.213.{n}.1/24");
        must_ok("ip", &["link", "add", &self.bridge, "type", "bridge"]);
        must_ok("ip", &["addr", "add", &self.address, "dev", &self.bridge]);
        must_ok("ip", &["link", "set", &self.bridge, "up"]);
    }

    /// Kills every process of this engine: dockerd (pid file), its containerd and
    /// shims (their command line names its socket or exec-root), and what runs in its
    /// cgroup parent.
    fn kill_everything(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for _ in 0..5 {
            let pids = engine_pids(&self.run_dir, &self.name);
            if pids.is_empty() {
                return;
            }
            for p in pids {
                signal(p, nix::sys::signal::Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Unmounts everything at or below its directories, deepest first.
    fn unmount_all(&self) {
        for _ in 0..5 {
            let points = mounts_below(&[&self.run_dir, &self.data_dir]);
            if points.is_empty() {
                return;
            }
            for p in points {
                let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

impl Drop for ExtraEngine {
    fn drop(&mut self) {
        if self.is_running() {
            // Its containers and networks first, while it answers.
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", "-v", id]);
            }
            let nets = self.docker(&[
                "network",
                "ls",
                "-q",
                "--no-trunc",
                "--filter",
                "type=custom",
            ]);
            for id in String::from_utf8_lossy(&nets.stdout).split_whitespace() {
                if !self.networks.iter().any(|n| n == id) {
                    self.networks.push(id.to_string());
                }
                let _ = self.docker(&["network", "rm", id]);
            }
            self.stop();
        }
        self.kill_everything();
        self.unmount_all();
        // A shim killed here (its container outlived a crashed dockerd) cannot remove
        // its socket, which containerd names after its own address and the container.
        for id in &self.crashed {
            let sock = shim_socket(&self.run_dir, id);
            if sock.exists() {
                let _ = fs::remove_file(sock);
            }
        }
        for id in &self.networks {
            let br = format!("br-{}", &id[..id.len().min(12)]);
            if sh_ok("ip", &["link", "show", &br]) {
                let _ = sh_ok("ip", &["link", "del", &br]);
            }
        }
        let _ = sh_ok("ip", &["link", "del", &self.bridge]);
        for c in cgroup_dirs(&self.name) {
            remove_cgroup(&c);
        }
        let _ = fs::remove_dir_all(&self.run_dir);
        let _ = fs::remove_dir_all(&self.data_dir);
        let left = self.leftovers();
        if !left.is_empty() {
            eprintln!("extra engine {}: left on the host: {left:?}", self.name);
        }
    }
}

impl Daemon {
    /// Like [`Daemon::prepare`], for a urund that talks to `engine` (`--docker-host`):
    /// its `containers()` and clean-up ask that engine too.
    pub fn prepare_on(policy: &str, engine: &ExtraEngine) -> Daemon {
        let mut d = Daemon::prepare(policy);
        d.docker_host = Some(engine.host());
        d
    }

    /// [`Daemon::prepare_on`] and launch.
    pub fn start_on(policy: &str, engine: &ExtraEngine) -> Daemon {
        Daemon::prepare_on(policy, engine).launch()
    }
}

/// What of an engine named `name` is on the host (see [`ExtraEngine::leftovers`]).
fn leftovers_of(
    name: &str,
    run_dir: &Path,
    data_dir: &Path,
    bridge: &str,
    networks: &[String],
    crashed: &[String],
) -> Vec<String> {
    let mut left = Vec::new();
    for id in crashed {
        let sock = shim_socket(run_dir, id);
        if sock.exists() {
            left.push(format!("shim socket {}", sock.display()));
        }
    }
    let pids = engine_pids(run_dir, name);
    if !pids.is_empty() {
        left.push(format!("processes {pids:?}"));
    }
    let mounts = mounts_below(&[run_dir, data_dir]);
    if !mounts.is_empty() {
        left.push(format!("mounts {mounts:?}"));
    }
    let mut links = vec![bridge.to_string()];
    links.extend(
        networks
            .iter()
            .map(|id| format!("br-{}", &id[..id.len().min(12)])),
    );
    for l in links {
        if sh_ok("ip", &["link", "show", &l]) {
            left.push(format!("interface {l}"));
        }
    }
    for c in cgroup_dirs(name) {
        left.push(format!("cgroup {}", c.display()));
    }
    for d in [run_dir, data_dir] {
        if d.exists() {
            left.push(format!("directory {}", d.display()));
        }
    }
    let rules = format!(
        "{}{}",
        sh_out("iptables-save", &[]),
        sh_out("iptables-legacy-save", &[])
    );
    if rules.lines().any(|l| l.contains(bridge)) {
        left.push(format!("iptables rules naming {bridge}"));
    }
    left
}

/// Processes of the engine's own programs (dockerd, containerd, shims, runtimes)
/// whose command line names its run directory (they all take the socket or exec-root
/// below it), and what runs in its cgroup parent. Never a urund or docker CLI talking
/// to it.
fn engine_pids(run_dir: &Path, name: &str) -> Vec<u32> {
    let needle = run_dir.display().to_string();
    let me = std::process::id();
    let mut pids = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let ours = [
                "dockerd",
                "containerd",
                "containerd-shim",
                "runc",
                "runsc",
                "exe",
            ];
            if !ours.iter().any(|c| comm.trim().starts_with(c)) {
                continue;
            }
            let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&format!("{needle}/")) || cmd.contains(&format!("{needle} ")) {
                pids.push(pid);
            }
        }
    }
    for c in cgroup_dirs(name) {
        for f in walk(&c) {
            if f.file_name().is_some_and(|n| n == "cgroup.procs") {
                for l in fs::read_to_string(&f).unwrap_or_default().lines() {
                    if let Ok(p) = l.trim().parse::<u32>() {
                        if !pids.contains(&p) {
                            pids.push(p);
                        }
                    }
                }
            }
        }
    }
    pids.sort();
    pids
}

/// `/sys/fs/cgroup/<controller>/<name>` (cgroup v1) or `/sys/fs/cgroup/<name>` (v2).
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    if root.join(name).is_dir() {
        v.push(root.join(name));
    }
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            let p = e.path().join(name);
            if p.is_dir() {
                v.push(p);
            }
        }
    }
    v
}

/// Removes a cgroup directory tree, deepest first (rmdir only: cgroupfs needs that).
fn remove_cgroup(dir: &Path) {
    let mut dirs: Vec<PathBuf> = walk(dir).into_iter().filter(|p| p.is_dir()).collect();
    dirs.push(dir.to_path_buf());
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for d in dirs {
        let _ = fs::remove_dir(d);
    }
}

/// Every path below `dir` (not following symlinks).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(p.clone());
                }
                out.push(p);
            }
        }
    }
    out
}

/// Mount points at or below any of `dirs`, deepest first.
fn mounts_below(dirs: &[&Path]) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| dirs.iter().any(|d| m.starts_with(d)))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// `GET /_ping` on a daemon socket: true if it answers 200.
fn ping(socket: &Path) -> bool {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// Where containerd 1.6's shim for container `id` of the engine in `run_dir` has its
/// socket: `/run/containerd/s/<sha256 of "<containerd address>/moby/<id>">`.
fn shim_socket(run_dir: &Path, id: &str) -> PathBuf {
    let addr = format!(
        "{}/exec/containerd/containerd.sock/moby/{id}",
        run_dir.display()
    );
    Path::new("/run/containerd/s").join(sha256_hex(&addr))
}

fn host_has_docker0() -> bool {
    Path::new("/sys/class/net/docker0").exists()
}

/// sha256 of `text` in hex, by sha256sum(1) (coreutils).
fn sha256_hex(text: &str) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

fn wait_exit(c: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn sh_out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn sh_ok(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn must_ok(cmd: &str, args: &[&str]) {
    let o = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Removes the `dockremap` user (and its subordinate ranges) on drop if it did not exist
/// when made: a `userns-remap = "default"` engine adds it and `ExtraEngine` leaves it
/// (shared by every such engine). Make it before the engine, drop it after.
pub struct Dockremap(bool);

impl Dockremap {
    pub fn note() -> Dockremap {
        Dockremap(
            !super::sh("getent", &["passwd", "dockremap"])
                .status
                .success(),
        )
    }
}

impl Drop for Dockremap {
    fn drop(&mut self) {
        if self.0
            && super::sh("getent", &["passwd", "dockremap"])
                .status
                .success()
        {
            let _ = super::sh("userdel", &["dockremap"]);
            let _ = super::sh("groupdel", &["dockremap"]);
            for f in ["/etc/subuid", "/etc/subgid"] {
                if let Ok(t) = std::fs::read_to_string(f) {
                    let kept: String = t
                        .lines()
                        .filter(|l| !l.starts_with("dockremap:"))
                        .map(|l| format!("{l}\n"))
                        .collect();
                    let _ = std::fs::write(f, kept);
                }
            }
        }
    }
}
