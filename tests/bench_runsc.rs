//! The cost of gVisor: urun's latency and throughput with `runsc` beside `runc`, on one
//! extra dockerd with runsc registered (the machine's main daemon is never touched),
//! one urund, two users: one whose group the policy puts under runsc, one under runc.
//! Runs alternate. Not part of the suite (`#[ignore]`): `bench/run.sh` runs it with
//! `RUNSC=1` and appends its table to bench/RESULTS.md.
//!
//! `cargo test --release --locked --test bench_runsc -- --ignored --nocapture`
//! (`BENCH_N` latency runs per side, default 11; `BENCH_MIB` throughput size, default 256).

mod common;

use common::engine::{EngineConfig, ExtraEngine, Runtime};
use common::*;
use std::process::Stdio;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore]
fn runsc_beside_runc() {
    let n = env_or("BENCH_N", 11);
    let mib = env_or("BENCH_MIB", 256);
    let size = mib << 20;
    let engine = ExtraEngine::start(EngineConfig {
        runtimes: vec![Runtime {
            name: "runsc".into(),
            path: "/usr/bin/runsc".into(),
            args: vec!["--network=none".into(), "--oci-seccomp".into()],
        }],
        ..Default::default()
    });
    engine.load_image(image());
    let g = TestGroup::new("urb");
    let sandboxed = TestGroup::new("urs");
    let runc_user = TestUser::new(&[&g]);
    let runsc_user = TestUser::new(&[&g, &sandboxed]);
    let policy = format!(
        "{}[limits]\npids = 512\n[group.{}.runtime]\nname = \"runsc\"\n",
        policy_for(&g),
        sandboxed.name
    );
    let d = Daemon::start_on(&policy, &engine);
    let users = [("runc", &runc_user), ("runsc", &runsc_user)];
    // warm up; and each user really gets its runtime
    for (rt, u) in users {
        let o = d.run(u, &[image(), "cat", "/proc/version"], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o).starts_with("Linux version 4.4.0"), rt == "runsc");
    }
    let timed = |u: &TestUser, args: &[&str], input: &[u8]| {
        let t = Instant::now();
        let o = d.run(u, args, input);
        let s = t.elapsed().as_secs_f64();
        assert!(o.status.success(), "{}", stderr(&o));
        (s, o)
    };
    let mut lat = [vec![], vec![]];
    for _ in 0..n {
        for (i, (_, u)) in users.iter().enumerate() {
            lat[i].push(timed(u, &[image(), "true"], b"").0);
        }
    }
    let count = size.to_string();
    let mut out = [vec![], vec![]];
    let mut inp = [vec![], vec![]];
    let input = vec![0u8; size];
    for _ in 0..3 {
        for (i, (_, u)) in users.iter().enumerate() {
            let (s, o) = timed(u, &[image(), "head", "-c", &count, "/dev/zero"], b"");
            assert_eq!(o.stdout.len(), size);
            out[i].push(mib as f64 / s);
            let (s, o) = timed(u, &["-i", image(), "wc", "-c"], &input);
            assert_eq!(stdout(&o).trim(), count);
            inp[i].push(mib as f64 / s);
        }
    }
    let row = |what: &str, v: &[Vec<f64>; 2], fmt: fn(f64) -> String| {
        let (a, b) = (median(v[0].clone()), median(v[1].clone()));
        format!("| {what} | {} | {} | {:.2} |", fmt(a), fmt(b), b / a)
    };
    let secs = |x: f64| format!("{x:.3}");
    let rate = |x: f64| format!("{x:.0}");
    println!("| measure (urun, extra dockerd) | runc | runsc | runsc / runc |");
    println!("|---|---|---|---|");
    println!(
        "{}",
        row(
            &format!("latency `IMAGE true`, wall (s, median of {n})"),
            &lat,
            secs
        )
    );
    println!(
        "{}",
        row(
            &format!("stdout throughput (MiB/s, {mib} MiB, median of 3)"),
            &out,
            rate
        )
    );
    println!(
        "{}",
        row(
            &format!("stdin throughput (MiB/s, {mib} MiB, median of 3)"),
            &inp,
            rate
        )
    );
    let _ = Stdio::null();
    assert!(d.containers().is_empty());
}
