//! `[build]`: whether and how members may build images with `urun build`, and where
//! the results go. Pure: the model, its defaults and its validation.
//!
//! ```toml
//! [build]
//! enabled = true                       # off unless the administrator turns it on
//! engine = "/run/urun-build/docker.sock"  # a dedicated dockerd with userns-remap
//! group = "builders"                   # only members of this group may build
//! namespace = "urun"                   # every tag becomes urun/<user>/<name>:<tag>
//! network = false                      # RUN steps get no network
//! memory = "2g"
//! cpus = 1.0
//! max_runtime = "1h"
//! max_concurrent = 1                   # builds one user may have at once
//! max_context = "256m"                 # enforced by urund while it reads the context
//! max_images = 20                      # own images one user may keep
//! max_image_size = "4g"                # largest built image kept
//! allow_root_engine = false            # refuse builds on the run daemon / without userns-remap
//! run_own = true                       # a user may run their own builds
//! setuid = "warning"                   # setuid/setgid files added by the build
//! registry = "127.0.0.1:5000"          # `urun push` target (host[:port])
//! registry_auth = "/etc/urun/registry-auth.json"  # root-only credentials file
//!
//! [build.rules]                        # severity per Dockerfile rule id
//! "healthcheck.missing" = "off"
//! ```
#![forbid(unsafe_code)]

use crate::policy::dockerfile::{validate_override, Rule, Severity};
use crate::policy::model::{AbsPath, Count, Cpus, GroupName};
use crate::policy::units::{Bytes, Seconds};
use serde::{de, Deserialize, Deserializer};
use std::collections::BTreeMap;

/// Labels urund sets on every image it builds; a user cannot set or spoof them (a
/// `--label` or `LABEL` with the `io.urun.` prefix is refused or overwritten, and the
/// image is only trusted on the engine that built it).
pub const LABEL_UID: &str = "io.urun.build.uid";
pub const LABEL_USER: &str = "io.urun.build.user";
pub const LABEL_DOCKERFILE: &str = "io.urun.build.dockerfile";
pub const LABEL_CONTEXT: &str = "io.urun.build.context";
pub const LABEL_CHECKS: &str = "io.urun.build.checks";
/// The prefix no user label may carry.
pub const RESERVED_LABEL_PREFIX: &str = "io.urun.";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Build {
    /// `urun build` is refused unless true.
    pub enabled: bool,
    /// The Docker socket of the build engine; none means the run daemon's.
    pub engine: Option<AbsPath>,
    /// If set, only members of this group may build.
    pub group: Option<GroupName>,
    /// First component of every built image's repository.
    pub namespace: Namespace,
    /// Whether `RUN` steps (and `ADD` of URLs) get a network.
    pub network: bool,
    pub memory: Bytes,
    pub cpus: Cpus,
    /// Wall-clock time a build may take; then it is stopped (exit 124).
    pub max_runtime: Seconds,
    /// Builds one user may have at once; the next is refused.
    pub max_concurrent: Count,
    /// Largest build context (the tar stream), counted by urund as it reads.
    pub max_context: Bytes,
    /// Own images one user may keep; a build past it is refused.
    pub max_images: Count,
    /// Largest built image kept (all its layers, uncompressed); a bigger one is
    /// refused and removed like an image that fails a check.
    pub max_image_size: Bytes,
    /// Build on an engine that is the run daemon or lacks `userns-remap` (a `RUN`
    /// step's root is then the host's root, confined only by the container). Off:
    /// such builds are refused.
    pub allow_root_engine: bool,
    /// A user may run their own builds without an `images.allow` entry.
    pub run_own: bool,
    /// Severity of setuid/setgid files the build's layers add (`off`, `warning`,
    /// `error`).
    pub setuid: PolicySeverity,
    /// `[build.rules]`: severity per Dockerfile rule id (the fixed rules cannot be
    /// lowered).
    pub rules: RuleSeverities,
    /// Registry `urun push` promotes to (`host[:port]`; see [`registry_host`]).
    #[serde(deserialize_with = "registry_host")]
    pub registry: Option<String>,
    /// Root-only JSON file with the registry's credentials (`{"username": …,
    /// "password": …}`); read by urund only.
    pub registry_auth: Option<AbsPath>,
}

impl Default for Build {
    fn default() -> Self {
        Build {
            enabled: false,
            engine: None,
            group: None,
            namespace: Namespace("urun".into()),
            network: false,
            memory: Bytes(2 << 30),
            cpus: Cpus(1.0),
            max_runtime: Seconds(3600),
            max_concurrent: Count(1),
            max_context: Bytes(256 << 20),
            max_images: Count(20),
            max_image_size: Bytes(4 << 30),
            allow_root_engine: false,
            run_own: true,
            setuid: PolicySeverity(Severity::Warning),
            rules: RuleSeverities::default(),
            registry: None,
            registry_auth: None,
        }
    }
}

impl Build {
    /// The repository a user's image `name` lands in: `<namespace>/<user>/<name>`.
    pub fn repository(&self, user: &str, name: &str) -> String {
        format!("{}/{}/{}", self.namespace.0, user, name)
    }

    /// The repository prefix of all of `user`'s builds: `<namespace>/<user>/`.
    pub fn user_prefix(&self, user: &str) -> String {
        format!("{}/{}/", self.namespace.0, user)
    }

    /// The names `urun push` gives images on the run engine, as a prefix:
    /// `<registry>/<namespace>/`. A push tags the build `<registry>/<its tag>` (Docker
    /// pushes a local name to the registry it names, under the same path and tag), so
    /// these names cannot carry a mark of their own; instead the space is reserved:
    /// urund never pulls a tag into it (only digests, which make no tag), so a tag there
    /// is a push's, and urund's start removes those a push left
    /// ([`crate::policy::judge::in_push_space`]). `None` without a registry.
    pub fn push_prefix(&self) -> Option<String> {
        self.registry
            .as_ref()
            .map(|r| format!("{r}/{}/", self.namespace.0))
    }
}

/// Registry credentials, from the file `[build] registry_auth` names:
/// `{"username": "…", "password": "…"}`. Read by urund only, handed to the engine for
/// a push; never shown to a user, logged or audited (`Debug` hides the password, and
/// no parse error quotes the file).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Largest credentials file read.
pub const MAX_REGISTRY_AUTH: usize = 64 << 10;

impl RegistryAuth {
    /// Parses the file's text. Errors name the position, never the content.
    pub fn parse(text: &str) -> Result<RegistryAuth, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            username: String,
            password: String,
        }
        if text.len() > MAX_REGISTRY_AUTH {
            return Err("larger than 64 KiB".into());
        }
        // a derived struct would also take a JSON array: only an object
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| {
                format!(
                    "line {} column {}: not a JSON object {{\"username\": \"…\", \"password\": \"…\"}}",
                    e.line(),
                    e.column()
                )
            })?;
        let f: File = serde_json::from_value(serde_json::Value::Object(object)).map_err(|_| {
            "it must have exactly the keys \"username\" and \"password\", both strings".to_string()
        })?;
        let printable = |s: &str| !s.is_empty() && !s.chars().any(char::is_control);
        if !printable(&f.username) || f.username.contains(':') {
            return Err("the username is empty, or has a ':' or a control character".into());
        }
        if !printable(&f.password) {
            return Err("the password is empty or has a control character".into());
        }
        Ok(RegistryAuth {
            username: f.username,
            password: f.password,
        })
    }
}

/// `build.registry`: a registry address as Docker's reference grammar reads the first
/// component of a name: `host[:port]` (letters, digits, `-` inside `.`-separated
/// labels, or `[IPv6]`), and one Docker takes for a registry: with a `.` or a `:`, or
/// `localhost`. Anything else would make `<it>/urun/alice/app` a Docker Hub
/// repository, and `urun push` would go there.
fn registry_host<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let err = || {
        de::Error::custom(format!(
            "invalid registry {s:?}: host[:port] (no scheme, no path), with a `.` or a port \
             (or localhost) so that Docker does not take it for a Docker Hub name"
        ))
    };
    let (host, port, ip6) = match s.strip_prefix('[') {
        Some(rest) => {
            let (ip6, after) = rest.split_once(']').ok_or_else(err)?;
            let port = match after {
                "" => None,
                a => Some(a.strip_prefix(':').ok_or_else(err)?),
            };
            (ip6, port, true)
        }
        None => match s.split_once(':') {
            Some((h, p)) => (h, Some(p), false),
            None => (s.as_str(), None, false),
        },
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let host_ok = match ip6 {
        true => !host.is_empty() && host.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
        false => host.split('.').all(label),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let registry_like = ip6 || host.contains('.') || port.is_some() || host == "localhost";
    if !(s.len() <= 255 && host_ok && port_ok && registry_like) {
        return Err(err());
    }
    if public_registry(host) {
        return Err(de::Error::custom(format!(
            "registry {s:?} is a public registry: urun push promotes members' builds there \
             under urund's credentials; name the site's own private registry \
             (host[:port], e.g. registry.example.org:5000) or leave [build] registry unset"
        )));
    }
    Ok(Some(s))
}

/// Well-known public registries (hosts, and the domains whose every host is one):
/// never a `[build] registry`, which is for promotion to a site's private registry.
const PUBLIC_REGISTRIES: [&str; 13] = [
    "docker.io",
    "docker.com",
    "ghcr.io",
    "docker.pkg.github.com",
    "quay.io",
    "gcr.io",
    "registry.k8s.io",
    "k8s.gcr.io",
    "registry.gitlab.com",
    "public.ecr.aws",
    "mcr.microsoft.com",
    "nvcr.io",
    "registry.fedoraproject.org",
];

/// Whether `host` (no port) is one of [`PUBLIC_REGISTRIES`] or a host under one
/// (`index.docker.io`, `registry-1.docker.io`, `eu.gcr.io`), whatever its case.
fn public_registry(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    PUBLIC_REGISTRIES
        .iter()
        .any(|p| host == *p || host.strip_suffix(p).is_some_and(|sub| sub.ends_with('.')))
}

/// `build.namespace`: one or more lowercase repository path components (`a-z0-9`,
/// separators `.`, `_`, `__`, `-` inside a component), as Docker's reference grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace(pub String);

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !s.is_empty() && s.len() <= 64 && s.split('/').all(path_component) {
            Ok(Namespace(s))
        } else {
            Err(de::Error::custom(format!(
                "invalid namespace {s:?}: lowercase letters, digits and . _ - inside \
                 /-separated components"
            )))
        }
    }
}

/// A repository path component: `[a-z0-9]+` joined by `.`, `_`, `__` or `-`+.
pub fn path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(&b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// A severity as the policy writes it: `"off"`, `"warning"` or `"error"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySeverity(pub Severity);

impl<'de> Deserialize<'de> for PolicySeverity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Severity::from_name(&s).map(PolicySeverity).ok_or_else(|| {
            de::Error::custom(format!(
                "invalid severity {s:?}: \"off\", \"warning\" or \"error\""
            ))
        })
    }
}

/// `[build.rules]`: rule id → severity, validated when the policy is read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleSeverities(pub BTreeMap<Rule, Severity>);

impl<'de> Deserialize<'de> for RuleSeverities {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, PolicySeverity>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (id, PolicySeverity(sev)) in raw {
            let rule = Rule::from_id(&id)
                .ok_or_else(|| de::Error::custom(format!("unknown Dockerfile rule {id:?}")))?;
            validate_override(rule, sev).map_err(de::Error::custom)?;
            out.insert(rule, sev);
        }
        Ok(RuleSeverities(out))
    }
}

/// The repository component that stands for `caller` in the build namespace: their
/// user name when it is a valid repository path component and not all digits, else
/// their uid in decimal (a name from the user database is not trusted to be one).
/// A component of digits only is therefore always its owner's uid and nobody's name,
/// so two users never share one (review S2: `uid<N>` was also a possible user name,
/// whose builds could take the other's tags). Pure.
pub fn namespace_user(caller: &crate::policy::Caller) -> String {
    match &caller.name {
        Some(n) if n.len() <= 64 && path_component(n) && !n.bytes().all(|b| b.is_ascii_digit()) => {
            n.clone()
        }
        _ => caller.uid.to_string(),
    }
}

/// An image ID as urund uses them: `sha256:` and 64 lowercase hex digits. Pure.
pub fn is_image_id(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Longest repository name Docker accepts.
const MAX_REPOSITORY: usize = 255;

/// One `-t NAME[:TAG]` as the user typed it → `(repository, tag)` in their namespace.
/// `NAME` is one or more path components (no registry host: the namespace is urund's),
/// `TAG` Docker's tag grammar (default `latest`). Pure.
pub fn namespaced_tag(build: &Build, user: &str, typed: &str) -> Result<(String, String), String> {
    let (name, tag) = match typed.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (typed, "latest"),
    };
    if name.is_empty() || !name.split('/').all(path_component) {
        return Err(format!(
            "tag {typed:?}: the name must be lowercase letters, digits and . _ - in \
             /-separated components (it goes under {})",
            build.user_prefix(user)
        ));
    }
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
        });
    if !tag_ok {
        return Err(format!(
            "tag {typed:?}: the tag must be letters, digits, _ . - (not first), at most 128"
        ));
    }
    let repo = build.repository(user, name);
    if repo.len() > MAX_REPOSITORY {
        return Err(format!(
            "tag {typed:?}: {repo} is longer than {MAX_REPOSITORY} characters"
        ));
    }
    Ok((repo, tag.to_string()))
}

/// What urund knows before admitting a build.
#[derive(Debug, Clone, Default)]
pub struct BuildFacts {
    /// gid of `access.group`.
    pub access_gid: u32,
    /// gid of `[build] group`, if set and it exists (`None` with a group set: nobody).
    pub build_gid: Option<u32>,
    /// The caller's builds in progress.
    pub running: u32,
    /// The build engine is the run daemon or has no `userns-remap` (urund asks it at
    /// start).
    pub root_engine: bool,
    /// The caller's own images on record.
    pub images: usize,
}

/// An admitted build: every term urund carries out.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildAdmission {
    /// The caller's component of the namespace.
    pub user: String,
    /// `(repository, tag)` for each `-t`, in order, without duplicates.
    pub tags: Vec<(String, String)>,
}

/// Whether `caller` may build now: `[build] enabled`, `access.*`, membership of
/// `[build] group` if set (`build_gid`: its gid, `None` when it does not exist). `urun
/// build` and `urun push` ask it alike, with the same refusals: a member taken out of
/// the build group, or a host where building was turned off, promotes nothing either.
/// Pure.
pub fn may_build(
    caller: &crate::policy::Caller,
    policy: &crate::policy::Policy,
    access_gid: u32,
    build_gid: Option<u32>,
) -> Result<(), crate::policy::rule::Refusal> {
    use crate::policy::rule::{refuse, Rule};
    let b = &policy.build;
    if !b.enabled {
        return refuse(
            Rule::BuildEnabled,
            "building images is not enabled here (policy [build] enabled = false); ask your \
             administrator",
        );
    }
    crate::policy::judge::judge_access(caller, policy, access_gid)?;
    if let Some(g) = &b.group {
        if !build_gid.is_some_and(|gid| caller.in_group(gid)) {
            return refuse(
                Rule::BuildGroup,
                format!(
                    "you ({} uid {}) are not a member of group {:?}, the only one that may \
                     build (policy [build] group)",
                    caller.display_name(),
                    caller.uid,
                    g.0
                ),
            );
        }
    }
    Ok(())
}

/// May `caller` build at all ([`may_build`]), and with these tags and labels: the
/// engine (`allow_root_engine`), `max_concurrent`, `max_images`, the tags' and labels'
/// shape. The first refusal. Pure.
pub fn admit_build(
    caller: &crate::policy::Caller,
    policy: &crate::policy::Policy,
    req: &crate::wire::BuildRequest,
    facts: &BuildFacts,
) -> Result<BuildAdmission, crate::policy::rule::Refusal> {
    use crate::policy::rule::{refuse, Rule};
    let b = &policy.build;
    may_build(caller, policy, facts.access_gid, facts.build_gid)?;
    if facts.root_engine && !b.allow_root_engine {
        return refuse(
            Rule::BuildEngine,
            "building is refused here: the build engine is the run daemon or has no \
             userns-remap, so a RUN step would run as the host's root (policy [build] engine, \
             allow_root_engine); ask your administrator",
        );
    }
    if facts.running >= b.max_concurrent.0 {
        return refuse(
            Rule::BuildMaxConcurrent,
            format!(
                "you already have {} build(s) in progress, the most allowed (policy [build] \
                 max_concurrent = {})",
                facts.running, b.max_concurrent.0
            ),
        );
    }
    if facts.images >= b.max_images.0 as usize {
        return refuse(
            Rule::BuildMaxImages,
            format!(
                "you keep {} built images, the most allowed (policy [build] max_images = {}); \
                 remove some with urun rmi",
                facts.images, b.max_images.0
            ),
        );
    }
    let user = namespace_user(caller);
    let mut tags = Vec::new();
    for t in &req.tags {
        let nt = namespaced_tag(b, &user, t).map_err(|m| {
            crate::policy::rule::Refusal::new(Rule::BuildTags, format!("{m} (build.tags)"))
        })?;
        if !tags.contains(&nt) {
            tags.push(nt);
        }
    }
    if let Some(k) = req.labels.keys().find(|k| {
        k.starts_with(RESERVED_LABEL_PREFIX) || k.is_empty() || k.contains(char::is_control)
    }) {
        return refuse(
            Rule::BuildTags,
            format!(
                "--label {k:?}: keys under {RESERVED_LABEL_PREFIX} are urund's own (build.tags)"
            ),
        );
    }
    Ok(BuildAdmission { user, tags })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::Policy;
    use std::path::Path;

    fn parse(t: &str) -> Result<Policy, String> {
        Policy::parse(t, Path::new("/p")).map_err(|e| e.to_string())
    }

    #[test]
    fn building_is_off_unless_the_policy_turns_it_on() {
        let p = parse("").unwrap();
        assert!(!p.build.enabled);
        assert_eq!(p.build.namespace.0, "urun");
        let p = parse("[build]\nenabled = true\nnamespace = \"site/builds\"\n").unwrap();
        assert!(p.build.enabled);
        assert_eq!(p.build.repository("alice", "app"), "site/builds/alice/app");
    }

    #[test]
    fn a_seed_rule_cannot_be_turned_off_and_unknown_rules_are_named() {
        let e = parse("[build.rules]\n\"user.root\" = \"off\"\n").unwrap_err();
        assert!(e.contains("user.root") && e.contains("build.rules"), "{e}");
        let e = parse("[build.rules]\n\"user.missing\" = \"warning\"\n").unwrap_err();
        assert!(e.contains("user.missing"), "{e}");
        let e = parse("[build.rules]\n\"no.such\" = \"off\"\n").unwrap_err();
        assert!(e.contains("no.such"), "{e}");
        let p = parse("[build.rules]\n\"healthcheck.missing\" = \"off\"\n").unwrap();
        assert_eq!(
            p.build.rules.0.get(&Rule::HealthcheckMissing),
            Some(&Severity::Off)
        );
    }

    fn caller() -> crate::policy::Caller {
        let mut c = crate::policy::Caller::example();
        c.groups = vec![100];
        c
    }

    fn req(tags: &[&str]) -> crate::wire::BuildRequest {
        crate::wire::BuildRequest {
            version: crate::wire::VERSION,
            dockerfile: "Dockerfile".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    fn facts() -> BuildFacts {
        BuildFacts {
            access_gid: 100,
            build_gid: Some(200),
            running: 0,
            root_engine: false,
            images: 0,
        }
    }

    #[test]
    fn each_build_rule_refuses_with_its_own_id() {
        use crate::policy::rule::Rule;
        let on = parse("[build]\nenabled = true\n").unwrap();
        let c = caller();
        let ok = admit_build(&c, &on, &req(&["app:1", "app"]), &facts()).unwrap();
        let u = namespace_user(&c);
        assert_eq!(
            ok.tags,
            vec![
                (format!("urun/{u}/app"), "1".to_string()),
                (format!("urun/{u}/app"), "latest".to_string())
            ]
        );
        let grouped = parse("[build]\nenabled = true\ngroup = \"builders\"\n").unwrap();
        let mut in_group = c.clone();
        in_group.groups.push(200);
        assert!(admit_build(&in_group, &grouped, &req(&[]), &facts()).is_ok());
        let mut labelled = req(&[]);
        labelled
            .labels
            .insert("io.urun.build.uid".into(), "0".into());
        let root = BuildFacts {
            root_engine: true,
            ..facts()
        };
        let allowed = parse("[build]\nenabled = true\nallow_root_engine = true\n").unwrap();
        assert!(admit_build(&c, &allowed, &req(&[]), &root).is_ok());
        let cases = [
            (
                Rule::BuildEnabled,
                admit_build(&c, &parse("").unwrap(), &req(&[]), &facts()),
            ),
            (Rule::BuildEngine, admit_build(&c, &on, &req(&[]), &root)),
            (
                Rule::AccessGroup,
                admit_build(
                    &c,
                    &on,
                    &req(&[]),
                    &BuildFacts {
                        access_gid: 9,
                        ..facts()
                    },
                ),
            ),
            (
                Rule::BuildGroup,
                admit_build(&c, &grouped, &req(&[]), &facts()),
            ),
            (
                Rule::BuildMaxConcurrent,
                admit_build(
                    &c,
                    &on,
                    &req(&[]),
                    &BuildFacts {
                        running: 1,
                        ..facts()
                    },
                ),
            ),
            (
                Rule::BuildMaxImages,
                admit_build(
                    &c,
                    &on,
                    &req(&[]),
                    &BuildFacts {
                        images: 20,
                        ..facts()
                    },
                ),
            ),
            (
                Rule::BuildTags,
                admit_build(&c, &on, &req(&["Up:1"]), &facts()),
            ),
            (
                Rule::BuildTags,
                admit_build(&c, &on, &req(&["reg.example:5000/x:1"]), &facts()),
            ),
            (
                Rule::BuildTags,
                admit_build(&c, &on, &req(&["a:-x"]), &facts()),
            ),
            (Rule::BuildTags, admit_build(&c, &on, &labelled, &facts())),
        ];
        for (want, got) in cases {
            let r = got.expect_err(want.id());
            assert_eq!(r.rule, want, "{}", r.message);
            assert!(!r.message.contains('\n'));
        }
    }

    /// `urun push` asks the same question as `urun build`, with the same answers.
    #[test]
    fn may_build_is_the_builds_own_first_refusals() {
        use crate::policy::rule::Rule;
        let c = caller();
        let grouped = parse("[build]\nenabled = true\ngroup = \"builders\"\n").unwrap();
        let mut member = c.clone();
        member.groups.push(200);
        assert_eq!(may_build(&member, &grouped, 100, Some(200)), Ok(()));
        for (policy, who, access, gid, want) in [
            ("", &member, 100, Some(200), Rule::BuildEnabled),
            (
                "[build]\nenabled = true\n",
                &member,
                9,
                Some(200),
                Rule::AccessGroup,
            ),
            (
                "[build]\nenabled = true\ngroup = \"builders\"\n",
                &c,
                100,
                Some(200),
                Rule::BuildGroup,
            ),
            // a build group that does not exist: nobody
            (
                "[build]\nenabled = true\ngroup = \"builders\"\n",
                &member,
                100,
                None,
                Rule::BuildGroup,
            ),
        ] {
            let p = parse(policy).unwrap();
            let r = may_build(who, &p, access, gid).unwrap_err();
            assert_eq!(r.rule, want, "{policy}");
            let built = admit_build(
                who,
                &p,
                &req(&[]),
                &BuildFacts {
                    access_gid: access,
                    build_gid: gid,
                    ..facts()
                },
            )
            .unwrap_err();
            assert_eq!(built, r, "the same line and rule as urun build");
        }
    }

    #[test]
    fn an_odd_user_name_becomes_the_uid_in_the_namespace() {
        let mut c = caller();
        c.name = Some("Alice".into());
        assert_eq!(namespace_user(&c), c.uid.to_string());
        c.name = None;
        assert_eq!(namespace_user(&c), c.uid.to_string());
        c.name = Some("bob".into());
        assert_eq!(namespace_user(&c), "bob");
    }

    /// Review S2: a user named like another's fallback (`uid1001`, or now `1001`) must
    /// not share that user's namespace.
    #[test]
    fn s2_no_user_name_can_be_another_users_namespace() {
        let mut odd = caller();
        odd.uid = 1001;
        odd.name = Some("Odd$".into());
        let mut named = caller();
        named.uid = 2000;
        for name in ["1001", "uid1001", "01001"] {
            named.name = Some(name.into());
            assert_ne!(namespace_user(&named), namespace_user(&odd), "{name}");
        }
        named.name = Some("1001".into());
        assert_eq!(namespace_user(&named), "2000");
    }

    #[test]
    fn registry_credentials_parse_strictly_and_never_show_the_password() {
        let a = RegistryAuth::parse(r#"{"username": "urund", "password": "s3cr/t+"}"#).unwrap();
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("urund", "s3cr/t+")
        );
        assert!(!format!("{a:?}").contains("s3cr"));
        for bad in [
            r#"{"username": "u", "password": "hunter2", "extra": 1}"#,
            r#"{"username": "u:x", "password": "hunter2"}"#,
            r#"{"username": "", "password": "hunter2"}"#,
            r#"{"username": "u", "password": ""}"#,
            r#"{"username": "u", "password": "hunter2\n"}"#,
            r#"{"username": "u", "password": hunter2}"#,
            r#"["u", "hunter2"]"#,
            "username=u\npassword=hunter2\n",
        ] {
            let e = RegistryAuth::parse(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_registry_is_a_host_and_port_docker_takes_for_a_registry() {
        for good in [
            "127.0.0.1:5000",
            "registry.example.org",
            "registry.example.org:443",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "reg-1.site:5000",
        ] {
            let p = parse(&format!("[build]\nregistry = {good:?}\n"));
            assert_eq!(p.unwrap().build.registry.as_deref(), Some(good));
        }
        for bad in [
            "",
            "myregistry",
            "https://registry.example.org",
            "registry.example.org/path",
            "registry.example.org:",
            "registry.example.org:port",
            "-a.b",
            "a..b",
            "[::1",
            "reg istry.org",
        ] {
            let e = parse(&format!("[build]\nregistry = {bad:?}\n")).unwrap_err();
            assert!(e.contains("invalid registry"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_public_registry_is_refused_with_one_line_saying_why() {
        for public in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "registry.hub.docker.com",
            "Docker.IO",
            "docker.io:443",
            "ghcr.io",
            "quay.io",
            "gcr.io",
            "eu.gcr.io",
            "registry.gitlab.com",
            "public.ecr.aws",
        ] {
            let e = parse(&format!("[build]\nregistry = {public:?}\n")).unwrap_err();
            assert!(e.contains("is a public registry"), "{public}: {e}");
            assert!(e.contains("private registry"), "{public}: {e}");
            assert!(!e.contains("invalid registry"), "{public}: {e}");
        }
        // names that only look alike are private registries like any other
        for private in [
            "mydocker.io",
            "docker.io.example.org",
            "registry.gitlab.example.com:5050",
            "quay.example.org",
            "ecr.aws.example.org",
        ] {
            let p = parse(&format!("[build]\nregistry = {private:?}\n"));
            assert_eq!(p.unwrap().build.registry.as_deref(), Some(private));
        }
    }

    #[test]
    fn a_namespace_must_be_a_valid_repository_path() {
        for bad in ["", "Urun", "a//b", "-a", "a-", "a..b", "a/", "a b"] {
            assert!(
                parse(&format!("[build]\nnamespace = {bad:?}\n")).is_err(),
                "{bad:?}"
            );
        }
        for good in ["urun", "a.b", "a__b", "a--b/c_d", "x9"] {
            assert!(
                parse(&format!("[build]\nnamespace = {good:?}\n")).is_ok(),
                "{good:?}"
            );
        }
    }
}
