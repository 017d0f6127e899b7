//! The policy judge: one pure function from (caller, policy, request) to a decision.
//! It reads nothing and changes nothing; `urund` acts on what it returns.
#![forbid(unsafe_code)]

use crate::mounts::{self, DirFacts};
use crate::policy::{
    Limits, MountAccess, NetworkMode, Pattern, Policy, PullMode, ISOLATED_NETWORK,
};
use crate::protocol::Request;
use crate::system::Caller;

/// Why a request was refused: the policy rule (as named in the policy file or in
/// SECURITY.md) and a one-line message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub message: String,
}

#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Refuse(Refusal),
}

fn refuse(rule: &'static str, message: String) -> Decision {
    Decision::Refuse(Refusal { rule, message })
}

/// Decides whether `caller` may make `req` under `policy`. `group_gid` is the gid of
/// `policy.access.group`, resolved by the caller of this function.
pub fn judge(caller: &Caller, policy: &Policy, group_gid: u32, req: &Request) -> Decision {
    if let d @ Decision::Refuse(_) = judge_access(caller, policy, group_gid) {
        return d;
    }
    if let d @ Decision::Refuse(_) = judge_image(policy, &req.image) {
        return d;
    }
    if let Some(r) = check_dropin(caller, policy, req) {
        return Decision::Refuse(r);
    }
    judge_mounts(policy, req)
}

/// Whether the request's working-directory mount is allowed in shape:
/// `mounts.workdir` and the container-side target. The passed directory itself is
/// judged by [`judge_dir`]. Pure.
pub fn judge_mounts(policy: &Policy, req: &Request) -> Decision {
    if let Some(m) = &req.mount {
        if !policy.mounts.workdir {
            return refuse(
                "mounts.workdir",
                "mounting your working directory is not enabled here (policy mounts.workdir = false)"
                    .into(),
            );
        }
        if let Err(e) = mounts::validate_target(&m.target) {
            return refuse("mounts.target", format!("-v target: {e}"));
        }
    }
    Decision::Allow
}

/// Whether `caller` may use urun at all: `access.allow_root`, `access.group`,
/// `access.users`. Pure.
pub fn judge_access(caller: &Caller, policy: &Policy, group_gid: u32) -> Decision {
    if caller.uid == 0 && !policy.access.allow_root {
        return refuse(
            "access.allow_root",
            "root may not run containers through urun (policy access.allow_root = false); \
             root can use docker directly"
                .into(),
        );
    }
    let allowed_root = caller.uid == 0 && policy.access.allow_root;
    if !(caller.in_group(group_gid) || allowed_root) {
        return refuse(
            "access.group",
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
            "access.users",
            format!(
                "you ({} uid {}) are not in the list of users allowed to use urun \
                 (policy access.users); ask your administrator",
                caller.display_name(),
                caller.uid
            ),
        );
    }
    Decision::Allow
}

/// Whether the image reference is well-formed and allowed: `images.require_digest`,
/// `images.allow`. Pure.
pub fn judge_image(policy: &Policy, image: &str) -> Decision {
    if !valid_reference(image) {
        return refuse(
            "images.reference",
            format!(
                "{:?} is not a valid image reference (letters, digits and . _ - / : @ only)",
                image
            ),
        );
    }
    if policy.images.require_digest && !pinned_by_digest(image) {
        return refuse(
            "images.require_digest",
            format!(
                "image {:?} is not pinned by digest (policy images.require_digest): \
                 use NAME@sha256:DIGEST",
                image
            ),
        );
    }
    let full = normalized_reference(image);
    if !policy.images.allow.iter().any(|p| p.matches(&full)) {
        return refuse(
            "images.allow",
            format!(
                "image {full:?} is not allowed (policy images.allow: {}); \
                 ask your administrator",
                list(&policy.images.allow)
            ),
        );
    }
    Decision::Allow
}

/// Whether a missing image may be pulled: `pull.mode` and `pull.registries`. Pure.
pub fn judge_pull(policy: &Policy, reference: &str) -> Decision {
    if policy.pull.mode == PullMode::Never {
        return refuse(
            "pull.mode",
            format!(
                "Unable to find image '{reference}' locally, and urund does not pull \
                 (policy pull.mode = \"never\"); ask your administrator to provide it"
            ),
        );
    }
    if reference.starts_with("sha256:") {
        return refuse(
            "pull.mode",
            format!(
                "no image with ID '{reference}' is present; an image ID cannot be pulled: \
                 use NAME@sha256:DIGEST"
            ),
        );
    }
    let reg = registry_of(reference);
    if !policy.pull.registries.iter().any(|p| p.matches(&reg)) {
        return refuse(
            "pull.registries",
            format!(
                "image '{reference}' is not present and registry {reg:?} is not one urund \
                 pulls from (policy pull.registries: {})",
                list(&policy.pull.registries)
            ),
        );
    }
    Decision::Allow
}

/// Whether one more run is allowed for a user who has `running` runs. Pure.
pub fn judge_concurrency(limits: &Limits, running: u32) -> Decision {
    if running >= limits.max_concurrent.0 {
        return refuse(
            "limits.max_concurrent",
            format!(
                "you already have {running} run(s) in progress, the most allowed at once \
                 (policy limits.max_concurrent = {}); wait for one to finish",
                limits.max_concurrent.0
            ),
        );
    }
    Decision::Allow
}

/// Whether an environment variable named `name` may be passed: it must match one of
/// the `env.allow` patterns. Pure.
pub fn env_allowed(allow: &[Pattern], name: &str) -> bool {
    allow.iter().any(|p| p.matches(name))
}

fn list(p: &[Pattern]) -> String {
    if p.is_empty() {
        return "none".into();
    }
    p.iter()
        .map(|p| p.0.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `name@sha256:<64 hex>` or `sha256:<64 hex>` (an image ID).
pub fn pinned_by_digest(r: &str) -> bool {
    let digest = match r.rsplit_once('@') {
        Some((_, d)) => d,
        None => r,
    };
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The reference as patterns see it: with `:latest` when it has neither tag nor
/// digest (as docker reads it). Pure.
pub fn normalized_reference(r: &str) -> String {
    if r.contains('@') || r.starts_with("sha256:") {
        return r.to_string();
    }
    let last = r.rsplit('/').next().unwrap_or(r);
    if last.contains(':') {
        r.to_string()
    } else {
        format!("{r}:latest")
    }
}

/// The registry a reference is pulled from, as docker decides it: the first path
/// component when it has a `.` or `:` or is `localhost`, else `docker.io`. Pure.
pub fn registry_of(r: &str) -> String {
    match r.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first.to_string(),
        _ => "docker.io".to_string(),
    }
}

/// Names never passed whatever `env.allow` says: urund sets them itself (forced.rs).
pub const FORCED_ENV: &[&str] = &["HOME"];

/// The `docker run` options a request may carry that need a decision: environment
/// (`env.allow`), `-u`, `--network` (`network.mode`), `--name`. The first one refused.
fn check_dropin(caller: &Caller, policy: &Policy, req: &Request) -> Option<Refusal> {
    let r = |rule, message| Some(Refusal { rule, message });
    for entry in &req.env {
        let name = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
        if let Some(m) = env_refusal(name, &policy.env.allow) {
            return r("env.allow", m);
        }
    }
    if let Some(u) = &req.user {
        if !is_caller(caller, u) {
            return r(
                "user",
                format!(
                    "-u/--user {u} is not allowed: containers always run as you \
                     (uid {}, gid {}); only -u {}:{} is accepted",
                    caller.uid, caller.gid, caller.uid, caller.gid
                ),
            );
        }
    }
    if let Some(n) = &req.network {
        if network_mode(policy, n).is_none() {
            let allowed = match policy.network.mode {
                NetworkMode::None => "none".to_string(),
                NetworkMode::Isolated => format!("none or {ISOLATED_NETWORK}"),
            };
            return r(
                "network.mode",
                format!(
                    "--network {n} is not allowed: containers get no network or the \
                     isolated one the policy sets (only --network {allowed})"
                ),
            );
        }
    }
    if let Some(n) = &req.name {
        if !valid_name(n) {
            return r(
                "name",
                format!(
                    "--name {n:?} is not allowed: use 1 to 64 letters, digits and _ . - \
                     starting with a letter or digit"
                ),
            );
        }
    }
    None
}

/// The network a run gets when the user asked for `--network asked`: `none` always
/// (less than the policy gives is fine), the policy's isolated bridge by its name when
/// the policy has it; `None` (refused) for anything else. Pure.
pub fn network_mode(policy: &Policy, asked: &str) -> Option<NetworkMode> {
    match (asked, policy.network.mode) {
        ("none", _) => Some(NetworkMode::None),
        (ISOLATED_NETWORK, NetworkMode::Isolated) => Some(NetworkMode::Isolated),
        _ => None,
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

/// A `--name` as the user types it (urund adds its own prefix): docker's charset.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.as_bytes()[0].is_ascii_alphanumeric()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Decides whether the directory the caller passed (described by `facts`, from the
/// kernel) may be mounted: see [`mounts::check_dir`]. Called only for requests that
/// [`judge`] allowed with a mount.
pub fn judge_dir(caller: &Caller, policy: &Policy, facts: &DirFacts, read_only: bool) -> Decision {
    let access = match policy.mounts.access {
        MountAccess::Owner => mounts::Access::Owner,
        MountAccess::Mode => mounts::Access::Mode,
    };
    let mut gids = caller.groups.clone();
    gids.push(caller.gid);
    match mounts::check_dir(
        facts,
        caller.uid,
        &gids,
        read_only,
        &policy.mounts.root_strings(),
        access,
    ) {
        Ok(()) => Decision::Allow,
        Err((rule, message)) => refuse(rule, message),
    }
}

/// Docker image reference syntax, conservatively: no option-like or path-like names.
fn valid_reference(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && r.as_bytes()[0].is_ascii_alphanumeric()
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
        && !r.contains("..")
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
        }
    }

    fn req(image: &str) -> Request {
        Request::new(image.into(), vec!["id".into()])
    }

    #[test]
    fn member_is_allowed() {
        let p = Policy::default();
        assert_eq!(
            judge(&caller(1001, 1001, vec![500]), &p, 500, &req("busybox")),
            Decision::Allow
        );
        // primary group counts too
        assert_eq!(
            judge(&caller(1001, 500, vec![]), &p, 500, &req("busybox")),
            Decision::Allow
        );
    }

    #[test]
    fn non_member_is_refused_naming_the_rule() {
        let d = judge(
            &caller(1001, 1001, vec![27]),
            &Policy::default(),
            500,
            &req("busybox"),
        );
        match d {
            Decision::Refuse(r) => {
                assert_eq!(r.rule, "access.group");
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
            judge(&root, &p, 500, &req("busybox")),
            Decision::Refuse(Refusal {
                rule: "access.allow_root",
                ..
            })
        ));
        p.access.allow_root = true;
        assert_eq!(judge(&root, &p, 500, &req("busybox")), Decision::Allow);
        // an allowed root need not be in the group
        assert_eq!(
            judge(&caller(0, 0, vec![]), &p, 500, &req("busybox")),
            Decision::Allow
        );
    }

    fn refusal(req: &Request) -> Option<Refusal> {
        match judge(&caller(1001, 1002, vec![500]), &Policy::default(), 500, req) {
            Decision::Allow => None,
            Decision::Refuse(r) => Some(r),
        }
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
            assert_eq!(f.rule, "env.allow");
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
            judge(&caller(1001, 500, vec![]), &p, 500, &r),
            Decision::Allow
        );
        r.env = vec!["TERM=x".into()];
        assert_eq!(
            rule(judge(&caller(1001, 500, vec![]), &p, 500, &r)),
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
            assert_eq!(f.rule, "user");
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
            assert_eq!(refusal(&r).unwrap().rule, "network.mode");
        }
        let p = policy("[network]\nmode = \"isolated\"\n");
        assert_eq!(network_mode(&p, "none"), Some(NetworkMode::None));
        assert_eq!(
            network_mode(&p, "urun-isolated"),
            Some(NetworkMode::Isolated)
        );
        assert_eq!(network_mode(&p, "host"), None);
        let mut r = req("busybox");
        for ok in ["web", "a.b-c_1", "9"] {
            r.name = Some(ok.into());
            assert_eq!(refusal(&r), None, "{ok}");
        }
        for bad in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            r.name = Some(bad.into());
            assert_eq!(refusal(&r).unwrap().rule, "name", "{bad}");
        }
    }

    #[test]
    fn mounts_need_the_policy_and_a_sane_target() {
        let c = caller(1001, 500, vec![]);
        let mut p = Policy::default();
        let mut r = req("busybox");
        r.mount = Some(crate::protocol::MountRequest {
            target: "/work".into(),
            read_only: false,
        });
        let rule = |d: Decision| match d {
            Decision::Refuse(r) => r.rule,
            Decision::Allow => "allow",
        };
        assert_eq!(rule(judge(&c, &p, 500, &r)), "mounts.workdir");
        p.mounts.workdir = true;
        assert_eq!(rule(judge(&c, &p, 500, &r)), "allow");
        r.mount.as_mut().unwrap().target = "/etc".into();
        assert_eq!(rule(judge(&c, &p, 500, &r)), "mounts.target");
        let f = DirFacts {
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

    #[test]
    fn references() {
        for ok in [
            "busybox",
            "debian:12",
            "registry.example.org/team/x:1",
            "sha256:abc",
            "a@sha256:0f",
        ] {
            assert!(valid_reference(ok), "{ok}");
        }
        for bad in ["", "-v", "/etc", "a b", "a\nb", "x/../y", "--privileged"] {
            assert!(!valid_reference(bad), "{bad}");
        }
    }
    fn policy(text: &str) -> Policy {
        Policy::parse(text, std::path::Path::new("p.toml")).unwrap()
    }

    fn rule(d: Decision) -> &'static str {
        match d {
            Decision::Refuse(r) => r.rule,
            Decision::Allow => "allow",
        }
    }

    #[test]
    fn image_patterns() {
        let p = policy("[images]\nallow = [\"debian:*\", \"registry.example.org/team/*\"]\n");
        let c = caller(1001, 500, vec![]);
        for ok in ["debian:12", "debian", "registry.example.org/team/x:1"] {
            assert_eq!(judge(&c, &p, 500, &req(ok)), Decision::Allow, "{ok}");
        }
        for bad in ["ubuntu:22.04", "registry.example.org/other/x", "busybox"] {
            let d = judge(&c, &p, 500, &req(bad));
            match d {
                Decision::Refuse(r) => {
                    assert_eq!(r.rule, "images.allow");
                    assert!(r.message.contains("debian:*"), "{}", r.message);
                }
                d => panic!("{bad}: {d:?}"),
            }
        }
        // the default allows every local image
        assert_eq!(
            judge(&c, &Policy::default(), 500, &req("x/y:z")),
            Decision::Allow
        );
    }

    #[test]
    fn digest_required() {
        let p = policy("[images]\nrequire_digest = true\n");
        let c = caller(1001, 500, vec![]);
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            judge(&c, &p, 500, &req(&format!("debian@{d}"))),
            Decision::Allow
        );
        assert_eq!(judge(&c, &p, 500, &req(&d)), Decision::Allow);
        assert_eq!(
            rule(judge(&c, &p, 500, &req("debian:12"))),
            "images.require_digest"
        );
        assert_eq!(
            rule(judge(&c, &p, 500, &req("debian@sha256:ab"))),
            "images.require_digest"
        );
    }

    #[test]
    fn users_list_restricts() {
        let p = policy("[access]\nusers = [\"alice\", \"2000\"]\n");
        assert_eq!(
            judge(&caller(1001, 500, vec![]), &p, 500, &req("x")),
            Decision::Allow
        );
        let mut bob = caller(2000, 500, vec![]);
        bob.name = Some("bob".into());
        assert_eq!(judge(&bob, &p, 500, &req("x")), Decision::Allow);
        bob.uid = 2001;
        assert_eq!(rule(judge(&bob, &p, 500, &req("x"))), "access.users");
    }

    #[test]
    fn pulls() {
        assert_eq!(rule(judge_pull(&Policy::default(), "debian")), "pull.mode");
        let p =
            policy("[pull]\nmode = \"missing\"\nregistries = [\"127.0.0.1:*\", \"docker.io\"]\n");
        assert_eq!(judge_pull(&p, "127.0.0.1:5000/x:1"), Decision::Allow);
        assert_eq!(judge_pull(&p, "debian"), Decision::Allow);
        assert_eq!(rule(judge_pull(&p, "quay.io/x/y")), "pull.registries");
        assert_eq!(rule(judge_pull(&p, "localhost:5000/x")), "pull.registries");
        assert_eq!(rule(judge_pull(&p, "sha256:abcd")), "pull.mode");
    }

    #[test]
    fn reference_helpers() {
        assert_eq!(registry_of("debian"), "docker.io");
        assert_eq!(registry_of("library/debian:12"), "docker.io");
        assert_eq!(registry_of("localhost/x"), "localhost");
        assert_eq!(registry_of("127.0.0.1:5000/a/b"), "127.0.0.1:5000");
        assert_eq!(normalized_reference("debian"), "debian:latest");
        assert_eq!(
            normalized_reference("127.0.0.1:5000/a"),
            "127.0.0.1:5000/a:latest"
        );
        assert_eq!(
            normalized_reference("127.0.0.1:5000/a:2"),
            "127.0.0.1:5000/a:2"
        );
        assert_eq!(normalized_reference("a@sha256:00"), "a@sha256:00");
    }

    #[test]
    fn concurrency() {
        let l = Limits {
            max_concurrent: crate::policy::Count(2),
            ..Limits::default()
        };
        assert_eq!(judge_concurrency(&l, 1), Decision::Allow);
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
