//! End-to-end against the real Docker daemon and Debian's `docker-registry` (issue 13's
//! groundwork): the engine's `tag` and `push` operations push to a private registry,
//! anonymously and with htpasswd credentials, and return the digest the registry then
//! serves; credentials whose JSON bollard encodes with a `+` or `/` reach the registry
//! (dockerd 20.10 decodes `X-Registry-Auth` in the URL-safe alphabet, bollard 0.19
//! encodes it in the standard one: pinned below with bollard's own push, which loses
//! them); a registry that is down is one error. Every tag and registry is removed.

mod common;

use common::registry::TestRegistry;
use common::*;
use futures_util::StreamExt;
use serial_test::serial;
use urun::engine::{DockerEngine, Engine, DEFAULT_HOST};
use urun::policy::build::RegistryAuth;
use urun::wire::Progress;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Names the test image `repo:1` (removed on drop) and pushes it through the engine;
/// the digest, or the error's text, and the progress statuses.
fn push(
    repo: &str,
    auth: Option<&RegistryAuth>,
) -> (TestImage, Result<String, String>, Vec<String>) {
    let id = image_id(image());
    let guard = TestImage(format!("{repo}:1"));
    let mut statuses = Vec::new();
    let r = rt().block_on(async {
        let engine = DockerEngine::connect(DEFAULT_HOST).await.unwrap();
        Engine::tag(&engine, &id, repo, "1").await.unwrap();
        Engine::push(
            &engine,
            repo,
            "1",
            auth,
            Box::new(|p: Progress| statuses.push(p.status)),
        )
        .await
        .map_err(|e| format!("{e:#}"))
    });
    (guard, r, statuses)
}

#[test]
#[serial]
fn a_push_returns_the_digest_the_registry_then_serves() {
    let reg = TestRegistry::start();
    let repo = format!("{}/urun-test/push-{}", reg.addr, unique());
    let (_tag, r, statuses) = push(&repo, None);
    let digest = r.unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert!(
        statuses.iter().any(|s| s.contains("digest:")),
        "{statuses:?}"
    );
    let path = repo.split_once('/').unwrap().1;
    assert_eq!(reg.manifest_digest(path, "1"), Some(digest.clone()));
    assert_eq!(reg.manifest_digest(path, &digest), Some(digest));
}

/// A password with which bollard's JSON credentials, in standard base64, have a `+` or
/// a `/` (what dockerd 20.10 cannot decode).
fn awkward_password(user: &str) -> String {
    (0..10_000)
        .map(|n| format!("pw{n}?>~"))
        .find(|p| {
            let json = serde_json::to_string(&bollard::auth::DockerCredentials {
                username: Some(user.into()),
                password: Some(p.clone()),
                ..Default::default()
            })
            .unwrap();
            let b = base64(&json);
            b.contains('/') || b.contains('+')
        })
        .unwrap()
}

use common::registry::base64;

#[test]
#[serial]
fn credentials_reach_the_registry_whatever_their_base64_looks_like() {
    let user = "urund";
    let password = awkward_password(user);
    let reg = TestRegistry::with_credentials(user, &password);
    let auth = RegistryAuth {
        username: user.into(),
        password: password.clone(),
    };
    let repo = format!("{}/urun-test/auth-{}", reg.addr, unique());
    let (_tag, r, _) = push(&repo, Some(&auth));
    let digest = r.unwrap_or_else(|e| panic!("{e}\nregistry log: {}", reg.log()));
    let path = repo.split_once('/').unwrap().1;
    assert_eq!(reg.manifest_digest(path, "1"), Some(digest));

    // bollard's own push with the same credentials: dockerd cannot decode the header
    // and pushes without them (why the engine re-encodes it)
    let repo2 = format!("{}/urun-test/auth-raw-{}", reg.addr, unique());
    let _tag2 = TestImage(format!("{repo2}:1"));
    let raw = rt().block_on(async {
        let docker = bollard::Docker::connect_with_unix_defaults().unwrap();
        docker
            .tag_image(
                &image_id(image()),
                Some(bollard::query_parameters::TagImageOptions {
                    repo: Some(repo2.clone()),
                    tag: Some("1".into()),
                }),
            )
            .await
            .unwrap();
        let creds = bollard::auth::DockerCredentials {
            username: Some(user.into()),
            password: Some(password.clone()),
            ..Default::default()
        };
        let mut s = docker.push_image(
            &repo2,
            Some(bollard::query_parameters::PushImageOptions {
                tag: Some("1".into()),
                platform: None,
            }),
            Some(creds),
        );
        let mut err = None;
        while let Some(ev) = s.next().await {
            if let Err(e) = ev {
                err = Some(e.to_string());
            }
        }
        err
    });
    let raw = raw.expect("bollard's own push succeeded: is the workaround still needed?");
    assert!(raw.contains("no basic auth credentials"), "{raw}");

    // wrong credentials, and none: refused with the registry's reason
    let wrong = RegistryAuth {
        username: user.into(),
        password: "not-it".into(),
    };
    let (_t, r, _) = push(
        &format!("{}/urun-test/wrong-{}", reg.addr, unique()),
        Some(&wrong),
    );
    assert!(r.unwrap_err().contains("unauthorized"));
    let (_t, r, _) = push(&format!("{}/urun-test/anon-{}", reg.addr, unique()), None);
    assert!(r.unwrap_err().contains("no basic auth credentials"));
}

#[test]
#[serial]
fn a_push_to_a_registry_that_is_down_is_one_error() {
    let mut reg = TestRegistry::start();
    reg.stop();
    let repo = format!("{}/urun-test/down-{}", reg.addr, unique());
    let (_tag, r, _) = push(&repo, None);
    let e = r.unwrap_err();
    assert!(e.contains("connection refused"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

/// A policy file (and its root-only credentials file) in a directory of their own,
/// removed on drop; `urund check` against it.
struct CheckPolicy(std::path::PathBuf);

impl Drop for CheckPolicy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl CheckPolicy {
    fn new(build: &str, credentials: Option<&RegistryAuth>) -> CheckPolicy {
        let dir = std::env::temp_dir().join(format!("urun-check-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(
            &dir,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )
        .unwrap();
        let mut text = format!("[build]\n{build}");
        if let Some(a) = credentials {
            let f = dir.join("registry-auth.json");
            let json = serde_json::json!({"username": a.username, "password": a.password});
            write_mode(&f, json.to_string().as_bytes(), 0o600);
            text.push_str(&format!("registry_auth = \"{}\"\n", f.display()));
        }
        write_mode(&dir.join("policy.toml"), text.as_bytes(), 0o644);
        CheckPolicy(dir)
    }

    /// `urund check`'s lines that start with `prefix`.
    fn lines(&self, prefix: &str) -> Vec<String> {
        let o = std::process::Command::new(URUND)
            .args(["check", "--policy"])
            .arg(self.0.join("policy.toml"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        let out = stdout(&o);
        assert!(!out.contains("hunter"), "credentials shown: {out}");
        out.lines()
            .filter(|l| l[5..].starts_with(prefix))
            .map(String::from)
            .collect()
    }
}

#[test]
#[serial]
fn urund_check_reports_the_registry_and_the_build_engine() {
    let auth = RegistryAuth {
        username: "urund".into(),
        password: "hunter2".into(),
    };
    let mut reg = TestRegistry::with_credentials(&auth.username, &auth.password);
    let a = reg.addr.clone();
    let p = CheckPolicy::new(
        &format!("enabled = true\nregistry = \"{a}\"\n"),
        Some(&auth),
    );
    let lines = p.lines("build engine").join("\n");
    assert!(
        lines.starts_with("WARN build engine: the run daemon, without userns-remap"),
        "{lines}"
    );
    assert_eq!(
        p.lines("registry"),
        [
            format!("OK   registry: {a}: reachable, plain HTTP on loopback (GET /v2/: 401)"),
            "OK   registry credentials: set, in a file only root can read (never shown to users)"
                .to_string(),
        ]
    );
    // no credentials for a registry that wants them
    let p = CheckPolicy::new(&format!("registry = \"{a}\"\n"), None);
    assert!(p.lines("build engine").is_empty(), "builds off: no line");
    let lines = p.lines("registry credentials");
    assert!(
        lines[0].starts_with("WARN registry credentials:"),
        "{lines:?}"
    );
    // credentials others can read
    let p = CheckPolicy::new(&format!("registry = \"{a}\"\n"), Some(&auth));
    std::fs::set_permissions(
        p.0.join("registry-auth.json"),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .unwrap();
    let lines = p.lines("registry credentials");
    assert!(
        lines[0].starts_with("WARN") && lines[0].contains("chmod 600"),
        "{lines:?}"
    );
    // a TLS registry
    let tls = TestRegistry::with_tls();
    let p_tls = CheckPolicy::new(&format!("registry = \"{}\"\n", tls.addr), None);
    assert_eq!(
        p_tls.lines("registry:"),
        [format!("OK   registry: {}: reachable, TLS", tls.addr)]
    );
    // the registry down
    reg.stop();
    let lines = p.lines("registry:");
    assert!(
        lines[0].starts_with(&format!("WARN registry: {a}: not reachable")),
        "{lines:?}"
    );
}

#[test]
#[serial]
fn urund_check_sees_userns_remap_on_a_dedicated_build_engine() {
    let _dockremap = common::engine::Dockremap::note(); // dropped last, after the engine
    let engine = common::engine::ExtraEngine::start(common::engine::EngineConfig {
        userns_remap: Some("default".into()),
        ..Default::default()
    });
    let p = CheckPolicy::new(
        &format!(
            "enabled = true\nengine = \"{}\"\n",
            engine.socket().display()
        ),
        None,
    );
    let lines = p.lines("build engine");
    assert_eq!(
        lines,
        [format!(
            "OK   build engine: unix://{}, with userns-remap (RUN steps run as a subordinate uid)",
            engine.socket().display()
        )]
    );
}
