//! A private registry for tests: Debian's `docker-registry` (distribution 2.8,
//! installed by tests/setup.sh) on a free loopback port, with its own temporary
//! storage directory and config file, optionally with htpasswd (bcrypt) credentials.
//! Docker treats 127.0.0.0/8 as an insecure registry by default, so plain HTTP works.
//! Stopped (killed and reaped) and its directory removed on drop, also when a test
//! panics.

use super::unique;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub struct TestRegistry {
    /// `127.0.0.1:<port>`: the registry part of image names.
    pub addr: String,
    /// The credentials it requires, if any.
    pub credentials: Option<(String, String)>,
    /// It serves TLS (a self-signed certificate), not plain HTTP.
    pub tls: bool,
    dir: PathBuf,
    child: Option<Child>,
}

impl TestRegistry {
    /// Starts a registry without authentication.
    pub fn start() -> TestRegistry {
        Self::start_with(None, false)
    }

    /// Starts a registry that requires `user`/`password` (HTTP basic, htpasswd).
    pub fn with_credentials(user: &str, password: &str) -> TestRegistry {
        Self::start_with(Some((user.to_string(), password.to_string())), false)
    }

    /// Starts a registry that serves TLS with a self-signed certificate (for what
    /// `urund check` sees; Docker would not trust it).
    pub fn with_tls() -> TestRegistry {
        Self::start_with(None, true)
    }

    fn start_with(credentials: Option<(String, String)>, tls: bool) -> TestRegistry {
        super::image(); // tests/setup.sh: docker-registry and htpasswd are installed
        let dir = std::env::temp_dir().join(format!("urun-registry-{}", unique()));
        fs::create_dir_all(dir.join("data")).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut reg = TestRegistry {
            addr: addr.clone(),
            credentials: credentials.clone(),
            tls,
            dir: dir.clone(),
            child: None,
        };
        let mut auth = String::new();
        if let Some((user, password)) = &credentials {
            let htpasswd = dir.join("htpasswd");
            let o = Command::new("htpasswd")
                .args(["-B", "-b", "-c"])
                .arg(&htpasswd)
                .args([user, password])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(
                o.status.success(),
                "htpasswd: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            auth = format!(
                "auth:\n  htpasswd:\n    realm: urun-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let mut http_tls = String::new();
        if tls {
            let o = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args(["-subj", "/CN=127.0.0.1", "-keyout"])
                .arg(dir.join("key.pem"))
                .arg("-out")
                .arg(dir.join("cert.pem"))
                .output()
                .expect("openssl");
            assert!(
                o.status.success(),
                "openssl: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            http_tls = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            );
        }
        let config = format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: urun-test-{}\n{http_tls}\
             {auth}",
            dir.join("data").display(),
            unique()
        );
        fs::write(dir.join("config.yml"), config).unwrap();
        let log = fs::File::create(dir.join("registry.log")).unwrap();
        reg.child = Some(
            Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(dir.join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tls {
                // answering at all: Go's TLS server tells a plain request it is one
                if let Some((_, resp)) = reg.get("/v2/") {
                    assert!(resp.contains("HTTPS server"), "{resp}");
                    break;
                }
            } else if let Some(status) = reg.get("/v2/").map(|(s, _)| s) {
                assert_eq!(status, 200, "GET /v2/ on the test registry");
                if credentials.is_some() {
                    let anonymous = reg.request("GET", "/v2/", &[], false).map(|(s, _)| s);
                    assert_eq!(
                        anonymous,
                        Some(401),
                        "the test registry without credentials"
                    );
                }
                break;
            }
            if let Ok(Some(st)) = reg.child.as_mut().unwrap().try_wait() {
                panic!("docker-registry exited ({st}): {}", reg.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        reg
    }

    /// The registry's own log (errors only).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// One plain HTTP/1.0 GET (with the credentials, if any); the status and the
    /// response (head and body). `None` if nothing answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        self.request("GET", path, &[], true)
    }

    /// The digest the registry serves for `repo:reference` (`Docker-Content-Digest`
    /// of a HEAD on the manifest), `None` if it has none.
    pub fn manifest_digest(&self, repo: &str, reference: &str) -> Option<String> {
        let accept = "Accept: application/vnd.docker.distribution.manifest.v2+json";
        let (status, resp) = self.request(
            "HEAD",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[accept],
            true,
        )?;
        if status != 200 {
            return None;
        }
        resp.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_string())
        })
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        authenticated: bool,
    ) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(&self.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {}\r\n", self.addr);
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        if let Some((u, p)) = self.credentials.as_ref().filter(|_| authenticated) {
            req.push_str(&format!(
                "Authorization: Basic {}\r\n",
                base64(&format!("{u}:{p}"))
            ));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        let status = resp.split(' ').nth(1)?.parse().ok()?;
        Some((status, resp))
    }

    /// Stops the registry (for "registry down" tests); drop still removes its files.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Standard base64 (for the Authorization header).
pub fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
