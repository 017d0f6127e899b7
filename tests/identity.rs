//! End-to-end tests of issue 5, "being yourself inside": names, home and groups in the
//! container, and the working directory mounted safely (-v "$PWD":/work, --here).
//! Real urund, real urun run as real users, real Docker daemon.

mod common;

use common::*;
use serial_test::serial;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MOUNTS_ON: &str = "[mounts]\nworkdir = true\nroots = [\"/home\"]\n";

fn setup(extra_policy: &str) -> (TestGroup, TestUser, Daemon) {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::start(&format!("{}{extra_policy}", policy_for(&g)));
    (g, u, d)
}

/// `urund`'s per-instance runtime directory (pinned mounts live below it).
fn runtime(d: &Daemon) -> PathBuf {
    d.socket.parent().unwrap().join("run")
}

/// A directory owned by `u` (mode 0755), with a `marker` file holding `marker`.
fn user_dir(u: &TestUser, path: &Path, marker: &str) -> PathBuf {
    fs::create_dir_all(path).unwrap();
    fs::write(path.join("marker"), marker).unwrap();
    for p in [path.to_path_buf(), path.join("marker")] {
        std::os::unix::fs::chown(&p, Some(u.uid), Some(u.gid)).unwrap();
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

fn home(u: &TestUser) -> PathBuf {
    PathBuf::from(format!("/home/{}", u.name))
}

/// `urun ARGS` as `u` from the directory `cwd`.
fn urun_in(d: &Daemon, u: &TestUser, cwd: &Path, args: &[&str]) -> Command {
    let mut c = d.urun(u, args);
    c.current_dir(cwd);
    c
}

fn run_in(d: &Daemon, u: &TestUser, cwd: &Path, args: &[&str]) -> std::process::Output {
    run_with_input(urun_in(d, u, cwd, args), b"")
}

fn assert_refused(o: &std::process::Output, words: &[&str]) {
    let e = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(125),
        "stdout {} stderr {e}",
        stdout(o)
    );
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    for w in words {
        assert!(e.contains(w), "{w:?} not in {e}");
    }
}

/// The test image with its own /etc/passwd and /etc/group.
fn image_with_etc(passwd: &str, group: &str) -> TestImage {
    TestImage::build(
        &format!("urun-test/identity{}:latest", unique()),
        &format!(
            "FROM {}\nCOPY passwd /etc/passwd\nCOPY group /etc/group\n",
            image()
        ),
        |dir| {
            fs::write(dir.join("passwd"), passwd).unwrap();
            fs::write(dir.join("group"), group).unwrap();
        },
    )
}

/// The test image plus a host program and the shared libraries `ldd` lists for it,
/// at the same paths (so glibc's own NSS code can be run inside).
fn image_with_host_program(program: &str) -> TestImage {
    let ldd = stdout(&sh("ldd", &[program]));
    let mut files = vec![program.to_string()];
    for l in ldd.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w[..] {
            [_, "=>", p, _] if p.starts_with('/') => files.push(p.into()),
            [p, _] if p.starts_with('/') => files.push(p.into()),
            _ => {}
        }
    }
    TestImage::build(
        &format!("urun-test/identity{}:latest", unique()),
        &format!("FROM {}\nCOPY root/ /\n", image()),
        |dir| {
            for f in &files {
                let to = dir.join("root").join(f.trim_start_matches('/'));
                fs::create_dir_all(to.parent().unwrap()).unwrap();
                fs::copy(f, &to).unwrap_or_else(|e| panic!("{f}: {e}"));
            }
        },
    )
}

#[test]
#[serial]
fn names_home_and_group_inside_are_the_callers() {
    let (_g, u, d) = setup("");
    let o = d.run(
        &u,
        &[
            image(),
            "sh",
            "-c",
            "whoami; id -un; id -gn; echo $HOME; echo hi > $HOME/f && stat -c '%U %G' $HOME/f; \
             grep \":$(id -u):\" /etc/passwd; touch /etc/passwd 2>/dev/null || echo ro",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let l: Vec<&str> = out.lines().collect();
    let n = u.name.as_str();
    assert_eq!(&l[..4], [n, n, n, &format!("/home/{n}")], "{out}");
    // what ls -l shows: names, not numbers (busybox's ls cuts names at 8 characters)
    assert_eq!(l[4], format!("{n} {n}"), "{out}");
    assert_eq!(
        l[5],
        format!("{n}:x:{}:{}:{n}:/home/{n}:/bin/sh", u.uid, u.gid)
    );
    assert_eq!(l[6], "ro", "{out}");
    assert!(mounts_under(&runtime(&d)).is_empty());
}

#[test]
#[serial]
fn getent_in_a_glibc_program_resolves_the_caller() {
    let (_g, u, d) = setup("");
    let img = image_with_host_program("/usr/bin/getent");
    let o = d.run(
        &u,
        &[
            &img.0,
            "sh",
            "-c",
            "/usr/bin/getent passwd $(id -u); /usr/bin/getent group $(id -g)",
        ],
        b"",
    );
    let n = &u.name;
    assert_eq!(
        stdout(&o),
        format!(
            "{n}:x:{}:{}:{n}:/home/{n}:/bin/sh\n{n}:x:{}:\n",
            u.uid, u.gid, u.gid
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
#[serial]
fn an_image_entry_claiming_the_callers_uid_or_name_changes_nothing() {
    let (_g, u, d) = setup("");
    let n = &u.name;
    let img = image_with_etc(
        &format!(
            "root:x:0:0:root:/root:/bin/sh\n{n}:x:0:0:fake root:/root:/bin/sh\n\
             mallory:x:{}:0:claims the uid:/:/bin/sh\nsneaky:x:0{}:0::/:/bin/sh\n",
            u.uid, u.uid
        ),
        &format!("root:x:0:\n{n}:x:0:\nwheelish:x:{}:\n", u.gid),
    );
    let o = d.run(
        &u,
        &[
            &img.0,
            "sh",
            "-c",
            "whoami; id -u; id -g; id -gn; grep -c -e mallory -e sneaky -e wheelish -e fake /etc/passwd /etc/group",
        ],
        b"",
    );
    let out = stdout(&o);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(
        &l[..4],
        [
            n.as_str(),
            &u.uid.to_string(),
            &u.gid.to_string(),
            n.as_str()
        ],
        "{out} {}",
        stderr(&o)
    );
    assert_eq!(&l[4..], ["/etc/passwd:0", "/etc/group:0"], "{out}");
}

#[test]
#[serial]
fn groups_caller_passes_a_test_group_never_a_denied_one_and_primary_passes_none() {
    let access = TestGroup::new("urg");
    let allowed = TestGroup::new("urok");
    let denied = TestGroup::new("urno");
    let u = TestUser::new(&[&access, &allowed, &denied]);
    let policy = |mode: &str| {
        format!(
            "{}[identity]\ngroups = \"{mode}\"\ndeny_groups = [\"{}\"]\n",
            policy_for(&access),
            denied.name
        )
    };
    let d = Daemon::start(&policy("caller"));
    let o = d.run(&u, &[image(), "sh", "-c", "id -G; id -Gn"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let l: Vec<&str> = out.lines().collect();
    let mut gids: Vec<u32> = l[0].split(' ').map(|g| g.parse().unwrap()).collect();
    gids.sort();
    let mut want = vec![u.gid, allowed.gid];
    want.sort();
    assert_eq!(
        gids, want,
        "denied group {} or access group {} passed: {out}",
        denied.gid, access.gid
    );
    assert!(l[1].split(' ').any(|n| n == allowed.name), "{out}");
    drop(d);
    let d = Daemon::start(&policy("primary"));
    let o = d.run(&u, &[image(), "id", "-G"], b"");
    assert_eq!(stdout(&o).trim(), u.gid.to_string(), "{}", stderr(&o));
}

#[test]
#[serial]
fn here_and_v_pwd_write_files_the_host_sees_owned_by_the_caller() {
    let (_g, u, d) = setup(MOUNTS_ON);
    let proj = user_dir(&u, &home(&u).join("proj"), "original");
    let o = run_in(
        &d,
        &u,
        &proj,
        &[
            "--here",
            image(),
            "sh",
            "-c",
            "pwd; cat marker; echo x > made-here",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{}\noriginal", proj.display()));
    let m = fs::metadata(proj.join("made-here")).unwrap();
    assert_eq!((m.uid(), m.gid()), (u.uid, u.gid));
    let pwd = proj.to_str().unwrap().to_string();
    let o = run_in(
        &d,
        &u,
        &proj,
        &[
            "-v",
            &format!("{pwd}:/work"),
            "-w",
            "/work",
            image(),
            "sh",
            "-c",
            "pwd; echo y > made-v",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "/work\n");
    let m = fs::metadata(proj.join("made-v")).unwrap();
    assert_eq!((m.uid(), m.gid()), (u.uid, u.gid));
    // -w alone: a directory of the container, nothing mounted
    let o = run_in(&d, &u, &proj, &["-w", "/tmp", image(), "pwd"]);
    assert_eq!(stdout(&o), "/tmp\n", "{}", stderr(&o));
    // --here at $HOME: the directory is the home (no tmpfs over it)
    let o = run_in(
        &d,
        &u,
        &home(&u),
        &["--here", image(), "sh", "-c", "echo $HOME; cat proj/marker"],
    );
    assert_eq!(
        stdout(&o),
        format!("{}\noriginal", home(&u).display()),
        "{}",
        stderr(&o)
    );
    assert!(mounts_under(&runtime(&d)).is_empty(), "pinned mount left");
    assert!(d.containers().is_empty());
}

#[test]
#[serial]
fn ro_is_read_only_and_every_mount_is_nosuid_nodev() {
    let (_g, u, d) = setup(MOUNTS_ON);
    let proj = user_dir(&u, &home(&u).join("proj"), "original");
    // A setuid-root program in the directory gains nothing.
    // (named `id`: busybox picks its applet by name)
    fs::copy("/bin/busybox", proj.join("id")).unwrap();
    fs::set_permissions(proj.join("id"), fs::Permissions::from_mode(0o4755)).unwrap();
    let flags = "grep ' /work ' /proc/self/mountinfo | cut -d' ' -f6";
    let o = run_in(
        &d,
        &u,
        &proj,
        &[
            "-v",
            ".:/work:ro",
            "-w",
            "/work",
            image(),
            "sh",
            "-c",
            &format!("{flags}; touch new 2>/dev/null && echo WROTE; ./id -u"),
        ],
    );
    let out = stdout(&o);
    let l: Vec<&str> = out.lines().collect();
    let opts: Vec<&str> = l[0].split(',').collect();
    assert!(
        opts.contains(&"ro") && opts.contains(&"nosuid") && opts.contains(&"nodev"),
        "{out} {}",
        stderr(&o)
    );
    assert_eq!(l[1], u.uid.to_string(), "{out}");
    assert!(!proj.join("new").exists());
    let o = run_in(
        &d,
        &u,
        &proj,
        &["-v", ".:/work", image(), "sh", "-c", flags],
    );
    let opts = stdout(&o);
    let opts: Vec<&str> = opts.trim().split(',').collect();
    assert!(
        opts.contains(&"rw") && opts.contains(&"nosuid") && opts.contains(&"nodev"),
        "{opts:?}"
    );
}

#[test]
#[serial]
fn mounting_is_refused_unless_the_policy_allows_it() {
    let (_g, u, d) = setup("");
    let proj = user_dir(&u, &home(&u).join("proj"), "original");
    let o = run_in(&d, &u, &proj, &["--here", image(), "true"]);
    assert_refused(&o, &["mounts.workdir"]);
    assert!(d.containers().is_empty());
    let o = d.run(&u, &["--policy"], b"");
    assert!(
        stdout(&o).contains("not mounted (policy mounts.workdir = false)"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("Supplementary groups: none"),
        "{}",
        stdout(&o)
    );
    let (_g, u, d) = setup(MOUNTS_ON);
    let o = d.run(&u, &["--policy"], b"");
    assert!(
        stdout(&o).contains("may be mounted below /home (directories you own)"),
        "{}",
        stdout(&o)
    );
}

#[test]
#[serial]
fn a_directory_outside_roots_is_refused() {
    let (_g, u, d) = setup(MOUNTS_ON);
    let out = user_dir(
        &u,
        Path::new(&format!("/var/tmp/urun-out-{}", unique())),
        "x",
    );
    let o = run_in(&d, &u, &out, &["--here", image(), "true"]);
    let _ = fs::remove_dir_all(&out);
    assert_refused(&o, &["outside", "mounts.roots", "/var/tmp/urun-out-"]);
    assert!(mounts_under(&runtime(&d)).is_empty());
    assert!(d.containers().is_empty());
}

#[test]
#[serial]
fn another_users_directory_is_refused_by_the_client_and_by_the_helper() {
    let (g, u, d) = setup(MOUNTS_ON);
    let other = TestUser::new(&[&g]);
    fs::set_permissions(home(&other), fs::Permissions::from_mode(0o700)).unwrap();
    // The real client cannot open a 0700 home: a clear error, nothing sent.
    let o = run_in(
        &d,
        &u,
        Path::new("/home"),
        &["-v", &format!("./{}:/work", other.name), image(), "true"],
    );
    assert_refused(&o, &["cannot open", &other.name, "Permission denied"]);
    // A crafted client passing a directory it can open but does not own: the helper
    // refuses (policy mounts.access = "owner"), and a system directory by its roots.
    let public = user_dir(&other, &home(&other).join("pub"), "theirs");
    fs::set_permissions(home(&other), fs::Permissions::from_mode(0o711)).unwrap();
    // A crafted client that passes whatever directory it opens (or none).
    let request = serde_json::json!({"version": 1, "image": image(), "command": ["cat", "/work/marker"],
        "mount": {"target": "/work", "read_only": true}});
    let craft_with = |dir: &Path, pass: bool| {
        let fds: &[(&str, &Path)] = if pass { &[("dir", dir)] } else { &[] };
        common::raw::crafted(&d, &u, &request, fds)
    };
    let craft = |dir: &Path| craft_with(dir, true);
    let o = craft(&public);
    assert_refused(&o, &["mounts.access", "not owned by you"]);
    assert!(!stdout(&o).contains("theirs"));
    let o = craft(Path::new("/etc"));
    assert_refused(&o, &["mounts.roots", "system path"]);
    // The same crafted client with its own directory works: the refusals above are
    // the helper's checks, not a broken client.
    let proj = user_dir(&u, &home(&u).join("proj"), "mine");
    // A mount request without a descriptor is a protocol error, not a path lookup.
    let o = craft_with(&proj, false);
    assert_refused(&o, &["without passing the directory"]);
    let o = craft(&proj);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "mine"),
        "{}",
        stderr(&o)
    );
    assert!(mounts_under(&runtime(&d)).is_empty());
}

#[test]
#[serial]
fn dotdot_symlinks_and_relative_paths_in_v() {
    let (_g, u, d) = setup(MOUNTS_ON);
    let proj = user_dir(&u, &home(&u).join("proj"), "top");
    user_dir(&u, &proj.join("sub"), "sub");
    std::os::unix::fs::symlink("sub", proj.join("in")).unwrap();
    std::os::unix::fs::symlink(home(&u), proj.join("out")).unwrap();
    let cat = |spec: &str| run_in(&d, &u, &proj, &["-v", spec, image(), "cat", "/work/marker"]);
    for (spec, want) in [
        (".:/work", "top"),
        ("./sub/..:/work", "top"),
        ("./sub:/work", "sub"),
        ("./in:/work:ro", "sub"),
        (&format!("{}/sub:/work", proj.display()), "sub"),
    ] {
        let o = cat(spec);
        assert_eq!(stdout(&o), want, "{spec}: {}", stderr(&o));
    }
    for spec in ["..:/work", "./out:/work", "./sub/../..:/work"] {
        assert_refused(&cat(spec), &["not your current directory or below it"]);
    }
    assert_refused(&cat("sub:/work"), &["named volumes are not supported"]);
    assert_refused(&cat(".:work"), &["absolute"]);
    assert_refused(&cat(".:/etc"), &["cannot mount over /etc"]);
    assert_refused(&cat("./missing:/work"), &["cannot resolve"]);
    let two = run_in(
        &d,
        &u,
        &proj,
        &["-v", ".:/a", "-v", ".:/b", image(), "true"],
    );
    assert_refused(&two, &["only one"]);
    assert!(mounts_under(&runtime(&d)).is_empty());
}

/// The swap race: the client opened its directory; before the container starts (urund
/// paused by its debug-only test hook, after its checks and before pinning), the
/// directory is renamed and a symlink to another user's directory put in its place.
/// What gets mounted is the directory that was opened, never the symlink's target.
#[test]
#[serial]
fn swapping_the_directory_for_a_symlink_after_the_check_mounts_the_original() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let victim = TestUser::new(&[&g]);
    let d = Daemon::prepare(&format!("{}{MOUNTS_ON}", policy_for(&g)))
        .launch_env(&[("URUND_TEST_PAUSE_MS", "1500")]);
    let proj = user_dir(&u, &home(&u).join("proj"), "original");
    let target = user_dir(&victim, &home(&victim).join("secret"), "victim's");
    let pwd = proj.to_str().unwrap().to_string();
    let child = urun_in(
        &d,
        &u,
        &proj,
        &[
            "-v",
            &format!("{pwd}:/work"),
            image(),
            "sh",
            "-c",
            "cat /work/marker; echo; grep ' /work ' /proc/self/mountinfo | cut -d' ' -f4",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    d.wait_log("test pause", Duration::from_secs(10));
    fs::rename(&proj, home(&u).join("proj.old")).unwrap();
    std::os::unix::fs::symlink(&target, &proj).unwrap();
    let o = child.wait_with_output().unwrap();
    let out = stdout(&o);
    assert!(
        !out.contains("victim"),
        "the symlink's target was mounted: {out}"
    );
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l.first(), Some(&"original"), "{out} {}", stderr(&o));
    assert!(!l[1].contains(&victim.name), "{out}");
    assert!(mounts_under(&runtime(&d)).is_empty());
}

#[test]
#[serial]
fn no_pinned_mount_is_left_after_a_client_leaves_or_urund_is_killed() {
    let (_g, u, mut d) = setup(MOUNTS_ON);
    let proj = user_dir(&u, &home(&u).join("proj"), "original");
    let rt = runtime(&d);
    let long = |d: &Daemon| {
        urun_in(d, &u, &proj, &["--here", image(), "sleep", "60"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // The client is killed mid-run: container and pinned mount go.
    let mut c = long(&d);
    d.wait_running(1, Duration::from_secs(20));
    assert_eq!(
        mounts_under(&rt).len(),
        1,
        "the directory is pinned while it runs"
    );
    c.kill().unwrap();
    let _ = c.wait();
    d.wait_no_containers(Duration::from_secs(20)).unwrap();
    let t = Instant::now();
    while !mounts_under(&rt).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "pinned mount left: {:?}",
            mounts_under(&rt)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    // urund is killed mid-run: the mount is left behind, and the next start removes it.
    let mut c = long(&d);
    d.wait_running(1, Duration::from_secs(20));
    d.kill9();
    let _ = c.kill();
    let _ = c.wait();
    assert_eq!(
        mounts_under(&rt).len(),
        1,
        "SIGKILL leaves the pin (the case to clean)"
    );
    d.relaunch();
    assert!(
        mounts_under(&rt).is_empty(),
        "not cleaned at start: {:?}\n{}",
        mounts_under(&rt),
        d.log_text()
    );
    // Only urund's marker of its own runtime directory stays.
    let left: Vec<_> = fs::read_dir(&rt)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".urund-runtime")
        .collect();
    assert!(left.is_empty(), "run directories left: {left:?}");
    assert!(d.containers().is_empty());
    // The directory itself is intact.
    assert_eq!(fs::read_to_string(proj.join("marker")).unwrap(), "original");
}

/// urund confined without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (as a hardened
/// service unit may run it) cannot look up paths under a 0700 home, but still checks
/// and pins a directory there: the checks use the descriptor and the kernel's name
/// for it.
#[test]
#[serial]
fn a_helper_without_dac_capabilities_mounts_a_directory_under_a_private_home() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::prepare(&format!("{}{MOUNTS_ON}", policy_for(&g))).launch_wrapped(&[
        "setpriv",
        "--bounding-set",
        "-dac_override,-dac_read_search",
        "--",
    ]);
    fs::set_permissions(home(&u), fs::Permissions::from_mode(0o700)).unwrap();
    let proj = user_dir(&u, &home(&u).join("proj"), "private");
    let o = run_in(&d, &u, &proj, &["--here", image(), "cat", "marker"]);
    assert_eq!(stdout(&o), "private", "{}\n{}", stderr(&o), d.log_text());
    assert!(mounts_under(&runtime(&d)).is_empty());
}
