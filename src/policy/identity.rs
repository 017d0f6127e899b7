//! Being yourself inside the container, pure parts: the `/etc/passwd` and `/etc/group`
//! the container sees (the image's own, minus anything that claims the caller's uid,
//! gid or names, plus the caller's entries), and which supplementary groups it gets.
//! No I/O: urund reads the image's files through the Docker API (never running the
//! image) and writes the result into its root-only runtime directory.
#![forbid(unsafe_code)]

use crate::policy::GroupsMode;

/// Largest identity file read from an image.
pub const MAX_FILE: usize = 1 << 20;

/// Groups never passed to a container, whatever the policy adds: membership in any of
/// them is root-equivalent or reads secrets.
pub const DEFAULT_DENY_GROUPS: &[&str] = &[
    "root", "docker", "sudo", "wheel", "adm", "disk", "shadow", "kmem", "lxd", "libvirt",
];

/// A name that can go into a passwd/group line as is: no `:`, no newline, not
/// option-like, at most 32 bytes.
pub fn safe_name(n: &str) -> bool {
    crate::policy::names::file_name(n)
}

/// A path that can go into a passwd line: absolute, no `:` or newline, not `..`.
fn safe_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 256
        && !p.contains([':', '\n', '\0'])
        && !p.split('/').any(|c| c == "..")
}

/// The caller as the container's passwd should know them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me<'a> {
    pub uid: u32,
    pub gid: u32,
    /// User name, if the host has a safe one.
    pub name: Option<&'a str>,
    pub home: &'a str,
    pub shell: &'a str,
}

/// A numeric id field as libc reads it strictly: digits only.
fn id_field(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// The container's `/etc/passwd`: every well-formed entry of the image's file except
/// those that claim the caller's uid or name (or have an id libc might read
/// differently), then the caller's own entry.
pub fn passwd(image: &str, me: &Me) -> String {
    let mut out = String::new();
    for line in image.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 7 || line.starts_with(['+', '-', '#']) {
            continue;
        }
        let Some(uid) = id_field(f[2]) else { continue };
        if uid == me.uid || Some(f[0]) == me.name || id_field(f[3]).is_none() {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(n) = me.name {
        out.push_str(&format!(
            "{n}:x:{}:{}:{n}:{}:{}\n",
            me.uid, me.gid, me.home, me.shell
        ));
    }
    out
}

/// The container's `/etc/group`: the image's well-formed entries except those that
/// claim a gid or name of `primary` or `extra`, with the caller (`member`) taken out of
/// their member lists, then the caller's primary group and the supplementary groups
/// passed (the caller listed as a member of those). So the caller is listed in exactly
/// the groups the container has (an image saying `wheel:x:10:alice` does not make
/// alice look like a member of wheel).
///
/// Member lists are normalised ([`members`]): readers disagree on whitespace (glibc's
/// nss_files skips it before a member, so `wheel:x:10: alice` lists alice; runc and
/// musl compare the bytes as they are), so every member is trimmed, empty ones are
/// dropped, and the caller is taken out in whichever way it was written.
pub fn group(
    image: &str,
    primary: Option<(u32, &str)>,
    extra: &[(u32, &str)],
    member: Option<&str>,
) -> String {
    let mine: Vec<(u32, &str)> = primary.into_iter().chain(extra.iter().copied()).collect();
    let mut out = String::new();
    for line in image.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 4 || line.starts_with(['+', '-', '#']) {
            continue;
        }
        let Some(gid) = id_field(f[2]) else { continue };
        if mine.iter().any(|(g, n)| *g == gid || *n == f[0]) {
            continue;
        }
        out.push_str(&format!(
            "{}:{}:{}:{}\n",
            f[0],
            f[1],
            f[2],
            members(f[3], member).join(",")
        ));
    }
    if let Some((gid, name)) = primary {
        out.push_str(&format!("{name}:x:{gid}:\n"));
    }
    for (gid, name) in extra {
        out.push_str(&format!("{name}:x:{gid}:{}\n", member.unwrap_or("")));
    }
    out
}

/// A group's member list, normalised: split at `,`, each member trimmed of the
/// whitespace C's `isspace` knows (space, `\t`, `\n`, `\v`, `\f`, `\r`), empty ones
/// dropped, and `me` (the caller) dropped however it was padded.
pub fn members<'a>(list: &'a str, me: Option<&str>) -> Vec<&'a str> {
    list.split(',')
        .map(|m| m.trim_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']))
        .filter(|m| !m.is_empty() && Some(*m) != me)
        .collect()
}

/// The login shell for the container: the caller's own if the image knows it (listed
/// in its `/etc/shells` or used by one of its passwd entries), else `/bin/sh`.
pub fn shell(host_shell: Option<&str>, image_shells: &str, image_passwd: &str) -> String {
    let known = |s: &str| {
        image_shells.lines().any(|l| l.trim() == s)
            || image_passwd
                .lines()
                .any(|l| l.split(':').nth(6) == Some(s) && l.split(':').count() == 7)
    };
    match host_shell {
        Some(s) if safe_path(s) && known(s) => s.to_string(),
        _ => "/bin/sh".to_string(),
    }
}

/// The groups a container never gets, neither as its gid nor as a supplementary
/// group: [`DEFAULT_DENY_GROUPS`], the policy's `identity.deny_groups` and the access
/// group, by name and by gid (each name resolved to its gid by the caller of
/// [`DeniedGroups::new`]), and gid 0. Matching both ways means a group renamed, or a
/// second name for a denied gid, does not slip through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeniedGroups {
    names: Vec<String>,
    gids: Vec<u32>,
}

impl DeniedGroups {
    /// From the names denied besides the built-in ones (the policy's
    /// `identity.deny_groups` and the access group), the access group's gid, and
    /// `gid_of` to resolve each name (the user database).
    pub fn new<'a>(
        extra: impl IntoIterator<Item = &'a str>,
        access_gid: u32,
        gid_of: impl Fn(&str) -> Option<u32>,
    ) -> DeniedGroups {
        let mut names: Vec<String> = DEFAULT_DENY_GROUPS
            .iter()
            .copied()
            .chain(extra)
            .map(String::from)
            .collect();
        names.sort();
        names.dedup();
        let mut gids: Vec<u32> = names.iter().filter_map(|n| gid_of(n)).collect();
        gids.extend([0, access_gid]);
        gids.sort_unstable();
        gids.dedup();
        DeniedGroups { names, gids }
    }

    /// Whether the group `gid`, called `name` in the user database, is denied.
    pub fn denies(&self, gid: u32, name: Option<&str>) -> bool {
        self.gids.contains(&gid) || name.is_some_and(|n| self.names.iter().any(|d| d == n))
    }
}

/// The supplementary groups a container gets. `primary`: none. `caller`: the
/// caller's groups as the kernel reported them, minus their primary group and every
/// denied one (`name_of` gives a gid's name). Sorted, without duplicates.
pub fn supplementary(
    mode: GroupsMode,
    primary: u32,
    caller_groups: &[u32],
    denied: &DeniedGroups,
    name_of: impl Fn(u32) -> Option<String>,
) -> Vec<u32> {
    if mode == GroupsMode::Primary {
        return Vec::new();
    }
    let mut v: Vec<u32> = caller_groups
        .iter()
        .copied()
        .filter(|&g| g != primary && !denied.denies(g, name_of(g).as_deref()))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The content of the first regular file in a tar stream (what the Docker archive
/// endpoint returns for one path). `None` if the stream holds no regular file first
/// (a symlink, a directory) or is malformed. Extended headers are skipped.
pub fn untar_first_file(tar: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0;
    while at + 512 <= tar.len() {
        let h = &tar[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            return None;
        }
        let size_field = std::str::from_utf8(&h[124..136]).ok()?;
        let size = usize::from_str_radix(size_field.trim_matches(['\0', ' ']), 8).ok()?;
        let data = at + 512;
        let end = data.checked_add(size)?;
        match h[156] {
            b'0' | 0 => {
                return (end <= tar.len() && size <= MAX_FILE).then(|| tar[data..end].to_vec())
            }
            b'x' | b'g' | b'L' | b'K' => {
                at = data.checked_add(size.div_ceil(512).checked_mul(512)?)?
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Me<'static> {
        Me {
            uid: 1001,
            gid: 1002,
            name: Some("alice"),
            home: "/home/alice",
            shell: "/bin/sh",
        }
    }

    #[test]
    fn passwd_drops_impostors_and_adds_the_caller() {
        let img = "root:x:0:0:root:/root:/bin/sh\n\
                   alice:x:0:0:fake root alice:/root:/bin/sh\n\
                   mallory:x:1001:0:claims my uid:/:/bin/sh\n\
                   sneaky:x:01001:0::/:/bin/sh\n\
                   plus:x:+1001:0::/:/bin/sh\n\
                   short:x:5\n\
                   +nis::::::\n\
                   nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
        assert_eq!(
            passwd(img, &me()),
            "root:x:0:0:root:/root:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
             alice:x:1001:1002:alice:/home/alice:/bin/sh\n"
        );
        // no safe name: impostors still go, nothing is added
        let mut m = me();
        m.name = None;
        assert_eq!(passwd(img, &m).lines().count(), 3);
        assert!(!passwd(img, &m).contains(":1001:"));
    }

    #[test]
    fn group_drops_impostors_and_adds_mine() {
        let img = "root:x:0:\nalice:x:0:\nstaff:x:1002:\nusers:x:100:\ndev:x:77:\n";
        assert_eq!(
            group(img, Some((1002, "alice")), &[(3000, "dev")], Some("alice")),
            "root:x:0:\nusers:x:100:\nalice:x:1002:\ndev:x:3000:alice\n"
        );
    }

    #[test]
    fn group_member_lists_never_name_the_caller() {
        let img = "wheel:x:10:alice\nadm:x:4:bob,alice,carol\nstaff:x:50:alicea,bob\n";
        assert_eq!(
            group(img, Some((1002, "alice")), &[], Some("alice")),
            "wheel:x:10:\nadm:x:4:bob,carol\nstaff:x:50:alicea,bob\nalice:x:1002:\n"
        );
        // no name for the caller: nothing to take out
        assert_eq!(group(img, None, &[], None), img);
    }

    #[test]
    fn shells() {
        assert_eq!(
            shell(Some("/bin/bash"), "/bin/sh\n/bin/bash\n", ""),
            "/bin/bash"
        );
        assert_eq!(
            shell(Some("/bin/bash"), "", "root:x:0:0::/root:/bin/bash"),
            "/bin/bash"
        );
        assert_eq!(shell(Some("/bin/zsh"), "/bin/sh\n", ""), "/bin/sh");
        assert_eq!(shell(Some("/bin/a:b"), "/bin/a:b\n", ""), "/bin/sh");
        assert_eq!(shell(None, "", ""), "/bin/sh");
    }

    #[test]
    fn supplementary_groups() {
        let names = |g: u32| {
            Some(match g {
                27 => "sudo".to_string(),
                999 => "docker".to_string(),
                500 => "renamed".to_string(),
                _ => format!("g{g}"),
            })
        };
        // "sudo" and "docker" are denied by name (the user database has no gid for
        // them here), 500 by gid (the access group), 4001 by the policy's name
        let deny = DeniedGroups::new(["g4001"], 500, |_| None);
        let groups = [1002, 27, 999, 500, 3000, 3000, 0, 4000, 4001];
        assert_eq!(
            supplementary(GroupsMode::Caller, 1002, &groups, &deny, names),
            vec![3000, 4000]
        );
        assert!(supplementary(GroupsMode::Primary, 1002, &groups, &deny, names).is_empty());
    }

    #[test]
    fn denied_groups_match_by_name_and_by_gid() {
        let gid_of = |n: &str| match n {
            "docker" => Some(999),
            "video" => Some(44),
            _ => None,
        };
        let d = DeniedGroups::new(["video"], 500, gid_of);
        assert!(d.denies(999, None), "docker by gid");
        assert!(d.denies(12345, Some("docker")), "a second gid named docker");
        assert!(d.denies(44, Some("renamed")), "video renamed");
        assert!(d.denies(500, Some("urun")), "the access group");
        assert!(d.denies(0, None), "gid 0");
        assert!(d.denies(7, Some("wheel")), "built-in by name");
        assert!(!d.denies(1001, Some("alice")));
        assert!(!d.denies(1001, None));
    }

    fn tar_entry(name: &str, kind: u8, data: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{:011o}\0", data.len());
        h[124..136].copy_from_slice(size.as_bytes());
        h[156] = kind;
        let mut v = h;
        v.extend_from_slice(data);
        v.resize(v.len().div_ceil(512) * 512, 0);
        v
    }

    #[test]
    fn tar() {
        let mut t = tar_entry("pax", b'x', b"30 path=passwd\n");
        t.extend(tar_entry("passwd", b'0', b"root:x:0:0::/:/bin/sh\n"));
        t.extend(vec![0u8; 1024]);
        assert_eq!(untar_first_file(&t).unwrap(), b"root:x:0:0::/:/bin/sh\n");
        assert_eq!(untar_first_file(&tar_entry("passwd", b'2', b"")), None);
        assert_eq!(untar_first_file(&t[..600]), None);
        assert_eq!(untar_first_file(b"garbage"), None);
    }
}

/// Property tests: the tar reader from arbitrary bytes and from archives another
/// writer (the `tar` crate) made (bounded cases, run with the unit tests).
#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;
    use tar::{Builder, EntryType, Header};

    /// An archive with `data` as its first regular file named `name`, possibly after a
    /// pax extended header, and possibly followed by more entries.
    fn archive(name: &str, data: &[u8], gnu: bool, pax: bool, more: bool) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        if pax {
            b.append_pax_extensions([("comment", &b"made by a property test"[..])])
                .unwrap();
        }
        let mut h = if gnu {
            Header::new_gnu()
        } else {
            Header::new_ustar()
        };
        h.set_entry_type(EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
        if more {
            let mut h = Header::new_gnu();
            h.set_size(3);
            b.append_data(&mut h, "next", &b"xyz"[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn kinds() -> impl Strategy<Value = EntryType> {
        proptest::sample::select(vec![
            EntryType::Symlink,
            EntryType::Link,
            EntryType::Directory,
            EntryType::Char,
            EntryType::Block,
            EntryType::Fifo,
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn untar_returns_exactly_the_file_of_a_well_formed_archive(
            name in prop_oneof!["[a-z]{1,8}", "[a-z][a-z/]{100,200}[a-z]"],
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            gnu in any::<bool>(),
            pax in any::<bool>(),
            more in any::<bool>(),
        ) {
            // long names need the GNU extension (an 'L' entry before the file)
            let gnu = gnu || name.len() > 100;
            let t = archive(&name, &data, gnu, pax, more);
            prop_assert_eq!(untar_first_file(&t), Some(data));
        }

        #[test]
        fn untar_returns_nothing_when_the_first_entry_is_not_a_regular_file(kind in kinds()) {
            let mut b = Builder::new(Vec::new());
            let mut h = Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(0);
            if matches!(kind, EntryType::Symlink | EntryType::Link) {
                h.set_link_name("/etc/shadow").unwrap();
            }
            b.append_data(&mut h, "passwd", &b""[..]).unwrap();
            let mut h = Header::new_gnu();
            h.set_size(4);
            b.append_data(&mut h, "passwd", &b"evil"[..]).unwrap();
            prop_assert_eq!(untar_first_file(&b.into_inner().unwrap()), None);
        }

        #[test]
        fn untar_never_panics_and_never_returns_more_than_it_may(
            t in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..2048),
                // a well-formed archive with bytes changed or cut
                (proptest::collection::vec(any::<u8>(), 0..1500), any::<usize>(), any::<u8>(), any::<bool>())
                    .prop_map(|(data, at, b, cut)| {
                        let mut t = archive("passwd", &data, true, at % 2 == 0, true);
                        let i = at % t.len();
                        if cut { t.truncate(i) } else { t[i] = b }
                        t
                    }),
            ],
        ) {
            if let Some(f) = untar_first_file(&t) {
                prop_assert!(f.len() <= MAX_FILE);
                prop_assert!(f.len() + 512 <= t.len());
            }
        }
    }

    /// Whitespace as C's `isspace` knows it, and a few other characters.
    fn pad() -> impl Strategy<Value = String> {
        "[ \t\x0b\x0c\r]{0,3}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_caller_is_never_a_member_of_an_image_group_however_padded(
            others in proptest::collection::vec("[a-z][a-z0-9_ ]{0,6}", 0..5),
            me_at in proptest::collection::vec((any::<usize>(), pad(), pad()), 0..4),
        ) {
            let me = "alice";
            let mut list: Vec<String> = others.clone();
            for (at, before, after) in &me_at {
                list.insert(at % (list.len() + 1), format!("{before}{me}{after}"));
            }
            let image = format!("wheel:x:10:{}\n", list.join(","));
            let out = group(&image, None, &[], Some(me));
            let line = out.lines().next().unwrap();
            prop_assert!(line.starts_with("wheel:x:10:"));
            let kept = line.trim_start_matches("wheel:x:10:");
            // nobody's name keeps whitespace around it, and the caller is gone
            for m in kept.split(',').filter(|m| !m.is_empty()) {
                prop_assert_eq!(m, m.trim());
                prop_assert_ne!(m.trim(), me);
            }
            // the others are kept, in order
            let want: Vec<&str> = others.iter().map(|o| o.trim()).filter(|o| !o.is_empty()).collect();
            prop_assert_eq!(kept.split(',').filter(|m| !m.is_empty()).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn untar_refuses_files_over_max_file() {
        let big = vec![b'x'; MAX_FILE + 1];
        assert_eq!(
            untar_first_file(&archive("passwd", &big, true, false, false)),
            None
        );
        let max = vec![b'y'; MAX_FILE];
        assert_eq!(
            untar_first_file(&archive("passwd", &max, true, true, false)),
            Some(max)
        );
    }
}
