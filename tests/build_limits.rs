//! Regression tests of the build path's review findings (/work/helpers/REVIEW-build.md)
//! that registry took: B4 (an own build copied to the build engine as a base stayed
//! there, tagged, readable by later builds), B5 (nothing bounded a built image's size)
//! and S4 (builds ran on the run daemon, or on a daemon without userns-remap, as the
//! host's root, by default). Real urund, real users, a user-namespaced build engine;
//! everything removed afterwards.

mod common;

use common::engine::{Dockremap, EngineConfig, ExtraEngine};
use common::*;
use serial_test::serial;

/// `urun build -t TAG DIR` as `user`, the Dockerfile in a fresh directory.
fn build(d: &Daemon, user: &TestUser, tag: &str, dockerfile: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("urun-limits-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(
        &dir,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    let o = d.run(user, &["build", "-t", tag, dir.to_str().unwrap()], b"");
    let _ = std::fs::remove_dir_all(&dir);
    o
}

#[test]
#[serial]
fn no_own_build_stays_on_the_build_engine_and_an_image_over_max_image_size_is_not_kept() {
    let _dockremap = Dockremap::note();
    let engine = ExtraEngine::start(EngineConfig {
        userns_remap: Some("default".into()),
        ..Default::default()
    });
    engine.load_image(image());
    let g = TestGroup::new("urg");
    let alice = TestUser::new(&[&g]);
    let d = Daemon::start(&format!(
        "{}[images]\nallow = [\"{}\"]\n[build]\nenabled = true\nengine = \"{}\"\n\
         max_runtime = \"2m\"\nmax_image_size = \"20m\"\n",
        policy_for(&g),
        image(),
        engine.socket().display()
    ));
    let a = &alice.name;
    let _app = TestImage(format!("urun/{a}/app:1"));
    let _child = TestImage(format!("urun/{a}/child:1"));
    // B4: an own build used as a base is copied to the build engine, and removed after
    let o = build(
        &d,
        &alice,
        "app:1",
        &format!("FROM {}\nRUN echo private > /secret\nUSER 1000\n", image()),
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = build(
        &d,
        &alice,
        "child:1",
        &format!("FROM urun/{a}/app:1\nUSER 1000\n"),
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let names = engine.must(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        !names.contains("urun/"),
        "left on the build engine: {names}"
    );
    // B5: 30 MB is over max_image_size: refused, nothing tagged, nothing kept
    let o = build(
        &d,
        &alice,
        "big:1",
        &format!(
            "FROM {}\nRUN dd if=/dev/zero of=/big bs=1M count=30\nUSER 1000\n",
            image()
        ),
    );
    assert_eq!(o.status.code(), Some(125), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("max_image_size"), "{}", stderr(&o));
    assert!(!d
        .docker(&["image", "inspect", &format!("urun/{a}/big:1")])
        .status
        .success());
    let left = engine.must(&["images", "-aq"]);
    let base = engine.must(&["image", "inspect", "-f", "{{.Id}}", image()]);
    assert_eq!(
        left.split_whitespace().count(),
        1,
        "build engine keeps more than the base ({}): {left}",
        base.trim()
    );
}

#[test]
#[serial]
fn builds_on_the_run_daemon_are_refused_unless_the_policy_allows_a_root_engine() {
    let g = TestGroup::new("urg");
    let alice = TestUser::new(&[&g]);
    let base = format!(
        "{}[images]\nallow = [\"{}\"]\n[build]\nenabled = true\nmax_runtime = \"2m\"\n",
        policy_for(&g),
        image()
    );
    let df = format!("FROM {}\nUSER 1000\n", image());
    let d = Daemon::start(&base);
    let o = build(&d, &alice, "app:1", &df);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("allow_root_engine") && stdout(&o).is_empty(),
        "{}",
        stderr(&o)
    );
    assert!(d.log_text().contains("allow_root_engine"));
    drop(d);
    let d = Daemon::start(&format!("{base}allow_root_engine = true\n"));
    let _img = TestImage(format!("urun/{}/app:1", alice.name));
    let o = build(&d, &alice, "app:1", &df);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}
