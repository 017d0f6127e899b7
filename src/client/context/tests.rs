use super::*;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temporary directory, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new() -> Tmp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "urun-context-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    fn file(&self, rel: &str, content: &str) -> &Tmp {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        self
    }

    fn dir(&self, rel: &str) -> &Tmp {
        std::fs::create_dir_all(self.0.join(rel)).unwrap();
        self
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    link: Option<String>,
    data: Vec<u8>,
    uid: u64,
    gid: u64,
}

fn entries(archive: &[u8]) -> Vec<Entry> {
    let mut a = tar::Archive::new(archive);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let h = e.header();
        out.push(Entry {
            path: e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string(),
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            link: e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned()),
            data,
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
        });
    }
    out
}

fn paths(es: &[Entry]) -> Vec<&str> {
    es.iter().map(|e| e.path.as_str()).collect()
}

fn build(root: &Path, df: Dockerfile) -> Result<(Vec<u8>, Summary), ContextError> {
    let mut out = Vec::new();
    let s = Builder::new(root, df).write_to(&mut out, &mut |_| {})?;
    Ok((out, s))
}

fn default_df() -> Dockerfile {
    Dockerfile::InContext("Dockerfile".into())
}

#[test]
fn a_tree_is_archived_in_order_with_modes_and_owner_zero() {
    let t = Tmp::new();
    t.file("Dockerfile", "FROM scratch\n")
        .file("b.txt", "bee")
        .file("a/z", "zed")
        .file("a/b/c", "sea")
        .dir("empty");
    std::fs::set_permissions(t.0.join("b.txt"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(t.0.join("a"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let (out, s) = build(&t.0, default_df()).unwrap();
    let es = entries(&out);
    assert_eq!(
        paths(&es),
        vec!["Dockerfile", "a", "a/b", "a/b/c", "a/z", "b.txt", "empty"]
    );
    let b = es.iter().find(|e| e.path == "b.txt").unwrap();
    assert_eq!((b.mode, b.data.as_slice()), (0o4755, &b"bee"[..]));
    let a = es.iter().find(|e| e.path == "a").unwrap();
    assert_eq!((a.kind, a.mode), (tar::EntryType::Directory, 0o750));
    assert!(es.iter().all(|e| e.uid == 0 && e.gid == 0));
    // the summary describes the stream
    assert_eq!(s.bytes, out.len() as u64);
    assert_eq!(s.sha256, hex(&Sha256::digest(&out)));
    assert_eq!(s.dockerfile_name, "Dockerfile");
    assert_eq!(s.dockerfile_sha256, hex(&Sha256::digest(b"FROM scratch\n")));
    assert_eq!(s.entries, 7);
    // the same context gives the same bytes
    assert_eq!(build(&t.0, default_df()).unwrap().0, out);
}

#[test]
fn a_symlink_to_etc_shadow_is_archived_as_a_link_never_the_file() {
    let t = Tmp::new();
    t.file("Dockerfile", "FROM scratch\n").dir("d");
    symlink("/etc/shadow", t.0.join("shadow")).unwrap();
    symlink("/etc", t.0.join("etc")).unwrap();
    symlink("../shadow", t.0.join("d/up")).unwrap();
    let (out, _) = build(&t.0, default_df()).unwrap();
    let es = entries(&out);
    let s = es.iter().find(|e| e.path == "shadow").unwrap();
    assert_eq!(s.kind, tar::EntryType::Symlink);
    assert_eq!(s.link.as_deref(), Some("/etc/shadow"));
    assert!(s.data.is_empty());
    // a link to a directory is not walked
    let e = es.iter().find(|e| e.path == "etc").unwrap();
    assert_eq!(e.kind, tar::EntryType::Symlink);
    assert!(!es.iter().any(|e| e.path.starts_with("etc/")));
    assert_eq!(
        es.iter()
            .find(|e| e.path == "d/up")
            .unwrap()
            .link
            .as_deref(),
        Some("../shadow")
    );
    // nothing of the real file is in the stream
    let shadow = std::fs::read("/etc/shadow").unwrap_or_default();
    if shadow.len() > 16 {
        assert!(!out.windows(shadow.len()).any(|w| w == shadow.as_slice()));
    }
}

#[test]
fn special_files_are_refused_with_their_path() {
    let t = Tmp::new();
    t.file("Dockerfile", "FROM scratch\n").dir("sub");
    nix::unistd::mkfifo(&t.0.join("sub/pipe"), Mode::from_bits_truncate(0o600)).unwrap();
    let e = build(&t.0, default_df()).unwrap_err();
    assert!(
        matches!(&e, ContextError::Special { path, kind } if path == "sub/pipe" && kind.contains("FIFO")),
        "{e}"
    );
    assert!(e.to_string().contains("sub/pipe"));
    // excluded, it does not matter
    t.file(".dockerignore", "sub/pipe\n");
    build(&t.0, default_df()).unwrap();
    // a socket
    let t = Tmp::new();
    t.file("Dockerfile", "FROM scratch\n");
    let _l = std::os::unix::net::UnixListener::bind(t.0.join("sock")).unwrap();
    let e = build(&t.0, default_df()).unwrap_err();
    assert!(
        matches!(&e, ContextError::Special { path, kind } if path == "sock" && *kind == "socket"),
        "{e}"
    );
}

#[test]
fn dockerignore_patterns_exceptions_and_double_star() {
    let t = Tmp::new();
    t.file("Dockerfile", "FROM scratch\n")
        .file("keep.txt", "k")
        .file("x.o", "o")
        .file("src/a.o", "o")
        .file("src/main.c", "c")
        .file("deep/er/cache/x", "x")
        .file("cache/y", "y")
        .file("logs/a.log", "a")
        .file("logs/important.log", "i")
        .file("logs/sub/b.log", "b")
        .file(
            ".dockerignore",
            "# comment\n*.o\n**/cache\nlogs\n!logs/important.log\n/keep.txt\n!keep.txt\n",
        );
    let (out, _) = build(&t.0, default_df()).unwrap();
    let es = entries(&out);
    assert_eq!(
        paths(&es),
        vec![
            ".dockerignore",
            "Dockerfile",
            "deep",
            "deep/er",
            "keep.txt",
            "logs/important.log",
            "src",
            // `*.o` is only the top level, as in docker
            "src/a.o",
            "src/main.c"
        ]
    );
}

#[test]
fn the_dockerfile_and_dockerignore_are_sent_even_when_excluded() {
    let t = Tmp::new();
    t.file("build/Dockerfile.dev", "FROM scratch\n")
        .file("build/other", "o")
        .file("app", "a")
        .file(".dockerignore", "*\n!app\n");
    // the excluded directory is walked for the Dockerfile but not archived itself
    let (out, s) = build(&t.0, Dockerfile::InContext("build/Dockerfile.dev".into())).unwrap();
    assert_eq!(
        paths(&entries(&out)),
        vec![".dockerignore", "app", "build/Dockerfile.dev"]
    );
    assert_eq!(s.dockerfile_name, "build/Dockerfile.dev");
    let t = Tmp::new();
    t.file("Dockerfile", "FROM scratch\n")
        .file(".dockerignore", "Dockerfile\n.dockerignore\n");
    let (out, _) = build(&t.0, default_df()).unwrap();
    assert_eq!(paths(&entries(&out)), vec![".dockerignore", "Dockerfile"]);
}

#[test]
fn a_dockerfile_from_outside_is_added_under_its_own_name() {
    let t = Tmp::new();
    t.file("app", "a");
    let content = b"FROM scratch\nUSER 1\n".to_vec();
    let name = Builder::added_name(&content);
    assert!(name.starts_with(".dockerfile.") && name.len() == ".dockerfile.".len() + 20);
    let (out, s) = build(&t.0, Dockerfile::Content(content.clone())).unwrap();
    let es = entries(&out);
    assert_eq!(paths(&es), vec!["app", ".dockerignore", name.as_str()]);
    assert_eq!(es[1].data, format!(".dockerignore\n{name}\n").into_bytes());
    assert_eq!(es[2].data, content);
    assert_eq!(es[2].mode, 0o600);
    assert_eq!(s.dockerfile_name, name);
    assert_eq!(s.dockerfile_sha256, hex(&Sha256::digest(&content)));
    // an existing .dockerignore gets the name appended, in place
    t.file(".dockerignore", "*.tmp");
    let (out, _) = build(&t.0, Dockerfile::Content(content.clone())).unwrap();
    let es = entries(&out);
    assert_eq!(paths(&es), vec![".dockerignore", "app", name.as_str()]);
    assert_eq!(es[0].data, format!("*.tmp\n{name}\n").into_bytes());
    // a context entry with that name is refused
    t.file(&name, "x");
    let e = build(&t.0, Dockerfile::Content(content)).unwrap_err();
    assert!(matches!(e, ContextError::NameTaken { .. }), "{e}");
}

#[test]
fn the_dockerfile_must_be_a_regular_file_in_the_context() {
    let t = Tmp::new();
    t.file("app", "a");
    let e = build(&t.0, default_df()).unwrap_err();
    assert!(matches!(e, ContextError::DockerfileMissing { .. }), "{e}");
    symlink("/etc/passwd", t.0.join("Dockerfile")).unwrap();
    let e = build(&t.0, default_df()).unwrap_err();
    assert!(matches!(e, ContextError::DockerfileMissing { .. }), "{e}");
    let e = build(&t.0, Dockerfile::InContext("../x".into())).unwrap_err();
    assert!(matches!(e, ContextError::DockerfileMissing { .. }), "{e}");
    // a .dockerignore that is a link is refused
    let t = Tmp::new();
    t.file("Dockerfile", "FROM scratch\n");
    symlink("/etc/passwd", t.0.join(".dockerignore")).unwrap();
    let e = build(&t.0, default_df()).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
}

#[test]
fn the_limit_holds_while_streaming() {
    let t = Tmp::new();
    t.file("Dockerfile", "FROM scratch\n")
        .file("small", "s")
        .file("big", &"x".repeat(200_000));
    let mut out = Vec::new();
    let e = Builder::new(&t.0, default_df())
        .limit(100_000)
        .write_to(&mut out, &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(&e, ContextError::TooLarge { path, limit: 100_000 } if path == "big"),
        "{e}"
    );
    assert!(out.len() <= 100_000);
    // and never more than the limit, even mid-entry: a limit that the header fits in
    for limit in [0u64, 511, 512, 1500, 2048, 3000] {
        let mut out = Vec::new();
        let r = Builder::new(&t.0, default_df())
            .limit(limit)
            .write_to(&mut out, &mut |_| {});
        assert!(
            matches!(r, Err(ContextError::TooLarge { .. })),
            "{limit}: {r:?}"
        );
        assert!(out.len() as u64 <= limit, "{limit}: {}", out.len());
    }
    // exactly enough passes
    let (all, s) = build(&t.0, default_df()).unwrap();
    let mut out = Vec::new();
    Builder::new(&t.0, default_df())
        .limit(s.bytes + 4096)
        .write_to(&mut out, &mut |_| {})
        .unwrap();
    assert_eq!(out, all);
}

#[test]
fn progress_reports_the_bytes() {
    let t = Tmp::new();
    t.file("Dockerfile", "FROM scratch\n")
        .file("big", &"x".repeat(600_000));
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let s = Builder::new(&t.0, default_df())
        .write_to(&mut out, &mut |n| seen.push(n))
        .unwrap();
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(*seen.last().unwrap(), s.bytes);
}

#[test]
fn hard_links_are_links_to_the_first_name() {
    let t = Tmp::new();
    t.file("Dockerfile", "FROM scratch\n").file("a", "same");
    std::fs::hard_link(t.0.join("a"), t.0.join("b")).unwrap();
    let es = entries(&build(&t.0, default_df()).unwrap().0);
    let b = es.iter().find(|e| e.path == "b").unwrap();
    assert_eq!(
        (b.kind, b.link.as_deref()),
        (tar::EntryType::Link, Some("a"))
    );
    // when the first name is excluded, the second carries the data
    t.file(".dockerignore", "a\n");
    let es = entries(&build(&t.0, default_df()).unwrap().0);
    let b = es.iter().find(|e| e.path == "b").unwrap();
    assert_eq!(
        (b.kind, b.data.as_slice()),
        (tar::EntryType::Regular, &b"same"[..])
    );
}

#[test]
fn names_that_are_not_utf8_are_refused() {
    let t = Tmp::new();
    t.file("Dockerfile", "FROM scratch\n");
    std::fs::write(t.0.join(OsStr::from_bytes(b"bad\xff")), "x").unwrap();
    let e = build(&t.0, default_df()).unwrap_err();
    assert!(matches!(e, ContextError::NotUtf8 { .. }), "{e}");
}

#[test]
fn bad_dockerignore_patterns_are_refused() {
    let t = Tmp::new();
    t.file("Dockerfile", "FROM scratch\n")
        .file(".dockerignore", "a|b\n");
    let e = build(&t.0, default_df()).unwrap_err();
    assert!(matches!(e, ContextError::Pattern(_)), "{e}");
}

#[test]
fn locating_the_dockerfile_as_docker_does() {
    let t = Tmp::new();
    t.dir("ctx")
        .file("ctx/dockerfile", "lower")
        .file("outside/Df", "FROM scratch\n");
    let cwd = &t.0;
    // only the lower-case name exists
    assert_eq!(
        locate_dockerfile(Path::new("ctx"), None, cwd).unwrap(),
        Dockerfile::InContext("dockerfile".into())
    );
    t.file("ctx/Dockerfile", "upper");
    assert_eq!(
        locate_dockerfile(Path::new("ctx"), None, cwd).unwrap(),
        Dockerfile::InContext("Dockerfile".into())
    );
    // -f is relative to the current directory
    assert_eq!(
        locate_dockerfile(
            Path::new("ctx"),
            Some(Path::new("ctx/sub/../Dockerfile")),
            cwd
        )
        .unwrap(),
        Dockerfile::InContext("Dockerfile".into())
    );
    assert_eq!(
        locate_dockerfile(Path::new("ctx"), Some(Path::new("outside/Df")), cwd).unwrap(),
        Dockerfile::Content(b"FROM scratch\n".to_vec())
    );
    symlink(t.0.join("outside/Df"), t.0.join("outside/link")).unwrap();
    let e = locate_dockerfile(Path::new("ctx"), Some(Path::new("outside/link")), cwd).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let e = locate_dockerfile(Path::new("ctx"), Some(Path::new("outside/none")), cwd).unwrap_err();
    assert!(matches!(e, ContextError::DockerfileMissing { .. }), "{e}");
}

#[test]
fn a_file_outside_the_context_is_never_reached_through_a_directory_link() {
    // ctx/link -> a directory outside: archived as a link, its files not read
    let t = Tmp::new();
    t.file("ctx/Dockerfile", "FROM scratch\n")
        .file("secret/s", "SECRET-CONTENT");
    symlink(t.0.join("secret"), t.0.join("ctx/link")).unwrap();
    let (out, _) = build(&t.0.join("ctx"), default_df()).unwrap();
    assert!(!out.windows(14).any(|w| w == b"SECRET-CONTENT"));
    // and the context root itself must not be a link
    symlink(t.0.join("ctx"), t.0.join("ctxlink")).unwrap();
    assert!(build(&t.0.join("ctxlink"), default_df()).is_err());
}
