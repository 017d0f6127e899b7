//! The forced settings: the one place that decides how a container is configured.
//! [`container_config`] is a pure function of (caller, policy limits, admitted image,
//! request); every security-relevant field is set here from the caller's identity and
//! the policy, never from the request. [`FORCED`] is the same table in words, shown by
//! `urun --help` and in SECURITY.md, and the tests check every row against the built
//! configuration.
#![forbid(unsafe_code)]

use crate::policy::Caller;
use crate::policy::{Limits, NetworkMode, RuntimeName, ISOLATED_NETWORK};
use crate::wire::Request;
use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, HostConfigCgroupnsModeEnum, HostConfigLogConfig,
    Mount, MountBindOptions, MountBindOptionsPropagationEnum, MountTypeEnum, ResourcesUlimits,
    RestartPolicy, RestartPolicyNameEnum,
};
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
fn environment(caller: &Caller, req: &Request) -> Vec<String> {
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

fn bind(source: &std::path::Path, target: &str, read_only: bool) -> Mount {
    Mount {
        typ: Some(MountTypeEnum::BIND),
        source: Some(source.display().to_string()),
        target: Some(target.into()),
        read_only: Some(read_only),
        bind_options: Some(MountBindOptions {
            propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
            non_recursive: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The configuration of the never-started container urund creates to read an image's
/// `/etc/passwd`, `/etc/group` and `/etc/shells` through the archive endpoint: no
/// command that exists, no network, labelled so a restarted helper reaps it.
/// `volumes` are the image's `VOLUME` paths (checked, cleaned: `reference::volume_paths`):
/// each gets a tmpfs, because Docker creates an anonymous volume for every `VOLUME`
/// not covered by a mount already when the container is *created*, and copies the
/// image's content there (an image with gigabytes under a `VOLUME` filled the disk).
pub fn probe_config(
    image_id: &str,
    labels: HashMap<String, String>,
    volumes: &[String],
    runtime: &RuntimeName,
) -> ContainerCreateBody {
    let tmpfs = volumes
        .iter()
        .map(|v| (v.clone(), "ro,nosuid,nodev,noexec,size=4k".to_string()))
        .collect();
    ContainerCreateBody {
        image: Some(image_id.into()),
        entrypoint: Some(vec!["/urun-probe-is-never-started".into()]),
        cmd: Some(vec![]),
        labels: Some(labels),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            cap_drop: Some(vec!["ALL".into()]),
            privileged: Some(false),
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            tmpfs: Some(tmpfs),
            runtime: Some(runtime.0.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
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

/// Builds the container configuration. `image_id` is the image ID resolved at
/// admission, so a tag moved afterwards cannot change what runs; `runtime` is the one
/// the policy chose for this caller and image.
#[allow(clippy::too_many_arguments)]
pub fn container_config(
    caller: &Caller,
    limits: &Limits,
    image_id: &str,
    req: &Request,
    labels: HashMap<String, String>,
    network: NetworkMode,
    inside: &Inside,
    runtime: &RuntimeName,
) -> ContainerCreateBody {
    let network_name = match network {
        NetworkMode::None => "none",
        NetworkMode::Isolated => ISOLATED_NETWORK,
    };
    let home = home_dir(caller);
    let tmpfs_size = limits.tmpfs_size.0;
    let mut mounts = Vec::new();
    if let Some(p) = &inside.passwd {
        mounts.push(bind(p, "/etc/passwd", true));
    }
    if let Some(g) = &inside.group {
        mounts.push(bind(g, "/etc/group", true));
    }
    if let Some(w) = &inside.work {
        mounts.push(bind(&w.source, &w.target, false));
    }
    // Owned by the caller: runc gives a tmpfs mounted over a directory of the image
    // that directory's mode (mode= is then ignored), so only ownership makes /tmp
    // writable whatever the image's /tmp is.
    let scratch = format!(
        "rw,nosuid,nodev,noexec,size={tmpfs_size},uid={},gid={}",
        caller.uid, caller.gid
    );
    let mut tmpfs = HashMap::from([("/tmp".to_string(), format!("{scratch},mode=1777"))]);
    // Mounting your directory at $HOME makes it your home; otherwise HOME is a tmpfs.
    if inside.work.as_ref().is_none_or(|w| w.target != home) {
        tmpfs.insert(home.clone(), format!("{scratch},mode=0700"));
    }
    // Each VOLUME of the image: a tmpfs, so Docker creates no disk-backed anonymous
    // volume (it skips one where a mount is). Where something is mounted already
    // (/tmp, $HOME, the working directory), that covers it.
    let taken: Vec<String> = mounts
        .iter()
        .filter_map(|m| m.target.clone())
        .chain(tmpfs.keys().cloned())
        .collect();
    for v in &inside.volumes {
        if !taken.contains(v) {
            tmpfs.insert(v.clone(), scratch.clone());
        }
    }
    let ulimit = |name: &str, n: i64| ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(n),
        hard: Some(n),
    };
    let host = HostConfig {
        // ── identity and privilege ──
        privileged: Some(false),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: None,
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        readonly_rootfs: Some(true),
        // ── scratch space (counts against the memory limit) ──
        tmpfs: Some(tmpfs),
        // ── resources ──
        ulimits: Some(vec![
            ulimit("nofile", limits.nofile.0.into()),
            ulimit("nproc", limits.nproc.0.into()),
            ulimit("core", 0),
        ]),
        memory: Some(limits.memory.0 as i64),
        memory_swap: Some(limits.memory.0 as i64),
        pids_limit: Some(limits.pids.0.into()),
        nano_cpus: Some(limits.cpus.nano()),
        oom_kill_disable: Some(false),
        // ── namespaces: all private ──
        network_mode: Some(network_name.into()),
        pid_mode: Some(String::new()),
        ipc_mode: Some("private".into()),
        uts_mode: Some(String::new()),
        userns_mode: Some(String::new()),
        cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
        // ── nothing from the host ──
        devices: Some(vec![]),
        device_cgroup_rules: Some(vec![]),
        device_requests: Some(vec![]),
        port_bindings: None,
        publish_all_ports: Some(false),
        volumes_from: Some(vec![]),
        links: Some(vec![]),
        binds: Some(vec![]),
        mounts: Some(mounts),
        extra_hosts: Some(vec![]),
        sysctls: None,
        group_add: (!inside.groups.is_empty())
            .then(|| inside.groups.iter().map(|g| g.to_string()).collect()),
        runtime: Some(runtime.0.clone()),
        // ── lifecycle ──
        init: Some(true),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        // The helper removes the container itself once it has the exit status
        // (AutoRemove would race with reading it); helper restarts reap leftovers.
        auto_remove: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image_id.into()),
        user: Some(format!("{}:{}", caller.uid, caller.gid)),
        cmd: (!req.command.is_empty()).then(|| req.command.clone()),
        entrypoint: req.entrypoint.as_ref().map(|e| vec![e.clone()]),
        working_dir: req.workdir.clone(),
        env: Some(environment(caller, req)),
        labels: Some(labels),
        attach_stdin: Some(req.interactive),
        open_stdin: Some(req.interactive),
        stdin_once: Some(req.interactive),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(req.tty),
        // An image HEALTHCHECK is dockerd exec-ing into the container on the image's
        // schedule (1 ms intervals make dockerd spin): never.
        healthcheck: Some(HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        }),
        network_disabled: Some(network == NetworkMode::None),
        exposed_ports: None,
        volumes: None,
        host_config: Some(host),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Bytes, Count, Cpus};

    fn caller() -> Caller {
        Caller {
            uid: 1001,
            gid: 1002,
            pid: 4242,
            groups: vec![1002, 27],
            name: Some("alice".into()),
            group: Some("alice".into()),
        }
    }

    /// Requests that try everything a request can carry.
    fn hostile_requests() -> Vec<Request> {
        let mut v = vec![Request::new("busybox".into(), vec![])];
        let mut r = Request::new(
            "busybox".into(),
            ["--privileged", "-u", "0", "-v", "/:/host", "sh"]
                .map(String::from)
                .to_vec(),
        );
        r.interactive = true;
        v.push(r);
        let mut r = Request::new("busybox".into(), vec!["sh".into()]);
        r.tty = true;
        r.env = vec!["HOME=/root".into(), "TERM=xterm".into()];
        r.user = Some("0:0".into());
        r.network = Some("host".into());
        r.name = Some("x".into());
        r.entrypoint = Some("/bin/sh".into());
        r.workdir = Some("/".into());
        v.push(r);
        v
    }

    fn build(r: &Request) -> ContainerCreateBody {
        container_config(
            &caller(),
            &Limits::default(),
            "sha256:feed",
            r,
            labels(&caller(), "rq1", &owner(), Some("web")),
            NetworkMode::None,
            &Inside::default(),
            &RuntimeName::default(),
        )
    }

    /// The configuration for `r` with default limits, no network and `inside`.
    fn build_with(r: &Request, inside: &Inside) -> ContainerCreateBody {
        container_config(
            &caller(),
            &Limits::default(),
            "x",
            r,
            HashMap::new(),
            NetworkMode::None,
            inside,
            &RuntimeName::default(),
        )
    }

    fn inside() -> Inside {
        Inside {
            passwd: Some("/run/urun/run/rq1/passwd".into()),
            group: Some("/run/urun/run/rq1/group".into()),
            groups: vec![3000, 3001],
            work: Some(WorkMount {
                source: "/run/urun/run/rq1/work".into(),
                target: "/work".into(),
            }),
            volumes: vec![],
        }
    }

    #[test]
    fn row_identity_files_read_only() {
        let c = build_with(&Request::default(), &inside());
        let m = c.host_config.unwrap().mounts.unwrap();
        for (src, dst) in [
            ("/run/urun/run/rq1/passwd", "/etc/passwd"),
            ("/run/urun/run/rq1/group", "/etc/group"),
        ] {
            let b = m.iter().find(|b| b.target.as_deref() == Some(dst)).unwrap();
            assert_eq!(b.source.as_deref(), Some(src));
            assert_eq!(b.typ, Some(MountTypeEnum::BIND));
            assert_eq!(b.read_only, Some(true));
        }
    }

    #[test]
    fn row_working_directory_is_the_pinned_mount_only() {
        let r = Request {
            workdir: Some("/work".into()),
            ..Default::default()
        };
        let c = build_with(&r, &inside());
        assert_eq!(c.working_dir.as_deref(), Some("/work"));
        let h = c.host_config.unwrap();
        let m = h.mounts.unwrap();
        assert_eq!(m.len(), 3);
        let w = m
            .iter()
            .find(|b| b.target.as_deref() == Some("/work"))
            .unwrap();
        assert_eq!(w.source.as_deref(), Some("/run/urun/run/rq1/work"));
        // ro lives on the pinned mount; asking docker for it would drop nosuid,nodev
        assert_eq!(w.read_only, Some(false));
        let o = w.bind_options.as_ref().unwrap();
        assert_eq!(o.non_recursive, Some(true));
        assert_eq!(
            o.propagation,
            Some(MountBindOptionsPropagationEnum::RPRIVATE)
        );
        assert_eq!(h.binds, Some(vec![]));
        // HOME stays a tmpfs unless the directory is mounted there
        assert!(h.tmpfs.unwrap().contains_key("/home/alice"));
        let mut i = inside();
        i.work.as_mut().unwrap().target = "/home/alice".into();
        let c = build_with(&r, &i);
        assert!(!c
            .host_config
            .unwrap()
            .tmpfs
            .unwrap()
            .contains_key("/home/alice"));
    }

    #[test]
    fn row_group_add_only_what_the_helper_chose() {
        let c = build_with(&Request::default(), &inside());
        assert_eq!(
            c.host_config.unwrap().group_add,
            Some(vec!["3000".to_string(), "3001".to_string()])
        );
    }

    #[test]
    fn probe_never_runs_anything() {
        let p = probe_config(
            "sha256:feed",
            HashMap::new(),
            &["/data".into()],
            &RuntimeName::default(),
        );
        assert_eq!(
            p.entrypoint,
            Some(vec!["/urun-probe-is-never-started".to_string()])
        );
        assert!(p.volumes.is_none());
        let h = p.host_config.unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        // every image VOLUME covered, so Docker creates no volume for the probe
        assert!(h.tmpfs.unwrap().contains_key("/data"));
    }

    fn each(check: impl Fn(&ContainerCreateBody, &HostConfig)) {
        for r in hostile_requests() {
            let c = build(&r);
            check(&c, c.host_config.as_ref().unwrap());
        }
    }

    #[test]
    fn row_user_is_the_callers_numeric_uid_gid() {
        each(|c, _| assert_eq!(c.user.as_deref(), Some("1001:1002")));
    }

    #[test]
    fn row_capabilities_all_dropped() {
        each(|_, h| {
            assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
            assert!(h.cap_add.as_ref().is_none_or(|v| v.is_empty()));
        });
    }

    #[test]
    fn row_never_privileged() {
        each(|_, h| assert_eq!(h.privileged, Some(false)));
    }

    #[test]
    fn row_security_opt_only_no_new_privileges() {
        each(|_, h| {
            assert_eq!(
                h.security_opt,
                Some(vec!["no-new-privileges:true".to_string()])
            );
        });
    }

    #[test]
    fn row_readonly_rootfs() {
        each(|_, h| assert_eq!(h.readonly_rootfs, Some(true)));
    }

    #[test]
    fn row_tmpfs_tmp_and_home() {
        each(|_, h| {
            let t = h.tmpfs.as_ref().unwrap();
            assert_eq!(t.len(), 2);
            // owned by the caller: writable even where runc gives /tmp the image's mode
            assert_eq!(
                t["/tmp"],
                "rw,nosuid,nodev,noexec,size=67108864,uid=1001,gid=1002,mode=1777"
            );
            assert_eq!(
                t["/home/alice"],
                "rw,nosuid,nodev,noexec,size=67108864,uid=1001,gid=1002,mode=0700"
            );
        });
    }

    #[test]
    fn row_image_volumes_are_sized_tmpfs_never_docker_volumes() {
        let mut i = inside();
        i.volumes = ["/cache", "/data", "/tmp", "/home/alice", "/work"]
            .map(String::from)
            .to_vec();
        let l = Limits {
            tmpfs_size: Bytes(8 << 20),
            ..Limits::default()
        };
        let c = container_config(
            &caller(),
            &l,
            "x",
            &Request::default(),
            HashMap::new(),
            NetworkMode::None,
            &i,
            &RuntimeName::default(),
        );
        assert!(c.volumes.is_none());
        let h = c.host_config.unwrap();
        let t = h.tmpfs.unwrap();
        for v in ["/cache", "/data"] {
            assert_eq!(
                t[v], "rw,nosuid,nodev,noexec,size=8388608,uid=1001,gid=1002",
                "{v}"
            );
        }
        // where something is mounted already, that covers the volume
        assert_eq!(t.len(), 4, "{t:?}");
        assert!(t["/tmp"].ends_with("mode=1777") && t["/home/alice"].ends_with("mode=0700"));
        let m = h.mounts.unwrap();
        assert_eq!(m.len(), 3);
        assert!(m.iter().all(|m| m.typ == Some(MountTypeEnum::BIND)));
        assert_eq!(h.binds, Some(vec![]));
    }

    #[test]
    fn row_env_home_forced_and_only_requested_names() {
        for r in hostile_requests() {
            let env = build(&r).env.unwrap();
            assert_eq!(env[0], "HOME=/home/alice");
            assert_eq!(env.iter().filter(|e| e.starts_with("HOME=")).count(), 1);
            let extra: Vec<&String> = r.env.iter().filter(|e| !e.starts_with("HOME=")).collect();
            assert_eq!(env[1..].iter().collect::<Vec<_>>(), extra);
        }
    }

    #[test]
    fn tty_workdir_entrypoint_and_name_pass_through() {
        let mut r = Request::new("busybox".into(), vec![]);
        let c = build(&r);
        assert_eq!(
            (c.tty, c.entrypoint, c.working_dir),
            (Some(false), None, None)
        );
        r.tty = true;
        r.workdir = Some("/srv".into());
        r.entrypoint = Some(String::new());
        let c = build(&r);
        assert_eq!(c.tty, Some(true));
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.entrypoint, Some(vec![String::new()]));
    }

    #[test]
    fn row_ulimits() {
        each(|_, h| {
            let u = h.ulimits.as_ref().unwrap();
            let get = |n: &str| u.iter().find(|x| x.name.as_deref() == Some(n)).unwrap();
            assert_eq!(
                (get("nofile").soft, get("nofile").hard),
                (Some(1024), Some(1024))
            );
            assert_eq!(
                (get("nproc").soft, get("nproc").hard),
                (Some(256), Some(256))
            );
            assert_eq!((get("core").soft, get("core").hard), (Some(0), Some(0)));
        });
    }

    #[test]
    fn row_resources_from_policy() {
        each(|_, h| {
            assert_eq!(h.memory, Some(512 << 20));
            assert_eq!(h.memory_swap, Some(512 << 20));
            assert_eq!(h.pids_limit, Some(256));
            assert_eq!(h.nano_cpus, Some(1_000_000_000));
            assert_eq!(h.oom_kill_disable, Some(false));
        });
        let l = Limits {
            memory: Bytes(1 << 30),
            cpus: Cpus(0.5),
            pids: Count(10),
            nofile: Count(64),
            nproc: Count(20),
            tmpfs_size: Bytes(8 << 20),
            ..Limits::default()
        };
        let c = container_config(
            &caller(),
            &l,
            "x",
            &Request::default(),
            HashMap::new(),
            NetworkMode::None,
            &Inside::default(),
            &RuntimeName::default(),
        );
        let h = c.host_config.unwrap();
        assert_eq!(
            (h.memory, h.pids_limit, h.nano_cpus),
            (Some(1 << 30), Some(10), Some(500_000_000))
        );
    }

    #[test]
    fn row_network_none() {
        each(|c, h| {
            assert_eq!(h.network_mode.as_deref(), Some("none"));
            assert_eq!(c.network_disabled, Some(true));
            assert!(c.networking_config.is_none());
        });
        let c = container_config(
            &caller(),
            &Limits::default(),
            "x",
            &Request::default(),
            HashMap::new(),
            NetworkMode::Isolated,
            &Inside::default(),
            &RuntimeName::default(),
        );
        let h = c.host_config.unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("urun-isolated"));
        assert_eq!(c.network_disabled, Some(false));
        assert!(c.networking_config.is_none());
    }

    #[test]
    fn row_namespaces_private() {
        each(|_, h| {
            assert_eq!(h.pid_mode.as_deref(), Some(""));
            assert_eq!(h.ipc_mode.as_deref(), Some("private"));
            assert_eq!(h.uts_mode.as_deref(), Some(""));
            assert_eq!(h.userns_mode.as_deref(), Some(""));
            assert_eq!(h.cgroupns_mode, Some(HostConfigCgroupnsModeEnum::PRIVATE));
        });
    }

    #[test]
    fn row_nothing_from_the_host() {
        each(|c, h| {
            assert_eq!(h.devices, Some(vec![]));
            assert_eq!(h.device_requests, Some(vec![]));
            assert_eq!(h.device_cgroup_rules, Some(vec![]));
            assert!(h.port_bindings.is_none() && c.exposed_ports.is_none());
            assert_eq!(h.publish_all_ports, Some(false));
            assert_eq!(h.volumes_from, Some(vec![]));
            assert_eq!(h.links, Some(vec![]));
            assert_eq!(h.binds, Some(vec![]));
            assert_eq!(h.mounts, Some(vec![]));
            assert!(c.volumes.is_none());
            assert!(h.sysctls.is_none() && h.group_add.is_none());
            // the policy's runtime (the default here), never the request's
            assert_eq!(h.runtime.as_deref(), Some("runc"));
            assert_eq!(h.extra_hosts, Some(vec![]));
        });
    }

    #[test]
    fn row_runtime_from_policy_for_the_run_and_the_probe() {
        let runsc = RuntimeName("runsc".into());
        for r in hostile_requests() {
            let c = container_config(
                &caller(),
                &Limits::default(),
                "x",
                &r,
                HashMap::new(),
                NetworkMode::None,
                &inside(),
                &runsc,
            );
            assert_eq!(c.host_config.unwrap().runtime.as_deref(), Some("runsc"));
        }
        let p = probe_config("x", HashMap::new(), &[], &runsc);
        assert_eq!(p.host_config.unwrap().runtime.as_deref(), Some("runsc"));
    }

    #[test]
    fn row_init_log_restart_removal() {
        each(|_, h| {
            assert_eq!(h.init, Some(true));
            assert_eq!(h.log_config.as_ref().unwrap().typ.as_deref(), Some("none"));
            assert_eq!(
                h.restart_policy.as_ref().unwrap().name,
                Some(RestartPolicyNameEnum::NO)
            );
            assert_eq!(h.auto_remove, Some(false));
        });
    }

    #[test]
    fn row_healthcheck_off() {
        each(|c, _| {
            let hc = c.healthcheck.as_ref().unwrap();
            assert_eq!(hc.test, Some(vec!["NONE".to_string()]));
        });
    }

    #[test]
    fn row_labels() {
        each(|c, _| {
            let l = c.labels.as_ref().unwrap();
            assert_eq!(l[LABEL_UID], "1001");
            assert_eq!(l[LABEL_USER], "alice");
            assert_eq!(l[LABEL_REQUEST], "rq1");
            assert_eq!(l[LABEL_HELPER], "/run/urun/urun.sock");
            assert_eq!(l[LABEL_NAME], "web");
            assert_eq!(l[LABEL_INSTANCE], owner().secret);
        });
        assert!(!labels(&caller(), "r", &owner(), None).contains_key(LABEL_NAME));
    }

    fn owner() -> Owner {
        Owner {
            helper: "/run/urun/urun.sock".into(),
            secret: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    #[test]
    fn image_is_the_admitted_id_and_command_passes_verbatim() {
        for r in hostile_requests() {
            let c = build(&r);
            assert_eq!(c.image.as_deref(), Some("sha256:feed"));
            assert_eq!(c.cmd, (!r.command.is_empty()).then(|| r.command.clone()));
            assert_eq!(c.open_stdin, Some(r.interactive));
            assert_eq!(c.tty, Some(r.tty));
        }
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
    fn every_row_is_documented() {
        assert_eq!(FORCED.len(), 22);
        assert!(FORCED.iter().all(|(k, v)| !k.is_empty() && !v.is_empty()));
    }
}
