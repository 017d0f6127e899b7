//! Every row of the forced-settings table (`policy::forced::FORCED`) proven where it
//! counts: from inside a real container, run by a real user through urun (a probe
//! script reading /proc, /sys and the mounts), or by an existing end-to-end test that
//! already proves it with a real run, or marked config-only here with the reason it
//! cannot be seen from inside and the unit test that checks the built configuration. `every_forced_row_is_proven_or_marked_config_only`
//! fails for a row with none of these, so a new row needs its proof. The probe is
//! itself shown to fail against a plain `docker run`, or it would prove nothing.
//! The same probe runs under gVisor's `runsc` (an extra dockerd with runsc registered,
//! urund forcing it by group and by image): every check passes there except those gVisor
//! hides from inside (`GVISOR_UNSEEN`), each proven another way, from the host or by
//! behaviour.

mod common;

use common::*;
use serial_test::serial;
use std::fs;
use urun::policy::forced::FORCED;

/// How one row of the table is proven.
enum Proof {
    /// Checks of `PROBE` (their names), run in `forced_settings_hold_inside_a_real_container`.
    Probe(&'static [&'static str]),
    /// An existing end-to-end test (file under tests/, function) that proves it with
    /// a real run by a real user.
    Test(&'static str, &'static str),
    /// Not visible from inside a container: why, and the unit test of
    /// `engine::config` (src/engine/config.rs) that checks the built configuration.
    ConfigOnly(&'static str, &'static str),
}
use Proof::*;

/// Each row of FORCED, by its setting, with its proofs.
const PROOFS: &[(&str, &[Proof])] = &[
    (
        "User",
        &[
            Probe(&["uid", "gid"]),
            Test("core.rs", "member_runs_as_their_own_uid_and_gid"),
        ],
    ),
    (
        "CapDrop / CapAdd",
        &[
            Probe(&["CapBnd", "CapInh", "CapAmb"]),
            Test("core.rs", "hardening_is_visible_from_inside"),
        ],
    ),
    (
        "Privileged",
        &[
            // What --privileged would give: every capability in the bounding set, the
            // host's devices, no seccomp filter.
            Probe(&["CapBnd", "no-host-devices", "Seccomp"]),
        ],
    ),
    (
        "SecurityOpt",
        &[
            Probe(&["NoNewPrivs", "Seccomp"]),
            Test("core.rs", "hardening_is_visible_from_inside"),
            ConfigOnly(
                "AppArmor/SELinux: kept as the daemon's default, which is none on a host \
                 without them (this one has only seccomp); SecurityOpt is only \
                 no-new-privileges, never a profile disabled",
                "row_security_opt_only_no_new_privileges",
            ),
        ],
    ),
    (
        "ReadonlyRootfs",
        &[
            Probe(&["root-ro"]),
            Test("core.rs", "hardening_is_visible_from_inside"),
        ],
    ),
    (
        "Tmpfs",
        &[
            Probe(&[
                "tmp-tmpfs",
                "tmp-writable",
                "tmp-owner",
                "tmp-size",
                "home-tmpfs",
                "home-writable",
                "home-owner",
                "home-mode",
                "home-size",
            ]),
            Test(
                "confinement.rs",
                "tmp_is_writable_even_when_the_images_tmp_is_not_1777",
            ),
        ],
    ),
    (
        "Image VOLUMEs",
        &[Test(
            "confinement.rs",
            "an_image_volume_is_a_sized_tmpfs_never_a_disk_backed_docker_volume",
        )],
    ),
    (
        "Ulimits",
        &[
            Probe(&["nofile", "nproc", "core"]),
            Test("policy.rs", "limits_are_visible_from_inside"),
        ],
    ),
    (
        "Memory / PidsLimit / CPU",
        &[
            Probe(&["memory", "pids", "cpus", "no-extra-swap"]),
            Test("policy.rs", "limits_are_visible_from_inside"),
            Test(
                "policy.rs",
                "fork_bomb_and_memory_hog_are_contained_and_the_helper_keeps_serving",
            ),
        ],
    ),
    (
        "Network",
        &[
            Probe(&["only-lo", "ns-net"]),
            Test("policy.rs", "network_none_has_only_lo"),
            Test("policy.rs", "isolated_containers_cannot_reach_each_other"),
        ],
    ),
    (
        "Pid/Ipc/Uts/Userns/Cgroupns",
        &[
            Probe(&["ns-pid", "ns-ipc", "ns-uts", "ns-cgroup"]),
            ConfigOnly(
                "Userns: never `host`, but without the daemon's userns-remap a container \
                 is in the host's user namespace (README, \"No user namespaces of its \
                 own\"), so there is nothing private to see from inside",
                "row_namespaces_private",
            ),
        ],
    ),
    (
        "Devices, ports, links, volumes-from, host binds",
        &[
            Probe(&["no-host-devices", "mounts", "only-lo"]),
            Test(
                "identity.rs",
                "ro_is_read_only_and_every_mount_is_nosuid_nodev",
            ),
        ],
    ),
    (
        "/etc/passwd, /etc/group",
        &[
            Probe(&["passwd-ro", "group-ro"]),
            Test("identity.rs", "names_home_and_group_inside_are_the_callers"),
            Test(
                "identity.rs",
                "an_image_entry_claiming_the_callers_uid_or_name_changes_nothing",
            ),
        ],
    ),
    (
        "Working directory (-v \"$PWD\":DIR, --here)",
        &[
            Test(
                "identity.rs",
                "here_and_v_pwd_write_files_the_host_sees_owned_by_the_caller",
            ),
            Test(
                "identity.rs",
                "ro_is_read_only_and_every_mount_is_nosuid_nodev",
            ),
            Test(
                "confinement.rs",
                "a_readonly_noexec_directory_stays_readonly_and_noexec_through_the_pin",
            ),
        ],
    ),
    (
        "GroupAdd",
        &[
            Probe(&["groups"]),
            Test(
                "identity.rs",
                "groups_caller_passes_a_test_group_never_a_denied_one_and_primary_passes_none",
            ),
        ],
    ),
    (
        "Runtime",
        &[
            Test("forced.rs", "forced_settings_hold_under_gvisor"),
            Test(
                "forced.rs",
                "urund_refuses_to_start_when_a_runtime_of_the_policy_is_not_registered",
            ),
        ],
    ),
    (
        "Init",
        &[
            Probe(&["init"]),
            Test(
                "confinement.rs",
                "a_mount_over_sbin_usr_or_tmp_cannot_replace_the_init_or_the_scratch_space",
            ),
        ],
    ),
    (
        "Healthcheck",
        &[Test("confinement.rs", "an_image_healthcheck_never_runs")],
    ),
    (
        "LogConfig",
        &[ConfigOnly(
            "where dockerd keeps a container's output is invisible from inside (that the \
             output reaches the caller is every end-to-end test)",
            "row_init_log_restart_removal",
        )],
    ),
    (
        "RestartPolicy / removal",
        &[
            Test("core.rs", "client_killed_mid_run_leaves_no_container"),
            Test(
                "core.rs",
                "client_killed_while_the_container_ignores_its_stdin_leaves_no_container",
            ),
            ConfigOnly(
                "RestartPolicy no: a restart happens outside the container",
                "row_init_log_restart_removal",
            ),
        ],
    ),
    (
        "Labels, name",
        &[
            ConfigOnly(
                "labels are the container's metadata on the daemon, invisible from inside",
                "row_labels",
            ),
            Test(
                "lifecycle.rs",
                "containers_others_labelled_as_urunds_survive_its_start_and_reconcile",
            ),
            Test(
                "confinement.rs",
                "another_users_container_name_does_not_resolve_on_the_isolated_network",
            ),
        ],
    ),
    (
        "Env",
        &[
            Probe(&["HOME"]),
            Test("identity.rs", "names_home_and_group_inside_are_the_callers"),
        ],
    ),
];

/// Checks the forced settings from inside the container. Each check prints `ok NAME`
/// or `FAIL NAME: ...`; WANT_* and HOST_NS_* are set by the test.
const PROBE: &str = r#"
fail=0
ok() { echo "ok $1"; }
bad() { echo "FAIL $1: $2"; fail=1; }
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "got '$2' want '$3'"; fi; }
st() { awk -v k="$1:" '$1 == k { print $2 }' /proc/self/status; }
opts() { awk -v m="$1" '$2 == m { o = $4 } END { print o }' /proc/mounts; }
fstype() { awk -v m="$1" '$2 == m { t = $3 } END { print t }' /proc/mounts; }
has() { case ",$1," in *",$2,"*) return 0 ;; esac; return 1; }
first() { for f in "$@"; do if [ -r "$f" ]; then cat "$f"; return; fi; done; echo none; }

check uid "$(id -u)" "$WANT_UID"
check gid "$(id -g)" "$WANT_GID"
check groups "$(id -G)" "$WANT_GID"
check CapBnd "$(st CapBnd)" 0000000000000000
check CapInh "$(st CapInh)" 0000000000000000
check CapAmb "$(st CapAmb)" 0000000000000000
check NoNewPrivs "$(st NoNewPrivs)" 1
check Seccomp "$(st Seccomp)" 2
devs="$(find /dev -type b 2>/dev/null; ls /dev/mem /dev/kmsg /dev/port 2>/dev/null)"
if [ -z "$devs" ]; then ok no-host-devices; else bad no-host-devices "$devs"; fi

check root-ro "$(opts / | cut -d, -f1)" ro
for f in passwd group; do
  if has "$(opts /etc/$f)" ro; then ok $f-ro; else bad $f-ro "$(opts /etc/$f)"; fi
done
scratch() {
  o=$(opts "$2")
  if [ "$(fstype "$2")" = tmpfs ] && has "$o" rw && has "$o" nosuid && has "$o" nodev && has "$o" noexec
  then ok "$1-tmpfs"; else bad "$1-tmpfs" "$(fstype "$2") $o"; fi
  if echo x >"$2/.probe" && rm "$2/.probe"; then ok "$1-writable"; else bad "$1-writable" "$2"; fi
  check "$1-owner" "$(stat -c %u "$2")" "$WANT_UID"
  check "$1-size" "$(df -k "$2" | awk 'NR == 2 { print $2 }')" "$WANT_TMPFS_KB"
}
scratch tmp /tmp
scratch home "$HOME"
check home-mode "$(stat -c %a "$HOME")" 700
check HOME "$HOME" "$WANT_HOME"
# Mount points: the root, the kernel's file systems, the scratch space, the identity
# files, docker-init and the three files dockerd always binds; nothing else.
extra=$(awk '{ print $2 }' /proc/mounts | while read -r m; do
  case "$m" in
    / | /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | /tmp | "$HOME") ;;
    /etc/passwd | /etc/group | /etc/hostname | /etc/hosts | /etc/resolv.conf | /sbin/docker-init) ;;
    *) echo "$m" ;;
  esac
done)
if [ -z "$extra" ]; then ok mounts; else bad mounts "$extra"; fi

check nofile "$(ulimit -n)" "$WANT_NOFILE"
check nproc "$(ulimit -u)" "$WANT_NPROC"
check core "$(ulimit -c)" 0
check memory "$(first /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes)" "$WANT_MEMORY"
check pids "$(first /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max)" "$WANT_PIDS"
if [ -r /sys/fs/cgroup/cpu.max ]; then
  cpus=$(awk '{ print $1 / $2 }' /sys/fs/cgroup/cpu.max)
else
  cpus=$(awk -v q="$(first /sys/fs/cgroup/cpu/cpu.cfs_quota_us)" \
             -v p="$(first /sys/fs/cgroup/cpu/cpu.cfs_period_us)" 'BEGIN { print q / p }')
fi
check cpus "$cpus" "$WANT_CPUS"
# No extra swap: swap.max 0 (v2), or memory+swap = memory (v1 with swap accounting).
swap=$(first /sys/fs/cgroup/memory.swap.max /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes)
case "$swap" in
  0 | "$WANT_MEMORY") ok no-extra-swap ;;
  none) echo "ok no-extra-swap (no swap accounting on this kernel: nothing to add to)" ;;
  *) bad no-extra-swap "$swap" ;;
esac

check only-lo "$(ls /sys/class/net | tr '\n' ' ')" "lo "
for ns in pid ipc uts cgroup net mnt; do
  eval host=\$HOST_NS_$ns
  mine=$(readlink /proc/self/ns/$ns)
  if [ -n "$mine" ] && [ "$mine" != "$host" ]; then ok ns-$ns; else bad ns-$ns "$mine, the host's is $host"; fi
done
check init "$(cat /proc/1/comm)" docker-init
exit $fail
"#;

/// The checks `PROBE` makes, each reported as `ok NAME` or `FAIL NAME: ...`; the
/// probe test fails unless exactly these are reported.
const CHECKS: &[&str] = &[
    "uid",
    "gid",
    "groups",
    "CapBnd",
    "CapInh",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
    "no-host-devices",
    "root-ro",
    "passwd-ro",
    "group-ro",
    "tmp-tmpfs",
    "tmp-writable",
    "tmp-owner",
    "tmp-size",
    "home-tmpfs",
    "home-writable",
    "home-owner",
    "home-size",
    "home-mode",
    "HOME",
    "mounts",
    "nofile",
    "nproc",
    "core",
    "memory",
    "pids",
    "cpus",
    "no-extra-swap",
    "only-lo",
    "ns-pid",
    "ns-ipc",
    "ns-uts",
    "ns-cgroup",
    "ns-net",
    "ns-mnt",
    "init",
];

/// The probe's `ok`/`FAIL` lines as (name, passed).
fn results(out: &str) -> Vec<(String, bool)> {
    out.lines()
        .filter_map(|l| {
            let (pass, rest) = if let Some(r) = l.strip_prefix("ok ") {
                (true, r)
            } else {
                (false, l.strip_prefix("FAIL ")?)
            };
            let name = rest.split([' ', ':']).next()?.to_string();
            Some((name, pass))
        })
        .collect()
}

#[test]
fn every_forced_row_is_proven_or_marked_config_only() {
    let mut wrong = vec![];
    for (setting, _) in FORCED {
        let proofs = PROOFS.iter().find(|(s, _)| s == setting);
        if proofs.is_none_or(|(_, p)| p.is_empty()) {
            wrong.push(format!("{setting}: no proof (see PROOFS)"));
        }
    }
    for (setting, proofs) in PROOFS {
        if !FORCED.iter().any(|(s, _)| s == setting) {
            wrong.push(format!("{setting}: not a row of FORCED"));
        }
        for p in *proofs {
            match p {
                Probe(names) => {
                    for n in *names {
                        if !CHECKS.contains(n) {
                            wrong.push(format!("{setting}: the probe has no check {n}"));
                        }
                    }
                }
                Test(file, name) => {
                    let text =
                        fs::read_to_string(format!("{}/tests/{file}", env!("CARGO_MANIFEST_DIR")))
                            .unwrap_or_default();
                    let at = text.find(&format!("fn {name}()"));
                    let is_test = at.is_some_and(|i| {
                        text[..i].trim_end().ends_with("#[serial]")
                            || text[..i].trim_end().ends_with("#[test]")
                    });
                    if !is_test {
                        wrong.push(format!("{setting}: no test {name} in tests/{file}"));
                    }
                }
                ConfigOnly(reason, unit) => {
                    let src = include_str!("../src/engine/config.rs");
                    if reason.is_empty() || !src.contains(&format!("fn {unit}()")) {
                        wrong.push(format!(
                            "{setting}: config-only needs a reason and a unit test of \
                             src/engine/config.rs (no fn {unit})"
                        ));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The host's namespaces (this test's), as the probe compares them: `HOST_NS_pid=pid:[...]` ...
fn host_namespaces() -> Vec<String> {
    ["pid", "ipc", "uts", "cgroup", "net", "mnt"]
        .iter()
        .map(|ns| {
            let l = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
            format!("HOST_NS_{ns}='{}'", l.display())
        })
        .collect()
}

const LIMITS: &str = "[limits]\nmemory = \"96m\"\ncpus = 0.5\npids = 77\nnofile = 333\nnproc = 55\ntmpfs_size = \"12m\"\n";

fn wants(uid: u32, gid: u32, home: &str) -> String {
    format!(
        "WANT_UID={uid} WANT_GID={gid} WANT_HOME={home} WANT_TMPFS_KB=12288 \
         WANT_NOFILE=333 WANT_NPROC=55 WANT_MEMORY={} WANT_PIDS=77 WANT_CPUS=0.5 {}",
        96u64 << 20,
        host_namespaces().join(" ")
    )
}

#[test]
#[serial]
fn forced_settings_hold_inside_a_real_container() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::start(&format!("{}{LIMITS}", policy_for(&g)));
    let script = format!(
        "{}; {PROBE}",
        wants(u.uid, u.gid, &format!("/home/{}", u.name))
    );
    let o = d.run(&u, &[image(), "sh", "-c", &script], b"");
    let out = stdout(&o);
    println!("{out}");
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let got = results(&out);
    let failed: Vec<&String> = got.iter().filter(|(_, p)| !p).map(|(n, _)| n).collect();
    assert!(failed.is_empty(), "{out}");
    // Every check ran and said so.
    let mut names: Vec<&String> = got.iter().map(|(n, _)| n).collect();
    names.sort();
    let mut want: Vec<String> = CHECKS.iter().map(|c| c.to_string()).collect();
    want.sort();
    assert_eq!(names, want.iter().collect::<Vec<_>>(), "{out}");
    assert!(d.containers().is_empty());
}

#[test]
#[serial]
fn the_forced_settings_probe_fails_against_a_plain_docker_run() {
    // The same probe in `docker run` without urun's settings (root, default
    // capabilities, writable root, no init, no limits) must fail, or it proves nothing.
    image();
    let script = format!("{}; {PROBE}", wants(1, 1, "/home/nobody"));
    let o = sh("docker", &["run", "--rm", image(), "sh", "-c", &script]);
    let out = stdout(&o);
    println!("{out}");
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    let failed: Vec<String> = results(&out)
        .into_iter()
        .filter(|(_, p)| !p)
        .map(|(n, _)| n)
        .collect();
    for item in [
        "uid",
        "CapBnd",
        "NoNewPrivs",
        "root-ro",
        "passwd-ro",
        "tmp-tmpfs",
        "home-tmpfs",
        "nofile",
        "memory",
        "pids",
        "cpus",
        "init",
    ] {
        assert!(
            failed.iter().any(|f| f == item),
            "{item} passed in a plain docker run:\n{out}"
        );
    }
}

/// Probe checks that cannot be seen from inside gVisor, and how the test below proves
/// each instead: (check, why it is unseen, the replacement proof).
const GVISOR_UNSEEN: &[(&str, &str, &str)] = &[
    (
        "CapAmb",
        "gVisor's /proc/self/status has no CapAmb line",
        "CapPrm and CapEff 0 inside (ambient is a subset of permitted and inheritable, both 0)",
    ),
    (
        "NoNewPrivs",
        "gVisor's /proc/self/status has no NoNewPrivs line",
        "a setuid-root binary in the image does not raise the caller's euid (the same binary \
         does under runc without no-new-privileges; gVisor ignores setuid bits on exec, so \
         under runsc the setting is config-only with nothing left for it to stop)",
    ),
    (
        "tmp-tmpfs",
        "gVisor's /proc/mounts lists only rw,noexec for a tmpfs",
        "tmpfs with noexec inside; nosuid,nodev in the container's configuration on the host; \
         gVisor lets mknod make a node there, but a node of the host's memory or disk opens \
         nothing (gVisor has only its own emulated devices)",
    ),
    ("home-tmpfs", "as tmp-tmpfs", "as tmp-tmpfs"),
    (
        "memory",
        "gVisor shows no cgroup files inside",
        "the sandbox's host cgroup: memory.limit_in_bytes (and a hog is killed)",
    ),
    ("pids", "as memory", "the sandbox's host cgroup: pids.max"),
    (
        "cpus",
        "as memory",
        "the sandbox's host cgroup: cpu.cfs_quota_us / cpu.cfs_period_us",
    ),
    (
        "ns-ipc",
        "gVisor shows no /proc/self/ns links but net and pid",
        "the sandbox process's namespaces on the host differ from the host's",
    ),
    ("ns-uts", "as ns-ipc", "as ns-ipc"),
    (
        "ns-cgroup",
        "as ns-ipc",
        "runsc keeps the sandbox process in the host's cgroup namespace, but inside no \
         cgroup file system is mounted and /proc/self/cgroup names none of the host's \
         cgroups (not the container's ID)",
    ),
    ("ns-mnt", "as ns-ipc", "as ns-ipc"),
];

/// A static program that prints its effective uid (no libc: raw system calls).
const EUID_C: &str = r#"
static long sys(long n, long a, long b, long c) {
  long r;
  __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return r;
}
void _start(void) {
  long e = sys(107, 0, 0, 0);
  char buf[24];
  int i = 23;
  buf[i] = '\n';
  do { buf[--i] = '0' + e % 10; e /= 10; } while (e);
  sys(1, 1, (long)(buf + i), 24 - i);
  sys(60, 0, 0, 0);
}
"#;

/// The runsc registration that works on this host (README, "A sandboxed runtime").
fn runsc() -> common::engine::Runtime {
    common::engine::Runtime {
        name: "runsc".into(),
        path: "/usr/bin/runsc".into(),
        args: vec!["--network=none".into(), "--oci-seccomp".into()],
    }
}

/// The limits for runs under gVisor: pids at least `SANDBOX_MIN_PIDS`.
const GVISOR_LIMITS: &str = "[limits]\nmemory = \"96m\"\ncpus = 0.5\npids = 600\nnofile = 333\nnproc = 55\ntmpfs_size = \"12m\"\n";

fn gvisor_wants(uid: u32, gid: u32, home: &str) -> String {
    wants(uid, gid, home).replace("WANT_PIDS=77", "WANT_PIDS=600")
}

/// The cgroup directories (v1 controllers or v2) of container `id` on the host.
fn host_cgroup_file(id: &str, controller: &str, file: &str) -> Option<String> {
    for root in [
        format!("/sys/fs/cgroup/{controller}"),
        "/sys/fs/cgroup".to_string(),
    ] {
        let o = sh(
            "find",
            &[
                &root,
                "-maxdepth",
                "4",
                "-type",
                "d",
                "-name",
                &format!("*{id}*"),
            ],
        );
        for dir in stdout(&o).lines() {
            if let Ok(v) = fs::read_to_string(format!("{dir}/{file}")) {
                return Some(v.trim().to_string());
            }
        }
    }
    None
}

#[test]
#[serial]
fn forced_settings_hold_under_gvisor() {
    let engine = common::engine::ExtraEngine::start(common::engine::EngineConfig {
        runtimes: vec![runsc()],
        ..Default::default()
    });
    engine.load_image(image());
    // Another image (its own ID) for the image rule: a commit of the test image.
    let c = engine.must(&["create", image(), "true"]).trim().to_string();
    engine.must(&["commit", &c, "urun-test/untrusted:1"]);
    engine.must(&["rm", &c]);
    let untrusted_id = engine
        .must(&["image", "inspect", "-f", "{{.Id}}", "urun-test/untrusted:1"])
        .trim()
        .to_string();
    let g = TestGroup::new("urg");
    let sandboxed = TestGroup::new("urs");
    let u = TestUser::new(&[&g, &sandboxed]);
    let v = TestUser::new(&[&g]);
    let policy = format!(
        "{}{GVISOR_LIMITS}[mounts]\nworkdir = true\nroots = [\"/home\"]\n\
         [[runtime.image]]\nmatch = \"urun-test/untrusted:*\"\nname = \"runsc\"\n\
         [group.{}.runtime]\nname = \"runsc\"\n",
        policy_for(&g),
        sandboxed.name
    );
    let d = Daemon::start_on(&policy, &engine);
    let host_version = fs::read_to_string("/proc/version").unwrap();
    let version = |user: &TestUser, img: &str| {
        let o = d.run(user, &[img, "cat", "/proc/version"], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    // The kernel seen from inside: gVisor's, not the host's, for the group's member;
    // the host's for the other user, unless the image rule puts them in the sandbox.
    let inside = version(&u, image());
    println!("inside gVisor: {inside}");
    assert_ne!(inside, host_version);
    assert!(inside.starts_with("Linux version 4.4.0"), "{inside}");
    assert_eq!(version(&v, image()), host_version);
    assert_eq!(version(&v, "urun-test/untrusted:1"), inside);
    // by its ID too: the rule matches every name the image has
    assert_eq!(version(&v, &untrusted_id), inside);
    // The probe of every forced row.
    let script = format!(
        "{}; {PROBE}",
        gvisor_wants(u.uid, u.gid, &format!("/home/{}", u.name))
    );
    let o = d.run(&u, &[image(), "sh", "-c", &script], b"");
    let out = stdout(&o);
    println!("{out}");
    let got = results(&out);
    // Every check ran; the unseen ones are shown to fail (so they are not proven by
    // accident), every other passes.
    let mut names: Vec<&String> = got.iter().map(|(n, _)| n).collect();
    names.sort();
    let mut want: Vec<String> = CHECKS.iter().map(|c| c.to_string()).collect();
    want.sort();
    assert_eq!(names, want.iter().collect::<Vec<_>>(), "{out}");
    let failed: Vec<&String> = got
        .iter()
        .filter(|(n, p)| !p && !GVISOR_UNSEEN.iter().any(|(c, _, _)| c == n))
        .map(|(n, _)| n)
        .collect();
    assert!(failed.is_empty(), "{out}{}", stderr(&o));
    assert!(
        o.status.code() == Some(1),
        "only the unseen checks fail: {out}"
    );
    gvisor_unseen_proven_otherwise(&engine, &d, &u);
    gvisor_runs_like_runc(&d, &u);
    // The audit record names the runtime; `urun --policy` shows the caller's.
    let log = d.log_text();
    assert!(log.contains("\"runtime\":\"runsc\""), "{log}");
    assert!(log.contains("\"runtime\":\"runc\""), "{log}");
    let o = d.run(&u, &["--policy"], b"");
    assert!(
        stdout(&o).contains("Runtime: runsc (a sandbox"),
        "{}",
        stdout(&o)
    );
    let o = d.run(&v, &["--policy"], b"");
    assert!(
        stdout(&o).contains("Runtime: runc (the host's kernel)"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("images matching urun-test/untrusted:*: runsc"));
    assert!(d.containers().is_empty());
    drop(d);
    // network.mode = "isolated": runsc registered with --network=none (what works on
    // this host) gives a sandboxed container only lo; a runc one gets the bridge.
    let d = Daemon::start_on(
        &format!("{policy}[network]\nmode = \"isolated\"\n"),
        &engine,
    );
    let links = |user: &TestUser| {
        let o = d.run(user, &[image(), "ls", "/sys/class/net"], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(links(&u), ["lo"]);
    assert!(links(&v).len() == 2, "{:?}", links(&v));
}

/// The probe checks gVisor hides, proven from the host or by behaviour.
fn gvisor_unseen_proven_otherwise(engine: &common::engine::ExtraEngine, d: &Daemon, u: &TestUser) {
    // Inside: no capability at all, exec from the scratch space refused, no device
    // node can be made, a memory hog is killed.
    let o = d.run(
        u,
        &[
            image(),
            "sh",
            "-c",
            "grep -E '^Cap(Prm|Eff):' /proc/self/status; cp /bin/true /tmp/t; /tmp/t && echo exec-ok; \
             mknod /tmp/m c 1 1 2>/dev/null; head -c 1 /tmp/m >/dev/null 2>&1 && echo mem-read; \
             mknod /tmp/k b 8 0 2>/dev/null; head -c 1 /tmp/k >/dev/null 2>&1 && echo disk-read; echo done",
        ],
        b"",
    );
    assert_eq!(
        stdout(&o),
        "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\ndone\n",
        "{}",
        stderr(&o)
    );
    let o = d.run(
        u,
        &[
            image(),
            "sh",
            "-c",
            "cat /proc/self/cgroup; ls /sys/fs/cgroup 2>&1 | head -3; grep cgroup /proc/mounts",
        ],
        b"",
    );
    println!("cgroups inside gVisor:\n{}", stdout(&o));
    let inside_cgroups = stdout(&o);
    let o = d.run(
        u,
        &[
            image(),
            "sh",
            "-c",
            "head -c 300m /dev/zero | tail -n 1 >/dev/null; echo survived",
        ],
        b"",
    );
    assert!(
        !stdout(&o).contains("survived") && !o.status.success(),
        "memory hog: {:?} {}",
        o.status,
        stdout(&o)
    );
    // From the host, while a sandboxed run is going on: its cgroup limits, its
    // namespaces, its tmpfs options.
    let mut c = d
        .urun(u, &[image(), "sleep", "30"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let id = loop {
        if let Some(id) = d.containers().first() {
            if engine
                .must(&["inspect", "-f", "{{.State.Running}}", id])
                .trim()
                == "true"
            {
                break id.clone();
            }
        }
        assert!(t.elapsed().as_secs() < 30, "no running container");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let pid = engine
        .must(&["inspect", "-f", "{{.State.Pid}}", &id])
        .trim()
        .to_string();
    // (runsc leaves the sandbox process in the host's cgroup namespace: the cgroups
    // seen inside are gVisor's own, checked below.)
    for ns in ["ipc", "uts", "mnt"] {
        let host = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let sandbox = fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(
            host, sandbox,
            "the sandbox shares the host's {ns} namespace"
        );
    }
    let cg = |ctl: &str, file: &str| {
        host_cgroup_file(&id, ctl, file).unwrap_or_else(|| panic!("no {ctl}/{file} for {id}"))
    };
    assert_eq!(
        cg("memory", "memory.limit_in_bytes"),
        (96u64 << 20).to_string()
    );
    assert_eq!(cg("pids", "pids.max"), "600");
    assert!(
        !inside_cgroups.contains(&id[..12]) && !inside_cgroups.contains("docker"),
        "{inside_cgroups}"
    );
    let quota: f64 = cg("cpu", "cpu.cfs_quota_us").parse().unwrap();
    let period: f64 = cg("cpu", "cpu.cfs_period_us").parse().unwrap();
    assert_eq!(quota / period, 0.5);
    let tmpfs = engine.must(&["inspect", "-f", "{{json .HostConfig.Tmpfs}}", &id]);
    assert!(
        tmpfs.contains("/tmp\":\"rw,nosuid,nodev,noexec,"),
        "{tmpfs}"
    );
    assert_eq!(
        engine
            .must(&["inspect", "-f", "{{.HostConfig.Runtime}}", &id])
            .trim(),
        "runsc"
    );
    let _ = c.kill();
    let _ = c.wait();
    assert!(d
        .wait_no_containers(std::time::Duration::from_secs(30))
        .is_ok());
    // no-new-privileges: what it stops is a setuid-root binary raising the euid
    // (a static one that prints its euid: busybox drops setuid privileges itself).
    let _suid = TestImage::build(
        "urun-test/suid:gvisor",
        &format!(
            "FROM {}\nCOPY euid /suid/euid\nRUN chmod 4755 /suid/euid\n",
            image()
        ),
        |dir| {
            fs::write(dir.join("euid.c"), EUID_C).unwrap();
            let o = std::process::Command::new("gcc")
                .args(["-static", "-nostdlib", "-O2", "-fno-stack-protector", "-o"])
                .arg(dir.join("euid"))
                .arg(dir.join("euid.c"))
                .output()
                .expect("gcc");
            assert!(o.status.success(), "gcc: {}", stderr(&o));
        },
    );
    engine.load_image("urun-test/suid:gvisor");
    let plain = |runtime: &str| {
        engine.must(&[
            "run",
            "--rm",
            "--runtime",
            runtime,
            "--network",
            "none",
            "-u",
            "1000:1000",
            "urun-test/suid:gvisor",
            "/suid/euid",
        ])
    };
    let under_runc = plain("runc");
    let under_runsc = plain("runsc");
    println!(
        "setuid-root without no-new-privileges: euid {} under runc, {} under runsc",
        under_runc.trim(),
        under_runsc.trim()
    );
    assert_eq!(
        under_runc.trim(),
        "0",
        "the setuid control did not work under runc"
    );
    let o = d.run(u, &["urun-test/suid:gvisor", "/suid/euid"], b"");
    assert_eq!(stdout(&o).trim(), u.uid.to_string(), "{}", stderr(&o));
    engine.must(&["rmi", "urun-test/suid:gvisor"]);
}

/// Exit statuses, signals, stdin/stdout byte for byte, the working directory and the
/// identity files, under runsc.
fn gvisor_runs_like_runc(d: &Daemon, u: &TestUser) {
    let o = d.run(u, &[image(), "sh", "-c", "exit 42"], b"");
    assert_eq!(o.status.code(), Some(42));
    let o = d.run(u, &[image(), "sh", "-c", "kill -TERM $$"], b"");
    assert_eq!(o.status.code(), Some(143));
    // -t: the container's stdin and stdout are a terminal (gVisor's, backed by the
    // host's pty: `tty` finds no /dev/pts name for it, as with `docker run -t
    // --runtime runsc`), raw output passes intact.
    let o = d.run(
        u,
        &[
            "-t",
            image(),
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && printf 'tty\\001\\000\\377x'",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"tty\x01\x00\xffx", "{:?}", o.stdout);
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let o = d.run(u, &["-i", image(), "cat"], &data);
    assert!(
        o.stdout == data,
        "stdin/stdout not byte-exact: {} bytes back",
        o.stdout.len()
    );
    // A signal to urun reaches the container's process.
    let mut c = d
        .urun(
            u,
            &[
                image(),
                "sh",
                "-c",
                "trap 'echo got-USR1; exit 7' USR1; echo ready; while :; do sleep 0.1; done",
            ],
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    sh("kill", &["-USR1", &c.id().to_string()]);
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "got-USR1\n");
    assert_eq!(c.wait().unwrap().code(), Some(7));
    // The working directory, written through the mount, owned by the caller on the host.
    let proj = std::path::PathBuf::from(format!("/home/{}/proj", u.name));
    fs::create_dir_all(&proj).unwrap();
    std::os::unix::fs::chown(&proj, Some(u.uid), Some(u.gid)).unwrap();
    let mut cmd = d.urun(
        u,
        &[
            "--here",
            image(),
            "sh",
            "-c",
            "echo x > made; id -un; grep -c \"^$(id -un):x:$(id -u):$(id -g):\" /etc/passwd",
        ],
    );
    cmd.current_dir(&proj);
    let o = run_with_input(cmd, b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{}\n1\n", u.name));
    let m = std::os::unix::fs::MetadataExt::uid(&fs::metadata(proj.join("made")).unwrap());
    assert_eq!(m, u.uid);
}

#[test]
#[serial]
fn urund_refuses_to_start_when_a_runtime_of_the_policy_is_not_registered() {
    // The machine's main dockerd has no runtime of this name.
    let g = TestGroup::new("urg");
    for table in [
        "[runtime]\nname = \"urun-no-such-runtime\"\n",
        "[user.nobody.runtime]\nname = \"urun-no-such-runtime\"\n",
        "[[runtime.image]]\nmatch = \"x/*\"\nname = \"urun-no-such-runtime\"\n",
    ] {
        let d = Daemon::prepare(&format!("{}{table}", policy_for(&g)));
        let st = d.urund_command(&[]).status().unwrap();
        assert_eq!(st.code(), Some(1), "{table}");
        let log = d.log_text();
        assert!(
            log.contains("names runtime urun-no-such-runtime that the Docker daemon does not have")
                && log.contains("daemon.json"),
            "{log}"
        );
        assert_eq!(log.trim_end().lines().count(), 1, "one line: {log}");
        assert!(!d.socket.exists());
        // `urund check` lists the runtime and warns that urund will not start.
        let o = std::process::Command::new(URUND)
            .args(["check", "--policy"])
            .arg(&d.policy)
            .output()
            .unwrap();
        let out = stdout(&o);
        let line = out
            .lines()
            .find(|l| l.contains("policy runtime: urun-no-such-runtime"))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            line.starts_with("WARN ") && line.contains("urund will not start"),
            "{line}"
        );
        if !table.starts_with("[runtime]") {
            assert!(
                out.contains("OK   policy runtime: runc is registered"),
                "{out}"
            );
        }
    }
}
