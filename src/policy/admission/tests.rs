//! Admission: each rule refuses with its own id; an allowed request carries every term.
use super::*;
use crate::wire::MountRequest;
use std::collections::BTreeSet;

const ACCESS: u32 = 500;

fn alice() -> Caller {
    Caller {
        uid: 1001,
        gid: 1001,
        pid: 99,
        groups: vec![ACCESS, 1001, 44, 27],
        name: Some("alice".into()),
        group: Some("alice".into()),
    }
}

fn policy(text: &str) -> Policy {
    Policy::parse(text, std::path::Path::new("p.toml")).unwrap()
}

fn facts() -> Facts {
    Facts {
        access_gid: ACCESS,
        denied: DeniedGroups::new(["video"], ACCESS, |n| match n {
            "video" => Some(44),
            "sudo" => Some(27),
            _ => None,
        }),
        group_names: [(44, "video"), (27, "sudo"), (1001, "alice"), (600, "dev")]
            .into_iter()
            .map(|(g, n)| (g, n.to_string()))
            .collect(),
        ..Facts::default()
    }
}

fn dir(path: &str, uid: u32, mode: u32) -> DirFacts {
    DirFacts {
        mount_flags: 0,
        is_dir: true,
        uid,
        gid: 1001,
        mode,
        path: Some(path.into()),
    }
}

fn req(image: &str) -> Request {
    Request::new(image.into(), vec!["id".into()])
}

fn with_mount(mut r: Request, target: &str, read_only: bool) -> Request {
    r.mount = Some(MountRequest {
        target: target.into(),
        read_only,
    });
    r
}

const MOUNTS: &str = "[mounts]\nworkdir = true\nroots = [\"/home\"]\n";

/// Every way stage one or two refuses, with the rule it must name.
fn refusals() -> Vec<(Rule, Result<(), Refusal>)> {
    let p = Policy::default();
    let f = facts();
    let a = |c: &Caller, p: &Policy, r: &Request, f: &Facts| admit_request(c, p, r, f).map(|_| ());
    let mut root = alice();
    root.uid = 0;
    let mut outsider = alice();
    outsider.groups = vec![1001];
    let mut sg_video = alice();
    (sg_video.gid, sg_video.group) = (44, Some("video".into()));
    let m = policy(MOUNTS);
    let mut v = vec![
        (Rule::AllowRoot, a(&root, &p, &req("busybox"), &f)),
        (Rule::AccessGroup, a(&outsider, &p, &req("busybox"), &f)),
        (
            Rule::AccessUsers,
            a(
                &alice(),
                &policy("[access]\nusers = [\"bob\"]\n"),
                &req("busybox"),
                &f,
            ),
        ),
        (Rule::DenyGroups, a(&sg_video, &p, &req("busybox"), &f)),
        (Rule::ImageReference, a(&alice(), &p, &req("Busybox"), &f)),
        (
            Rule::RequireDigest,
            a(
                &alice(),
                &policy("[images]\nrequire_digest = true\n"),
                &req("busybox"),
                &f,
            ),
        ),
        (
            Rule::ImagesAllow,
            a(
                &alice(),
                &policy("[images]\nallow = [\"debian:*\"]\n"),
                &req("busybox"),
                &f,
            ),
        ),
    ];
    let mut r = req("busybox");
    r.env = vec!["LD_PRELOAD=/x.so".into()];
    v.push((Rule::EnvAllow, a(&alice(), &p, &r, &f)));
    let mut r = req("busybox");
    r.user = Some("0".into());
    v.push((Rule::User, a(&alice(), &p, &r, &f)));
    let mut r = req("busybox");
    r.network = Some("host".into());
    v.push((Rule::NetworkMode, a(&alice(), &p, &r, &f)));
    let mut r = req("busybox");
    r.name = Some("-x".into());
    v.push((Rule::Name, a(&alice(), &p, &r, &f)));
    r.name = Some("web".into());
    let taken = Facts {
        name_in_use: true,
        ..facts()
    };
    v.push((Rule::Name, a(&alice(), &p, &r, &taken)));
    let busy = Facts {
        running: u32::MAX,
        ..facts()
    };
    v.push((Rule::MaxConcurrent, a(&alice(), &p, &req("busybox"), &busy)));
    v.extend(mount_refusals(&m));
    v.extend(image_refusals());
    v.extend(pull_refusals());
    v
}

fn mount_refusals(m: &Policy) -> Vec<(Rule, Result<(), Refusal>)> {
    let a = |p: &Policy, r: &Request, d: Option<Result<DirFacts, String>>| {
        let f = Facts { dir: d, ..facts() };
        admit_request(&alice(), p, r, &f).map(|_| ())
    };
    let home = || Some(Ok(dir("/home/alice/p", 1001, 0o700)));
    let mounted = with_mount(req("busybox"), "/work", false);
    let mut ro = dir("/home/alice/p", 1001, 0o700);
    ro.mount_flags = crate::policy::mounts::ST_RDONLY;
    vec![
        (Rule::MountsWorkdir, a(&Policy::default(), &mounted, home())),
        (
            Rule::MountsWorkdir,
            a(m, &mounted, Some(Err("EBADF".into()))),
        ),
        (
            Rule::MountsTarget,
            a(m, &with_mount(req("busybox"), "/etc", false), home()),
        ),
        (Rule::Protocol, a(m, &mounted, None)),
        (Rule::Protocol, a(m, &req("busybox"), home())),
        (
            Rule::MountsRoots,
            a(m, &mounted, Some(Ok(dir("/tmp/p", 1001, 0o700)))),
        ),
        (
            Rule::MountsAccess,
            a(m, &mounted, Some(Ok(dir("/home/bob", 1002, 0o777)))),
        ),
        (Rule::MountsReadonly, a(m, &mounted, Some(Ok(ro)))),
        (Rule::Workdir, missing_workdir(m)),
        (Rule::Workdir, workdir_elsewhere(m)),
        (Rule::Workdir, missing_image_workdir(m)),
    ]
}

/// A `-w` below the target that is not in the caller's directory.
fn missing_workdir(m: &Policy) -> Result<(), Refusal> {
    let mut r = with_mount(req("busybox"), "/work", false);
    r.workdir = Some("/work/sub".into());
    let f = Facts {
        dir: Some(Ok(dir("/home/alice/p", 1001, 0o700))),
        workdir_below: Some(("sub".into(), Err("does not exist".into()))),
        ..facts()
    };
    admit_request(&alice(), m, &r, &f).map(|_| ())
}

/// A `-w` outside the mount target, with a mount: the image could lead it inside.
fn workdir_elsewhere(m: &Policy) -> Result<(), Refusal> {
    let mut r = with_mount(req("busybox"), "/work", false);
    r.workdir = Some("/usr/lib".into());
    let f = Facts {
        dir: Some(Ok(dir("/home/alice/p", 1001, 0o700))),
        ..facts()
    };
    admit_request(&alice(), m, &r, &f).map(|_| ())
}

/// With a mount and no `-w`, the image's WORKDIR below the target must exist there.
fn missing_image_workdir(m: &Policy) -> Result<(), Refusal> {
    let r = with_mount(req("x:1"), "/work", false);
    let f = Facts {
        dir: Some(Ok(dir("/home/alice/p", 1001, 0o700))),
        ..facts()
    };
    let a = admit_request(&alice(), m, &r, &f).expect("stage one allows");
    let mut img = found(&["x:1"], &[]);
    img.working_dir = Some("/work/src".into());
    // the image's WORKDIR outside the target is left alone
    let mut elsewhere = img.clone();
    elsewhere.working_dir = Some("/app".into());
    assert!(admit_image(&alice(), m, &a, &elsewhere, &None).is_ok());
    let found_it = Some(("src".into(), Ok(())));
    assert!(admit_image(&alice(), m, &a, &img, &found_it).is_ok());
    let missing = Some(("src".into(), Err("does not exist".to_string())));
    admit_image(&alice(), m, &a, &img, &missing).map(|_| ())
}

fn found(tags: &[&str], volumes: &[&str]) -> ImageFacts {
    ImageFacts::example(tags, volumes)
}

fn image_refusals() -> Vec<(Rule, Result<(), Refusal>)> {
    let m = policy(MOUNTS);
    let stage2 = |p: &Policy, r: &Request, img: &ImageFacts| {
        let f = Facts {
            dir: r
                .mount
                .as_ref()
                .map(|_| Ok(dir("/home/alice/p", 1001, 0o700))),
            ..facts()
        };
        let admission = admit_request(&alice(), p, r, &f).expect("stage one allows");
        admit_image(&alice(), p, &admission, img, &None).map(|_| ())
    };
    let refuse_volumes = policy("[images]\nvolumes = \"refuse\"\n");
    vec![
        (
            Rule::ImageReference,
            stage2(&m, &req("abababababab"), &found(&["x:1"], &[])),
        ),
        (
            Rule::ImageVolumes,
            stage2(&refuse_volumes, &req("x:1"), &found(&["x:1"], &["/data"])),
        ),
        (
            Rule::ImageVolumes,
            stage2(&m, &req("x:1"), &found(&["x:1"], &["/etc"])),
        ),
        (
            Rule::MountsTarget,
            stage2(
                &m,
                &with_mount(req("x:1"), "/data/sub", false),
                &found(&["x:1"], &["/data"]),
            ),
        ),
    ]
}

/// A pull refused is part of the admission, used only if the image is missing.
fn pull_refusals() -> Vec<(Rule, Result<(), Refusal>)> {
    let pull = |p: &Policy, image: &str| match admit_request(&alice(), p, &req(image), &facts())
        .map(|a| a.pull)
    {
        Ok(Pull::Refused(r)) => Err(r),
        other => panic!("{image}: {other:?}"),
    };
    let registries = policy("[pull]\nmode = \"missing\"\nregistries = [\"docker.io\"]\n");
    vec![
        (Rule::PullMode, pull(&Policy::default(), "busybox")),
        (Rule::PullRegistries, pull(&registries, "quay.io/x/y")),
        (Rule::BuildNamespace, pull(&registries, "urun/alice/app:1")),
    ]
}

#[test]
fn an_own_build_runs_without_images_allow_only_if_the_records_say_so() {
    let p = policy("[images]\nallow = [\"busybox*\"]\n[build]\nenabled = true\n");
    let own = admit_request(&alice(), &p, &req("urun/alice/app:1"), &facts()).unwrap();
    assert!(own.own);
    assert_eq!(admit_own(&own, true), Ok(()));
    let r = admit_own(&own, false).unwrap_err();
    assert_eq!(r.rule, Rule::BuildNamespace, "{}", r.message);
    let id = format!("sha256:{}", "ab".repeat(32));
    assert!(
        admit_request(&alice(), &p, &req(&id), &facts())
            .unwrap()
            .own
    );
    // Another user's namespace: images.allow decides.
    let r = admit_request(&alice(), &p, &req("urun/bob/app:1"), &facts()).unwrap_err();
    assert_eq!(r.rule, Rule::ImagesAllow);
    // run_own off: images.allow decides for one's own too.
    let off = policy("[images]\nallow = [\"busybox*\"]\n[build]\nrun_own = false\n");
    let r = admit_request(&alice(), &off, &req("urun/alice/app:1"), &facts()).unwrap_err();
    assert_eq!(r.rule, Rule::ImagesAllow);
    // An allowed image outside the namespace needs no record.
    let plain = admit_request(&alice(), &p, &req("busybox"), &facts()).unwrap();
    assert!(!plain.own);
    assert_eq!(admit_own(&plain, false), Ok(()));
}

#[test]
fn each_rule_refuses_with_its_own_id() {
    for (want, got) in refusals() {
        let r = got.expect_err(want.id());
        assert_eq!(r.rule, want, "{}", r.message);
        assert!(!r.message.is_empty() && !r.message.contains('\n'));
    }
}

#[test]
fn every_rule_of_a_request_is_covered() {
    let covered: BTreeSet<Rule> = refusals().into_iter().map(|(r, _)| r).collect();
    // Decided elsewhere: at accept, at the end of a run, by the engine.
    let elsewhere = [
        Rule::MaxRuntime,
        Rule::ConnectionsPerUser,
        Rule::ConnectionsTotal,
        Rule::ConnectionsDescriptors,
        Rule::Docker,
        // The build and image-management paths decide these: policy::build::admit_build,
        // the context and the checks, urun push.
        Rule::BuildSpool,
        Rule::BuildRegistry,
        Rule::BuildEnabled,
        Rule::BuildGroup,
        Rule::BuildMaxConcurrent,
        Rule::BuildMaxImages,
        Rule::BuildMaxContext,
        Rule::BuildContext,
        Rule::BuildTags,
        Rule::BuildChecks,
        Rule::BuildBase,
        Rule::BuildImage,
        Rule::BuildMaxRuntime,
        Rule::BuildEngine,
    ];
    let all: BTreeSet<Rule> = Rule::ALL
        .into_iter()
        .filter(|r| !elsewhere.contains(r))
        .collect();
    assert_eq!(covered, all);
}

#[test]
fn an_admission_carries_every_term() {
    let p = policy(
        "[mounts]\nworkdir = true\nroots = [\"/home\"]\n\
         [network]\nmode = \"isolated\"\n\
         [identity]\ngroups = \"caller\"\n\
         [pull]\nmode = \"missing\"\nregistries = [\"docker.io\"]\n\
         [group.dev.limits]\npids = 99\n",
    );
    let mut r = with_mount(req("busybox"), "/work", true);
    r.name = Some("web".into());
    let mut f = facts();
    f.dir = Some(Ok(dir("/home/alice/p", 1001, 0o700)));
    f.override_gids = [("dev".to_string(), 600)].into_iter().collect();
    let mut c = alice();
    c.groups.push(600);
    let a = admit_request(&c, &p, &r, &f).unwrap();
    assert_eq!(a.limits.pids.0, 99);
    assert_eq!(a.network, NetworkMode::Isolated);
    assert_eq!(
        a.mount,
        Some(WorkDir {
            target: "/work".into(),
            read_only: true,
            path: Some("/home/alice/p".into()),
        })
    );
    assert!(matches!(&a.pull, Pull::Allowed(r) if r.familiar() == "busybox:latest"));
    assert_eq!(a.name.as_deref(), Some("web"));
    // the access group, video (denied by name and gid) and sudo (built in) never
    assert_eq!(a.identity.groups, vec![600]);
    assert_eq!(a.identity.named_groups, vec![(600, "dev".to_string())]);
    assert_eq!(
        (a.identity.uid, a.identity.gid, a.identity.home.as_str()),
        (1001, 1001, "/home/alice")
    );
    assert_eq!(a.identity.name.as_deref(), Some("alice"));
    // asking for less network is allowed; --pull never is kept
    r.network = Some("none".into());
    r.never_pull = true;
    let a = admit_request(&c, &p, &r, &f).unwrap();
    assert_eq!((a.network, &a.pull), (NetworkMode::None, &Pull::NotAsked));
    let img = admit_image(&c, &p, &a, &found(&["busybox:latest"], &["/cache"]), &None).unwrap();
    assert_eq!(img.id, found(&[], &[]).id);
    assert_eq!(img.volumes, vec!["/cache".to_string()]);
}

#[test]
fn the_default_policy_admits_a_plain_run_with_no_network_and_no_mount() {
    let a = admit_request(&alice(), &Policy::default(), &req("busybox"), &facts()).unwrap();
    assert_eq!(a.network, NetworkMode::None);
    assert_eq!(a.limits, Policy::default().limits);
    assert_eq!((a.mount, a.name), (None, None));
    assert!(a.identity.groups.is_empty(), "identity.groups = primary");
    // a name unsafe for a passwd line is left out, never written
    let mut c = alice();
    c.name = Some("x:0:0".into());
    let a = admit_request(&c, &Policy::default(), &req("busybox"), &facts()).unwrap();
    assert_eq!(a.identity.name, None);
    assert_eq!(a.identity.home, "/home/1001");
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,40}",
            ".{0,20}",
            Just("busybox".to_string()),
            Just("/home/alice".to_string()),
        ]
    }

    fn request() -> impl Strategy<Value = Request> {
        (
            (text(), proptest::collection::vec(text(), 0..4)),
            proptest::collection::vec(text(), 0..4),
            (
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
            ),
            (any::<bool>(), proptest::option::of((text(), any::<bool>()))),
        )
            .prop_map(|((image, command), env, (name, user, network), (np, m))| {
                let mut r = Request::new(image, command);
                r.env = env;
                (r.name, r.user, r.network) = (name, user, network);
                r.never_pull = np;
                r.mount = m.map(|(target, read_only)| MountRequest { target, read_only });
                r
            })
    }

    fn dir_facts() -> impl Strategy<Value = Option<Result<DirFacts, String>>> {
        proptest::option::of(prop_oneof![
            text().prop_map(Err),
            (
                any::<u64>(),
                any::<bool>(),
                0u32..3000,
                any::<u32>(),
                proptest::option::of(text())
            )
                .prop_map(|(mount_flags, is_dir, uid, mode, path)| Ok(DirFacts {
                    mount_flags,
                    is_dir,
                    uid,
                    gid: 1001,
                    mode,
                    path: path.map(Into::into),
                })),
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn admit_never_panics(
            r in request(),
            uid in prop_oneof![Just(0u32), Just(1001), any::<u32>()],
            gid in any::<u32>(),
            running in any::<u32>(),
            name_in_use in any::<bool>(),
            d in dir_facts(),
            mounts in any::<bool>(),
        ) {
            let p = if mounts { policy(MOUNTS) } else { Policy::default() };
            let mut c = alice();
            (c.uid, c.gid) = (uid, gid);
            let f = Facts { running, name_in_use, dir: d, ..facts() };
            if let Ok(a) = admit_request(&c, &p, &r, &f) {
                let _ = admit_image(&c, &p, &a, &found(&[r.image.as_str()], &["/v"]), &None);
            }
        }
    }
}
