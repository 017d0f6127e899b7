use super::*;
use ::tar::{Builder, EntryType, Header};
use proptest::prelude::*;

/// One entry of a test layer.
#[derive(Clone, Debug)]
enum E {
    Dir(&'static str),
    File(&'static str, u32, &'static [u8]),
    /// A file with a `security.capability` attribute.
    Cap(&'static str),
    Link(&'static str, &'static str),
    Hard(&'static str, &'static str, u32),
}

fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    for e in entries {
        let mut h = Header::new_ustar();
        match e {
            E::Dir(p) => {
                h.set_entry_type(EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &b""[..]).unwrap();
            }
            E::File(p, mode, data) => {
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Cap(p) => {
                b.append_pax_extensions([(
                    "SCHILY.xattr.security.capability",
                    &b"\x01\x00\x00\x02"[..],
                )])
                .unwrap();
                h.set_mode(0o755);
                h.set_size(1);
                b.append_data(&mut h, p, &b"x"[..]).unwrap();
            }
            E::Link(p, to) => {
                h.set_entry_type(EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, p, to).unwrap();
            }
            E::Hard(p, to, mode) => {
                h.set_entry_type(EntryType::Link);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_link(&mut h, p, to).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A `docker save` archive as dockerd 20.10 writes it: one directory per layer
/// (`VERSION`, `json`, `layer.tar`), the config under its digest, the manifest
/// last; a layer listed twice is saved once and linked.
fn saved(layers: &[Vec<u8>], user: Option<&str>, env: &[&str]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", hex(&Sha256::digest(l))))
        .collect();
    let mut cfg = serde_json::json!({
        "architecture": "amd64",
        "config": { "Env": env, "Cmd": ["sh"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    if let Some(u) = user {
        cfg["config"]["User"] = u.into();
    }
    let cfg = serde_json::to_vec(&cfg).unwrap();
    let cfg_name = format!("{}.json", hex(&Sha256::digest(&cfg)));
    let mut b = Builder::new(Vec::new());
    let file = |b: &mut Builder<Vec<u8>>, p: &str, d: &[u8]| {
        let mut h = Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(d.len() as u64);
        b.append_data(&mut h, p, d).unwrap();
    };
    let mut names = Vec::new();
    let mut first: HashMap<String, String> = HashMap::new();
    for (i, (l, id)) in layers.iter().zip(&diff_ids).enumerate() {
        let dir = format!("{:064x}", i + 1);
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_data(&mut h, format!("{dir}/"), &b""[..]).unwrap();
        file(&mut b, &format!("{dir}/VERSION"), b"1.0");
        file(&mut b, &format!("{dir}/json"), b"{}");
        if let Some(d) = first.get(id) {
            let mut h = Header::new_ustar();
            h.set_entry_type(EntryType::Symlink);
            h.set_size(0);
            b.append_link(
                &mut h,
                format!("{dir}/layer.tar"),
                format!("../{d}/layer.tar"),
            )
            .unwrap();
        } else {
            file(&mut b, &format!("{dir}/layer.tar"), l);
            first.insert(id.clone(), dir.clone());
        }
        names.push(format!("{dir}/layer.tar"));
    }
    file(&mut b, &cfg_name, &cfg);
    let manifest = serde_json::json!([{ "Config": cfg_name, "RepoTags": null, "Layers": names }]);
    file(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    b.into_inner().unwrap()
}

const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";

fn base() -> Vec<u8> {
    layer_tar(&[
        E::Dir("etc/"),
        E::File("etc/passwd", 0o644, PASSWD),
        E::File("etc/group", 0o644, b"root:x:0:\napp:x:1000:\n"),
        E::Dir("bin/"),
        E::File("bin/su", 0o4755, b"su"),
    ])
}

fn ids(f: &[Finding]) -> Vec<&'static str> {
    f.iter().map(|f| f.rule.id()).collect()
}

#[test]
fn a_clean_image_has_no_findings_and_its_scan_is_the_final_filesystem() {
    let added = layer_tar(&[E::Dir("app/"), E::File("app/run", 0o755, b"#!/bin/sh\n")]);
    let t = saved(&[base(), added], Some("app"), &["PATH=/bin"]);
    let s = scan(&t[..], 1).unwrap();
    assert_eq!(s.layers, 2);
    assert_eq!(s.user, "app");
    assert_eq!(s.env, ["PATH=/bin"]);
    assert_eq!(s.passwd, IdFile::File(PASSWD.to_vec()));
    assert_eq!(s.group, IdFile::File(b"root:x:0:\napp:x:1000:\n".to_vec()));
    // the base's setuid su is not the build's doing
    assert!(s.special.is_empty());
    assert!(s.image_id.starts_with("sha256:") && s.image_id.len() == 71);
    assert_eq!(check(&s, Severity::Error), []);
}

#[test]
fn the_user_is_root_when_empty_root_zero_or_a_name_with_uid_zero() {
    let root_alias = layer_tar(&[E::File(
        "etc/passwd",
        0o644,
        b"root:x:0:0::/:/bin/sh\ntoor:x:0:0::/:/bin/sh\n",
    )]);
    for (user, layers) in [
        (None, vec![base()]),
        (Some(""), vec![base()]),
        (Some("root"), vec![base()]),
        (Some("0"), vec![base()]),
        (Some("+0:1000"), vec![base()]),
        (Some("00"), vec![base()]),
        (Some("toor"), vec![base(), root_alias.clone()]),
    ] {
        let s = scan(&saved(&layers, user, &[])[..], 1).unwrap();
        let f = check(&s, Severity::Warning);
        assert_eq!(ids(&f), ["image.user-root"], "{user:?}");
        assert!(refused(&f));
    }
    for user in ["1000", "app", "app:0", "1000:1000"] {
        let s = scan(&saved(&[base()], Some(user), &[])[..], 1).unwrap();
        assert_eq!(check(&s, Severity::Warning), [], "{user}");
    }
}

#[test]
fn a_name_resolves_as_docker_reads_the_image_passwd() {
    let f = |t: &[u8]| IdFile::File(t.to_vec());
    // the first entry wins
    assert_eq!(exec_user("a", &f(b"a:x:5:5\na:x:0:0\n")), ExecUser::Uid(5));
    assert_eq!(exec_user("a", &f(b"a:x:0:0\na:x:5:5\n")), ExecUser::Uid(0));
    // Go's reading: missing or non-numeric uid is 0; lines trimmed, even of NBSP
    assert_eq!(exec_user("a", &f(b"a\n")), ExecUser::Uid(0));
    assert_eq!(exec_user("a", &f(b"a:x\n")), ExecUser::Uid(0));
    assert_eq!(exec_user("a", &f(b"a:x:abc:0\n")), ExecUser::Uid(0));
    assert_eq!(exec_user("a", &f(b"a:x: 7:0\n")), ExecUser::Uid(0));
    assert_eq!(exec_user("a", &f(b"  a:x:7:0  \r\n")), ExecUser::Uid(7));
    assert_eq!(
        exec_user("a", &f("\u{a0}a:x:0:0".as_bytes())),
        ExecUser::Uid(0)
    );
    // dockerd truncates the uid to 32 bits
    assert_eq!(exec_user("a", &f(b"a:x:4294967296:0\n")), ExecUser::Uid(0));
    assert_eq!(exec_user("a", &f(b"a:x:-4294967296:0\n")), ExecUser::Uid(0));
    assert_eq!(exec_user("a", &f(b"a:x:4294967297:0\n")), ExecUser::Uid(1));
    // not there, or no file: unresolved
    assert!(matches!(
        exec_user("b", &f(b"a:x:1:1\n")),
        ExecUser::Unresolved(_)
    ));
    assert!(matches!(
        exec_user("b", &IdFile::Absent),
        ExecUser::Unresolved(_)
    ));
    let long = [b"b:x:1:1:".as_slice(), &[b'x'; 70_000], b"\na:x:5:5\n"].concat();
    assert!(matches!(exec_user("a", &f(&long)), ExecUser::Unresolved(_)));
    // numbers need no passwd; out of range cannot start
    assert_eq!(exec_user("1234", &IdFile::Absent), ExecUser::Uid(1234));
    assert_eq!(exec_user("-1", &IdFile::Absent), ExecUser::Invalid);
    assert_eq!(exec_user("2147483648", &IdFile::Absent), ExecUser::Invalid);
    // root by name whatever the file says
    assert_eq!(exec_user("root", &f(b"root:x:5:5\n")), ExecUser::Uid(0));
}

#[test]
fn an_unresolvable_user_is_an_error_naming_why() {
    let no_passwd = layer_tar(&[E::Dir("bin/"), E::File("bin/app", 0o755, b"x")]);
    let s = scan(&saved(&[no_passwd], Some("app"), &[])[..], 0).unwrap();
    assert_eq!(s.passwd, IdFile::Absent);
    let f = check(&s, Severity::Warning);
    assert_eq!(ids(&f), ["image.user-root"]);
    assert!(f[0].message.contains("no /etc/passwd"), "{}", f[0]);
    // a symlinked passwd (or /etc) is not followed: unresolved, refused
    let linked = layer_tar(&[E::Link("etc/passwd", "/tmp/passwd")]);
    let s = scan(&saved(&[base(), linked], Some("app"), &[])[..], 1).unwrap();
    assert!(matches!(s.passwd, IdFile::Unreadable(_)));
    assert!(refused(&check(&s, Severity::Off)));
    let etc_link = layer_tar(&[E::Link("etc", "data/etc")]);
    let s = scan(&saved(&[base(), etc_link], Some("app"), &[])[..], 1).unwrap();
    assert!(matches!(&s.passwd, IdFile::Unreadable(w) if w.contains("/etc is")));
    // a numeric user needs no passwd
    let s = scan(
        &saved(
            &[base(), layer_tar(&[E::Link("etc", "x")])],
            Some("1000"),
            &[],
        )[..],
        1,
    )
    .unwrap();
    assert_eq!(check(&s, Severity::Warning), []);
}

#[test]
fn whiteouts_and_opaque_directories_decide_the_final_passwd() {
    let gone = layer_tar(&[E::Dir("etc/"), E::File("etc/.wh.passwd", 0o644, b"")]);
    let s = scan(&saved(&[base(), gone.clone()], Some("app"), &[])[..], 1).unwrap();
    assert_eq!(s.passwd, IdFile::Absent);
    assert!(matches!(s.group, IdFile::File(_)));
    // deleted, then written again above
    let again = layer_tar(&[E::File("etc/passwd", 0o644, b"app:x:0:0\n")]);
    let s = scan(&saved(&[base(), gone, again], Some("app"), &[])[..], 1).unwrap();
    assert_eq!(s.passwd, IdFile::File(b"app:x:0:0\n".to_vec()));
    assert_eq!(ids(&check(&s, Severity::Warning)), ["image.user-root"]);
    // an opaque /etc hides the lower passwd, keeps the layer's own group
    let opaque = layer_tar(&[
        E::Dir("etc/"),
        E::File("etc/.wh..wh..opq", 0o644, b""),
        E::File("etc/group", 0o644, b"g:x:1:\n"),
    ]);
    let s = scan(&saved(&[base(), opaque], Some("app"), &[])[..], 1).unwrap();
    assert_eq!(s.passwd, IdFile::Absent);
    assert_eq!(s.group, IdFile::File(b"g:x:1:\n".to_vec()));
    // /etc deleted whole
    let s = scan(
        &saved(
            &[base(), layer_tar(&[E::File(".wh.etc", 0o644, b"")])],
            None,
            &[],
        )[..],
        1,
    )
    .unwrap();
    assert_eq!((s.passwd, s.group), (IdFile::Absent, IdFile::Absent));
}

#[test]
fn setuid_setgid_and_capability_files_of_the_build_are_listed_with_the_policy_severity() {
    let added = layer_tar(&[
        E::Dir("usr/"),
        E::File("usr/sbin-tool", 0o4755, b"a"),
        E::File("usr/sgid", 0o2711, b"b"),
        E::Cap("usr/ping"),
        E::Hard("usr/tool-again", "usr/sbin-tool", 0o4755),
        E::File("usr/plain", 0o755, b"c"),
        E::Dir("usr/shared/"),
    ]);
    let s = scan(&saved(&[base(), added], Some("app"), &[])[..], 1).unwrap();
    let got: Vec<(&str, String)> = s
        .special
        .iter()
        .map(|f| (f.path.as_str(), f.what()))
        .collect();
    assert_eq!(
        got,
        [
            ("/usr/sbin-tool", "setuid".to_string()),
            ("/usr/sgid", "setgid".to_string()),
            ("/usr/ping", "capabilities".to_string()),
            ("/usr/tool-again", "setuid".to_string()),
        ]
    );
    for sev in [Severity::Warning, Severity::Error] {
        let f = check(&s, sev);
        assert_eq!(ids(&f), ["image.setuid"]);
        assert_eq!(f[0].severity, sev);
        assert!(
            f[0].message.contains("\"/usr/sgid\" (setgid 2711)"),
            "{}",
            f[0]
        );
    }
    assert_eq!(check(&s, Severity::Off), []);
}

#[test]
fn a_setuid_file_removed_or_replaced_by_a_later_layer_is_not_in_the_image() {
    let add = layer_tar(&[
        E::Dir("opt/"),
        E::File("opt/a", 0o4755, b"a"),
        E::File("opt/b", 0o4755, b"b"),
        E::File("opt/c", 0o6755, b"c"),
        E::Dir("srv/"),
        E::File("srv/d", 0o4755, b"d"),
        E::File("e", 0o4755, b"e"),
    ]);
    let fix = layer_tar(&[
        E::Dir("opt/"),
        E::File("opt/a", 0o755, b"a"), // chmod u-s: copied up without the bit
        E::File("opt/.wh.b", 0o644, b""), // deleted
        E::File(".wh.srv", 0o644, b""), // its directory deleted
        E::Link("e", "/bin/true"),     // replaced by a link
    ]);
    let s = scan(&saved(&[base(), add, fix], Some("app"), &[])[..], 1).unwrap();
    let paths: Vec<&str> = s.special.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["/opt/c"]);
    assert_eq!(s.special[0].layer, 1);
}

#[test]
fn secret_looking_variables_are_named_never_their_values() {
    let t = saved(
        &[base()],
        Some("app"),
        &[
            "DB_PASSWORD=hunter2",
            "AWS_ACCESS_KEY_ID=AKIAxyz",
            "GITHUB_TOKEN=ghp_abc",
            "my_api_key=k",
            "PATH=/bin",
            "HOME=/home/app",
            "X\u{1b}[31mSECRET=v",
        ],
    );
    let s = scan(&t[..], 1).unwrap();
    let f = check(&s, Severity::Error);
    assert_eq!(ids(&f), ["image.secret-env"]);
    assert_eq!(f[0].severity, Severity::Warning);
    let m = &f[0].message;
    for name in [
        "DB_PASSWORD",
        "AWS_ACCESS_KEY_ID",
        "GITHUB_TOKEN",
        "my_api_key",
    ] {
        assert!(m.contains(name), "{m}");
    }
    for value in ["hunter2", "AKIAxyz", "ghp_abc", "PATH", "\u{1b}"] {
        assert!(!m.contains(value), "{m}");
    }
}

#[test]
fn a_scan_reads_a_stream_sent_in_chunks_through_a_channel() {
    let t = saved(&[base()], Some("app"), &[]);
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    let feeder = std::thread::spawn(move || {
        // the scan stops reading at the archive's end: a send can then fail
        for c in t.chunks(777) {
            if tx.send(Ok(c.to_vec())).is_err() {
                break;
            }
        }
    });
    let s = scan(ChunkReader::new(rx), 1).unwrap();
    feeder.join().unwrap();
    assert_eq!(s.user, "app");
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    tx.send(Err(io::Error::other("engine gone"))).unwrap();
    assert!(matches!(
        scan(ChunkReader::new(rx), 0),
        Err(ScanError::Read(_))
    ));
}

#[test]
fn an_image_over_the_size_bound_is_refused_as_its_layers_are_read() {
    let big = layer_tar(&[E::File("blob", 0o644, &[7u8; 100_000])]);
    let t = saved(&[base(), big], Some("app"), &[]);
    let s = scan(&t[..], 1).unwrap();
    assert!(s.bytes > 100_000 && s.bytes < 120_000, "{}", s.bytes);
    assert_eq!(scan_bounded(&t[..], 1, s.bytes).unwrap().bytes, s.bytes);
    match scan_bounded(&t[..], 1, 50_000) {
        Err(ScanError::Refused(m)) => assert!(m.contains("max_image_size"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_layer_saved_twice_is_read_through_its_link() {
    let same = layer_tar(&[E::Dir("x/")]);
    let t = saved(&[base(), same.clone(), same], Some("app"), &[]);
    let s = scan(&t[..], 1).unwrap();
    assert_eq!(s.layers, 3);
}

#[test]
fn archives_that_are_not_one_well_formed_image_are_refused() {
    let refused = |t: &[u8], base: usize, what: &str| match scan(t, base) {
        Err(ScanError::Refused(m)) => assert!(m.contains(what), "{what}: {m}"),
        other => panic!("{what}: {other:?}"),
    };
    let good = saved(&[base()], Some("app"), &[]);
    refused(&good, 2, "fewer than its base image's 2");
    refused(b"", 0, "ends");
    refused(&[0u8; 1024], 0, "no manifest.json");
    // a layer whose bytes differ from its digest
    let mut bad = good.clone();
    let at = bad.windows(7).position(|w| w == b"bin/su\0").unwrap();
    bad[at + 5] = b'x'; // renames bin/su in the layer (header checksum fixed below)
    let hdr = at - at % 512;
    bad[hdr + 148..hdr + 156].copy_from_slice(b"        ");
    let sum: u32 = bad[hdr..hdr + 512].iter().map(|&b| u32::from(b)).sum();
    bad[hdr + 148..hdr + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    refused(&bad, 0, "does not match its digest");
    // paths that climb out
    let mut climb = Header::new_ustar();
    climb.as_mut_bytes()[..18].copy_from_slice(b"a/../../etc/passwd");
    climb.set_size(0);
    climb.set_mode(0o644);
    climb.set_cksum();
    let mut b = Builder::new(Vec::new());
    b.append(&climb, &b""[..]).unwrap();
    let t = saved(&[b.into_inner().unwrap()], None, &[]);
    refused(&t, 0, "..");
    // duplicates in one layer, and a layer that both has and deletes a path
    let dup = layer_tar(&[
        E::File("etc/passwd", 0o644, b"a:x:1:1\n"),
        E::File("etc/passwd", 0o644, b"a:x:0:0\n"),
    ]);
    refused(&saved(&[dup], None, &[]), 0, "twice");
    let both = layer_tar(&[E::File("a", 0o644, b""), E::File(".wh.a", 0o644, b"")]);
    refused(&saved(&[both], None, &[]), 0, "both has and deletes");
    // non-zero bytes after a layer's end
    let mut l = layer_tar(&[E::Dir("x/")]);
    l.extend([1u8; 512]);
    refused(&saved(&[l], None, &[]), 0, "after the end");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary bytes, and a good archive with bytes changed or cut: never a panic,
    /// and anything changed inside a layer or the config is refused or unchanged.
    #[test]
    fn scan_never_panics_on_damaged_archives(
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
        junk in proptest::collection::vec(any::<u8>(), 0..3000),
    ) {
        let _ = scan(&junk[..], 0);
        let mut t = saved(&[base(), layer_tar(&[E::File("x", 0o4755, b"x")])], Some("app"), &["K=v"]);
        let i = at % t.len();
        if cut { t.truncate(i) } else { t[i] = byte }
        if let Ok(s) = scan(&t[..], 1) {
            // only the outer archive's own metadata can change without a refusal
            prop_assert_eq!(s.user, "app");
            prop_assert_eq!(s.passwd, IdFile::File(PASSWD.to_vec()));
            prop_assert_eq!(s.special.len(), 1);
        }
    }

    /// Whatever the names, modes and order of a build layer's files, the setuid ones
    /// are exactly those listed.
    #[test]
    fn every_setuid_file_of_the_build_is_found(
        files in proptest::collection::btree_map("[a-z]{1,3}(/[a-z]{1,3}){0,2}", 0o0u32..0o10000, 0..30),
    ) {
        let mut b = Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        for p in files.keys() {
            let mut d = String::new();
            for c in p.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
                d.push_str(c);
                d.push('/');
                dirs.insert(d.clone());
            }
        }
        // a path that is a directory of another cannot be a file too
        let files: Vec<(String, u32)> = files.into_iter().filter(|(p, _)| !dirs.contains(&format!("{p}/"))).collect();
        for d in &dirs {
            let mut h = Header::new_ustar();
            h.set_entry_type(EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            b.append_data(&mut h, d, &b""[..]).unwrap();
        }
        for (p, mode) in &files {
            let mut h = Header::new_ustar();
            h.set_mode(*mode);
            h.set_size(1);
            b.append_data(&mut h, p, &b"x"[..]).unwrap();
        }
        let t = saved(&[base(), b.into_inner().unwrap()], Some("app"), &[]);
        let s = scan(&t[..], 1).unwrap();
        let want: Vec<String> = files.iter().filter(|(_, m)| m & 0o6000 != 0).map(|(p, _)| format!("/{p}")).collect();
        let got: Vec<String> = s.special.iter().map(|f| f.path.clone()).collect();
        prop_assert_eq!(got, want);
    }
}
