//! Every row of the forced-settings table (`policy::forced::FORCED`) proven where it
//! counts: from inside a real container, run by a real user through urun (a probe
//! script reading /proc, /sys and the mounts), or by an existing end-to-end test that
//! already proves it with a real run, or marked config-only here with the reason it
//! cannot be seen from inside and the unit test that checks the built configuration. `every_forced_row_is_proven_or_marked_config_only`
//! fails for a row with none of these, so a new row needs its proof. The probe is
//! itself shown to fail against a plain `docker run`, or it would prove nothing.

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
    /// `policy::forced` (src/policy/forced.rs) that checks the built configuration.
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
                    let src = include_str!("../src/policy/forced.rs");
                    if reason.is_empty() || !src.contains(&format!("fn {unit}()")) {
                        wrong.push(format!(
                            "{setting}: config-only needs a reason and a unit test of \
                             src/policy/forced.rs (no fn {unit})"
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
