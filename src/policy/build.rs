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
    if s.len() <= 255 && host_ok && port_ok && registry_like {
        Ok(Some(s))
    } else {
        Err(err())
    }
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
