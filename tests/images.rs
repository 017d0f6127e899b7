//! End-to-end tests of `urun images`, `urun rmi` and `urun push` against a real urund
//! and the real Docker daemon, run as real users: each sees their own builds (as the
//! build records say, never the labels) and what the policy admits, and removes only
//! their own builds.
//!
//! The builds here are made the way urund leaves them (an image tagged in the user's
//! namespace, and a root-only record in urund's store), without `urun build`, so that
//! these tests do not depend on a build engine; tests/build.rs builds for real.

mod common;

use common::*;
use serial_test::serial;
use std::time::Duration;
use urun::daemon::builds::{BuildRecord, Builds};

/// A build of `user`'s as urund would have left it: an image of its own (a label
/// makes its ID unique) tagged `urun/<user>/<name>:latest` on the engine, and the
/// record of it in the daemon's store. The image is removed on drop.
fn own_build(d: &Daemon, user: &TestUser, name: &str) -> (TestImage, String) {
    let tag = format!("urun/{}/{name}:latest", user.name);
    let img = TestImage::build(
        &tag,
        &format!("FROM {}\nLABEL test.unique={}\n", image(), unique()),
        |_| {},
    );
    let id = image_id(&tag);
    let builds = Builds::open(&d.state).expect("the daemon's build records");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    builds
        .record(&BuildRecord {
            uid: user.uid,
            user: user.name.clone(),
            image_id: id.clone(),
            tags: vec![tag],
            digests: vec![],
            created: now,
            request: "test".into(),
            dockerfile: String::new(),
            context: String::new(),
        })
        .unwrap();
    (img, id)
}

/// An ID as `docker images` shows it.
fn short(id: &str) -> &str {
    &id["sha256:".len().."sha256:".len() + 12]
}

fn setup() -> (TestGroup, TestUser, TestUser, Daemon) {
    let g = TestGroup::new("urg");
    let alice = TestUser::new(&[&g]);
    let bob = TestUser::new(&[&g]);
    let policy = format!("{}[images]\nallow = [\"urun-test/*\"]\n", policy_for(&g));
    let d = Daemon::start(&policy);
    (g, alice, bob, d)
}

fn exists(d: &Daemon, reference: &str) -> bool {
    d.docker(&["image", "inspect", reference]).status.success()
}

#[test]
#[serial]
fn images_lists_ones_own_builds_and_what_the_policy_admits_only() {
    let (_g, alice, bob, d) = setup();
    let (_a, a_id) = own_build(&d, &alice, "app");
    let (_b, b_id) = own_build(&d, &bob, "tool");
    let o = d.run(&alice, &["images"], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("REPOSITORY") && lines[0].contains("IMAGE ID"),
        "{out}"
    );
    let row = |repo: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(repo))
    };
    let mine = row(&format!("urun/{}/app", alice.name)).unwrap_or_else(|| panic!("{out}"));
    assert!(
        mine.contains(" latest ") && mine.contains(short(&a_id)),
        "{mine}"
    );
    assert!(mine.contains(" ago "), "{mine}");
    let test_repo = image().split(':').next().unwrap();
    assert!(
        row(test_repo).is_some(),
        "the policy admits the test image: {out}"
    );
    assert!(
        !out.contains(&bob.name),
        "bob's build is not alice's: {out}"
    );
    // -q: the IDs, each once.
    let o = d.run(&alice, &["images", "-q"], b"");
    let ids = stdout(&o);
    assert!(ids.lines().any(|l| l == short(&a_id)), "{ids}");
    assert!(!ids.contains(short(&b_id)), "{ids}");
    // One repository, as docker images takes it.
    let o = d.run(&alice, &["images", "-q", test_repo], b"");
    assert_eq!(stdout(&o), format!("{}\n", short(&image_id(image()))));
    // Bob sees his, not alice's.
    let o = d.run(&bob, &["images"], b"");
    let out = stdout(&o);
    assert!(out.contains(&format!("urun/{}/tool", bob.name)), "{out}");
    assert!(!out.contains(&alice.name), "{out}");
}

#[test]
#[serial]
fn rmi_removes_ones_own_builds_and_refuses_everything_else_with_one_line() {
    let (_g, alice, bob, d) = setup();
    let (_a, a_id) = own_build(&d, &alice, "app");
    let (_b, b_id) = own_build(&d, &bob, "tool");
    let bobs = format!("urun/{}/tool", bob.name);
    // Someone else's build, a system image, a mix: refused, nothing removed.
    for names in [
        vec![bobs.as_str()],
        vec![image()],
        vec!["app", image()],
        vec!["app", bobs.as_str()],
        vec![&b_id[..20]],
    ] {
        let mut args = vec!["rmi"];
        args.extend(&names);
        let o = d.run(&alice, &args, b"");
        assert_eq!(o.status.code(), Some(125), "{names:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("urun: ")
                && err.contains(": not one of your builds; urun rmi removes only"),
            "{err}"
        );
        assert!(stdout(&o).is_empty());
    }
    assert!(exists(&d, &format!("urun/{}/app", alice.name)));
    assert!(exists(&d, &bobs) && exists(&d, image()));
    // Her own: untagged and deleted, as docker rmi says it, and the record is gone.
    let o = d.run(&alice, &["rmi", "app"], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!("Untagged: urun/{}/app:latest\n", alice.name)),
        "{out}"
    );
    assert!(out.contains(&format!("Deleted: {a_id}\n")), "{out}");
    assert!(!exists(&d, &a_id));
    let builds = Builds::open(&d.state).unwrap();
    assert!(builds.list(alice.uid).unwrap().is_empty());
    d.wait_log("\"argv\":[\"rmi\",\"app\"]", Duration::from_secs(20));
    // Gone means gone: a second time is refused.
    let o = d.run(&alice, &["rmi", "app"], b"");
    assert_eq!(o.status.code(), Some(125));
    // Bob removes his by the start of its ID.
    let o = d.run(&bob, &["rmi", short(&b_id)], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!exists(&d, &b_id));
    assert!(exists(&d, image()));
}

#[test]
#[serial]
fn an_image_with_a_tag_outside_the_namespace_keeps_it() {
    let (_g, alice, _bob, d) = setup();
    let (_a, a_id) = own_build(&d, &alice, "app");
    // The administrator tagged it elsewhere too: rmi takes alice's tag and record only.
    let other = TestImage(format!("urun-test/promoted-{}:1", unique()));
    assert!(d.docker(&["tag", &a_id, &other.0]).status.success());
    let o = d.run(&alice, &["rmi", "app"], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("Untagged: urun/{}/app:latest\n", alice.name)
    );
    assert!(exists(&d, &other.0));
    assert!(Builds::open(&d.state)
        .unwrap()
        .list(alice.uid)
        .unwrap()
        .is_empty());
    // She may still see it (the policy admits urun-test/*), not remove it.
    let o = d.run(&alice, &["rmi", &other.0], b"");
    assert_eq!(o.status.code(), Some(125));
}

#[test]
#[serial]
fn push_without_a_registry_is_refused_policy_says_whether_one_may_build_and_non_members_get_nothing(
) {
    let (g, alice, _bob, d) = setup();
    // where building is off, pushing is too (the build's own line and rule)
    let o = d.run(&alice, &["push", "app:1"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        "urun: building images is not enabled here (policy [build] enabled = false); ask \
         your administrator\n"
    );
    // where building is on but no registry is set
    let on = Daemon::start(&format!(
        "{}[images]\nallow = [\"urun-test/*\"]\n[build]\nenabled = true\n",
        policy_for(&g)
    ));
    let o = on.run(&alice, &["push", "app:1"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        "urun: urun push: this host has no registry to push to ([build] registry is not \
         set); nothing was pushed\n"
    );
    drop(on);
    // nothing pushed: the header only
    let o = d.run(&alice, &["images", "--registry"], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "REPOSITORY   DIGEST    IMAGE ID   CREATED\n");
    // urun --policy says whether one may build.
    let o = d.run(&alice, &["--policy"], b"");
    assert!(
        stdout(&o).contains(
            "Building images (urun build): not available here (policy [build] enabled = false)\n"
        ),
        "{}",
        stdout(&o)
    );
    let outsider = TestUser::new(&[]);
    for args in [&["images"][..], &["rmi", "x"]] {
        let o = d.run(&outsider, args, b"");
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        assert!(
            stderr(&o).contains(&g.name) || stderr(&o).contains("permission denied"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

/// Gives the image `id` the repository digest `<remote>@sha256:…` and no more name
/// there, as a host that pulls by digest has it: pushed under `<remote>:1`, untagged
/// (which drops the digest with the repository's last tag), pulled again by digest.
/// Returns the digest reference.
fn with_digest_only(d: &Daemon, id: &str, remote: &str) -> String {
    let tagged = format!("{remote}:1");
    assert!(d.docker(&["tag", id, &tagged]).status.success());
    let o = d.docker(&["push", &tagged]);
    assert!(o.status.success(), "{}", stderr(&o));
    let digest = d.docker(&["image", "inspect", "-f", "{{json .RepoDigests}}", &tagged]);
    let digests: Vec<String> = serde_json::from_slice(&digest.stdout).unwrap();
    let by_digest = digests
        .into_iter()
        .find(|r| r.starts_with(&format!("{remote}@sha256:")))
        .unwrap_or_else(|| panic!("no digest of {remote}"));
    assert!(d.docker(&["rmi", &tagged]).status.success());
    let o = d.docker(&["pull", &by_digest]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(image_id(&by_digest), id);
    by_digest
}

/// The digest fix, end to end: `urun rmi` of an own build deletes the image only if
/// nothing else names it, repository digests included: an image known by another
/// user's digest in the registry (a host pulling by digest keeps it untagged) stays,
/// only the caller's tag and record go; one known only by the caller's own pushed
/// digest is deleted.
#[test]
#[serial]
fn rmi_keeps_an_own_build_that_another_users_digest_still_names() {
    let reg = common::registry::TestRegistry::start();
    let g = TestGroup::new("urg");
    let alice = TestUser::new(&[&g]);
    let bob = TestUser::new(&[&g]);
    let policy = format!(
        "{}[images]\nallow = [\"urun-test/*\"]\n[build]\nregistry = \"{}\"\n",
        policy_for(&g),
        reg.addr
    );
    let d = Daemon::start(&policy);
    let (_a, a_id) = own_build(&d, &alice, "app");
    let (_m, m_id) = own_build(&d, &alice, "mine");
    let bobs = with_digest_only(&d, &a_id, &format!("{}/urun/{}/tool", reg.addr, bob.name));
    let _bobs = TestImage(bobs.clone());
    let own = with_digest_only(&d, &m_id, &format!("{}/urun/{}/mine", reg.addr, alice.name));
    let _own = TestImage(own.clone());

    // Bob's digest still names it: only alice's tag and record go.
    let o = d.run(&alice, &["rmi", "app"], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("Untagged: urun/{}/app:latest\n", alice.name)
    );
    assert!(exists(&d, &a_id), "deleted though {bobs} names it");
    assert!(exists(&d, &bobs));
    let builds = Builds::open(&d.state).unwrap();
    assert!(builds.get(alice.uid, &a_id).unwrap().is_none());

    // Known only by her own pushed digest: deleted.
    let o = d.run(&alice, &["rmi", "mine"], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&format!("Deleted: {m_id}\n")), "{out}");
    assert!(!exists(&d, &m_id));
    assert!(builds.list(alice.uid).unwrap().is_empty());
    // What is left is removed by the guards (by name, then the image by its ID).
    drop(_bobs);
    let _ = d.docker(&["rmi", "-f", &a_id]);
}
