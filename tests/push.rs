//! End-to-end tests of `urun push` (issue 13) with a real urund, real users, the real
//! Docker daemon and Debian's `docker-registry` on loopback: a user promotes their own
//! build, gets its digest, and that digest (pulled through the policy's pull rules)
//! runs as whoever runs it, whatever the registry's tag says later; others' images
//! and images not built through urun are refused with one line (125); a registry that
//! is down is one line and leaves nothing on the engine; credentials come from the
//! root-only file the policy names, and appear nowhere a user or the log can read.
//!
//! Most builds are made the way urund leaves them (an image tagged in the user's
//! namespace and its record in urund's store), as in tests/images.rs; the last test
//! builds for real with `urun build` on a user-namespaced build engine, pushes, and
//! runs the digest on the run engine.

mod common;

use common::registry::TestRegistry;
use common::*;
use serial_test::serial;
use std::time::Duration;
use urun::daemon::builds::{BuildRecord, Builds};

/// A build of `user`'s named `urun/<user>/<name>:1` with `/marker` holding `marker`,
/// recorded in the daemon's store. Removed on drop.
fn own_build(d: &Daemon, user: &TestUser, name: &str, marker: &str) -> (TestImage, String) {
    let tag = format!("urun/{}/{name}:1", user.name);
    let marker = marker.to_string();
    let img = TestImage::build(
        &tag,
        &format!("FROM {}\nCOPY marker /marker\nUSER 1000\n", image()),
        move |dir| std::fs::write(dir.join("marker"), marker).unwrap(),
    );
    let id = image_id(&tag);
    Builds::open(&d.state)
        .unwrap()
        .record(&BuildRecord {
            uid: user.uid,
            user: user.name.clone(),
            image_id: id.clone(),
            tags: vec![tag],
            digests: vec![],
            created: 1,
            request: "test".into(),
            dockerfile: "d".repeat(64),
            context: "c".repeat(64),
        })
        .unwrap();
    (img, id)
}

fn setup(
    reg: &TestRegistry,
    auth_file: Option<&std::path::Path>,
) -> (TestGroup, TestUser, TestUser, Daemon) {
    let g = TestGroup::new("urg");
    let alice = TestUser::new(&[&g]);
    let bob = TestUser::new(&[&g]);
    let mut policy = format!(
        "{}[images]\nallow = [\"{a}/urun/*\"]\nrequire_digest = true\n\
         [pull]\nmode = \"missing\"\nregistries = [\"{a}\"]\n\
         [build]\nenabled = true\nregistry = \"{a}\"\n",
        policy_for(&g),
        a = reg.addr
    );
    if let Some(f) = auth_file {
        policy.push_str(&format!("registry_auth = \"{}\"\n", f.display()));
    }
    let d = Daemon::start(&policy);
    (g, alice, bob, d)
}

/// `urun push`'s `NAME: digest: sha256:…` line; the digest.
fn pushed(o: &std::process::Output, reference: &str) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    let out = stdout(o);
    let digest = out
        .strip_prefix(&format!("{reference}: digest: "))
        .unwrap_or_else(|| panic!("{out}"))
        .trim_end()
        .to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{out}");
    digest
}

#[test]
#[serial]
fn a_pushed_build_runs_by_digest_as_whoever_runs_it_and_a_moved_tag_changes_nothing() {
    let reg = TestRegistry::start();
    let (_g, alice, bob, d) = setup(&reg, None);
    let (_img, id) = own_build(&d, &alice, "app", "first");
    let remote = format!("{}/urun/{}/app", reg.addr, alice.name);

    let o = d.run(&alice, &["push", "app:1"], b"");
    let digest = pushed(&o, &format!("{remote}:1"));
    let path = remote.split_once('/').unwrap().1;
    assert_eq!(reg.manifest_digest(path, "1"), Some(digest.clone()));
    // the registry name was only for the push; the record has the digest; audited
    assert!(!d
        .docker(&["image", "inspect", &format!("{remote}:1")])
        .status
        .success());
    let rec = Builds::open(&d.state)
        .unwrap()
        .get(alice.uid, &id)
        .unwrap()
        .unwrap();
    assert_eq!(rec.digests, [format!("{remote}@{digest}")]);
    d.wait_log(
        &format!("pushed {remote}:1 as {remote}@{digest}"),
        Duration::from_secs(5),
    );

    // someone moves the tag in the registry to another image
    let other = TestImage::build(
        &format!("{remote}:1"),
        &format!("FROM {}\nCOPY marker /marker\n", image()),
        |dir| std::fs::write(dir.join("marker"), "moved").unwrap(),
    );
    assert!(d.docker(&["push", &other.0]).status.success());
    assert_ne!(
        reg.manifest_digest(path, "1").as_deref(),
        Some(digest.as_str())
    );
    drop(other);

    // a run host without the image: pulled by digest, run as the caller
    drop(_img);
    assert!(
        !d.docker(&["image", "inspect", &id]).status.success(),
        "still here"
    );
    let by_digest = format!("{remote}@{digest}");
    let _pulled = TestImage(by_digest.clone());
    for user in [&alice, &bob] {
        let o = d.run(user, &[&by_digest, "sh", "-c", "cat /marker; id -u"], b"");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o), format!("first{}\n", user.uid));
    }
    assert_eq!(
        image_id(&by_digest),
        id,
        "the digest is the build, byte for byte"
    );
}

#[test]
#[serial]
fn others_images_and_images_not_built_through_urun_are_refused_and_nothing_is_pushed() {
    let reg = TestRegistry::start();
    let (_g, alice, bob, d) = setup(&reg, None);
    let (_img, _) = own_build(&d, &alice, "app", "a");
    for (user, name) in [
        (&bob, format!("urun/{}/app:1", alice.name)),
        (&alice, image().to_string()),
        (&alice, "app:2".to_string()),
    ] {
        let o = d.run(user, &["push", &name], b"");
        assert_eq!(o.status.code(), Some(125), "{name}");
        assert_eq!(
            stderr(&o),
            format!(
                "urun: {name}: not one of your builds; urun push promotes only images you \
                 built with urun build (urun images lists them); nothing was pushed\n"
            )
        );
    }
    assert_eq!(
        reg.get("/v2/_catalog")
            .unwrap()
            .1
            .rsplit("\r\n\r\n")
            .next()
            .unwrap()
            .trim(),
        "{\"repositories\":[]}"
    );
}

#[test]
#[serial]
fn a_registry_that_is_down_is_one_line_and_leaves_nothing() {
    let mut reg = TestRegistry::start();
    let (_g, alice, _bob, d) = setup(&reg, None);
    let (_img, id) = own_build(&d, &alice, "app", "a");
    reg.stop();
    let o = d.run(&alice, &["push", "app:1"], b"");
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("connection refused") && err.ends_with("nothing was recorded\n"),
        "{err}"
    );
    let remote = format!("{}/urun/{}/app:1", reg.addr, alice.name);
    assert!(!d.docker(&["image", "inspect", &remote]).status.success());
    let rec = Builds::open(&d.state)
        .unwrap()
        .get(alice.uid, &id)
        .unwrap()
        .unwrap();
    assert!(rec.digests.is_empty());
}

#[test]
#[serial]
fn credentials_come_from_the_root_only_file_and_are_shown_nowhere() {
    let password = "s3cret/+pw?>";
    let reg = TestRegistry::with_credentials("urund", password);
    let dir = std::env::temp_dir().join(format!("urun-push-auth-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("registry-auth.json");
    write_mode(
        &file,
        serde_json::json!({"username": "urund", "password": password})
            .to_string()
            .as_bytes(),
        0o600,
    );
    let (_g, alice, _bob, d) = setup(&reg, Some(&file));
    let (_img, _) = own_build(&d, &alice, "app", "a");
    let o = d.run(&alice, &["push", "app:1"], b"");
    pushed(&o, &format!("{}/urun/{}/app:1", reg.addr, alice.name));
    // a file others can read is refused, with the reason in urund's log only
    std::fs::set_permissions(
        &file,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .unwrap();
    let o = d.run(&alice, &["push", "app:1"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        "urun: urund cannot use its registry credentials ([build] registry_auth; its log \
         says why); nothing was pushed\n"
    );
    d.wait_log("chmod 600", Duration::from_secs(5));
    assert!(!d.log_text().contains(password));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The whole path across two engines: a user-namespaced build engine builds, urund
/// checks and moves the image to the run engine, `urun push` promotes it, and on the
/// run engine (the image gone, as on another host) its digest is pulled and run as
/// whoever runs it. A build that fails an image check leaves nothing to push.
#[test]
#[serial]
fn build_push_pull_by_digest_and_run_across_two_engines() {
    let reg = TestRegistry::start();
    let _dockremap = common::engine::Dockremap::note();
    let engine = common::engine::ExtraEngine::start(common::engine::EngineConfig {
        userns_remap: Some("default".into()),
        ..Default::default()
    });
    engine.load_image(image());
    let g = TestGroup::new("urg");
    let alice = TestUser::new(&[&g]);
    let bob = TestUser::new(&[&g]);
    let a = &reg.addr;
    let d = Daemon::start(&format!(
        "{}[images]\nallow = [\"{}\", \"{a}/urun/*\"]\n\
         [pull]\nmode = \"missing\"\nregistries = [\"{a}\"]\n\
         [build]\nenabled = true\nengine = \"{}\"\nmax_runtime = \"2m\"\nsetuid = \"error\"\n\
         registry = \"{a}\"\n",
        policy_for(&g),
        image(),
        engine.socket().display()
    ));
    let build = |name: &str, dockerfile: &str| {
        let dir = std::env::temp_dir().join(format!("urun-push-ctx-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(
            &dir,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        let o = d.run(&alice, &["build", "-t", name, dir.to_str().unwrap()], b"");
        let _ = std::fs::remove_dir_all(&dir);
        o
    };
    let o = build(
        "app:1",
        &format!("FROM {}\nRUN echo built > /marker\nUSER 1000\n", image()),
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let local = format!("urun/{}/app:1", alice.name);
    let local_guard = TestImage(local.clone());
    let id = image_id(&local);

    // a build whose image fails a check ([build] setuid = "error") has nothing to push
    let o = build(
        "bad:1",
        &format!("FROM {}\nRUN chmod u+s /bin/busybox\nUSER 1000\n", image()),
    );
    assert_eq!(o.status.code(), Some(125), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("image.setuid"), "{}", stderr(&o));
    let o = d.run(&alice, &["push", "bad:1"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("not one of your builds"),
        "{}",
        stderr(&o)
    );

    // promoted
    let remote = format!("{a}/urun/{}/app", alice.name);
    let o = d.run(&alice, &["push", "app:1"], b"");
    let digest = pushed(&o, &format!("{remote}:1"));
    let by_digest = format!("{remote}@{digest}");

    // on a host without the image: pulled by digest, run as the caller
    drop(local_guard);
    assert!(!d.docker(&["image", "inspect", &id]).status.success());
    let _pulled = TestImage(by_digest.clone());
    for user in [&alice, &bob] {
        let o = d.run(user, &[&by_digest, "sh", "-c", "cat /marker; id -u"], b"");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o), format!("built\n{}\n", user.uid));
    }
    assert_eq!(image_id(&by_digest), id);
}

/// A urund that dies mid-push leaves the push's registry name on the run engine. Its
/// next start removes that name, and nothing like it that it cannot prove its own: the
/// same image under a name that is no tag of the build's record, under another user's
/// or namespace's or registry's name, an image that is no build under the very name, or
/// the build's own tag. No user can have urund make such a name: a tag there is never
/// pulled, only a digest.
#[test]
#[serial]
fn a_push_name_left_by_a_urund_that_died_is_removed_at_its_next_start_and_nothing_else() {
    let g = TestGroup::new("urg");
    let alice = TestUser::new(&[&g]);
    let bob = TestUser::new(&[&g]);
    // no registry needed: the push is cut short by SIGKILL before it would start
    let a = "127.0.0.1:5999";
    let mut d = Daemon::start(&format!(
        "{}[images]\nallow = [\"{a}/urun/*\"]\n\
         [pull]\nmode = \"missing\"\nregistries = [\"{a}\"]\n\
         [build]\nenabled = true\nregistry = \"{a}\"\n",
        policy_for(&g),
    ));
    let (_img, id) = own_build(&d, &alice, "app", "a");
    let (_other, other_id) = own_build(&d, &bob, "tool", "b");
    d.kill9();
    // as the push had left it
    let leftover = format!("{a}/urun/{}/app:1", alice.name);
    // similar names urund cannot prove it made
    let similar = [
        (format!("{a}/urun/{}/other:1", alice.name), &id),
        (format!("{a}/urun/{}/app:1", bob.name), &id),
        (format!("{a}/urunx/{}/app:1", alice.name), &id),
        (format!("127.0.0.1:5998/urun/{}/app:1", alice.name), &id),
        (format!("{a}/urun/{}/tool:1", alice.name), &other_id),
    ];
    let mut guards = vec![TestImage(leftover.clone())];
    for (name, target) in std::iter::once((leftover.clone(), &id)).chain(similar.iter().cloned()) {
        assert!(d.docker(&["tag", target, &name]).status.success(), "{name}");
        guards.push(TestImage(name));
    }
    d.relaunch();
    d.wait_log(
        &format!("removed {leftover}, the registry name of a push"),
        Duration::from_secs(10),
    );
    assert!(!d.docker(&["image", "inspect", &leftover]).status.success());
    for (name, target) in &similar {
        assert_eq!(image_id(name), **target, "{name} is gone");
    }
    assert_eq!(image_id(&format!("urun/{}/app:1", alice.name)), id);

    // a tag in that space is never pulled (no user can make urund put one there)
    let o = d.run(
        &alice,
        &[&format!("{a}/urun/{}/new:1", alice.name), "true"],
        b"",
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("are pulled only by digest") && stderr(&o).contains("build.namespace"),
        "{}",
        stderr(&o)
    );
    drop(guards);
}

/// `urun push` needs what `urun build` needs now: a member taken out of `[build] group`
/// can no longer promote their builds (125, the same line and rule as `urun build`,
/// nothing pushed), while they still can while a member.
#[test]
#[serial]
fn a_member_removed_from_the_build_group_can_no_longer_push() {
    let reg = TestRegistry::start();
    let g = TestGroup::new("urg");
    let builders = TestGroup::new("urb");
    let alice = TestUser::new(&[&g, &builders]);
    let a = &reg.addr;
    let d = Daemon::start(&format!(
        "{}[build]\nenabled = true\ngroup = \"{}\"\nregistry = \"{a}\"\n",
        policy_for(&g),
        builders.name
    ));
    let (_one, _) = own_build(&d, &alice, "app", "a");
    let (_two, _) = own_build(&d, &alice, "later", "b");
    let o = d.run(&alice, &["push", "app:1"], b"");
    pushed(&o, &format!("{a}/urun/{}/app:1", alice.name));

    let o = sh("gpasswd", &["-d", &alice.name, &builders.name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.run(&alice, &["push", "later:1"], b"");
    assert_eq!(o.status.code(), Some(125));
    let line = stderr(&o);
    assert_eq!(
        line,
        format!(
            "urun: you ({} uid {}) are not a member of group {:?}, the only one that may \
             build (policy [build] group)\n",
            alice.name, alice.uid, builders.name
        )
    );
    let ctx = std::env::temp_dir().join(format!("urun-push-ctx-{}", unique()));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::set_permissions(
        &ctx,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nUSER 1000\n", image()),
    )
    .unwrap();
    let b = d.run(&alice, &["build", "-t", "x:1", ctx.to_str().unwrap()], b"");
    let _ = std::fs::remove_dir_all(&ctx);
    assert_eq!(b.status.code(), Some(125));
    // (urun build says first that it sends the context, as docker build does)
    assert_eq!(
        stderr(&b).lines().last(),
        Some(line.trim_end()),
        "the same line as urun build"
    );
    // nothing pushed, nothing left on the engine
    let path = format!("urun/{}/later", alice.name);
    assert_eq!(reg.manifest_digest(&path, "1"), None);
    let remote = format!("{a}/{path}:1");
    assert!(!d.docker(&["image", "inspect", &remote]).status.success());
    d.wait_log("build.group", Duration::from_secs(5));
}
