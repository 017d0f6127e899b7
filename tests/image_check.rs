//! End-to-end against the real Docker daemon (docker 20.10, legacy builder): the image
//! check (`urun::policy::imagecheck`) reads `docker save` of images the daemon built
//! as the daemon sees them: the setuid/setgid files a build's layers added and that
//! are still there (a later `RUN chmod u-s`/`rm` hides them, through the daemon's own
//! whiteouts), the config's user and environment, the final `/etc/passwd`; and the
//! user it calls root is the user the daemon starts a container as (names resolved
//! through the image's passwd as the daemon resolves them, truncation to 32 bits
//! included). Every image is removed on drop.

mod common;

use common::*;
use serial_test::serial;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use urun::policy::dockerfile::Severity;
use urun::policy::imagecheck::{check, exec_user, scan, ExecUser, IdFile, Scan};

/// `docker save` of `image` (the Engine API's `GET /images/{name}/get`), scanned as
/// it streams.
fn save_and_scan(image: &str, base_layers: usize) -> Scan {
    let mut child = Command::new("docker")
        .args(["save", image])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker save");
    let out = scan(child.stdout.take().unwrap(), base_layers);
    assert!(child.wait().unwrap().success());
    out.unwrap_or_else(|e| panic!("{image}: {e}"))
}

fn layers(image: &str) -> usize {
    let o = sh(
        "docker",
        &["image", "inspect", "-f", "{{len .RootFS.Layers}}", image],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().parse().unwrap()
}

fn file(dir: &Path, name: &str, data: &[u8], mode: u32) {
    let p = dir.join(name);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
#[serial]
fn the_setuid_files_a_build_left_in_the_image_are_found_through_the_daemons_layers() {
    let base = image();
    let base_layers = layers(base);
    let img = TestImage::build(
        &format!("urun-test/imagecheck-{}:1", unique()),
        &format!(
            "FROM {base}\n\
             COPY bin/ /opt/bin/\n\
             RUN chmod u+s /opt/bin/tool /opt/bin/tamed /opt/bin/gone && chmod g+s /opt/bin/sgid\n\
             RUN chmod u-s /opt/bin/tamed && rm /opt/bin/gone\n\
             ENV API_TOKEN=supersecret DB_PASSWORD=hunter2 PLAIN=1\n\
             USER 1000:1000\n"
        ),
        |d| {
            // COPY from the context drops set-id bits (seen on docker 20.10): the
            // build sets them in a RUN step
            file(d, "bin/tool", b"#!/bin/sh\n", 0o755);
            file(d, "bin/sgid", b"#!/bin/sh\n", 0o755);
            file(d, "bin/tamed", b"#!/bin/sh\n", 0o755);
            file(d, "bin/gone", b"#!/bin/sh\n", 0o755);
            file(d, "bin/plain", b"#!/bin/sh\n", 0o755);
        },
    );
    let s = save_and_scan(&img.0, base_layers);
    assert_eq!(s.image_id, image_id(&img.0));
    assert_eq!((s.layers, s.base_layers), (base_layers + 3, base_layers));
    assert_eq!(s.user, "1000:1000");
    let mut special: Vec<(String, String, u32)> = s
        .special
        .iter()
        .map(|f| (f.path.clone(), f.what(), f.mode))
        .collect();
    special.sort();
    assert_eq!(
        special,
        [
            ("/opt/bin/sgid".to_string(), "setgid".to_string(), 0o2755),
            ("/opt/bin/tool".to_string(), "setuid".to_string(), 0o4755),
        ]
    );
    assert!(
        matches!(&s.passwd, IdFile::File(t) if t.starts_with(b"root:x:0:0:")),
        "{:?}",
        s.passwd
    );
    assert!(matches!(s.group, IdFile::File(_)));

    let findings = check(&s, Severity::Error);
    let ids: Vec<&str> = findings.iter().map(|f| f.rule.id()).collect();
    assert_eq!(ids, ["image.setuid", "image.secret-env"], "{findings:?}");
    assert_eq!(findings[0].severity, Severity::Error);
    let secret = &findings[1].message;
    assert!(secret.contains("API_TOKEN") && secret.contains("DB_PASSWORD"));
    assert!(
        !secret.contains("supersecret") && !secret.contains("hunter2") && !secret.contains("PLAIN")
    );
}

#[test]
#[serial]
fn a_setuid_file_in_an_image_from_scratch_is_the_builds() {
    // COPY from the context drops set-id bits; COPY --from an image keeps them
    let stage = TestImage::build(
        &format!("urun-test/imagecheck-{}:stage", unique()),
        &format!("FROM {}\nCOPY tool /tool\nRUN chmod 4711 /tool\n", image()),
        |d| file(d, "tool", b"x", 0o755),
    );
    let img = TestImage::build(
        &format!("urun-test/imagecheck-{}:1", unique()),
        &format!(
            "FROM scratch\nCOPY --from={} /tool /tool\nUSER 4242\n",
            stage.0
        ),
        |_| {},
    );
    let s = save_and_scan(&img.0, 0);
    assert_eq!(s.layers, 1);
    assert_eq!(s.passwd, IdFile::Absent);
    let paths: Vec<&str> = s.special.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["/tool"]);
    let f = check(&s, Severity::Warning);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].rule.id(), f[0].severity),
        ("image.setuid", Severity::Warning)
    );
}

/// The uid the daemon starts a container as, for `--user user`.
fn started_as(image: &str, user: &str) -> String {
    let o = sh(
        "docker",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            user,
            image,
            "id",
            "-u",
        ],
    );
    assert!(o.status.success(), "{user}: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

#[test]
#[serial]
fn the_user_the_check_calls_root_is_the_user_the_daemon_starts_the_container_as() {
    let base = image();
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n\
                   wrap:x:4294967296:100::/:/bin/sh\n\
                   ghost\n\
                   \x20 padded:x:0:0::/:/bin/sh\n\
                   app:x:1000:1000::/:/bin/sh\n\
                   twice:x:1001:1001::/:/bin/sh\n\
                   twice:x:0:0::/:/bin/sh\n";
    let img = TestImage::build(
        &format!("urun-test/imagecheck-{}:1", unique()),
        &format!("FROM {base}\nCOPY passwd /etc/passwd\nUSER wrap\n"),
        |d| file(d, "passwd", passwd, 0o644),
    );
    let s = save_and_scan(&img.0, layers(base));
    assert_eq!(s.passwd, IdFile::File(passwd.to_vec()));
    let f = check(&s, Severity::Warning);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule.id(), "image.user-root");
    assert!(f[0].message.contains("\"wrap\""), "{}", f[0]);
    for user in ["wrap", "ghost", "padded", "app", "twice", "1000"] {
        let ExecUser::Uid(uid) = exec_user(user, &s.passwd) else {
            panic!("{user} unresolved")
        };
        assert_eq!(uid.to_string(), started_as(&img.0, user), "{user}");
    }
    // a name the file does not have: the daemon cannot start it, the check refuses
    assert!(matches!(
        exec_user("nobody-here", &s.passwd),
        ExecUser::Unresolved(_)
    ));
    let o = sh(
        "docker",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "nobody-here",
            &img.0,
            "true",
        ],
    );
    assert!(!o.status.success());
}
