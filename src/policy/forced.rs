//! The forced settings in words ([`FORCED`], shown by `urun --help` and in
//! SECURITY.md) and the pure values they are built from: the labels that prove a
//! container is urund's ([`Owner`]), `HOME`, the environment, what urund prepared for a
//! run ([`Inside`]). Docker's container configuration is built from them, row by row
//! and tested against this table, by [`crate::engine::config`].
#![forbid(unsafe_code)]

use crate::policy::Caller;
use crate::wire::Request;
use std::collections::HashMap;
use std::path::PathBuf;

/// Label keys every urun container carries (audit and clean-up).
pub const LABEL_UID: &str = "io.urun.uid";
pub const LABEL_USER: &str = "io.urun.user";
pub const LABEL_REQUEST: &str = "io.urun.request";
/// Which helper instance (by socket path) owns the container: a helper only reaps its own.
pub const LABEL_HELPER: &str = "io.urun.helper";
/// The `--name` the user gave the run. Never Docker's container name: on a user-defined
/// network Docker's DNS resolves container names for every container on it.
pub const LABEL_NAME: &str = "io.urun.name";
/// The installation's secret (see [`crate::daemon::instance`]): what proves to the clean-up
/// that urund created the container. No image and no other user can know it.
pub const LABEL_INSTANCE: &str = "io.urun.instance";

/// What proves a container is this urund's: its socket path and the installation's
/// secret, as labels urund sets at create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The socket path: which urund of the installation (several may share a secret).
    pub helper: String,
    /// The installation's secret (`crate::daemon::instance::load_or_create_secret`).
    pub secret: String,
}

impl Owner {
    /// The labels urund puts on every container it creates (runs and probes).
    pub fn labels(&self, request: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_HELPER.to_string(), self.helper.clone()),
            (LABEL_INSTANCE.to_string(), self.secret.clone()),
            (LABEL_REQUEST.to_string(), request.to_string()),
        ])
    }

    /// Whether a container is proven to be one urund created: its labels carry this
    /// helper's socket and the secret, and its image's own labels do not carry the
    /// secret (an image that does was made from one of urund's containers, or by
    /// someone who knows it: a container of it has the secret without its creator
    /// knowing it). An image's instance label with any other value proves nothing
    /// either way: Docker gives a container its creator's value for a key both set, so
    /// the secret on the container came from its creator. (Refusing every image with
    /// the key made any image labelled `io.urun.instance=x` one whose runs urund never
    /// reaped after a crash, so they outlived `max_runtime`.) `Err` says why not. Pure.
    pub fn proves(
        &self,
        container: &HashMap<String, String>,
        image: &HashMap<String, String>,
    ) -> Result<(), &'static str> {
        if container.get(LABEL_INSTANCE) != Some(&self.secret) {
            return Err("it does not carry this installation's secret label");
        }
        if container.get(LABEL_HELPER) != Some(&self.helper) {
            return Err("it belongs to another urund (another socket)");
        }
        if image.get(LABEL_INSTANCE) == Some(&self.secret) {
            return Err("its image carries the instance label itself");
        }
        Ok(())
    }
}

/// The forced settings in words: (setting, value). Printed by `urun --help`.
pub const FORCED: &[(&str, &str)] = &[
    (
        "User",
        "your uid:gid, numeric (never a name the image could redefine)",
    ),
    ("CapDrop / CapAdd", "ALL / none"),
    ("Privileged", "false"),
    (
        "SecurityOpt",
        "no-new-privileges; the daemon's seccomp/AppArmor/SELinux defaults kept",
    ),
    ("ReadonlyRootfs", "true"),
    (
        "Tmpfs",
        "/tmp and $HOME, each rw,nosuid,nodev,noexec, sized, owned by you (/tmp mode 1777 \
         unless the image's /tmp has another mode, $HOME 0700)",
    ),
    (
        "Image VOLUMEs",
        "each an empty tmpfs like /tmp (policy images.volumes = \"tmpfs\"), or the image is \
         refused (\"refuse\"); never a disk-backed Docker volume",
    ),
    ("Ulimits", "nofile and nproc from policy, core=0"),
    (
        "Memory / PidsLimit / CPU",
        "from policy, always set; no extra swap",
    ),
    (
        "Network",
        "none (only lo), or with policy network.mode = \"isolated\" the helper's bridge \
         urun-isolated, where containers cannot reach each other; never host",
    ),
    ("Pid/Ipc/Uts/Userns/Cgroupns", "private, never host"),
    (
        "Devices, ports, links, volumes-from, host binds",
        "none, except the two below",
    ),
    (
        "/etc/passwd, /etc/group",
        "read-only: the image's entries minus any claiming your uid, gid or names, plus yours",
    ),
    (
        "Working directory (-v \"$PWD\":DIR, --here)",
        "only if policy [mounts] allows: the directory you opened, pinned, with every \
         restriction of its own mount (ro, noexec, ...) plus nosuid,nodev (ro with :ro)",
    ),
    (
        "GroupAdd",
        "none, or with policy identity.groups = \"caller\" your groups minus the denied ones",
    ),
    (
        "Runtime",
        "from policy [runtime] (runc, or a sandbox such as gVisor's runsc, by user, group \
         or image), also for the identity-file probe; never from the request",
    ),
    ("Init", "docker-init as PID 1 (signals and zombies handled)"),
    (
        "Healthcheck",
        "off (NONE): an image HEALTHCHECK never runs (each probe is a dockerd exec)",
    ),
    ("LogConfig", "none (output goes only to you)"),
    (
        "RestartPolicy / removal",
        "no / removed as soon as it exits or you disconnect",
    ),
    (
        "Labels, name",
        "io.urun.uid, io.urun.user, io.urun.request (owner uid, user name, request id), \
         io.urun.name (--name), io.urun.helper (urund's socket), io.urun.instance (its \
         secret: clean-up removes only containers that carry it); Docker's own name is its \
         random one",
    ),
    (
        "Env",
        "HOME forced to yours; from -e only names the policy allows (plus the image's own)",
    ),
];

/// Where `HOME` is inside the container: `/home/<name>` for a plain user name,
/// `/home/<uid>` otherwise (names from the user database are not trusted as paths).
pub fn home_dir(caller: &Caller) -> String {
    match &caller.name {
        Some(n) if crate::policy::names::home_name(n) => format!("/home/{n}"),
        _ => format!("/home/{}", caller.uid),
    }
}

/// The environment: `HOME` from urund, then the user's entries the judge allowed,
/// never one that names `HOME` again.
pub fn environment(caller: &Caller, req: &Request) -> Vec<String> {
    let mut env = vec![format!("HOME={}", home_dir(caller))];
    env.extend(req.env.iter().filter(|e| !e.starts_with("HOME=")).cloned());
    env
}

/// What the helper prepared for this run beyond the request: the identity files and
/// the pinned working directory (paths in urund's root-only runtime directory), and the
/// supplementary groups the policy passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inside {
    pub passwd: Option<PathBuf>,
    pub group: Option<PathBuf>,
    pub groups: Vec<u32>,
    pub work: Option<WorkMount>,
    /// The image's `VOLUME` paths, checked (`reference::volume_paths`): each gets a tmpfs.
    pub volumes: Vec<String>,
}

/// The pinned working directory: `source` is urund's private mount point, never a
/// path from the request. Read-only is enforced on that pinned mount itself (see
/// SECURITY.md: asking Docker for `ro` would make runc remount it without
/// nosuid,nodev).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkMount {
    pub source: PathBuf,
    pub target: String,
}

/// Labels identifying a run: owner, request, the helper's own (socket path and secret,
/// see [`crate::daemon::instance::Owner`]), and the `--name` the user gave it (validated by the
/// judge).
pub fn labels(
    caller: &Caller,
    request_id: &str,
    owner: &Owner,
    name: Option<&str>,
) -> HashMap<String, String> {
    let mut l = owner.labels(request_id);
    l.insert(LABEL_UID.to_string(), caller.uid.to_string());
    l.insert(LABEL_USER.to_string(), caller.display_name());
    if let Some(n) = name {
        l.insert(LABEL_NAME.to_string(), n.to_string());
    }
    l
}

/// The forced settings of a build, in words: (setting, value). The build engine's
/// call is made from [`build_settings`], row by row, and tested against this table;
/// README ("Building images") and SECURITY.md list the same rows.
pub const BUILD_FORCED: &[(&str, &str)] = &[
    (
        "Engine",
        "policy [build] engine (default: the run daemon); recommended: a dedicated dockerd \
         with userns-remap, so a RUN step's root is an unprivileged host uid",
    ),
    (
        "Builder",
        "the legacy builder (Engine API 1.41, version 1), which honours the limits below; \
         never BuildKit",
    ),
    (
        "Network",
        "none for RUN steps, unless policy [build] network = true (then the engine's bridge)",
    ),
    (
        "Memory",
        "policy [build] memory, swap included (memswap = memory); at most 2 GiB - 1 byte \
         (the API's 32-bit field)",
    ),
    (
        "CPU",
        "policy [build] cpus, as a CFS quota per 100 ms period",
    ),
    (
        "Time",
        "policy [build] max_runtime: then the build is cancelled, exit 124, nothing left",
    ),
    (
        "Concurrency",
        "at most policy [build] max_concurrent builds per user",
    ),
    (
        "Context",
        "at most policy [build] max_context bytes, counted by urund while it reads",
    ),
    (
        "Processes",
        "no pids limit in the build API: bounded by the build engine's default-ulimits \
         nproc (recommended set-up), the memory limit and max_runtime",
    ),
    (
        "Intermediate containers",
        "always removed (rm and forcerm), with their anonymous volumes; a failed, \
         refused or stopped build's images deleted (only those the engine says it \
         made, never one its output merely names)",
    ),
    (
        "Shared memory",
        "/dev/shm of 64 MiB plus a number of 4 KiB pages no other build in progress \
         has: how urund tells this build's step containers from any other container",
    ),
    (
        "Base images",
        "never pulled by the builder (pull off); present on the build engine, copied from \
         the run engine, or pulled by urund only where policy [pull] allows",
    ),
    (
        "Cache",
        "the build engine's layer cache, shared between users; --no-cache skips it; a \
         build's images are deleted from a dedicated build engine once moved",
    ),
    (
        "Tags",
        "none on the build engine; each -t NAME[:TAG] becomes \
         <[build] namespace>/<your user>/NAME:TAG on the run engine",
    ),
    (
        "Labels",
        "yours (never io.urun.*), plus io.urun.build.uid, .user, .dockerfile, .context, \
         .checks set by urund",
    ),
    (
        "Not offered",
        "--network, --add-host, --secret, --ssh, --security-opt, --isolation, \
         --cgroup-parent, --output, --cache-from, --platform, --squash, --shm-size",
    ),
];

/// CFS period of a build's CPU quota, microseconds.
pub const BUILD_CPU_PERIOD: i64 = 100_000;

/// Everything the build engine is asked to do, from [`BUILD_FORCED`], the `[build]`
/// policy and the request: engine/docker.rs turns it into the API's query one field
/// at a time. Pure values, no choice left to the engine code.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSettings {
    /// The Dockerfile's name inside the context archive.
    pub dockerfile: String,
    /// `none`, or `default` where the policy gives builds a network.
    pub network: &'static str,
    pub memory: i64,
    pub memswap: i64,
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub rm: bool,
    pub forcerm: bool,
    /// The builder never pulls.
    pub pull: bool,
    pub nocache: bool,
    pub target: Option<String>,
    pub buildargs: HashMap<String, String>,
    /// The user's labels and urund's (urund's win).
    pub labels: HashMap<String, String>,
    /// Builder version "1": the legacy builder.
    pub legacy_builder: bool,
    /// Every step container's `/dev/shm` size: [`BUILD_SHM`] plus one more page than
    /// this build's mark, unique among the builds in progress (review B2; never
    /// Docker's default, so no container made without a mark has it).
    pub shm_size: i64,
}

/// The `/dev/shm` of a build's step containers before its mark (Docker's default).
pub const BUILD_SHM: i64 = 64 << 20;
/// Marks a build can be given (`0..BUILD_MARKS`): [`BUILD_SHM`] plus at most 16 MiB.
pub const BUILD_MARKS: u16 = 4096;

/// What urund found about a build that goes into its labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildDigests {
    /// sha256 (hex) of the Dockerfile and of the context stream.
    pub dockerfile: String,
    pub context: String,
    /// The check's result in one word per finding (`rule:severity`), `ok` if none.
    pub checks: String,
}

/// The most memory a build can be given (the API's `memory` is a 32-bit signed field).
pub const BUILD_MAX_MEMORY: u64 = i32::MAX as u64;

/// The build engine's settings for one build. `req.labels` were checked (no
/// `io.urun.` key) by the caller; urund's labels are set last and win anyway. Pure.
pub fn build_settings(
    build: &crate::policy::Build,
    caller: &Caller,
    req: &crate::wire::BuildRequest,
    facts: &BuildDigests,
    mark: u16,
) -> BuildSettings {
    use crate::policy::build as b;
    let memory = build.memory.0.min(BUILD_MAX_MEMORY) as i64;
    let mut labels: HashMap<String, String> = req
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with(b::RESERVED_LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(b::LABEL_UID.into(), caller.uid.to_string());
    labels.insert(b::LABEL_USER.into(), caller.display_name());
    labels.insert(b::LABEL_DOCKERFILE.into(), facts.dockerfile.clone());
    labels.insert(b::LABEL_CONTEXT.into(), facts.context.clone());
    labels.insert(b::LABEL_CHECKS.into(), facts.checks.clone());
    BuildSettings {
        dockerfile: req.dockerfile.clone(),
        network: if build.network { "default" } else { "none" },
        memory,
        memswap: memory,
        cpu_period: BUILD_CPU_PERIOD,
        cpu_quota: ((build.cpus.0 * BUILD_CPU_PERIOD as f64).round() as i64).max(1000),
        rm: true,
        forcerm: true,
        pull: false,
        nocache: req.no_cache,
        target: req.target.clone(),
        buildargs: req
            .build_args
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        labels,
        legacy_builder: true,
        shm_size: BUILD_SHM + (1 + i64::from(mark.min(BUILD_MARKS - 1))) * 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller::example()
    }

    #[test]
    fn home_never_comes_from_an_odd_name() {
        let mut c = caller();
        for (name, want) in [
            (Some("bob"), "/home/bob"),
            (Some("../etc"), "/home/1001"),
            (Some("a/b"), "/home/1001"),
            (Some(".x"), "/home/1001"),
            (None, "/home/1001"),
        ] {
            c.name = name.map(String::from);
            assert_eq!(home_dir(&c), want);
        }
    }

    #[test]
    fn every_build_row_holds_on_the_settings() {
        use crate::policy::build as b;
        let mut policy = crate::policy::Build::default();
        let req = crate::wire::BuildRequest {
            version: crate::wire::VERSION,
            dockerfile: "Dockerfile".into(),
            labels: [
                ("a".to_string(), "1".to_string()),
                (b::LABEL_UID.to_string(), "0".to_string()),
                ("io.urun.x".to_string(), "y".to_string()),
            ]
            .into(),
            build_args: [("V".to_string(), "2".to_string())].into(),
            ..Default::default()
        };
        let facts = BuildDigests {
            dockerfile: "d".into(),
            context: "c".into(),
            checks: "ok".into(),
        };
        let s = build_settings(&policy, &caller(), &req, &facts, 3);
        // Network, Memory (capped at the API's field), CPU
        assert_eq!(s.network, "none");
        assert_eq!(s.memory, i32::MAX as i64);
        assert_eq!(s.memswap, s.memory);
        assert_eq!((s.cpu_period, s.cpu_quota), (100_000, 100_000));
        // Builder, intermediate containers, base images, cache
        assert!(s.legacy_builder && s.rm && s.forcerm && !s.pull && !s.nocache);
        // Labels: the user's kept, urund's set and never the user's value
        assert_eq!(s.labels.get("a").map(String::as_str), Some("1"));
        assert_eq!(s.labels.get(b::LABEL_UID), Some(&caller().uid.to_string()));
        assert!(!s.labels.contains_key("io.urun.x"));
        assert_eq!(
            s.labels.get(b::LABEL_CHECKS).map(String::as_str),
            Some("ok")
        );
        assert_eq!(s.buildargs.get("V").map(String::as_str), Some("2"));
        // Shared memory: the build's mark, in pages above 64 MiB (never Docker's
        // default 64 MiB), within 16 MiB.
        assert_eq!(s.shm_size, (64 << 20) + 4 * 4096);
        let first = build_settings(&policy, &caller(), &req, &facts, 0);
        assert_eq!(first.shm_size, (64 << 20) + 4096);
        let top = build_settings(&policy, &caller(), &req, &facts, u16::MAX);
        assert_eq!(top.shm_size, (64 << 20) + 4096 * 4096);
        policy.network = true;
        policy.memory = crate::policy::Bytes(512 << 20);
        policy.cpus = crate::policy::model::Cpus(0.5);
        let s = build_settings(&policy, &caller(), &req, &facts, 0);
        assert_eq!(s.network, "default");
        assert_eq!(s.memory, 512 << 20);
        assert_eq!(s.cpu_quota, 50_000);
        assert_eq!(BUILD_FORCED.len(), 16);
    }

    #[test]
    fn every_row_is_documented() {
        assert_eq!(FORCED.len(), 22);
        assert!(FORCED.iter().all(|(k, v)| !k.is_empty() && !v.is_empty()));
    }
}
