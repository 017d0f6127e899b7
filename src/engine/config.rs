//! The forced settings as Docker's container configuration: [`container_config`] is a
//! pure function of (caller, the admitted limits and network, the admitted image ID,
//! the request's command and terminal, what urund prepared); every security-relevant
//! field is set here from the caller's identity and the admission, never from the
//! request. [`crate::policy::forced::FORCED`] is the same table in words, and the
//! tests check every row against the built configuration.
#![forbid(unsafe_code)]

use crate::policy::forced::{environment, home_dir, Inside};
use crate::policy::{Caller, Limits, NetworkMode, RuntimeName, ISOLATED_NETWORK};
use crate::wire::Request;
use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, HostConfigCgroupnsModeEnum, HostConfigLogConfig,
    Mount, MountBindOptions, MountBindOptionsPropagationEnum, MountTypeEnum, ResourcesUlimits,
    RestartPolicy, RestartPolicyNameEnum,
};
use std::collections::HashMap;

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
    let mounts = mounts(inside);
    let tmpfs = tmpfs(caller, limits, inside, &mounts);
    let host = HostConfig {
        runtime: Some(runtime.0.clone()),
        ..host_config(limits, network, mounts, tmpfs, &inside.groups)
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

/// The binds: the identity files read-only, the pinned working directory.
fn mounts(inside: &Inside) -> Vec<Mount> {
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
    mounts
}

/// `/tmp`, `$HOME` and each image `VOLUME`: a sized tmpfs owned by the caller.
fn tmpfs(
    caller: &Caller,
    limits: &Limits,
    inside: &Inside,
    mounts: &[Mount],
) -> HashMap<String, String> {
    let home = home_dir(caller);
    // Owned by the caller: runc gives a tmpfs mounted over a directory of the image
    // that directory's mode (mode= is then ignored), so only ownership makes /tmp
    // writable whatever the image's /tmp is.
    let scratch = format!(
        "rw,nosuid,nodev,noexec,size={},uid={},gid={}",
        limits.tmpfs_size.0, caller.uid, caller.gid
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
    tmpfs
}

/// The host configuration of a run: what depends on the policy and the run, over
/// [`fixed_host_config`].
fn host_config(
    limits: &Limits,
    network: NetworkMode,
    mounts: Vec<Mount>,
    tmpfs: HashMap<String, String>,
    groups: &[u32],
) -> HostConfig {
    let ulimit = |name: &str, n: i64| ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(n),
        hard: Some(n),
    };
    let network_name = match network {
        NetworkMode::None => "none",
        NetworkMode::Isolated => ISOLATED_NETWORK,
    };
    HostConfig {
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
        network_mode: Some(network_name.into()),
        mounts: Some(mounts),
        group_add: (!groups.is_empty()).then(|| groups.iter().map(|g| g.to_string()).collect()),
        ..fixed_host_config()
    }
}

/// What every run gets whatever the policy says: no privilege, private namespaces,
/// nothing from the host, no log, no restart.
fn fixed_host_config() -> HostConfig {
    HostConfig {
        // ── identity and privilege ──
        privileged: Some(false),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: None,
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        readonly_rootfs: Some(true),
        // ── namespaces: all private ──
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
        extra_hosts: Some(vec![]),
        sysctls: None,
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
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::forced::*;
    use crate::policy::{Bytes, Count, Cpus};

    fn caller() -> Caller {
        Caller::example()
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
        build_under(r, &Limits::default(), NetworkMode::None, inside)
    }

    /// The configuration for `r` with `limits`, `network` and `inside` (image `x`, no
    /// labels, the default runtime).
    fn build_under(
        r: &Request,
        limits: &Limits,
        network: NetworkMode,
        inside: &Inside,
    ) -> ContainerCreateBody {
        container_config(
            &caller(),
            limits,
            "x",
            r,
            HashMap::new(),
            network,
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
        let c = build_under(&Request::default(), &l, NetworkMode::None, &i);
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
        let c = build_under(
            &Request::default(),
            &l,
            NetworkMode::None,
            &Inside::default(),
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
        let c = build_under(
            &Request::default(),
            &Limits::default(),
            NetworkMode::Isolated,
            &Inside::default(),
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
}
