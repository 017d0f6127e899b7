//! The policy's checks, each a pure function naming the [`Rule`] that refuses: who may
//! use urun, the image reference, the `docker run` options a request may carry, the
//! working directory, pulls, concurrency. [`crate::policy::admission`] composes them
//! into the one decision urund acts on; nothing here reads or changes anything.
#![forbid(unsafe_code)]

use crate::policy::identity::DeniedGroups;
use crate::policy::mounts::{self, DirFacts};
use crate::policy::reference::{self, ImageFacts, Reference};
use crate::policy::rule::{refuse, Refusal, Rule};
use crate::policy::Caller;
use crate::policy::{
    ImageVolumes, Limits, NetworkMode, Pattern, Policy, PullMode, ISOLATED_NETWORK,
};
use crate::wire::Request;
use std::path::Path;

/// One check's outcome: allowed, or the refusal naming its rule.
pub type Check = Result<(), Refusal>;

/// The checks that need nothing but the caller, the policy and the request: access,
/// the run's gid, the image reference, the `docker run` options, the mount's shape.
/// `group_gid` is the gid of `policy.access.group` and `denied` the groups never passed
/// to a container, both resolved by the caller of this function. The first refusal.
pub fn judge(
    caller: &Caller,
    policy: &Policy,
    group_gid: u32,
    denied: &DeniedGroups,
    req: &Request,
) -> Check {
    judge_own(caller, policy, group_gid, denied, req).map(|_| ())
}

/// [`judge`], with `[build] run_own`: an image the caller names in their own part of
/// the build namespace, or by its full ID, is let through `images.allow` here and
/// must then be one of their builds by urund's records (see
/// [`crate::policy::admission::admit_own`]). Returns whether that record is needed.
pub fn judge_own(
    caller: &Caller,
    policy: &Policy,
    group_gid: u32,
    denied: &DeniedGroups,
    req: &Request,
) -> Result<bool, Refusal> {
    judge_access(caller, policy, group_gid)?;
    judge_gid(caller, denied)?;
    let own = match judge_image(policy, caller, &req.image) {
        Ok(r) => own_namespace(caller, policy, &r),
        Err(refusal) if refusal.rule == Rule::ImagesAllow => {
            let r = parse_reference(&req.image)?;
            let id = matches!(&r, Reference::Id(i) if i.len() == 71);
            if policy.build.run_own && (id || own_namespace(caller, policy, &r)) {
                true
            } else {
                return Err(refusal);
            }
        }
        Err(refusal) => return Err(refusal),
    };
    check_dropin(caller, policy, req)?;
    judge_mounts(policy, req)?;
    Ok(own)
}

/// Whether `r` lies in the build namespace (`[build] namespace`, on the run engine:
/// Docker Hub's familiar names), which only urund's builds fill. Pure.
pub fn in_build_namespace(policy: &Policy, r: &Reference) -> bool {
    r.registry() == Some(reference::DOCKER_HUB)
        && r.familiar_name()
            .is_some_and(|n| n.starts_with(&format!("{}/", policy.build.namespace.0)))
}

/// Whether `r` lies where `urun push` names images on the engine,
/// `<build.registry>/<build.namespace>/` (see [`crate::policy::build::Build::push_prefix`]);
/// never for a Docker Hub registry, whose familiar names are the build namespace's own.
/// Pure.
pub fn in_push_space(policy: &Policy, r: &Reference) -> bool {
    let Some(prefix) = policy.build.push_prefix() else {
        return false;
    };
    r.registry() != Some(reference::DOCKER_HUB)
        && r.familiar_name().is_some_and(|n| n.starts_with(&prefix))
}

/// Whether `r` lies in the caller's own part of the build namespace. Pure.
pub fn own_namespace(caller: &Caller, policy: &Policy, r: &Reference) -> bool {
    let prefix = policy
        .build
        .user_prefix(&crate::policy::build::namespace_user(caller));
    r.registry() == Some(reference::DOCKER_HUB)
        && r.familiar_name().is_some_and(|n| n.starts_with(&prefix))
}

/// Whether the request's working-directory mount is allowed in shape:
/// `mounts.workdir` and the container-side target. The passed directory itself is
/// judged by [`judge_dir`].
pub fn judge_mounts(policy: &Policy, req: &Request) -> Check {
    if let Some(m) = &req.mount {
        if !policy.mounts.workdir {
            return refuse(
                Rule::MountsWorkdir,
                "mounting your working directory is not enabled here (policy mounts.workdir = false)",
            );
        }
        if let Err(e) = mounts::validate_target(&m.target) {
            return refuse(
                Rule::MountsTarget,
                format!("-v target: {e} (mounts.target)"),
            );
        }
    }
    Ok(())
}

/// Whether `caller` may use urun at all: `access.allow_root`, `access.group`,
/// `access.users`.
pub fn judge_access(caller: &Caller, policy: &Policy, group_gid: u32) -> Check {
    if caller.uid == 0 && !policy.access.allow_root {
        return refuse(
            Rule::AllowRoot,
            "root may not run containers through urun (policy access.allow_root = false); \
             root can use docker directly",
        );
    }
    let allowed_root = caller.uid == 0 && policy.access.allow_root;
    if !(caller.in_group(group_gid) || allowed_root) {
        return refuse(
            Rule::AccessGroup,
            format!(
                "you ({} uid {}) are not a member of group {:?} (policy access.group); \
                 ask your administrator to add you, then log in again",
                caller.display_name(),
                caller.uid,
                policy.access.group.0
            ),
        );
    }
    let users = &policy.access.users;
    if !users.is_empty()
        && !users
            .iter()
            .any(|u| Some(u.as_str()) == caller.name.as_deref() || *u == caller.uid.to_string())
    {
        return refuse(
            Rule::AccessUsers,
            format!(
                "you ({} uid {}) are not in the list of users allowed to use urun \
                 (policy access.users); ask your administrator",
                caller.display_name(),
                caller.uid
            ),
        );
    }
    Ok(())
}

/// Whether the gid the run would get, the caller's effective gid as the kernel
/// reported it, is allowed: never a denied group (`identity.deny_groups`, the built-in
/// list, the access group, by name and gid), which a member could otherwise get into a
/// container with `sg GROUP` or `newgrp`. Root, where allowed, is exempt.
pub fn judge_gid(caller: &Caller, denied: &DeniedGroups) -> Check {
    if caller.uid != 0 && denied.denies(caller.gid, caller.group.as_deref()) {
        let name = caller.group.as_deref().unwrap_or("without a name");
        return refuse(
            Rule::DenyGroups,
            format!(
                "your current group {name} (gid {}) is never given to a container \
                 (policy identity.deny_groups); run urun with your own primary group, not \
                 under sg or newgrp of that group",
                caller.gid
            ),
        );
    }
    Ok(())
}

/// Whether the image reference is well-formed and allowed: `images.require_digest`,
/// `images.allow` (on the reference in Docker's familiar form, see
/// [`reference::Reference::familiar`]; a pattern's `{user}` is the caller's own
/// namespace component, [`crate::policy::build::namespace_user`]). The parsed
/// reference.
pub fn judge_image(policy: &Policy, caller: &Caller, image: &str) -> Result<Reference, Refusal> {
    let reference = parse_reference(image)?;
    if policy.images.require_digest && !reference.is_pinned() {
        return refuse(
            Rule::RequireDigest,
            format!(
                "image {:?} is not pinned by digest (policy images.require_digest): \
                 use NAME@sha256:DIGEST",
                image
            ),
        );
    }
    let full = reference.familiar();
    let user = crate::policy::build::namespace_user(caller);
    if !policy.images.allow.iter().any(|p| p.matches(&full, &user)) {
        return refuse(
            Rule::ImagesAllow,
            format!(
                "image {full:?} is not allowed (policy images.allow: {}); \
                 ask your administrator",
                allow_list(policy, &user)
            ),
        );
    }
    Ok(reference)
}

/// `images.allow` for a message to the caller whose namespace component is `user`:
/// the patterns as written, and what `{user}` is for them if one has it.
pub fn allow_list(policy: &Policy, user: &str) -> String {
    let mut t = list(&policy.images.allow);
    if policy.images.allow.iter().any(|p| p.is_owner()) {
        t.push_str(&format!(", where {{user}} is {user}"));
    }
    t
}

/// An image reference as typed, or `images.reference`.
pub fn parse_reference(image: &str) -> Result<Reference, Refusal> {
    Reference::parse(image)
        .map_err(|e| Refusal::new(Rule::ImageReference, format!("{e} (images.reference)")))
}

/// What was judged before the image was looked up must be what Docker found: the
/// image must carry `reference` as one of its names (a tag, a repository digest, or
/// its full ID), not merely match it as an ID prefix (`images.reference`). Its
/// `VOLUME`s must be acceptable and allowed (`images.volumes`), and the working
/// directory's `target` may not be, hold or lie in one of them (`mounts.target`).
/// The image's checked volume paths.
pub fn judge_resolved(
    policy: &Policy,
    reference: &Reference,
    target: Option<&str>,
    found: &ImageFacts,
) -> Result<Vec<String>, Refusal> {
    if !reference.names(found) {
        return refuse(
            Rule::ImageReference,
            format!(
                "{:?} is not a name of the image Docker found for it (Docker matched the \
                 start of an image ID); name the image by a tag, a digest or its full ID \
                 sha256:<64 hex> (images.reference)",
                reference.to_string()
            ),
        );
    }
    let volumes = reference::volume_paths(&found.volumes).map_err(|e| {
        Refusal::new(
            Rule::ImageVolumes,
            format!("image {reference} is refused (images.volumes): {e}"),
        )
    })?;
    if !volumes.is_empty() && policy.images.volumes == ImageVolumes::Refuse {
        return refuse(
            Rule::ImageVolumes,
            format!(
                "image {reference} declares VOLUME {}, and images with volumes are refused \
                 here (policy images.volumes = \"refuse\")",
                volumes.join(", ")
            ),
        );
    }
    if let Some(target) = target {
        judge_target_clear(target, &volumes)?;
    }
    Ok(volumes)
}

/// The working directory's target neither is, holds nor lies in an image volume.
fn judge_target_clear(target: &str, volumes: &[String]) -> Check {
    let t = Path::new(target);
    match volumes.iter().find(|v| {
        let v = Path::new(v.as_str());
        mounts::under(t, v) || mounts::under(v, t)
    }) {
        Some(v) => refuse(
            Rule::MountsTarget,
            format!(
                "-v target {target}: the image declares VOLUME {v}, which urun mounts a tmpfs \
                 on; choose a target that neither is, holds nor lies in it (mounts.target)"
            ),
        ),
        None => Ok(()),
    }
}

/// Whether a missing image may be pulled: `pull.mode` and `pull.registries`. The
/// reference to pull.
pub fn judge_pull(policy: &Policy, image: &str) -> Result<Reference, Refusal> {
    if let Ok(r) = Reference::parse(image) {
        if in_build_namespace(policy, &r) {
            return refuse(
                Rule::BuildNamespace,
                format!(
                    "Unable to find image '{image}' locally, and images under {}/ are only \
                     made by urun build, never pulled (build.namespace)",
                    policy.build.namespace.0
                ),
            );
        }
    }
    if let Ok(r) = Reference::parse(image) {
        if in_push_space(policy, &r) && !r.is_pinned() {
            return refuse(
                Rule::BuildNamespace,
                format!(
                    "Unable to find image '{image}' locally, and images under {} are pulled \
                     only by digest here: name it NAME@sha256:DIGEST (urun images --registry \
                     lists your pushes) (build.namespace)",
                    policy.build.push_prefix().unwrap_or_default()
                ),
            );
        }
    }
    if policy.pull.mode == PullMode::Never {
        return refuse(
            Rule::PullMode,
            format!(
                "Unable to find image '{image}' locally, and urund does not pull \
                 (policy pull.mode = \"never\"); ask your administrator to provide it"
            ),
        );
    }
    let parsed = parse_reference(image)?;
    let Some(reg) = parsed.registry() else {
        return refuse(
            Rule::PullMode,
            format!(
                "no image with ID '{image}' is present; an image ID cannot be pulled: \
                 use NAME@sha256:DIGEST"
            ),
        );
    };
    if !policy.pull.registries.iter().any(|p| p.matches(reg)) {
        return refuse(
            Rule::PullRegistries,
            format!(
                "image '{image}' is not present and registry {reg:?} is not one urund \
                 pulls from (policy pull.registries: {})",
                list(&policy.pull.registries)
            ),
        );
    }
    Ok(parsed)
}

/// Whether one more run is allowed for a user who has `running` runs.
pub fn judge_concurrency(limits: &Limits, running: u32) -> Check {
    if running >= limits.max_concurrent.0 {
        return refuse(
            Rule::MaxConcurrent,
            format!(
                "you already have {running} run(s) in progress, the most allowed at once \
                 (policy limits.max_concurrent = {}); wait for one to finish",
                limits.max_concurrent.0
            ),
        );
    }
    Ok(())
}

/// Whether the `--name` is free among the caller's runs in progress; refused as docker
/// refuses a name in use.
pub fn judge_name_free(name: &str, in_use: bool) -> Check {
    if in_use {
        return refuse(
            Rule::Name,
            format!(
                "Conflict. The container name \"/{name}\" is already in use by another \
                 of your runs; end it or choose another name"
            ),
        );
    }
    Ok(())
}

/// Whether an environment variable named `name` may be passed: it must match one of
/// the `env.allow` patterns.
pub fn env_allowed(allow: &[Pattern], name: &str) -> bool {
    allow.iter().any(|p| p.matches(name))
}

/// The patterns for a message: `a, b`, or `none`.
pub fn list<P: std::fmt::Display>(p: &[P]) -> String {
    if p.is_empty() {
        return "none".into();
    }
    p.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names never passed whatever `env.allow` says: urund sets them itself (forced.rs).
pub const FORCED_ENV: &[&str] = &["HOME"];

/// The `docker run` options a request may carry that need a decision: environment
/// (`env.allow`), `-u`, `--network` (`network.mode`), `--name`. The first one refused.
fn check_dropin(caller: &Caller, policy: &Policy, req: &Request) -> Check {
    for entry in &req.env {
        let name = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
        if let Some(m) = env_refusal(name, &policy.env.allow) {
            return refuse(Rule::EnvAllow, m);
        }
    }
    if let Some(u) = &req.user {
        if !is_caller(caller, u) {
            return refuse(
                Rule::User,
                format!(
                    "-u/--user {u} is not allowed: containers always run as you \
                     (uid {}, gid {}); only -u {}:{} is accepted",
                    caller.uid, caller.gid, caller.uid, caller.gid
                ),
            );
        }
    }
    if let Some(n) = &req.network {
        network_mode(policy, n)?;
    }
    if let Some(n) = &req.name {
        if !crate::policy::names::container_name(n) {
            return refuse(
                Rule::Name,
                format!(
                    "--name {n:?} is not allowed: use 1 to 64 letters, digits and _ . - \
                     starting with a letter or digit"
                ),
            );
        }
    }
    Ok(())
}

/// The network a run gets when the user asked for `--network asked`: `none` always
/// (less than the policy gives is fine), the policy's isolated bridge by its name when
/// the policy has it; refused (`network.mode`) for anything else.
pub fn network_mode(policy: &Policy, asked: &str) -> Result<NetworkMode, Refusal> {
    match (asked, policy.network.mode) {
        ("none", _) => Ok(NetworkMode::None),
        (ISOLATED_NETWORK, NetworkMode::Isolated) => Ok(NetworkMode::Isolated),
        _ => {
            let allowed = match policy.network.mode {
                NetworkMode::None => "none".to_string(),
                NetworkMode::Isolated => format!("none or {ISOLATED_NETWORK}"),
            };
            refuse(
                Rule::NetworkMode,
                format!(
                    "--network {asked} is not allowed: containers get no network or the \
                     isolated one the policy sets (only --network {allowed})"
                ),
            )
        }
    }
}

/// Why an environment variable `name` may not be passed under `allow`, if it may not.
pub fn env_refusal(name: &str, allow: &[Pattern]) -> Option<String> {
    if FORCED_ENV.contains(&name) {
        return Some(format!("-e {name} is not allowed: urun sets {name} itself"));
    }
    if env_allowed(allow, name) {
        return None;
    }
    Some(format!(
        "-e {name} is not allowed: only {} may be passed (policy env.allow)",
        list(allow)
    ))
}

/// Whether `-u` names the caller: `uid`, `uid:gid`, `name` or `name:gid`, nothing else
/// (a group other than the caller's primary one is refused too).
fn is_caller(caller: &Caller, spec: &str) -> bool {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_ok = user == caller.uid.to_string() || caller.name.as_deref() == Some(user);
    let group_ok = group.is_none_or(|g| g == caller.gid.to_string());
    user_ok && group_ok
}

/// Decides whether the directory the caller passed (described by `facts`, from the
/// kernel) may be mounted: see [`mounts::check_dir`].
pub fn judge_dir(caller: &Caller, policy: &Policy, facts: &DirFacts, read_only: bool) -> Check {
    let mut gids = caller.groups.clone();
    gids.push(caller.gid);
    mounts::check_dir(
        facts,
        caller.uid,
        &gids,
        read_only,
        &policy.mounts.root_strings(),
        policy.mounts.access,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gid: u32, groups: Vec<u32>) -> Caller {
        Caller {
            uid,
            gid,
            pid: 99,
            groups,
            name: Some("alice".into()),
            group: None,
        }
    }

    /// The built-in deny list, with 500 as the access group's gid.
    fn denied() -> DeniedGroups {
        DeniedGroups::new([], 500, |n| (n == "docker").then_some(999))
    }

    #[test]
    fn a_denied_group_as_the_callers_gid_is_refused() {
        let p = policy("[identity]\ndeny_groups = [\"video\"]\n");
        let d = DeniedGroups::new(["video"], 500, |n| (n == "video").then_some(44));
        let run = |gid: u32, name: Option<&str>| {
            let mut c = caller(1001, gid, vec![500, 1001]);
            c.group = name.map(String::from);
            judge(&c, &p, 500, &d, &req("busybox"))
        };
        assert_eq!(run(1001, Some("alice")), Ok(()));
        for (gid, name) in [
            (500, Some("urun")),   // sg urun: the access group
            (44, Some("video")),   // identity.deny_groups, by gid
            (4444, Some("video")), // ... and by name
            (27, Some("sudo")),    // the built-in list
            (0, Some("root")),     // gid 0
        ] {
            let d = run(gid, name);
            assert_eq!(rule(d.clone()), "identity.deny_groups", "{gid}");
            let Err(r) = d else { unreachable!() };
            assert!(
                r.message.contains(&format!("gid {gid}")) && r.message.contains("sg"),
                "{}",
                r.message
            );
        }
        // root, where allowed, is root anyway
        let mut p = p.clone();
        p.access.allow_root = true;
        let root = caller(0, 0, vec![0]);
        assert_eq!(judge(&root, &p, 500, &d, &req("busybox")), Ok(()));
    }

    fn req(image: &str) -> Request {
        Request::new(image.into(), vec!["id".into()])
    }

    #[test]
    fn member_is_allowed() {
        let p = Policy::default();
        assert_eq!(
            judge(
                &caller(1001, 1001, vec![500]),
                &p,
                500,
                &denied(),
                &req("busybox")
            ),
            Ok(())
        );
        // membership by the primary group counts too, but a run may not have the
        // access group as its gid (see below)
        assert_eq!(
            judge_access(&caller(1001, 1001, vec![500]), &p, 500),
            Ok(())
        );
    }

    #[test]
    fn non_member_is_refused_naming_the_rule() {
        let d = judge(
            &caller(1001, 1001, vec![27]),
            &Policy::default(),
            500,
            &denied(),
            &req("busybox"),
        );
        match d {
            Err(r) => {
                assert_eq!(r.rule.id(), "access.group");
                assert!(
                    r.message.contains("\"urun\"") && r.message.contains("1001"),
                    "{}",
                    r.message
                );
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn root_is_refused_unless_allowed() {
        let mut p = Policy::default();
        let root = caller(0, 0, vec![0, 500]);
        assert!(matches!(
            judge(&root, &p, 500, &denied(), &req("busybox")),
            Err(Refusal {
                rule: Rule::AllowRoot,
                ..
            })
        ));
        p.access.allow_root = true;
        assert_eq!(judge(&root, &p, 500, &denied(), &req("busybox")), Ok(()));
        // an allowed root need not be in the group
        assert_eq!(
            judge(&caller(0, 0, vec![]), &p, 500, &denied(), &req("busybox")),
            Ok(())
        );
    }

    fn refusal(req: &Request) -> Option<Refusal> {
        judge(
            &caller(1001, 1002, vec![500]),
            &Policy::default(),
            500,
            &denied(),
            req,
        )
        .err()
    }

    #[test]
    fn env_only_from_the_allowlist() {
        let mut r = req("busybox");
        r.env = vec!["TERM=xterm".into(), "LC_ALL=C".into(), "TZ=UTC".into()];
        assert_eq!(refusal(&r), None);
        for bad in ["LD_PRELOAD=/x.so", "HOME=/", "PATH=/x", "LC=1", "TERMX=1"] {
            r.env = vec!["LANG=C".into(), bad.into()];
            let f = refusal(&r).unwrap_or_else(|| panic!("{bad} allowed"));
            let name = bad.split('=').next().unwrap();
            assert_eq!(f.rule.id(), "env.allow");
            assert!(
                f.message.starts_with(&format!("-e {name} is not allowed")),
                "{}",
                f.message
            );
        }
        // HOME stays forced even if a policy pattern would match it.
        let all = [Pattern("*".into())];
        assert!(env_refusal("HOME", &all).is_some());
        assert!(env_refusal("PATH", &all).is_none());
        // The policy's patterns decide, not a built-in list.
        let p = policy("[env]\nallow = [\"FOO_*\"]\n");
        let mut r = req("busybox");
        r.env = vec!["FOO_BAR=1".into()];
        assert_eq!(
            judge(&caller(1001, 1001, vec![500]), &p, 500, &denied(), &r),
            Ok(())
        );
        r.env = vec!["TERM=x".into()];
        assert_eq!(
            rule(judge(
                &caller(1001, 1001, vec![500]),
                &p,
                500,
                &denied(),
                &r
            )),
            "env.allow"
        );
    }

    #[test]
    fn user_only_the_caller() {
        let mut r = req("busybox");
        for ok in ["1001", "1001:1002", "alice", "alice:1002"] {
            r.user = Some(ok.into());
            assert_eq!(refusal(&r), None, "{ok}");
        }
        for bad in ["0", "root", "0:0", "1001:0", "1002", "1001:", "bob", ""] {
            r.user = Some(bad.into());
            let f = refusal(&r).unwrap_or_else(|| panic!("{bad} allowed"));
            assert_eq!(f.rule.id(), "user");
            assert!(f.message.contains("uid 1001"), "{}", f.message);
        }
    }

    #[test]
    fn network_only_none_and_names_checked() {
        let mut r = req("busybox");
        r.network = Some("none".into());
        assert_eq!(refusal(&r), None);
        for bad in ["host", "bridge", "container:x", "urun-isolated"] {
            r.network = Some(bad.into());
            assert_eq!(refusal(&r).unwrap().rule.id(), "network.mode");
        }
        let p = policy("[network]\nmode = \"isolated\"\n");
        assert_eq!(network_mode(&p, "none"), Ok(NetworkMode::None));
        assert_eq!(network_mode(&p, "urun-isolated"), Ok(NetworkMode::Isolated));
        assert_eq!(rule(network_mode(&p, "host")), "network.mode");
        let mut r = req("busybox");
        for ok in ["web", "a.b-c_1", "9"] {
            r.name = Some(ok.into());
            assert_eq!(refusal(&r), None, "{ok}");
        }
        for bad in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            r.name = Some(bad.into());
            assert_eq!(refusal(&r).unwrap().rule.id(), "name", "{bad}");
        }
    }

    #[test]
    fn mounts_need_the_policy_and_a_sane_target() {
        let c = caller(1001, 1001, vec![500]);
        let mut p = Policy::default();
        let mut r = req("busybox");
        r.mount = Some(crate::wire::MountRequest {
            target: "/work".into(),
            read_only: false,
        });

        assert_eq!(rule(judge(&c, &p, 500, &denied(), &r)), "mounts.workdir");
        p.mounts.workdir = true;
        assert_eq!(rule(judge(&c, &p, 500, &denied(), &r)), "allow");
        r.mount.as_mut().unwrap().target = "/etc".into();
        assert_eq!(rule(judge(&c, &p, 500, &denied(), &r)), "mounts.target");
        let f = DirFacts {
            mount_flags: 0,
            is_dir: true,
            uid: 1001,
            gid: 500,
            mode: 0o700,
            path: Some("/home/alice/p".into()),
        };
        assert_eq!(rule(judge_dir(&c, &p, &f, false)), "allow");
        let f = DirFacts {
            path: Some("/tmp/p".into()),
            ..f
        };
        assert_eq!(rule(judge_dir(&c, &p, &f, false)), "mounts.roots");
    }

    fn policy(text: &str) -> Policy {
        Policy::parse(text, std::path::Path::new("p.toml")).unwrap()
    }

    fn rule<T>(d: Result<T, Refusal>) -> &'static str {
        match d {
            Err(r) => r.rule.id(),
            Ok(_) => "allow",
        }
    }

    fn resolved(p: &Policy, r: &Request, img: &ImageFacts) -> Check {
        let reference = parse_reference(&r.image)?;
        let target = r.mount.as_ref().map(|m| m.target.as_str());
        judge_resolved(p, &reference, target, img).map(|_| ())
    }

    #[test]
    fn image_patterns() {
        let p = policy("[images]\nallow = [\"debian:*\", \"registry.example.org/team/*\"]\n");
        let c = caller(1001, 1001, vec![500]);
        for ok in ["debian:12", "debian", "registry.example.org/team/x:1"] {
            assert_eq!(judge(&c, &p, 500, &denied(), &req(ok)), Ok(()), "{ok}");
        }
        for bad in ["ubuntu:22.04", "registry.example.org/other/x", "busybox"] {
            let d = judge(&c, &p, 500, &denied(), &req(bad));
            match d {
                Err(r) => {
                    assert_eq!(r.rule.id(), "images.allow");
                    assert!(r.message.contains("debian:*"), "{}", r.message);
                }
                d => panic!("{bad}: {d:?}"),
            }
        }
        // the default allows every local image
        assert_eq!(
            judge(&c, &Policy::default(), 500, &denied(), &req("x/y:z")),
            Ok(())
        );
    }

    /// Review S3: with `allow = ["<registry>/urun/*"]` on a run host every member ran
    /// every other member's promoted images; `{user}` admits only one's own.
    #[test]
    fn s3_an_owner_pattern_admits_only_the_callers_own_images() {
        let p = policy("[images]\nallow = [\"reg.example:5000/urun/{user}/*\"]\n");
        let alice = caller(1001, 1001, vec![500]);
        let mut bob = caller(1002, 1002, vec![500]);
        bob.name = Some("bob".into());
        let a = "reg.example:5000/urun/alice/app:1";
        let b = "reg.example:5000/urun/bob/app:1";
        assert_eq!(judge(&alice, &p, 500, &denied(), &req(a)), Ok(()));
        assert_eq!(judge(&bob, &p, 500, &denied(), &req(b)), Ok(()));
        for (who, image) in [(&alice, b), (&bob, a)] {
            let r = judge(who, &p, 500, &denied(), &req(image)).unwrap_err();
            assert_eq!(r.rule, Rule::ImagesAllow);
            let me = who.name.as_deref().unwrap();
            assert!(
                r.message.contains("reg.example:5000/urun/{user}/*")
                    && r.message.contains(&format!("where {{user}} is {me}"))
                    && !r.message.contains('\n'),
                "{}",
                r.message
            );
        }
        // a name that is no repository component: the uid, as the build namespace
        let mut odd = caller(1003, 1003, vec![500]);
        odd.name = Some("Odd.Name".into());
        let own = "reg.example:5000/urun/1003/app:1";
        assert_eq!(judge(&odd, &p, 500, &denied(), &req(own)), Ok(()));
        assert_eq!(
            rule(judge(
                &odd,
                &p,
                500,
                &denied(),
                &req("reg.example:5000/urun/odd.name/app:1")
            )),
            "images.allow"
        );
        // a user named like that uid does not get it (their component is their uid)
        let mut digits = caller(2000, 2000, vec![500]);
        digits.name = Some("1003".into());
        assert_eq!(
            rule(judge(&digits, &p, 500, &denied(), &req(own))),
            "images.allow"
        );
        // the shared pattern, where wanted, still admits everyone's
        let shared = policy("[images]\nallow = [\"reg.example:5000/urun/*\"]\n");
        assert_eq!(judge(&alice, &shared, 500, &denied(), &req(b)), Ok(()));
    }

    #[test]
    fn digest_required() {
        let p = policy("[images]\nrequire_digest = true\n");
        let c = caller(1001, 1001, vec![500]);
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            judge(&c, &p, 500, &denied(), &req(&format!("debian@{d}"))),
            Ok(())
        );
        assert_eq!(judge(&c, &p, 500, &denied(), &req(&d)), Ok(()));
        assert_eq!(
            rule(judge(&c, &p, 500, &denied(), &req("debian:12"))),
            "images.require_digest"
        );
        // a short digest is no digest at all
        assert_eq!(
            rule(judge(&c, &p, 500, &denied(), &req("debian@sha256:ab"))),
            "images.reference"
        );
    }

    #[test]
    fn users_list_restricts() {
        let p = policy("[access]\nusers = [\"alice\", \"2000\"]\n");
        assert_eq!(
            judge(
                &caller(1001, 1001, vec![500]),
                &p,
                500,
                &denied(),
                &req("x")
            ),
            Ok(())
        );
        let mut bob = caller(2000, 2000, vec![500]);
        bob.name = Some("bob".into());
        assert_eq!(judge(&bob, &p, 500, &denied(), &req("x")), Ok(()));
        bob.uid = 2001;
        assert_eq!(
            rule(judge(&bob, &p, 500, &denied(), &req("x"))),
            "access.users"
        );
    }

    #[test]
    fn pulls() {
        assert_eq!(rule(judge_pull(&Policy::default(), "debian")), "pull.mode");
        let p =
            policy("[pull]\nmode = \"missing\"\nregistries = [\"127.0.0.1:*\", \"docker.io\"]\n");
        assert_eq!(judge_pull(&p, "127.0.0.1:5000/x:1").map(|_| ()), Ok(()));
        assert_eq!(judge_pull(&p, "debian").map(|_| ()), Ok(()));
        assert_eq!(rule(judge_pull(&p, "quay.io/x/y")), "pull.registries");
        assert_eq!(rule(judge_pull(&p, "localhost:5000/x")), "pull.registries");
        let id = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(rule(judge_pull(&p, &id)), "pull.mode");
        assert_eq!(rule(judge_pull(&p, "sha256:abcd")), "images.reference");
    }

    /// The names `urun push` gives images on the engine are urund's alone: no pull
    /// makes a tag there (a digest makes none), so urund's start may remove what a push
    /// left there.
    #[test]
    fn tags_in_the_push_space_are_never_pulled_only_digests() {
        let p = policy(
            "[pull]\nmode = \"missing\"\nregistries = [\"r.example:5000\"]\n\
             [build]\nregistry = \"r.example:5000\"\n",
        );
        let d = format!("sha256:{}", "ab".repeat(32));
        for tag in [
            "r.example:5000/urun/alice/app:1",
            "r.example:5000/urun/alice/app",
        ] {
            let r = judge_pull(&p, tag).unwrap_err();
            assert_eq!(r.rule, Rule::BuildNamespace, "{tag}");
            assert!(
                r.message
                    .contains("r.example:5000/urun/ are pulled only by digest"),
                "{}",
                r.message
            );
        }
        for ok in [
            format!("r.example:5000/urun/alice/app@{d}"),
            "r.example:5000/urunx/alice/app:1".to_string(),
            "r.example:5000/other/urun/app:1".to_string(),
        ] {
            assert_eq!(judge_pull(&p, &ok).map(|_| ()), Ok(()), "{ok}");
        }
        // without [build] registry there is no such space
        let p = policy("[pull]\nmode = \"missing\"\nregistries = [\"r.example:5000\"]\n");
        assert!(judge_pull(&p, "r.example:5000/urun/alice/app:1").is_ok());
    }

    #[test]
    fn references_are_judged_in_dockers_familiar_form_and_ids_only_in_full() {
        let p = policy("[images]\nallow = [\"debian:*\", \"*:latest\"]\n");
        let c = caller(1001, 1001, vec![500]);
        for ok in ["docker.io/library/debian:12", "library/debian:12", "team/x"] {
            assert_eq!(judge(&c, &p, 500, &denied(), &req(ok)), Ok(()), "{ok}");
        }
        for (bad, want) in [
            ("sha256:a667ef", "images.reference"),
            ("-v", "images.reference"),
            ("/etc", "images.reference"),
            ("Debian", "images.reference"),
            ("debian@sha256:ab", "images.reference"),
            ("team/x:v1", "images.allow"),
        ] {
            assert_eq!(
                rule(judge(&c, &p, 500, &denied(), &req(bad))),
                want,
                "{bad}"
            );
        }
    }

    fn found(tags: &[&str], volumes: &[&str]) -> ImageFacts {
        ImageFacts::example(tags, volumes)
    }

    #[test]
    fn what_docker_found_must_carry_the_name_typed() {
        let p = Policy::default();
        let img = found(&["team/app:v1"], &[]);
        assert_eq!(resolved(&p, &req("team/app:v1"), &img), Ok(()));
        assert_eq!(resolved(&p, &req("docker.io/team/app:v1"), &img), Ok(()));
        assert_eq!(resolved(&p, &req(&img.id), &img), Ok(()));
        // "abababababab" resolved by docker as a prefix of the image's ID
        for bad in ["abababababab", "team/app", "team/app:v2"] {
            assert_eq!(
                rule(resolved(&p, &req(bad), &img)),
                "images.reference",
                "{bad}"
            );
        }
    }

    #[test]
    fn image_volumes_follow_the_policy_and_keep_clear_of_the_workdir() {
        let tmpfs = Policy::default();
        let refuse = policy("[images]\nvolumes = \"refuse\"\n");
        let img = found(&["x:1"], &["/data/", "/cache"]);
        assert_eq!(resolved(&tmpfs, &req("x:1"), &img), Ok(()));
        let d = resolved(&refuse, &req("x:1"), &img);
        assert_eq!(rule(d.clone()), "images.volumes");
        let Err(r) = d else { unreachable!() };
        assert!(r.message.contains("/cache, /data"), "{}", r.message);
        // no volumes: nothing to refuse
        assert_eq!(
            resolved(&refuse, &req("x:1"), &found(&["x:1"], &[])),
            Ok(())
        );
        // volumes that would hide a forced mount, or too many of them
        for bad in [&["/etc"][..], &["/sbin"], &["/proc/x"], &["rel"]] {
            assert_eq!(
                rule(resolved(&tmpfs, &req("x:1"), &found(&["x:1"], bad))),
                "images.volumes",
                "{bad:?}"
            );
        }
        let many: Vec<String> = (0..40).map(|i| format!("/v{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            rule(resolved(&tmpfs, &req("x:1"), &found(&["x:1"], &many))),
            "images.volumes"
        );
        // the working directory may not be, hold or lie in a volume
        let mut r = req("x:1");
        for (target, want) in [
            ("/data", "mounts.target"),
            ("/", "mounts.target"),
            ("/data/sub", "mounts.target"),
            ("/datax", "allow"),
            ("/work", "allow"),
        ] {
            r.mount = Some(crate::wire::MountRequest {
                target: target.into(),
                read_only: false,
            });
            assert_eq!(rule(resolved(&tmpfs, &r, &img)), want, "{target}");
        }
    }

    #[test]
    fn concurrency() {
        let l = Limits {
            max_concurrent: crate::policy::Count(2),
            ..Limits::default()
        };
        assert_eq!(judge_concurrency(&l, 1), Ok(()));
        assert_eq!(rule(judge_concurrency(&l, 2)), "limits.max_concurrent");
    }

    #[test]
    fn env_names() {
        let a = Policy::default().env.allow;
        for ok in ["TERM", "LANG", "LC_ALL", "LC_CTYPE", "TZ"] {
            assert!(env_allowed(&a, ok), "{ok}");
        }
        for bad in ["PATH", "LD_PRELOAD", "HOME", "TERMX", "XLC_ALL", ""] {
            assert!(!env_allowed(&a, bad), "{bad}");
        }
    }
}
