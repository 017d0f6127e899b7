use super::*;
use crate::client::cli::parse_build;
use std::io::Cursor;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temporary directory, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new() -> Tmp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "urun-build-client-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    fn file(&self, rel: &str, content: &[u8]) -> &Tmp {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        self
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn args(a: &[&str]) -> BuildArgs {
    parse_build(std::iter::once("urun").chain(a.iter().copied()))
        .unwrap()
        .0
}

/// The frames written into `buf`.
fn frames(buf: &[u8]) -> Vec<(Kind, Vec<u8>)> {
    let mut r = Cursor::new(buf);
    let mut out = vec![];
    while let Some(f) = wire::read_frame(&mut r).unwrap() {
        out.push(f);
    }
    out
}

/// Streams `source`; returns the frames and the archive they carry (checking the
/// frame sequence: Context frames within the chunk size, one empty ContextEnd last).
fn stream(source: Source, stdin: &[u8]) -> (Vec<(Kind, Vec<u8>)>, Vec<u8>) {
    let w = Mutex::new(Vec::new());
    let sent = send_context(
        source,
        &w,
        Progress::new(false, false),
        &mut Cursor::new(stdin.to_vec()),
    )
    .unwrap();
    let f = frames(&w.into_inner().unwrap());
    let (last, body) = f.split_last().unwrap();
    assert_eq!(last, &(Kind::ContextEnd, vec![]));
    let mut archive = vec![];
    for (k, p) in body {
        assert_eq!(*k, Kind::Context);
        assert!(!p.is_empty() && p.len() <= CONTEXT_CHUNK && p.len() <= wire::MAX_FRAME);
        archive.extend(p);
    }
    assert_eq!(sent, archive.len() as u64);
    (f, archive)
}

fn names(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(archive);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut d = vec![];
            e.read_to_end(&mut d).unwrap();
            (e.path().unwrap().display().to_string(), d)
        })
        .collect()
}

fn a_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (n, d) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, n, *d).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn stdin_is_told_apart_as_docker_does() {
    assert_eq!(
        stdin_kind(&a_tar(&[("Dockerfile", b"FROM x\n")])[..512]),
        StdinKind::Tar
    );
    assert_eq!(
        stdin_kind(b"FROM busybox\nUSER 1000\n"),
        StdinKind::Dockerfile
    );
    assert_eq!(stdin_kind(b""), StdinKind::Dockerfile);
    assert_eq!(
        stdin_kind(&[0x1f, 0x8b, 8, 0]),
        StdinKind::Compressed("gzip")
    );
    assert_eq!(stdin_kind(b"BZh91AY"), StdinKind::Compressed("bzip2"));
    // 512 bytes that are not a header (bad checksum) are a Dockerfile
    let mut fake = a_tar(&[("Dockerfile", b"x")])[..512].to_vec();
    fake[0] ^= 1;
    assert_eq!(stdin_kind(&fake), StdinKind::Dockerfile);
    assert_eq!(stdin_kind(&[b'#'; 512]), StdinKind::Dockerfile);
}

#[test]
fn a_directory_context_is_streamed_in_frames_with_its_dockerfile() {
    let t = Tmp::new();
    t.file("Dockerfile", b"FROM busybox\nUSER 1000\n")
        .file("big", &vec![7u8; 3 * CONTEXT_CHUNK / 2])
        .file("skip/me", b"x")
        .file(".dockerignore", b"skip\n");
    let (src, name) = source(&args(&["."]), ".", &mut Cursor::new(vec![]), &t.0).unwrap();
    assert_eq!(name, "Dockerfile");
    let (f, archive) = stream(src, b"");
    assert!(f.len() >= 3, "two Context frames and the end: {}", f.len());
    let n = names(&archive);
    let paths: Vec<&str> = n.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, [".dockerignore", "Dockerfile", "big"]);
    assert_eq!(n[2].1.len(), 3 * CONTEXT_CHUNK / 2);
}

#[test]
fn a_dockerfile_outside_the_context_or_on_stdin_is_added_under_its_own_name() {
    let t = Tmp::new();
    t.file("ctx/a", b"a")
        .file("Dockerfile.dev", b"FROM busybox\n");
    let (src, name) = source(
        &args(&["-f", "Dockerfile.dev", "ctx"]),
        "ctx",
        &mut Cursor::new(vec![]),
        &t.0,
    )
    .unwrap();
    assert_eq!(name, context::Builder::added_name(b"FROM busybox\n"));
    let n = names(&stream(src, b"").1);
    assert!(
        n.iter().any(|(p, d)| *p == name && d == b"FROM busybox\n"),
        "{n:?}"
    );
    // -f - reads it from stdin
    let (src, name) = source(
        &args(&["-f", "-", "ctx"]),
        "ctx",
        &mut Cursor::new(b"FROM scratch\n".to_vec()),
        &t.0,
    )
    .unwrap();
    assert_eq!(name, context::Builder::added_name(b"FROM scratch\n"));
    let n = names(&stream(src, b"").1);
    assert!(n.iter().any(|(p, _)| *p == name));
    // -f naming a file inside the context: sent as part of it, by its path there
    t.file("ctx/sub/Dockerfile.x", b"FROM busybox\n");
    let (_, name) = source(
        &args(&["-f", "ctx/sub/Dockerfile.x", "ctx"]),
        "ctx",
        &mut Cursor::new(vec![]),
        &t.0,
    )
    .unwrap();
    assert_eq!(name, "sub/Dockerfile.x");
}

#[test]
fn a_missing_dockerfile_or_a_bad_context_is_said_before_anything_is_sent() {
    let t = Tmp::new();
    t.file("ctx/a", b"a").file("file", b"x");
    let e = source(&args(&["ctx"]), "ctx", &mut Cursor::new(vec![]), &t.0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with("cannot locate the Dockerfile Dockerfile"),
        "{e}"
    );
    let e = source(&args(&["file"]), "file", &mut Cursor::new(vec![]), &t.0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is not a directory"), "{e}");
    let e = source(&args(&["nope"]), "nope", &mut Cursor::new(vec![]), &t.0)
        .err()
        .unwrap();
    assert!(
        format!("{e:#}").contains("unable to prepare the build context"),
        "{e:#}"
    );
    // A Dockerfile that is a symlink is not followed.
    std::os::unix::fs::symlink("/etc/shadow", t.0.join("ctx/Dockerfile")).unwrap();
    let e = source(&args(&["ctx"]), "ctx", &mut Cursor::new(vec![]), &t.0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("cannot locate the Dockerfile"), "{e}");
}

#[test]
fn a_tar_on_stdin_is_passed_through_whole() {
    let tar = a_tar(&[
        ("Dockerfile.x", b"FROM busybox\n"),
        ("big", &vec![1u8; 700_000]),
    ]);
    let mut stdin = Cursor::new(tar.clone());
    let (src, name) = source(
        &args(&["-f", "Dockerfile.x", "-"]),
        "-",
        &mut stdin,
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(name, "Dockerfile.x");
    let rest = stdin.into_inner()[512..].to_vec();
    let (_, archive) = stream(src, &rest);
    assert_eq!(archive, tar);
    let (_, name) = source(&args(&["-"]), "-", &mut Cursor::new(tar), Path::new("/")).unwrap();
    assert_eq!(name, "Dockerfile");
}

#[test]
fn a_dockerfile_on_stdin_becomes_a_context_of_one_file() {
    let df = b"FROM busybox\nUSER 1000\n";
    let (src, name) = source(
        &args(&["-"]),
        "-",
        &mut Cursor::new(df.to_vec()),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(name, "Dockerfile");
    let n = names(&stream(src, b"").1);
    assert_eq!(n, [("Dockerfile".to_string(), df.to_vec())]);
    let e = source(&args(&["-"]), "-", &mut Cursor::new(vec![]), Path::new("/"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("empty"), "{e}");
    let big = vec![b'#'; context::MAX_DOCKERFILE as usize + 1];
    let e = source(&args(&["-"]), "-", &mut Cursor::new(big), Path::new("/"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("larger than"), "{e}");
    let e = source(
        &args(&["-"]),
        "-",
        &mut Cursor::new(vec![0x1f, 0x8b, 8]),
        Path::new("/"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("gzip-compressed") && e.contains("zcat"), "{e}");
}

#[test]
fn a_context_error_while_streaming_stops_before_context_end() {
    let t = Tmp::new();
    t.file("Dockerfile", b"FROM busybox\n");
    nix::unistd::mkfifo(
        &t.0.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let (src, _) = source(&args(&["."]), ".", &mut Cursor::new(vec![]), &t.0).unwrap();
    let w = Mutex::new(Vec::new());
    let e = send_context(
        src,
        &w,
        Progress::new(false, false),
        &mut Cursor::new(vec![]),
    )
    .unwrap_err();
    assert!(matches!(e, ContextError::Special { .. }), "{e}");
    let f = frames(&w.into_inner().unwrap());
    assert!(
        f.iter().all(|(k, _)| *k == Kind::Context),
        "no ContextEnd after an error"
    );
}

#[test]
fn the_request_carries_the_flags() {
    let a = args(&[
        "-t",
        "app:1",
        "--build-arg",
        "A=1",
        "--build-arg",
        "HOME",
        "--label",
        "k=v",
        "--target",
        "t",
        "--no-cache",
        "--pull",
        "never",
        "-q",
        ".",
    ]);
    let r = request(&a, "Dockerfile".into(), |n| {
        (n == "HOME").then(|| "/h".into())
    });
    assert_eq!(r.version, wire::VERSION);
    assert_eq!(r.tags, ["app:1"]);
    assert_eq!(r.build_args.get("HOME").map(String::as_str), Some("/h"));
    assert_eq!(r.labels.get("k").map(String::as_str), Some("v"));
    assert_eq!(r.target.as_deref(), Some("t"));
    assert!(r.no_cache && r.never_pull && r.quiet);
    assert_eq!(BuildRequest::decode(&r.encode()).unwrap(), r);
    let r = request(&args(&["--pull", "missing", "."]), "D".into(), |_| None);
    assert!(!r.never_pull);
}

#[test]
fn success_lines_are_docker_legacy_builders() {
    let id = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(
        built_lines(
            id,
            &["urun/alice/app:1".into(), "urun/alice/app:latest".into()],
            false
        ),
        "Successfully built 0123456789ab\nSuccessfully tagged urun/alice/app:1\n\
         Successfully tagged urun/alice/app:latest\n"
    );
    assert_eq!(built_lines(id, &[], true), format!("{id}\n"));
    assert_eq!(
        built_lines("sha256:\x1b[2Jab", &[], false),
        "Successfully built [2Jab\n"
    );
}

#[test]
fn sizes_are_dockers_human_sizes() {
    for (n, d, want) in [
        (0, 4, "0B"),
        (5, 4, "5B"),
        (999, 4, "999B"),
        (2048, 4, "2.048kB"),
        (12_288_000, 4, "12.29MB"),
        (100_000, 4, "100kB"),
        (1_240_000, 3, "1.24MB"),
        (72_800_000, 3, "72.8MB"),
        (1_500_000_000, 3, "1.5GB"),
    ] {
        assert_eq!(human_size(n, d), want, "{n}");
    }
}

#[test]
fn progress_updates_a_terminal_line_only_for_large_contexts() {
    let mut p = Progress::new(true, true);
    assert_eq!(p.text(512, false), None);
    let t = p.text(2 << 20, false).unwrap();
    assert!(
        t.starts_with("\r\x1b[KSending build context to urund  2.097MB"),
        "{t:?}"
    );
    assert_eq!(
        p.text(3 << 20, true).unwrap(),
        "\r\x1b[KSending build context to urund  3.146MB\n"
    );
    let mut p = Progress::new(true, false);
    assert_eq!(p.text(5 << 20, false), None);
    assert_eq!(
        p.text(5 << 20, true).unwrap(),
        "Sending build context to urund  5.243MB\n"
    );
    let mut q = Progress::new(false, true);
    assert_eq!(q.text(5 << 20, true), None);
}
