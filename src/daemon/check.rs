//! `urund check`: validates the policy and audits the host's Docker setup against the
//! recommendations urun is built on. Facts are gathered first ([`gather`]); the
//! verdicts are a pure function of them ([`evaluate`]), so they are unit-tested.

use crate::engine::{DockerEngine, ICC_OPTION};
use crate::policy::runtime::{sandbox_limits_problem, SANDBOX_MIN_PIDS};
use crate::policy::{Policy, RuntimeName};
use crate::system;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub ok: bool,
    pub name: &'static str,
    /// What was found and, for a warning, what to do.
    pub text: String,
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = if self.ok { "OK  " } else { "WARN" };
        write!(f, "{tag} {}: {}", self.name, self.text)
    }
}

/// What `urund check` looked at.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The docker socket: (path, owner uid, group name, mode).
    pub socket: Option<(String, u32, String, u32)>,
    /// Members of the socket's group (supplementary and primary).
    pub socket_group_members: Vec<String>,
    /// `-H tcp://...` / `"hosts"` entries with tcp, and whether TLS verification is on.
    pub tcp_hosts: Vec<String>,
    pub tlsverify: bool,
    /// Why the daemon could not be asked, if it could not.
    pub daemon_error: Option<String>,
    /// `docker info` SecurityOptions, e.g. `name=seccomp,profile=default`.
    pub security_options: Vec<String>,
    pub live_restore: bool,
    /// The default bridge's `enable_icc` option (None: no bridge network).
    pub bridge_icc: Option<String>,
    /// `no-new-privileges` set in daemon.json or on dockerd's command line.
    pub no_new_privileges: bool,
    pub server_version: String,
    /// Days since the engine was built, if known.
    pub engine_age_days: Option<i64>,
    /// The runtimes registered with the daemon (`docker info`), if it answered.
    pub runtimes: Option<Vec<String>>,
    /// The build engine, when `[build]` is on or names one.
    pub build: Option<BuildEngineFacts>,
    /// `[build] registry`, when set.
    pub registry: Option<RegistryFacts>,
}

/// What the build engine said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildEngineFacts {
    /// Its socket, `unix://…`.
    pub host: String,
    /// It is the run daemon (no `[build] engine`, or the same socket). Not the daemon
    /// ID: two dockerd sharing /etc/docker report the same one (seen on 20.10).
    pub is_run_engine: bool,
    /// Why it could not be asked, if it could not.
    pub error: Option<String>,
    /// `userns-remap` is on (`name=userns` in its SecurityOptions).
    pub userns: bool,
}

/// What the registry `urun push` promotes to answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryFacts {
    /// As the policy names it (`host[:port]`).
    pub addr: String,
    /// Every address the name resolves to is a loopback one.
    pub loopback: bool,
    pub answer: RegistryAnswer,
    /// `[build] registry_auth`: not set, read (never shown), or why it cannot be used.
    pub credentials: Option<Result<(), String>>,
}

/// The registry's answer to a plain-HTTP `GET /v2/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAnswer {
    /// Plain HTTP, with this status (401: it wants credentials).
    Plain(u16),
    /// A TLS server (a TLS record, or Go's "HTTP request to an HTTPS server").
    Tls,
    /// Nothing answers there (why).
    Unreachable(String),
    /// Something that is neither.
    Other(String),
}

/// Classifies the first bytes a registry answered to a plain `GET /v2/`. Pure.
pub fn registry_answer(reply: &[u8]) -> RegistryAnswer {
    if reply.starts_with(b"HTTP/1.") {
        let text = String::from_utf8_lossy(reply);
        if text.contains("HTTP request to an HTTPS server") {
            return RegistryAnswer::Tls;
        }
        return match text.split(' ').nth(1).and_then(|c| c.parse().ok()) {
            Some(code) => RegistryAnswer::Plain(code),
            None => RegistryAnswer::Other("a malformed HTTP answer".into()),
        };
    }
    match reply.first() {
        Some(0x15 | 0x16) => RegistryAnswer::Tls,
        Some(_) => RegistryAnswer::Other("an answer that is neither HTTP nor TLS".into()),
        None => RegistryAnswer::Other("the connection closed without an answer".into()),
    }
}

/// Runs the check; returns the process exit status (1 when the policy is invalid).
pub async fn run(policy_path: &Path, docker_host: &str) -> i32 {
    let mut status = 0;
    match system::load_policy(policy_path) {
        Ok(p) => {
            println!("OK   policy: {} is valid", policy_path.display());
            for line in policy_items(&p) {
                println!("{line}");
            }
        }
        Err(e) => {
            println!("FAIL policy: {e}");
            status = 1;
        }
    }
    let mut facts = gather(docker_host).await;
    if let Ok(p) = system::load_policy(policy_path) {
        gather_build(&p, docker_host, &mut facts).await;
    }
    for item in evaluate(&facts) {
        println!("{item}");
    }
    if let Ok(p) = system::load_policy(policy_path) {
        for item in runtime_items(&p, facts.runtimes.as_deref()) {
            println!("{item}");
        }
        if p.build.enabled {
            if let Some(item) = build_memory(&p) {
                println!("{item}");
            }
        }
    }
    status
}

/// `[build] memory` above what the build API carries (a 32-bit field): builds get
/// less than the policy says. Pure.
pub fn build_memory(p: &Policy) -> Option<Item> {
    // 2 GiB itself is sent as 2 GiB - 1 byte: not worth a warning.
    (p.build.memory.0 > crate::policy::forced::BUILD_MAX_MEMORY + 1).then(|| {
        item(
            false,
            "build memory",
            format!(
                "[build] memory = {} is more than the build API carries: builds get 2 GiB - 1 byte",
                p.build.memory
            ),
        )
    })
}

/// `images.allow` patterns without `{user}` that admit every user's images in a
/// build namespace (`<registry>/urun/*`, `urun/*`, and `*`, the default): each member
/// runs every other member's builds. Each pattern is matched against sample names of
/// two users' builds where builds are named (never judged by its text): the namespace
/// itself, under `[build] registry`, under a registry the pattern names before the
/// namespace, and under any other registry. A warning with the owner-aware pattern,
/// unless sharing is meant (review S3). Pure.
pub fn shared_images(p: &Policy) -> Vec<Item> {
    let ns = format!("{}/", p.build.namespace.0);
    p.images
        .allow
        .iter()
        .filter(|a| !a.is_owner())
        .filter_map(|a| {
            let text = a.as_str();
            // (where sample names go, how the warning shows it)
            let mut places: Vec<(String, String)> = Vec::new();
            if let Some(at) = text.find(&format!("/{ns}")) {
                let named = &text[..at + 1 + ns.len()];
                if !named.contains(['*', '?']) {
                    places.push((named.to_string(), named.to_string()));
                }
            }
            if let Some(r) = p.build.push_prefix() {
                places.push((r.clone(), r));
            }
            places.push((ns.clone(), ns.clone()));
            places.push((
                format!("registry.example:5000/{ns}"),
                format!("<registry>/{ns}"),
            ));
            let (_, shown) = places.into_iter().find(|(prefix, _)| {
                let admits = |u: &str| a.matches(&format!("{prefix}{u}/x:1"), "nobody0");
                admits("a0") && admits("b1")
            })?;
            Some(Item {
                ok: false,
                name: "policy images.allow",
                text: format!(
                    "{text} admits every user's images under {shown}: each member may run \
                     the others'; {shown}{{user}}/* admits only each one's own, and no other \
                     pattern should reach {shown} (keep one that does only if they are \
                     meant to be shared)"
                ),
            })
        })
        .collect()
}

/// Policy items that depend on this host: do the groups it names exist?
fn policy_items(p: &Policy) -> Vec<Item> {
    let mut v = Vec::new();
    let g = &p.access.group.0;
    v.push(match system::group_gid(g) {
        Ok(Some(gid)) => Item {
            ok: true,
            name: "policy access.group",
            text: format!("group {g} exists (gid {gid})"),
        },
        _ => Item {
            ok: false,
            name: "policy access.group",
            text: format!("group {g} does not exist: urund will not start; groupadd --system {g}"),
        },
    });
    v.push(match (&p.audit.file, p.audit.syslog) {
        (None, false) => Item {
            ok: false,
            name: "policy audit",
            text: "records go only to urund's stderr: set [audit] file or syslog = true \
                   to keep them apart from the daemon's messages"
                .into(),
        },
        (f, sys) => Item {
            ok: true,
            name: "policy audit",
            text: format!(
                "records go to stderr{}{}",
                f.as_ref()
                    .map_or(String::new(), |f| format!(", {}", f.0.display())),
                if sys { ", syslog" } else { "" }
            ),
        },
    });
    if p.pull.mode == crate::policy::PullMode::Missing && p.pull.registries.is_empty() {
        v.push(Item {
            ok: false,
            name: "policy pull",
            text: "mode = \"missing\" but no registries are listed: nothing can be pulled".into(),
        });
    }
    v.extend(shared_images(p));
    for name in p.group.keys() {
        if !matches!(system::group_gid(&name.0), Ok(Some(_))) {
            v.push(Item {
                ok: false,
                name: "policy group overrides",
                text: format!(
                    "[group.{}] names a group that does not exist: its limits apply to nobody",
                    name.0
                ),
            });
        }
    }
    v
}

/// Collects the facts. Never fails: what cannot be learned is reported as such.
pub async fn gather(docker_host: &str) -> Facts {
    let mut f = Facts::default();
    let sock_path = docker_host.strip_prefix("unix://").unwrap_or(docker_host);
    socket_facts(sock_path, &mut f);
    let json: serde_json::Value = std::fs::read_to_string("/etc/docker/daemon.json")
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    let (tcp, tls, nnp) = daemon_settings(&dockerd_args(), &json);
    f.tcp_hosts = tcp;
    f.tlsverify = tls;
    f.no_new_privileges = nnp;
    daemon_facts(docker_host, &mut f).await;
    f
}

/// The Docker socket's owner, group and mode, and who is in its group (members and
/// users whose primary group it is).
fn socket_facts(sock_path: &str, f: &mut Facts) {
    let Ok(m) = std::fs::metadata(sock_path) else {
        return;
    };
    let group = nix::unistd::Group::from_gid(m.gid().into()).ok().flatten();
    let gname = group
        .as_ref()
        .map_or_else(|| m.gid().to_string(), |g| g.name.clone());
    if let Some(g) = &group {
        f.socket_group_members = g.mem.clone();
        // users whose primary group it is
        if let Ok(text) = std::fs::read_to_string("/etc/passwd") {
            for l in text.lines() {
                let p: Vec<&str> = l.split(':').collect();
                if p.len() > 3
                    && p[3] == m.gid().to_string()
                    && !f.socket_group_members.iter().any(|x| x == p[0])
                {
                    f.socket_group_members.push(p[0].to_string());
                }
            }
        }
    }
    f.socket = Some((sock_path.to_string(), m.uid(), gname, m.mode() & 0o7777));
}

/// The command line of every running dockerd, one argument each.
fn dockerd_args() -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return args;
    };
    for e in rd.flatten() {
        let p: PathBuf = e.path();
        if std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim() == "dockerd") {
            if let Ok(c) = std::fs::read(p.join("cmdline")) {
                args.extend(
                    c.split(|b| *b == 0)
                        .map(|a| String::from_utf8_lossy(a).into_owned()),
                );
            }
        }
    }
    args
}

/// What the daemon itself says: security options, live restore, version and age,
/// the default bridge's inter-container communication.
async fn daemon_facts(docker_host: &str, f: &mut Facts) {
    let engine = match DockerEngine::connect(docker_host).await {
        Ok(engine) => engine,
        Err(e) => {
            f.daemon_error = Some(format!("{e:#}"));
            return;
        }
    };
    match engine.info().await {
        Ok(i) => {
            f.security_options = i.security_options.unwrap_or_default();
            f.live_restore = i.live_restore_enabled.unwrap_or(false);
            f.server_version = i.server_version.unwrap_or_default();
            let mut names: Vec<String> = i.runtimes.unwrap_or_default().into_keys().collect();
            names.sort();
            f.runtimes = Some(names);
        }
        Err(e) => f.daemon_error = Some(format!("{e:#}")),
    }
    if let Ok(Some(opts)) = engine.network_options("bridge").await {
        f.bridge_icc = Some(opts.get(ICC_OPTION).cloned().unwrap_or("true".into()));
    }
    if let Ok(v) = engine.version().await {
        f.engine_age_days = v.build_time.as_deref().and_then(age_days);
    }
}

/// The build engine and the registry, as the policy's `[build]` names them.
pub async fn gather_build(p: &Policy, docker_host: &str, f: &mut Facts) {
    let b = &p.build;
    if b.enabled || b.engine.is_some() {
        let run_path = docker_host.strip_prefix("unix://").unwrap_or(docker_host);
        let path = b
            .engine
            .as_ref()
            .map_or_else(|| PathBuf::from(run_path), |e| e.0.clone());
        let host = format!("unix://{}", path.display());
        let same_path = b.engine.is_none()
            || std::fs::canonicalize(&path).ok() == std::fs::canonicalize(run_path).ok();
        let mut facts = BuildEngineFacts {
            host: host.clone(),
            is_run_engine: same_path,
            ..Default::default()
        };
        match DockerEngine::connect(&host).await {
            Err(e) => facts.error = Some(format!("{e:#}")),
            Ok(engine) => match engine.info().await {
                Err(e) => facts.error = Some(format!("{e:#}")),
                Ok(i) => {
                    facts.userns = i
                        .security_options
                        .unwrap_or_default()
                        .iter()
                        .any(|o| o.split(',').any(|kv| kv == "name=userns"));
                }
            },
        }
        f.build = Some(facts);
    }
    if let Some(addr) = &b.registry {
        f.registry = Some(RegistryFacts {
            addr: addr.clone(),
            loopback: false,
            answer: RegistryAnswer::Unreachable(String::new()),
            credentials: b
                .registry_auth
                .as_ref()
                .map(|path| system::load_registry_auth(&path.0).map(|_| ())),
        });
        let r = f.registry.as_mut().unwrap();
        (r.loopback, r.answer) = probe_registry(addr).await;
    }
}

/// Whether `addr` (`host[:port]`, port 443 when absent, as docker reads it) is on
/// loopback, and what it answers to a plain-HTTP `GET /v2/` (3 s at most).
async fn probe_registry(addr: &str) -> (bool, RegistryAnswer) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let with_port = if addr.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
    }) && !addr.ends_with(']')
    {
        addr.to_string()
    } else {
        format!("{addr}:443")
    };
    let limit = std::time::Duration::from_secs(3);
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(limit, tokio::net::lookup_host(&with_port)).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => return (false, RegistryAnswer::Unreachable(e.to_string())),
            Err(_) => {
                return (
                    false,
                    RegistryAnswer::Unreachable("name lookup timed out".into()),
                )
            }
        };
    let loopback = !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback());
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(&addrs[..]).await?;
        s.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = vec![0u8; 4096];
        let mut n = 0;
        while n < buf.len() {
            match s.read(&mut buf[n..]).await? {
                0 => break,
                k => n += k,
            }
        }
        buf.truncate(n);
        Ok::<_, std::io::Error>(buf)
    };
    let answer = match tokio::time::timeout(limit, exchange).await {
        Ok(Ok(reply)) => registry_answer(&reply),
        Ok(Err(e)) => RegistryAnswer::Unreachable(e.to_string()),
        Err(_) => RegistryAnswer::Unreachable("no answer within 3 s".into()),
    };
    (loopback, answer)
}

/// From dockerd's arguments and daemon.json: TCP hosts, whether TLS verification
/// is on, whether no-new-privileges is the default. Pure.
pub fn daemon_settings(args: &[String], json: &serde_json::Value) -> (Vec<String>, bool, bool) {
    let mut hosts = Vec::new();
    let mut tls = false;
    let mut nnp = false;
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        if a == "-H" || a == "--host" {
            if let Some(v) = it.next() {
                hosts.push(v.clone());
            }
        } else if let Some(v) = a.strip_prefix("--host=").or_else(|| a.strip_prefix("-H=")) {
            hosts.push(v.to_string());
        } else if let Some(v) = a.strip_prefix("-H").filter(|v| !v.is_empty()) {
            hosts.push(v.to_string());
        } else if a == "--tlsverify" || a == "--tlsverify=true" {
            tls = true;
        } else if a == "--no-new-privileges" || a == "--no-new-privileges=true" {
            nnp = true;
        }
    }
    if let Some(h) = json.get("hosts").and_then(|h| h.as_array()) {
        hosts.extend(h.iter().filter_map(|v| v.as_str().map(String::from)));
    }
    tls |= json.get("tlsverify").and_then(|v| v.as_bool()) == Some(true);
    nnp |= json.get("no-new-privileges").and_then(|v| v.as_bool()) == Some(true);
    let tcp = hosts
        .into_iter()
        .filter(|h| h.starts_with("tcp://"))
        .collect();
    (tcp, tls, nnp)
}

/// Days from an RFC 3339 time (`2023-10-26T00:00:00.000000000+00:00`) to now.
fn age_days(t: &str) -> Option<i64> {
    let d = t.get(..10)?;
    let mut p = d.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (p.next()??, p.next()??, p.next()??);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64
        / 86400;
    Some(now - days_from_civil(y, m, day))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The runtimes the policy names, whether the daemon has each (urund does not start
/// otherwise), and what a sandbox changes about the forced limits. Pure.
pub fn runtime_items(p: &Policy, registered: Option<&[String]>) -> Vec<Item> {
    let mut v = Vec::new();
    for name in p.runtimes() {
        v.push(match registered {
            Some(r) if r.contains(&name) => item(
                true,
                "policy runtime",
                format!("{name} is registered with the Docker daemon"),
            ),
            Some(r) => item(
                false,
                "policy runtime",
                format!(
                    "{name} is named by the policy but not registered with the Docker daemon \
                     (it has: {}): urund will not start; add it to daemon.json \"runtimes\" \
                     (see README, \"A sandboxed runtime\")",
                    r.join(", ")
                ),
            ),
            None => item(
                false,
                "policy runtime",
                format!("{name}: cannot tell whether it is registered (the daemon did not answer)"),
            ),
        });
    }
    if p.runtimes()
        .iter()
        .any(|n| RuntimeName(n.clone()).is_sandbox())
    {
        v.push(match sandbox_limits_problem(p) {
            Some(why) => item(
                false,
                "policy runtime limits",
                format!("{why}: urund will not start"),
            ),
            None => item(
                true,
                "policy runtime limits",
                format!(
                    "under a sandbox the pids limit (at least {SANDBOX_MIN_PIDS}) also counts \
                     the sandbox's own host threads; nproc bounds the processes inside (gVisor \
                     enforces it); memory bounds the whole sandbox"
                ),
            ),
        });
        v.push(item(
            false,
            "policy runtime network",
            "gVisor's runsc needs --network=none in daemon.json on hosts like this one: a \
             sandboxed container then has only lo, even with network.mode = \"isolated\"",
        ));
    }
    v
}

/// The verdicts, one named check after the other. Pure.
pub fn evaluate(f: &Facts) -> Vec<Item> {
    let mut v = docker_socket(f);
    v.push(tcp_listener(f));
    v.extend(daemon_reachable(f));
    v.push(seccomp(f));
    v.push(apparmor_selinux(f));
    v.push(userns_remap(f));
    v.push(icc(f));
    v.push(live_restore(f));
    v.push(no_new_privileges(f));
    v.push(engine_version(f));
    v.extend(build_engine(f));
    v.extend(registry(f));
    v
}

/// The build engine: reachable, and user-namespaced (else a `RUN` step's root is the
/// host's root, confined only by the container).
fn build_engine(f: &Facts) -> Option<Item> {
    let b = f.build.as_ref()?;
    let which = if b.is_run_engine {
        "the run daemon".to_string()
    } else {
        b.host.clone()
    };
    Some(match (&b.error, b.userns, b.is_run_engine) {
        (Some(e), _, _) => item(
            false,
            "build engine",
            format!("cannot ask {which} ({e}): urun build will fail"),
        ),
        (None, true, _) => item(
            true,
            "build engine",
            format!("{which}, with userns-remap (RUN steps run as a subordinate uid)"),
        ),
        (None, false, true) => item(
            false,
            "build engine",
            "the run daemon, without userns-remap: a build's RUN steps would run as the host's \
             root (confined only by the container) on the daemon that runs everyone's \
             containers, so builds are refused unless [build] allow_root_engine = true; set \
             [build] engine to a dedicated dockerd with \"userns-remap\": \"default\" \
             (README, \"Building images\")",
        ),
        (None, false, false) => item(
            false,
            "build engine",
            format!(
                "{which}: userns-remap is off, so RUN steps would run as the host's root \
                 (confined only by the container) and builds are refused unless \
                 [build] allow_root_engine = true; set \"userns-remap\": \"default\" in its \
                 daemon.json"
            ),
        ),
    })
}

/// The registry `urun push` promotes to: reachable, TLS (or on loopback), credentials.
fn registry(f: &Facts) -> Vec<Item> {
    let Some(r) = &f.registry else {
        return Vec::new();
    };
    let a = &r.addr;
    let mut v = vec![match &r.answer {
        RegistryAnswer::Unreachable(e) => item(
            false,
            "registry",
            format!("{a}: not reachable ({e}): urun push will fail"),
        ),
        RegistryAnswer::Other(what) => item(
            false,
            "registry",
            format!("{a}: {what}: is it a registry?"),
        ),
        RegistryAnswer::Tls => item(true, "registry", format!("{a}: reachable, TLS")),
        RegistryAnswer::Plain(code) if r.loopback => item(
            true,
            "registry",
            format!("{a}: reachable, plain HTTP on loopback (GET /v2/: {code})"),
        ),
        RegistryAnswer::Plain(code) => item(
            false,
            "registry",
            format!(
                "{a}: plain HTTP (GET /v2/: {code}) and not on loopback: images and \
                 credentials cross the network in clear, and every dockerd must list it in                  insecure-registries; serve it with TLS"
            ),
        ),
    }];
    let wants_auth = r.answer == RegistryAnswer::Plain(401);
    v.push(match &r.credentials {
        None if wants_auth => item(
            false,
            "registry credentials",
            format!("{a} wants credentials (401) but [build] registry_auth is not set: urun push will fail"),
        ),
        None => item(
            true,
            "registry credentials",
            "none set ([build] registry_auth): pushes are anonymous",
        ),
        Some(Ok(())) => item(
            true,
            "registry credentials",
            "set, in a file only root can read (never shown to users)",
        ),
        Some(Err(e)) => item(
            false,
            "registry credentials",
            format!("{e}: urun push will fail"),
        ),
    });
    v
}

fn item(ok: bool, name: &'static str, text: impl Into<String>) -> Item {
    Item {
        ok,
        name,
        text: text.into(),
    }
}

/// The docker socket root-owned and closed to others; nobody in its group.
fn docker_socket(f: &Facts) -> Vec<Item> {
    let Some((path, uid, group, mode)) = &f.socket else {
        return vec![item(
            false,
            "docker socket",
            "not found: is dockerd running?",
        )];
    };
    let ok = *uid == 0 && mode & 0o007 == 0;
    let socket = if ok {
        item(
            true,
            "docker socket",
            format!("{path} root:{group} mode {mode:o}"),
        )
    } else {
        item(
            false,
            "docker socket",
            format!(
                "{path} owner uid {uid} group {group} mode {mode:o}: make it root-owned \
                 and not accessible to others (chown root {path}; chmod 660 {path})"
            ),
        )
    };
    let members = if f.socket_group_members.is_empty() {
        item(
            true,
            "docker group",
            format!("group {group} has no members"),
        )
    } else {
        item(
            false,
            "docker group",
            format!(
                "members of {group} are root-equivalent: {}; remove them \
                 (gpasswd -d USER {group}) and let them use urun",
                f.socket_group_members.join(", ")
            ),
        )
    };
    vec![socket, members]
}

/// No TCP listener, or only with TLS verification.
fn tcp_listener(f: &Facts) -> Item {
    if f.tcp_hosts.is_empty() {
        item(true, "tcp listener", "dockerd listens on no TCP address")
    } else if f.tlsverify {
        let hosts = f.tcp_hosts.join(", ");
        item(true, "tcp listener", format!("{hosts} with --tlsverify"))
    } else {
        item(
            false,
            "tcp listener",
            format!(
                "{} without TLS verification: anyone who can reach it is root; remove the \
                 tcp host or enable --tlsverify with client certificates",
                f.tcp_hosts.join(", ")
            ),
        )
    }
}

/// Said only when the daemon could not be asked.
fn daemon_reachable(f: &Facts) -> Option<Item> {
    f.daemon_error.as_ref().map(|e| {
        item(
            false,
            "docker daemon",
            format!("cannot ask the daemon ({e}): the checks below are incomplete"),
        )
    })
}

/// The daemon's security option named `n`, if it has it.
fn security_option<'f>(f: &'f Facts, n: &str) -> Option<&'f String> {
    f.security_options
        .iter()
        .find(|o| o.split(',').any(|kv| kv == format!("name={n}")))
}

fn seccomp(f: &Facts) -> Item {
    match security_option(f, "seccomp") {
        Some(o) if !o.contains("profile=unconfined") => {
            item(true, "seccomp", format!("active ({o})"))
        }
        _ => item(
            false,
            "seccomp",
            "not active: run dockerd with its default seccomp profile (remove \
             --seccomp-profile=unconfined)",
        ),
    }
}

fn apparmor_selinux(f: &Facts) -> Item {
    match (
        security_option(f, "apparmor"),
        security_option(f, "selinux"),
    ) {
        (Some(_), _) => item(true, "apparmor/selinux", "AppArmor is active"),
        (_, Some(_)) => item(true, "apparmor/selinux", "SELinux is active"),
        _ => item(
            false,
            "apparmor/selinux",
            "neither is active: install and enable AppArmor (apt-get install apparmor) \
             or SELinux for a second confinement layer",
        ),
    }
}

fn userns_remap(f: &Facts) -> Item {
    if security_option(f, "userns").is_some() {
        return item(true, "userns-remap", "enabled");
    }
    item(
        false,
        "userns-remap",
        "not enabled: urun already runs containers as the caller's uid; \
         \"userns-remap\": \"default\" in daemon.json adds a layer for other containers",
    )
}

fn icc(f: &Facts) -> Item {
    match f.bridge_icc.as_deref() {
        Some("false") => item(true, "icc", "inter-container communication is off"),
        Some(_) => item(
            false,
            "icc",
            "containers on the default bridge can reach each other: set \"icc\": false in \
             daemon.json (urun's own containers use network none or the isolated urun network)",
        ),
        None => item(true, "icc", "no default bridge network"),
    }
}

fn live_restore(f: &Facts) -> Item {
    if f.live_restore {
        return item(true, "live-restore", "enabled");
    }
    item(
        false,
        "live-restore",
        "disabled: set \"live-restore\": true in daemon.json so containers survive \
         daemon restarts and upgrades",
    )
}

fn no_new_privileges(f: &Facts) -> Item {
    if f.no_new_privileges {
        return item(true, "no-new-privileges", "the daemon's default");
    }
    item(
        false,
        "no-new-privileges",
        "not the daemon's default: urun forces it on its containers; set \
         \"no-new-privileges\": true in daemon.json for all others",
    )
}

/// Built within a year.
fn engine_version(f: &Facts) -> Item {
    let v = &f.server_version;
    match f.engine_age_days {
        Some(d) if d <= 365 => item(true, "engine version", format!("{v} built {d} days ago")),
        Some(d) => item(
            false,
            "engine version",
            format!(
                "{v} built {d} days ago: more than a year old, upgrade Docker for security fixes"
            ),
        ),
        None => item(
            false,
            "engine version",
            format!("{v}: build date unknown; make sure it gets security updates"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Facts {
        Facts {
            socket: Some(("/var/run/docker.sock".into(), 0, "docker".into(), 0o660)),
            security_options: vec![
                "name=seccomp,profile=default".into(),
                "name=apparmor".into(),
                "name=userns".into(),
            ],
            live_restore: true,
            bridge_icc: Some("false".into()),
            no_new_privileges: true,
            server_version: "27.0.0".into(),
            engine_age_days: Some(30),
            ..Default::default()
        }
    }

    #[test]
    fn a_hardened_host_is_all_ok() {
        let items = evaluate(&good());
        assert!(items.iter().all(|i| i.ok), "{items:#?}");
        assert_eq!(items.len(), 10);
    }

    #[test]
    fn each_weakness_warns_with_what_to_do() {
        let mut f = good();
        f.socket = Some(("/s".into(), 0, "docker".into(), 0o666));
        f.socket_group_members = vec!["mallory".into()];
        f.tcp_hosts = vec!["tcp://0.0.0.0:2375".into()];
        f.security_options = vec!["name=seccomp,profile=unconfined".into()];
        f.live_restore = false;
        f.bridge_icc = Some("true".into());
        f.no_new_privileges = false;
        f.engine_age_days = Some(900);
        let items = evaluate(&f);
        assert!(items.iter().all(|i| !i.ok), "{items:#?}");
        let text = items
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        for want in [
            "WARN docker socket",
            "mallory",
            "gpasswd -d",
            "tcp://0.0.0.0:2375 without TLS",
            "WARN seccomp",
            "\"icc\": false",
            "\"live-restore\": true",
            "\"no-new-privileges\": true",
            "upgrade Docker",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
    }

    fn build(is_run_engine: bool, userns: bool) -> BuildEngineFacts {
        BuildEngineFacts {
            host: "unix:///run/urun-build/docker.sock".into(),
            is_run_engine,
            error: None,
            userns,
        }
    }

    fn text(items: &[Item]) -> String {
        items
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_build_engine_warns_when_it_is_the_run_engine_without_userns_remap() {
        let mut f = good();
        assert!(build_engine(&f).is_none(), "builds off: no line");
        f.build = Some(build(true, false));
        let i = build_engine(&f).unwrap();
        assert!(
            !i.ok && i.text.starts_with("the run daemon, without userns-remap"),
            "{i}"
        );
        f.build = Some(build(false, false));
        let i = build_engine(&f).unwrap();
        assert!(
            !i.ok
                && i.text
                    .contains("/run/urun-build/docker.sock: userns-remap is off")
        );
        f.build = Some(build(false, true));
        assert!(build_engine(&f).unwrap().ok);
        f.build = Some(build(true, true));
        assert!(build_engine(&f).unwrap().ok);
        f.build = Some(BuildEngineFacts {
            error: Some("connection refused".into()),
            ..build(false, true)
        });
        let i = build_engine(&f).unwrap();
        assert!(!i.ok && i.text.contains("connection refused"), "{i}");
        // evaluate() carries it
        assert_eq!(evaluate(&f).len(), 11);
    }

    fn reg(answer: RegistryAnswer, loopback: bool) -> RegistryFacts {
        RegistryFacts {
            addr: "registry.example.org:5000".into(),
            loopback,
            answer,
            credentials: None,
        }
    }

    #[test]
    fn the_registry_warns_when_plain_http_is_not_on_loopback() {
        let mut f = good();
        assert!(registry(&f).is_empty());
        f.registry = Some(reg(RegistryAnswer::Plain(200), true));
        assert!(registry(&f).iter().all(|i| i.ok), "{}", text(&registry(&f)));
        f.registry = Some(reg(RegistryAnswer::Tls, false));
        assert!(registry(&f).iter().all(|i| i.ok));
        f.registry = Some(reg(RegistryAnswer::Plain(200), false));
        let t = text(&registry(&f));
        assert!(
            t.contains("WARN registry: registry.example.org:5000: plain HTTP"),
            "{t}"
        );
        f.registry = Some(reg(
            RegistryAnswer::Unreachable("connection refused".into()),
            true,
        ));
        assert!(text(&registry(&f)).contains(
            "WARN registry: registry.example.org:5000: not reachable (connection refused)"
        ));
        // credentials: wanted and missing, set, unusable
        f.registry = Some(reg(RegistryAnswer::Plain(401), true));
        assert!(text(&registry(&f)).contains("WARN registry credentials"));
        f.registry.as_mut().unwrap().credentials = Some(Ok(()));
        assert!(registry(&f).iter().all(|i| i.ok));
        f.registry.as_mut().unwrap().credentials = Some(Err(
            "registry credentials /a: is open to group or others (mode 644): chmod 600".into(),
        ));
        assert!(text(&registry(&f))
            .contains("WARN registry credentials: registry credentials /a: is open"));
    }

    #[test]
    fn a_registry_answer_tells_plain_http_from_tls() {
        assert_eq!(
            registry_answer(b"HTTP/1.0 200 OK\r\n\r\n{}"),
            RegistryAnswer::Plain(200)
        );
        assert_eq!(
            registry_answer(b"HTTP/1.1 401 Unauthorized\r\n"),
            RegistryAnswer::Plain(401)
        );
        assert_eq!(
            registry_answer(
                b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
            ),
            RegistryAnswer::Tls
        );
        assert_eq!(
            registry_answer(&[0x15, 3, 1, 0, 2, 2, 50]),
            RegistryAnswer::Tls
        );
        assert!(matches!(registry_answer(b""), RegistryAnswer::Other(_)));
        assert!(matches!(
            registry_answer(b"SSH-2.0-OpenSSH"),
            RegistryAnswer::Other(_)
        ));
    }

    #[test]
    fn daemon_settings_from_args_and_json() {
        let args: Vec<String> = [
            "dockerd",
            "-H",
            "fd://",
            "--host=tcp://0.0.0.0:2376",
            "--tlsverify",
        ]
        .map(String::from)
        .to_vec();
        let (tcp, tls, nnp) = daemon_settings(&args, &serde_json::Value::Null);
        assert_eq!(tcp, ["tcp://0.0.0.0:2376"]);
        assert!(tls && !nnp);
        let json: serde_json::Value = serde_json::from_str(
            r#"{"hosts":["unix:///var/run/docker.sock","tcp://127.0.0.1:2375"],"no-new-privileges":true}"#,
        )
        .unwrap();
        let (tcp, tls, nnp) = daemon_settings(&[], &json);
        assert_eq!(tcp, ["tcp://127.0.0.1:2375"]);
        assert!(!tls && nnp);
    }

    #[test]
    fn a_pattern_sharing_every_users_builds_is_warned_about() {
        let p = |t: &str| Policy::parse(t, Path::new("/p")).unwrap();
        let w = shared_images(&p(
            "[images]\nallow = [\"r:5000/urun/*\", \"urun/*\", \"r:5000/urun/{user}/*\", \
             \"debian:*\", \"*\", \"r:5000/urun/team/*\"]\n",
        ));
        let texts: Vec<&str> = w.iter().map(|i| i.text.as_str()).collect();
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert!(texts[0].starts_with("r:5000/urun/* admits every user's images under r:5000/urun/"));
        assert!(texts[0].contains("r:5000/urun/{user}/* admits only each one's own"));
        assert!(texts[1].starts_with("urun/* admits every user's images under urun/"));
        assert!(texts[2].starts_with("* admits every user's images under urun/"));
        assert!(w.iter().all(|i| !i.ok && !i.text.contains('\n')));
        // another namespace
        let w = shared_images(&p(
            "[images]\nallow = [\"r/site/*\"]\n[build]\nnamespace = \"site\"\n",
        ));
        assert_eq!(w.len(), 1);
    }

    /// Review: the warning looked for the namespace in a pattern's text, so `*` (the
    /// default, admitting every member's builds) and other wildcards went unwarned.
    /// Each pattern is matched against sample names of two users' builds instead.
    #[test]
    fn every_pattern_that_admits_all_members_builds_is_warned_about_whatever_its_text() {
        let p = |t: &str| Policy::parse(t, Path::new("/p")).unwrap();
        let warned = |allow: &str, extra: &str| -> Vec<String> {
            shared_images(&p(&format!("[images]\nallow = [{allow}]\n{extra}")))
                .into_iter()
                .map(|i| i.text)
                .collect()
        };
        // the default, with and without a push registry
        let w = warned("\"*\"", "");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("* admits every user's images under urun/"),
            "{w:?}"
        );
        let w = warned("\"*\"", "[build]\nregistry = \"reg.example:5000\"\n");
        assert!(w[0].contains("under reg.example:5000/urun/"), "{w:?}");
        // the default policy: no allow key at all
        assert_eq!(shared_images(&p("")).len(), 1);
        // wildcards before or inside the namespace
        for a in ["\"*/urun/*\"", "\"urun*\"", "\"u?un/*\"", "\"*:1\""] {
            assert_eq!(warned(a, "").len(), 1, "{a}");
        }
        assert!(warned("\"*/urun/*\"", "")[0].contains("under <registry>/urun/"));
        // patterns that do not admit two members' builds
        for a in [
            "\"debian:*\"",
            "\"urun/alice/*\"",
            "\"urun/{user}/*\"",
            "\"reg.example:5000/urun/{user}/*\"",
            "\"reg.example:5000/urun/team/*\"",
            "\"busybox*\"",
        ] {
            assert_eq!(warned(a, "").len(), 0, "{a}");
        }
        // another namespace: only its names count
        let w = warned("\"urun/*\"", "[build]\nnamespace = \"site\"\n");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(warned("\"*\"", "[build]\nnamespace = \"site\"\n").len(), 1);
    }

    #[test]
    fn a_build_memory_above_the_api_field_is_warned_about() {
        let p = |m: &str| {
            Policy::parse(
                &format!("[build]\nenabled = true\nmemory = \"{m}\"\n"),
                Path::new("p"),
            )
            .unwrap()
        };
        // the default 2g fits (as 2 GiB - 1 byte); more does not
        assert!(build_memory(&p("1g")).is_none());
        assert!(build_memory(&p("2g")).is_none());
        assert!(build_memory(&p("3g")).is_some_and(|i| !i.ok));
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(days_from_civil(2024, 2, 29), 19782);
    }

    #[test]
    fn runtimes_named_by_the_policy_are_reported_and_a_missing_one_warned() {
        let p = Policy::parse(
            "[limits]\npids = 512\n[[runtime.image]]\nmatch = \"u/*\"\nname = \"runsc\"\n",
            Path::new("/p"),
        )
        .unwrap();
        let has = ["runc".to_string(), "runsc".to_string()];
        let items = runtime_items(&p, Some(&has));
        assert!(items
            .iter()
            .any(|i| i.ok && i.text.starts_with("runsc is registered")));
        assert!(items
            .iter()
            .any(|i| i.ok && i.name == "policy runtime limits"));
        let items = runtime_items(&p, Some(&has[..1]));
        let missing = items.iter().find(|i| i.text.starts_with("runsc")).unwrap();
        assert!(
            !missing.ok && missing.text.contains("urund will not start"),
            "{missing}"
        );
        let low = Policy::parse("[runtime]\nname = \"runsc\"\n", Path::new("/p")).unwrap();
        let items = runtime_items(&low, Some(&has));
        assert!(items
            .iter()
            .any(|i| !i.ok && i.name == "policy runtime limits" && i.text.contains("pids = 256")));
        // runc only: one line, nothing about sandboxes
        let plain = Policy::parse("", Path::new("/p")).unwrap();
        assert_eq!(runtime_items(&plain, Some(&has)).len(), 1);
    }
}
