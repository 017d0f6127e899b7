//! End-to-end tests of the audit trail against a hostile member of the access group:
//! its volume stays bounded (long fields clipped, refusals rate-limited per uid and
//! summed up), a run is on record from its admission on, what urund reaps at start is
//! recorded, characters that confuse viewers are escaped, and the audit file cannot be
//! a FIFO or sit in a directory someone else can write. Real urund, real urun as real
//! users, real Docker.

mod common;

use common::*;
use serial_test::serial;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn audit_path(d: &Daemon) -> PathBuf {
    d.dir.join("audit/audit.log")
}

/// urund with the audit file in its directory and `extra` appended to the policy.
fn start_with_audit(g: &TestGroup, extra: &str) -> Daemon {
    let d = Daemon::prepare("");
    write_policy(&d, g, extra);
    d.launch()
}

fn write_policy(d: &Daemon, g: &TestGroup, extra: &str) {
    let text = format!(
        "{}{extra}[audit]\nfile = \"{}\"\n",
        policy_for(g),
        audit_path(d).display()
    );
    write_mode(&d.policy, text.as_bytes(), 0o644);
}

/// Every record of the audit file at `path`.
fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The first record of the audit file that satisfies `pred`, waiting up to 15 s.
fn wait_record(
    path: &Path,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let t = Instant::now();
    loop {
        if let Some(r) = records(path).into_iter().find(&pred) {
            return Some(r);
        }
        if t.elapsed() > Duration::from_secs(15) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Runs `cmd` to its end, or kills it after `limit` (then `None`: it hung).
fn output_within(mut cmd: Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning");
    let t = Instant::now();
    while child.try_wait().expect("waiting").is_none() {
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().expect("collecting output"))
}

// ── volume ──

#[test]
#[serial]
fn a_flood_of_refused_requests_with_huge_arguments_stays_small_in_the_audit_log() {
    let g = TestGroup::new("urg");
    let flooder = TestUser::new(&[&g]);
    let other = TestUser::new(&[&g]);
    let mut d = start_with_audit(&g, "[images]\nallow = [\"urun-test/*\"]\n");
    let log = audit_path(&d);
    let before = file_size(&log);
    let big = "A".repeat(60_000);
    let n = 300;
    for _ in 0..n {
        let o = d.run(&flooder, &["debian:12", "echo", &big], b"");
        // every refusal still reaches the user, whatever the log keeps
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        assert!(stderr(&o).contains("images.allow"), "{}", stderr(&o));
    }
    // another member's refusal is recorded in full: the limit is per uid
    let o = d.run(&other, &["debian:12", "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    let theirs = wait_record(&log, |r| {
        r["uid"] == other.uid && r["decision"] == "refused"
    });
    assert!(theirs.is_some(), "{:?}", records(&log));
    // 300 records with a 60 KB argument are 18 MB; what is written must stay small
    let grown = file_size(&log) - before;
    eprintln!("{n} refusals with a 60 KB argument: the audit file grew by {grown} bytes");
    assert!(grown <= 256 * 1024, "the audit file grew by {grown} bytes");
    // On stop, the summary of what was held back is written: nothing is unaccounted.
    assert!(d.stop().is_some_and(|s| s.success()));
    let mine: Vec<_> = records(&log)
        .into_iter()
        .filter(|r| r["uid"] == flooder.uid)
        .collect();
    let full: Vec<_> = mine.iter().filter(|r| r["decision"] == "refused").collect();
    let held: u64 = mine
        .iter()
        .filter(|r| r["decision"] == "suppressed")
        .map(|r| r["suppressed"]["count"].as_u64().unwrap())
        .sum();
    assert!(!full.is_empty() && held > 0, "{mine:?}");
    assert_eq!(full.len() as u64 + held, n, "{mine:?}");
    for r in &full {
        assert_eq!(r["rule"], "images.allow");
        let arg = r["argv"][1].as_str().unwrap();
        assert!(arg.ends_with("…[truncated, 60000 bytes]"), "{arg:.80}");
        assert!(arg.len() <= 4096, "{}", arg.len());
    }
    // one summary per window, or before the next full record: each by rule
    let by_rule: u64 = mine
        .iter()
        .filter(|r| r["decision"] == "suppressed")
        .map(|r| r["suppressed"]["rules"]["images.allow"].as_u64().unwrap())
        .sum();
    assert_eq!(by_rule, held);
    assert!(file_size(&log) - before <= 256 * 1024);
}

// ── from admission on ──

#[test]
#[serial]
fn an_admitted_run_is_on_record_while_it_runs() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = start_with_audit(&g, "");
    let log = audit_path(&d);
    let mut child = d
        .urun(&u, &[image(), "sleep", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    d.wait_running(1, Duration::from_secs(20));
    let cid = d.containers()[0].clone();
    // while it sleeps, the admission is on record with what applies to it
    let admitted = wait_record(&log, |r| r["uid"] == u.uid);
    let _ = child.kill();
    let _ = child.wait();
    let admitted = admitted.expect("no record of the run while it runs");
    assert_eq!(admitted["decision"], "admitted", "{admitted}");
    assert_eq!(admitted["container"], cid.as_str());
    assert_eq!(admitted["image_id"], image_id(image()).as_str());
    assert_eq!(admitted["argv"], serde_json::json!(["sleep", "300"]));
    assert_eq!(admitted["user"], u.name.as_str());
    assert_eq!(admitted["limits"]["memory"], 512u64 << 20);
    assert_eq!(admitted["limits"]["max_runtime"], 86400);
    assert_eq!(admitted["limits"]["pids"], 256);
    // and the run's end record follows, for the same request, as before
    let end = wait_record(&log, |r| {
        r["request"] == admitted["request"] && r["decision"] != "admitted"
    })
    .expect("no end record");
    assert_eq!(end["decision"], "allowed");
    assert_eq!(end["container"], cid.as_str());
    assert!(end["duration_ms"].as_u64().is_some());
}

#[test]
#[serial]
fn the_record_of_a_run_names_its_entrypoint_workdir_and_env_names_never_env_values() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = start_with_audit(&g, "[env]\nallow = [\"TOKEN\", \"LANG\"]\n");
    let log = audit_path(&d);
    let o = d.run(
        &u,
        &[
            "-e",
            "TOKEN=s3cret-value",
            "-e",
            "LANG=C",
            "--entrypoint",
            "/bin/echo",
            "-w",
            "/srv",
            image(),
            "hello",
        ],
        b"",
    );
    assert_eq!(stdout(&o), "hello\n", "{}", stderr(&o));
    let end = wait_record(&log, |r| r["uid"] == u.uid && r["decision"] == "allowed")
        .expect("no end record");
    let admitted = wait_record(&log, |r| r["uid"] == u.uid && r["decision"] == "admitted")
        .expect("no admitted record");
    for r in [&end, &admitted] {
        assert_eq!(r["entrypoint"], "/bin/echo", "{r}");
        assert_eq!(r["workdir"], "/srv", "{r}");
        assert_eq!(r["env"], serde_json::json!(["TOKEN", "LANG"]), "{r}");
    }
    // A refused request is on record with them too.
    let o = d.run(&u, &["-e", "OTHER=s3cret-value", image(), "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    let refused = wait_record(&log, |r| r["uid"] == u.uid && r["decision"] == "refused")
        .expect("no refusal record");
    assert_eq!(refused["env"], serde_json::json!(["OTHER"]), "{refused}");
    // Values never: they may be secrets.
    let raw = std::fs::read_to_string(&log).unwrap();
    for text in [&raw, &d.log_text()] {
        assert!(!text.contains("s3cret"), "a value in the log: {text}");
    }
}

#[test]
#[serial]
fn a_run_in_flight_when_urund_dies_stays_on_record_and_its_reaping_is_recorded() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let mut d = start_with_audit(&g, "");
    let log = audit_path(&d);
    let mut child = d
        .urun(&u, &[image(), "sleep", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    d.wait_running(1, Duration::from_secs(20));
    let cid = d.containers()[0].clone();
    let admitted = wait_record(&log, |r| r["uid"] == u.uid && r["decision"] == "admitted");
    d.kill9();
    let _ = child.kill();
    let _ = child.wait();
    let admitted = admitted.expect("the run in flight is not on record");
    assert_eq!(admitted["container"], cid.as_str());
    // the next start removes the leftover and says so, with the labels it carried
    d.relaunch();
    let reaped = wait_record(&log, |r| {
        r["decision"] == "reaped" && r["container"] == cid.as_str()
    })
    .unwrap_or_else(|| panic!("no record of the reaping: {:?}", records(&log)));
    assert_eq!(reaped["request"], admitted["request"]);
    assert_eq!(reaped["labels"]["io.urun.uid"], u.uid.to_string());
    assert_eq!(reaped["labels"]["io.urun.user"], u.name.as_str());
    assert_eq!(reaped["labels"]["io.urun.request"], admitted["request"]);
    assert!(d.containers().is_empty());
}

// ── escaping ──

#[test]
#[serial]
fn c1_controls_and_line_separators_in_argv_are_escaped_in_the_audit_file() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = start_with_audit(&g, "[images]\nallow = [\"urun-test/*\"]\n");
    let word = "a\u{85}b\u{2028}c\u{2029}d\u{9b}31m\u{202e}e";
    let o = d.run(&u, &["debian:12", "echo", word], b"");
    assert_eq!(o.status.code(), Some(125));
    let rec = wait_record(&audit_path(&d), |r| r["uid"] == u.uid).expect("no record");
    // the value is intact for a JSON reader ...
    assert_eq!(rec["argv"][1], word);
    // ... and no raw C1 control or line separator is in the file or urund's stderr
    let raw = std::fs::read_to_string(audit_path(&d)).unwrap();
    for text in [&raw, &d.log_text()] {
        for c in ['\u{85}', '\u{9b}', '\u{2028}', '\u{2029}', '\u{202e}'] {
            assert!(!text.contains(c), "raw {c:?} in {text}");
        }
    }
    assert!(
        raw.contains(r#""a\u0085b\u2028c\u2029d\u009b31m\u202ee""#),
        "{raw}"
    );
}

#[test]
#[serial]
fn invisible_and_format_characters_in_argv_are_escaped_in_the_audit_file() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = start_with_audit(&g, "[images]\nallow = [\"urun-test/*\"]\n");
    // Unicode Cf (format: Arabic letter mark, zero-width, bidi, invisible operators,
    // BOM, soft hyphen, tag characters) hides or reorders text in a viewer.
    let hidden: Vec<char> = "\u{61c}\u{ad}\u{200b}\u{200c}\u{200d}\u{200e}\u{200f}\u{202a}\u{202b}\
                             \u{202c}\u{202d}\u{202e}\u{2060}\u{2061}\u{2062}\u{2063}\u{2064}\u{2066}\
                             \u{2067}\u{2068}\u{2069}\u{feff}\u{e0001}\u{e0041}\u{e007f}"
        .chars()
        .collect();
    let word: String = hidden.iter().flat_map(|c| [*c, 'x']).collect();
    let o = d.run(&u, &["debian:12", "echo", &word], b"");
    assert_eq!(o.status.code(), Some(125));
    let rec = wait_record(&audit_path(&d), |r| r["uid"] == u.uid).expect("no record");
    // the value is intact for a JSON reader ...
    assert_eq!(rec["argv"][1], word.as_str());
    // ... and none of them is raw in the file or urund's stderr
    let raw = std::fs::read_to_string(audit_path(&d)).unwrap();
    for text in [&raw, &d.log_text()] {
        for c in &hidden {
            assert!(!text.contains(*c), "raw {c:?} in {text}");
        }
    }
    assert!(
        raw.contains(r#"\u061cx\u00adx\u200bx"#) && raw.contains(r#"\udb40\udc41x"#),
        "{raw}"
    );
}

// ── the audit file ──

/// Starts urund and expects it to refuse at once (exit 1), never to serve or hang.
fn expect_refusal_at_start(d: &Daemon) -> String {
    let mut child = d.urund_command(&[]).spawn().unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        let serving = std::os::unix::net::UnixStream::connect(&d.socket).is_ok();
        if serving || t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "urund {} instead of refusing:\n{}",
                if serving { "started serving" } else { "hung" },
                d.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1), "{}", d.log_text());
    d.log_text()
}

#[test]
#[serial]
fn urund_refuses_an_audit_directory_others_can_write_or_own() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::prepare("");
    write_policy(&d, &g, "");
    let dir = audit_path(&d).parent().unwrap().to_path_buf();
    std::fs::create_dir(&dir).unwrap();
    for mode in [0o777, 0o770, 0o1733] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let log = expect_refusal_at_start(&d);
        assert!(
            log.contains(&format!("{} is writable by group or others", dir.display()))
                && log.contains("chmod go-w"),
            "mode {mode:o}: {log}"
        );
        assert!(!audit_path(&d).exists());
    }
    // a member's own directory: they could delete the log or plant a FIFO in it
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&dir, Some(u.uid), Some(u.gid)).unwrap();
    let log = expect_refusal_at_start(&d);
    assert!(log.contains(&format!("owned by uid {}", u.uid)), "{log}");
    assert!(!audit_path(&d).exists());
}

#[test]
#[serial]
fn urund_refuses_a_fifo_as_audit_file_without_hanging() {
    let g = TestGroup::new("urg");
    let d = Daemon::prepare("");
    write_policy(&d, &g, "");
    let dir = audit_path(&d).parent().unwrap().to_path_buf();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = sh("mkfifo", &["-m", "0600", audit_path(&d).to_str().unwrap()]);
    assert!(o.status.success());
    let log = expect_refusal_at_start(&d);
    assert!(log.contains("is a FIFO, not a regular file"), "{log}");
}

#[test]
#[serial]
fn a_fifo_planted_before_sighup_does_not_hang_urund() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = start_with_audit(&g, "");
    let o = d.run(&u, &[image(), "true"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    // the log is rotated away and a FIFO takes its place before the SIGHUP
    let rotated = audit_path(&d).with_extension("log.1");
    std::fs::rename(audit_path(&d), &rotated).unwrap();
    let o = sh("mkfifo", &["-m", "0600", audit_path(&d).to_str().unwrap()]);
    assert!(o.status.success());
    let o = sh("kill", &["-HUP", &d.pid().to_string()]);
    assert!(o.status.success());
    // urund keeps serving, and keeps writing to the file it had
    let o = output_within(
        d.urun(&u, &[image(), "echo", "still-served"]),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|| panic!("urund hung after SIGHUP:\n{}", d.log_text()));
    assert_eq!(stdout(&o), "still-served\n", "{}", stderr(&o));
    let t = Instant::now();
    while !d.log_text().contains("still writing to the old audit file") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(d.log_text().contains("FIFO"), "{}", d.log_text());
    let served = wait_record(&rotated, |r| {
        r["uid"] == u.uid && r["decision"] == "allowed" && r["argv"][1] == "still-served"
    });
    assert!(served.is_some(), "{:?}", records(&rotated));
}
