//! The text of `urun --policy`: a pure function of the policy and the caller (and
//! the limits the policy gives them), so what a user is told is exactly what the
//! judge applies, and is unit-tested.

use crate::policy::forced;
use crate::policy::{
    GroupsMode, ImageVolumes, Limits, MountAccess, NetworkMode, Pattern, Policy, PullMode,
    RuntimeName,
};
use crate::system::Caller;
use crate::wire::status::MAX_RUNTIME as EXIT_MAX_RUNTIME;
use std::path::Path;

/// `urun --policy`'s answer to `caller`, whose effective limits are `limits` and
/// runtime `runtime` (before any image rule), from the policy read at `path`;
/// `in_build_group`: whether the caller is in `[build] group` (when it names one that
/// exists). Pure.
pub(super) fn describe(
    policy: &Policy,
    path: &Path,
    caller: &Caller,
    limits: &Limits,
    runtime: &RuntimeName,
    in_build_group: bool,
) -> String {
    let mut t = format!(
        "urun policy for {} (uid {}), from {}:\n\nYour limits:\n",
        caller.display_name(),
        caller.uid,
        path.display()
    );
    t.push_str(&limits_text(limits));
    t.push_str(&images_text(policy, caller));
    t.push_str(&runtime_text(policy, runtime));
    t.push_str(&host_text(policy));
    t.push_str(&build_text(policy, caller, in_build_group));
    t.push_str("\nAlways forced, whatever you ask:\n");
    for (k, v) in forced::FORCED {
        t.push_str(&format!("  {k}: {v}\n"));
    }
    t
}

/// Patterns as a list, or "none".
fn list(v: &[Pattern]) -> String {
    crate::policy::judge::list(v)
}

/// One line per limit.
fn limits_text(l: &Limits) -> String {
    let max_runtime = format!(
        "{} (then killed, exit status {EXIT_MAX_RUNTIME})",
        l.max_runtime
    );
    [
        ("memory", l.memory.to_string()),
        ("cpus", l.cpus.0.to_string()),
        ("pids", l.pids.0.to_string()),
        ("nofile", l.nofile.0.to_string()),
        ("nproc", l.nproc.0.to_string()),
        ("tmpfs_size", l.tmpfs_size.to_string()),
        ("max_runtime", max_runtime),
        ("max_concurrent", l.max_concurrent.0.to_string()),
    ]
    .iter()
    .map(|(k, v)| format!("  {k} = {v}\n"))
    .collect()
}

/// Which images (with what `{user}` is for the caller), their volumes, pulls.
fn images_text(p: &Policy, caller: &Caller) -> String {
    let digest = match p.images.require_digest {
        true => " (pinned by digest only: NAME@sha256:...)",
        false => "",
    };
    let user = crate::policy::build::namespace_user(caller);
    let allow = crate::policy::judge::allow_list(p, &user);
    let mut t = format!("\nImages you may run: {allow}{digest}\n");
    t.push_str(match p.images.volumes {
        ImageVolumes::Tmpfs => {
            "Image VOLUMEs: each an empty tmpfs of tmpfs_size (never a Docker volume)\n"
        }
        ImageVolumes::Refuse => "Images that declare a VOLUME: refused\n",
    });
    t.push_str(&match p.pull.mode {
        PullMode::Never => "Missing images: not pulled (ask your administrator)\n".to_string(),
        PullMode::Missing => format!(
            "Missing images: pulled from {}{}\n",
            list(&p.pull.registries),
            p.build
                .push_prefix()
                .map_or(String::new(), |x| format!(" (under {x} only by digest)"))
        ),
    });
    t
}

/// The runtime the caller's containers run under, and the images that always run
/// under another.
fn runtime_text(p: &Policy, runtime: &RuntimeName) -> String {
    let kind = if runtime.is_sandbox() {
        "a sandbox: your programs talk to its kernel, not the host's"
    } else {
        "the host's kernel"
    };
    let mut t = format!("Runtime: {runtime} ({kind})\n");
    for r in &p.runtime.image {
        let note = match (r.name.is_sandbox(), runtime.is_sandbox()) {
            (false, true) => " (yours is stricter and applies)",
            _ => "",
        };
        t.push_str(&format!(
            "  images matching {}: {}{note}\n",
            r.pattern, r.name
        ));
    }
    t
}

/// What of the host a container gets: network, working directory, groups, environment.
fn host_text(p: &Policy) -> String {
    let mut t = String::from(match p.network.mode {
        NetworkMode::None => "Network: none (only lo)\n",
        NetworkMode::Isolated => {
            "Network: isolated bridge urun-isolated (containers cannot reach each other)\n"
        }
    });
    t.push_str(&if p.mounts.workdir {
        format!(
            "Your working directory (-v \"$PWD\":DIR, --here): may be mounted below {} ({})\n",
            p.mounts.root_strings().join(", "),
            match p.mounts.access {
                MountAccess::Owner => "directories you own",
                MountAccess::Mode => "directories your permissions allow",
            }
        )
    } else {
        "Your working directory (-v, --here): not mounted (policy mounts.workdir = false)\n"
            .to_string()
    });
    t.push_str(match p.identity.groups {
        GroupsMode::Primary => "Supplementary groups: none\n",
        GroupsMode::Caller => {
            "Supplementary groups: yours, minus the denied ones (identity.deny_groups)\n"
        }
    });
    t.push_str(&format!(
        "Environment variables you may pass: {}\n",
        list(&p.env.allow)
    ));
    t
}

/// Whether the caller may build (`[build] enabled`, `[build] group`), and if so where
/// their images go and the build's limits.
fn build_text(p: &Policy, caller: &Caller, in_group: bool) -> String {
    let b = &p.build;
    let push_too = "  Pushing builds (urun push) needs the same\n";
    if !b.enabled {
        return format!(
            "\nBuilding images (urun build): not available here (policy [build] enabled = \
             false)\n{push_too}"
        );
    }
    if let Some(g) = b.group.as_ref().filter(|_| !in_group) {
        return format!(
            "\nBuilding images (urun build): only for members of group {}, which you are not\n\
             {push_too}",
            g.0
        );
    }
    let mut t = String::from("\nBuilding images (urun build): allowed\n");
    let user = crate::policy::build::namespace_user(caller);
    t.push_str(&format!(
        "  Your images: {}NAME:TAG (urun images lists them, urun rmi removes them)\n",
        b.user_prefix(&user)
    ));
    t.push_str(&match &b.registry {
        None => "  Pushing builds (urun push): no registry here\n".to_string(),
        Some(r) => format!(
            "  Pushing builds (urun push): to {r}/{}NAME:TAG\n",
            b.user_prefix(&user)
        ),
    });
    t.push_str(&match &b.engine {
        None => "  Build engine: the run daemon's\n".to_string(),
        Some(e) => format!("  Build engine: {}\n", e.0.display()),
    });
    t.push_str(match b.network {
        false => "  Network for RUN steps: none\n",
        true => "  Network for RUN steps: the build engine's default network\n",
    });
    for (k, v) in [
        ("memory", b.memory.to_string()),
        ("cpus", b.cpus.0.to_string()),
        (
            "max_runtime",
            format!(
                "{} (then stopped, exit status {EXIT_MAX_RUNTIME})",
                b.max_runtime
            ),
        ),
        ("max_concurrent", b.max_concurrent.0.to_string()),
        ("max_context", b.max_context.to_string()),
        ("max_images", b.max_images.0.to_string()),
    ] {
        t.push_str(&format!("  {k} = {v}\n"));
    }
    t.push_str(match b.run_own {
        true => "  You may run your own builds (run_own)\n",
        false => "  Your own builds run only if images.allow admits them (run_own = false)\n",
    });
    t.push_str(&format!(
        "  Files a build adds with setuid/setgid bits: {}\n",
        b.setuid.0.as_str()
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            uid: 1234,
            gid: 1234,
            pid: 1,
            groups: vec![],
            name: Some("alice".into()),
            group: None,
        }
    }

    fn policy(text: &str) -> Policy {
        Policy::parse(text, Path::new("/etc/urun/policy.toml")).unwrap()
    }

    #[test]
    fn the_text_names_the_caller_their_limits_and_every_forced_setting() {
        let p = policy("[access]\ngroup = \"urun\"\n[limits]\nmax_runtime = \"90s\"\n");
        let l = p.effective_limits(1234, Some("alice"), |_| false);
        let t = describe(
            &p,
            Path::new("/etc/urun/policy.toml"),
            &caller(),
            &l,
            &RuntimeName::default(),
            false,
        );
        assert!(t.starts_with("urun policy for alice (uid 1234), from /etc/urun/policy.toml:\n"));
        assert!(
            t.contains("  max_runtime = 90s (then killed, exit status 124)\n"),
            "{t}"
        );
        for (k, v) in forced::FORCED {
            assert!(t.contains(&format!("  {k}: {v}\n")), "{k}");
        }
    }

    #[test]
    fn the_text_follows_the_policy_and_says_none_for_empty_lists() {
        let closed = policy("[images]\nallow = []\n[env]\nallow = []\n");
        let l = closed.effective_limits(1234, None, |_| false);
        let t = describe(
            &closed,
            Path::new("p"),
            &caller(),
            &l,
            &RuntimeName::default(),
            false,
        );
        assert!(t.contains("Images you may run: none\n"), "{t}");
        assert!(
            t.contains("Environment variables you may pass: none\n"),
            "{t}"
        );
        assert!(t.contains("Missing images: not pulled"), "{t}");
        assert!(t.contains("Network: none (only lo)\n"), "{t}");
        let open = policy(
            "[images]\nallow = [\"debian*\"]\nrequire_digest = true\n\
             [pull]\nmode = \"missing\"\nregistries = [\"docker.io\"]\n\
             [network]\nmode = \"isolated\"\n",
        );
        let t = describe(
            &open,
            Path::new("p"),
            &caller(),
            &l,
            &RuntimeName::default(),
            false,
        );
        assert!(
            t.contains("Images you may run: debian* (pinned by digest only"),
            "{t}"
        );
        assert!(t.contains("Missing images: pulled from docker.io\n"), "{t}");
        assert!(t.contains("Network: isolated bridge urun-isolated"), "{t}");
        let pushing = policy(
            "[pull]\nmode = \"missing\"\nregistries = [\"r:5000\"]\n[build]\nregistry = \"r:5000\"\n",
        );
        let t = describe(
            &pushing,
            Path::new("p"),
            &caller(),
            &l,
            &RuntimeName::default(),
            false,
        );
        assert!(
            t.contains("Missing images: pulled from r:5000 (under r:5000/urun/ only by digest)\n"),
            "{t}"
        );
        let own = policy("[images]\nallow = [\"r:5000/urun/{user}/*\", \"debian*\"]\n");
        let t = describe(
            &own,
            Path::new("p"),
            &caller(),
            &l,
            &RuntimeName::default(),
            false,
        );
        assert!(
            t.contains(
                "Images you may run: r:5000/urun/{user}/*, debian*, where {user} is alice\n"
            ),
            "{t}"
        );
    }

    #[test]
    fn the_limits_shown_are_the_callers_own() {
        let p = policy("[limits]\nmemory = \"1g\"\n[user.alice.limits]\nmemory = \"2g\"\n");
        let alice = p.effective_limits(1234, Some("alice"), |_| false);
        let bob = p.effective_limits(1235, Some("bob"), |_| false);
        let t = describe(
            &p,
            Path::new("p"),
            &caller(),
            &alice,
            &RuntimeName::default(),
            false,
        );
        assert!(t.contains(&format!("  memory = {}\n", alice.memory)), "{t}");
        assert_ne!(alice.memory, bob.memory);
    }

    #[test]
    fn the_runtime_shown_is_the_callers_own_with_the_image_rules() {
        let p = policy(
            "[[runtime.image]]\nmatch = \"untrusted/*\"\nname = \"runsc\"\n\
             [user.alice.runtime]\nname = \"runsc\"\n",
        );
        let l = p.effective_limits(1234, Some("alice"), |_| false);
        let alice = p.caller_runtime(1234, Some("alice"), |_| false);
        let t = describe(&p, Path::new("p"), &caller(), &l, alice, false);
        assert!(t.contains("Runtime: runsc (a sandbox"), "{t}");
        assert!(t.contains("  images matching untrusted/*: runsc\n"), "{t}");
        let bob = p.caller_runtime(1235, Some("bob"), |_| false);
        let t = describe(&p, Path::new("p"), &caller(), &l, bob, false);
        assert!(t.contains("Runtime: runc (the host's kernel)\n"), "{t}");
    }

    #[test]
    fn the_text_says_whether_the_caller_may_build_and_with_which_limits() {
        let l = policy("").effective_limits(1234, None, |_| false);
        let text = |p: &Policy, in_group| {
            describe(
                p,
                Path::new("p"),
                &caller(),
                &l,
                &RuntimeName::default(),
                in_group,
            )
        };
        let off = policy("");
        assert!(text(&off, true).contains(
            "Building images (urun build): not available here (policy [build] enabled = false)\n"
        ));
        let grouped = policy("[build]\nenabled = true\ngroup = \"builders\"\n");
        assert!(text(&grouped, false).contains(
            "only for members of group builders, which you are not\n  Pushing builds (urun \
             push) needs the same\n"
        ));
        assert!(text(&off, true).contains("  Pushing builds (urun push) needs the same\n"));
        assert!(text(&grouped, true).contains("  Pushing builds (urun push): no registry here\n"));
        let pushing = policy("[build]\nenabled = true\nregistry = \"r:5000\"\n");
        assert!(text(&pushing, true)
            .contains("  Pushing builds (urun push): to r:5000/urun/alice/NAME:TAG\n"));
        let t = text(&grouped, true);
        assert!(t.contains("Building images (urun build): allowed\n"), "{t}");
        assert!(t.contains("  Your images: urun/alice/NAME:TAG"), "{t}");
        assert!(t.contains("  Build engine: the run daemon's\n"), "{t}");
        assert!(t.contains("  Network for RUN steps: none\n"), "{t}");
        assert!(
            t.contains("  max_runtime = 1h (then stopped, exit status 124)\n"),
            "{t}"
        );
        assert!(t.contains("  max_images = 20\n"), "{t}");
        assert!(t.contains("setuid/setgid bits: warning\n"), "{t}");
        let open = policy(
            "[build]\nenabled = true\nnetwork = true\nengine = \"/run/b.sock\"\n\
             namespace = \"site\"\nrun_own = false\n",
        );
        let t = text(&open, false);
        assert!(t.contains("  Your images: site/alice/NAME:TAG"), "{t}");
        assert!(t.contains("  Build engine: /run/b.sock\n"), "{t}");
        assert!(t.contains("default network"), "{t}");
        assert!(t.contains("run_own = false"), "{t}");
    }
}
