//! End-to-end: urund cleans up its pinned mounts whatever else is mounted. Real urund,
//! real urun as a real user, real Docker.

mod common;

use common::*;
use serial_test::serial;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Mount points below `dir` in the mount namespace of process `pid`, from its
/// mountinfo read as bytes.
fn mounts_of(pid: u32, dir: &Path) -> Vec<Vec<u8>> {
    let info = std::fs::read(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    info.split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').nth(4))
        .filter(|m| m.starts_with(dir.as_os_str().as_bytes()))
        .map(|m| m.to_vec())
        .collect()
}

/// Removes a directory a test made in /tmp, whatever happens.
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
#[serial]
fn pinned_mounts_are_removed_even_when_a_mount_point_elsewhere_is_not_utf8() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::prepare(&format!(
        "{}[mounts]\nworkdir = true\nroots = [\"/home\"]\n",
        policy_for(&g)
    ));
    // A mount point whose name is not UTF-8 (what a member's FUSE mount can make on the
    // host). urund gets its own mount namespace for this test, so that the odd mount
    // exists only there and no other urund on this machine sees it; dockerd then does
    // not see the pins either, which this test does not need.
    let n = unique();
    let weird = [format!("/tmp/urun-mi-{n}-").into_bytes(), vec![0xff]].concat();
    let _weird = TmpDir(PathBuf::from(std::ffi::OsStr::from_bytes(&weird)));
    let script = format!(
        "w=\"/tmp/urun-mi-{n}-$(printf '\\377')\"; mkdir \"$w\" && \
         mount -t tmpfs urun-test \"$w\" && exec \"$0\" \"$@\""
    );
    let d = d.launch_wrapped(&[
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]);
    let weird_path = Path::new(std::ffi::OsStr::from_bytes(&weird));
    assert_eq!(
        mounts_of(d.pid(), weird_path).len(),
        1,
        "the odd mount is there"
    );
    // The client runs in that namespace too: a directory opened in another one cannot
    // be pinned (SECURITY.md, "Working directory").
    let mut c = Command::new("nsenter");
    c.arg(format!("--target={}", d.pid()))
        .arg("--mount")
        .arg(format!("--wd=/home/{}", u.name))
        .args([
            "--",
            "setpriv",
            &format!("--reuid={}", u.uid),
            &format!("--regid={}", u.gid),
            "--init-groups",
            "--reset-env",
            "--",
        ])
        .arg(&d.urun)
        .arg("--socket")
        .arg(&d.socket)
        .args(["-v", ".:/work", image(), "true"]);
    let o = run_with_input(c, b"");
    assert!(o.status.success(), "{}", stderr(&o));
    // the run's pin is gone once the run has ended
    let runtime = d.socket.parent().unwrap().join("run");
    let t = Instant::now();
    while !mounts_of(d.pid(), &runtime).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "pinned mount left: {:?}\n{}",
            mounts_of(d.pid(), &runtime)
                .iter()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .collect::<Vec<_>>(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
