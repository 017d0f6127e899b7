//! Image references and what an image is, pure parts: the one place that parses a
//! reference the way Docker reads it (registry, repository, tag, digest, image ID),
//! writes it in Docker's canonical familiar form (what `docker images` shows, and what
//! the policy's patterns see), and checks what a reference resolved to: that the
//! image found carries the name the user typed (not an image ID prefix Docker matched
//! instead), and that its declared `VOLUME`s are sane. No I/O: the facts come from
//! `engine::Engine::inspect_image`.
#![forbid(unsafe_code)]

use crate::policy::mounts;
use std::fmt;
use std::path::Path;

/// Docker Hub's registry, as Docker names it.
pub const DOCKER_HUB: &str = "docker.io";
/// The namespace of Docker Hub's official images (`debian` is `docker.io/library/debian`).
const OFFICIAL: &str = "library";
/// Longest reference accepted (Docker's own limit on the name is 255).
const MAX_REFERENCE: usize = 512;
/// Longest repository name, registry included (Docker's `NameTotalLengthMax`).
const MAX_NAME: usize = 255;

/// An image reference the way Docker resolves it. Built only by [`Reference::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A full image ID, `sha256:<64 hex>`.
    Id(String),
    /// `[registry/]path[:tag][@sha256:digest]`, with Docker's defaults filled in: the
    /// registry `docker.io` when none is named, and Docker Hub's `library/` namespace
    /// for one-component paths there, and the tag `latest` when neither a tag nor a
    /// digest is given. A tag given together with a digest is dropped, as Docker drops
    /// it (the digest decides).
    Named {
        registry: String,
        path: String,
        /// `None` exactly when pinned by digest.
        tag: Option<String>,
        /// `sha256:<64 hex>`.
        digest: Option<String>,
    },
}

/// Why a reference is refused. The message is for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefError(pub String);

impl fmt::Display for RefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Reference {
    /// Parses a reference as typed. Refused: anything outside Docker's reference
    /// grammar (so nothing option-like or path-like), upper case outside tags
    /// (Docker refuses it too), digests other than `sha256:<64 hex>`, and image IDs in
    /// any form but the full `sha256:<64 hex>`: Docker reads a bare hexadecimal string
    /// or `sha256:<prefix>` as a prefix of some image's ID.
    pub fn parse(s: &str) -> Result<Reference, RefError> {
        let bad = |why: &str| RefError(format!("{s:?} is not a valid image reference: {why}"));
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.len() > MAX_REFERENCE {
            return Err(bad("it is too long"));
        }
        if let Some(id) = parse_id(s)? {
            return Ok(id);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => match d.strip_prefix("sha256:") {
                Some(hex) if is_hex64(hex) => (r, Some(d.to_string())),
                _ => {
                    return Err(bad(
                        "the digest must be sha256: and 64 lower-case hexadecimal digits",
                    ))
                }
            },
            None => (s, None),
        };
        let (name, tag) = split_tag(rest).map_err(bad)?;
        let (registry, path) = parse_name(name).map_err(bad)?;
        Ok(Reference::Named {
            registry: registry.to_string(),
            tag: match digest {
                Some(_) => None,
                None => Some(tag.unwrap_or("latest").to_string()),
            },
            path,
            digest,
        })
    }

    /// The repository in Docker's familiar form: `debian`, `team/app`,
    /// `registry.example.org/team/app`; `None` for an image ID.
    pub fn familiar_name(&self) -> Option<String> {
        match self {
            Reference::Id(_) => None,
            Reference::Named { registry, path, .. } => Some(if registry == DOCKER_HUB {
                match path.strip_prefix("library/") {
                    Some(p) if !p.contains('/') => p.to_string(),
                    _ => path.clone(),
                }
            } else {
                format!("{registry}/{path}")
            }),
        }
    }

    /// The reference in Docker's familiar form, as `docker images` shows it and as the
    /// policy's image patterns see it: `debian:latest` for `debian`,
    /// `docker.io/library/debian` or `index.docker.io/library/debian:latest`;
    /// `name@sha256:...` when pinned by digest; `sha256:...` for an image ID.
    pub fn familiar(&self) -> String {
        match self {
            Reference::Id(id) => id.clone(),
            Reference::Named { tag, digest, .. } => {
                let name = self.familiar_name().unwrap_or_default();
                match (digest, tag) {
                    (Some(d), _) => format!("{name}@{d}"),
                    (None, Some(t)) => format!("{name}:{t}"),
                    (None, None) => format!("{name}:latest"),
                }
            }
        }
    }

    /// The registry the image would be pulled from (`docker.io` for Docker Hub);
    /// `None` for an image ID, which cannot be pulled.
    pub fn registry(&self) -> Option<&str> {
        match self {
            Reference::Id(_) => None,
            Reference::Named { registry, .. } => Some(registry),
        }
    }

    /// Pinned by digest, or a full image ID: what runs cannot change.
    pub fn is_pinned(&self) -> bool {
        matches!(
            self,
            Reference::Id(_)
                | Reference::Named {
                    digest: Some(_),
                    ..
                }
        )
    }

    /// What a pull asks the daemon for: the repository and the tag or digest, always
    /// explicit (without one the Engine API would pull every tag). `None` for an ID.
    pub fn pull_parts(&self) -> Option<(String, String)> {
        let Reference::Named { tag, digest, .. } = self else {
            return None;
        };
        let what = digest
            .clone()
            .or_else(|| tag.clone())
            .unwrap_or_else(|| "latest".into());
        Some((self.familiar_name()?, what))
    }

    /// Whether the image Docker found for this reference really is what was typed: the
    /// full image ID typed, or (for a name) one of the image's own tags or, when pinned
    /// by digest, one of its repository digests. Docker also resolves a name that is
    /// no tag at all as a prefix of some image's ID (`a667ef`); such a match is not
    /// one of the image's names, so it fails here.
    pub fn names(&self, image: &ImageFacts) -> bool {
        let mine = self.familiar();
        match self {
            Reference::Id(id) => image.id == *id,
            Reference::Named {
                digest: Some(_), ..
            } => image
                .repo_digests
                .iter()
                .any(|d| Reference::parse(d).is_ok_and(|r| r.familiar() == mine)),
            Reference::Named { .. } => image
                .repo_tags
                .iter()
                .any(|t| Reference::parse(t).is_ok_and(|r| r.familiar() == mine)),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar())
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// An image ID: only in full, `sha256:<64 hex>`; `None` if `s` is not ID-like.
fn parse_id(s: &str) -> Result<Option<Reference>, RefError> {
    if let Some(hex) = s.strip_prefix("sha256:") {
        return if is_hex64(hex) {
            Ok(Some(Reference::Id(s.to_string())))
        } else {
            Err(RefError(format!(
                "{s:?}: image IDs must be given in full (sha256: and 64 hexadecimal digits), \
                 never a prefix"
            )))
        };
    }
    if is_hex64(s) {
        return Err(RefError(format!(
            "{s:?}: an image ID must be written sha256:{s}"
        )));
    }
    Ok(None)
}

/// The name and the tag: the tag is after the last ':' that follows the last '/' (a
/// ':' before it is a registry port).
fn split_tag(rest: &str) -> Result<(&str, Option<&str>), &'static str> {
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    if tag.is_some_and(|t| !valid_tag(t)) {
        return Err(
            "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        );
    }
    if name.is_empty() || name.len() > MAX_NAME {
        return Err("the name must be 1 to 255 characters");
    }
    Ok((name, tag))
}

/// The registry (Docker Hub if the name names none) and the repository path (with
/// `library/` for an official Hub image).
fn parse_name(name: &str) -> Result<(&str, String), &'static str> {
    let (registry, remainder) = match name.split_once('/') {
        Some((first, r)) if first.contains(['.', ':']) || first == "localhost" => (first, r),
        _ => (DOCKER_HUB, name),
    };
    if registry != DOCKER_HUB && !valid_registry(registry) {
        return Err("the registry must be a lower-case host name with an optional :port");
    }
    // Docker reads the legacy Hub name as the Hub.
    let registry = if registry == "index.docker.io" {
        DOCKER_HUB
    } else {
        registry
    };
    if remainder.is_empty() || !remainder.split('/').all(valid_component) {
        return Err(
            "repository names are lower-case letters and digits separated by '/', \
             '.', '_', '__' or '-'",
        );
    }
    // A Hub repository whose first component looks like a registry could not be
    // written in the familiar form without naming another registry.
    if registry == DOCKER_HUB {
        let first = remainder.split('/').next().unwrap_or_default();
        if remainder.contains('/') && (first.contains('.') || first == "localhost") {
            return Err("a Docker Hub namespace cannot contain '.' or be localhost");
        }
    }
    let path = if registry == DOCKER_HUB && !remainder.contains('/') {
        format!("{OFFICIAL}/{remainder}")
    } else {
        remainder.to_string()
    };
    Ok((registry, path))
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    (1..=128).contains(&t.len())
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && !t.contains("..")
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// `host[:port]`: lower-case DNS labels (letters, digits, inner '-'), dot-separated,
/// and an optional decimal port.
fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    host.split('.').all(label)
        && port.is_none_or(|p| {
            (1..=5).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok()
        })
}

/// A path component: `[a-z0-9]+` runs separated by `.`, `_`, `__` or `-`s.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// What Docker says about an image (`GET /images/{name}/json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// `sha256:<64 hex>`.
    pub id: String,
    /// Its tags, in Docker's familiar form (`debian:12`).
    pub repo_tags: Vec<String>,
    /// Its repository digests (`debian@sha256:...`).
    pub repo_digests: Vec<String>,
    /// The paths its configuration declares as `VOLUME`s, as the image has them.
    pub volumes: Vec<String>,
    /// Its `WORKDIR`: the container's working directory when the request has no `-w`.
    pub working_dir: Option<String>,
}

#[cfg(test)]
impl ImageFacts {
    /// An image with ID `sha256:abab...`, these tags and `VOLUME`s: for unit tests.
    pub fn example(tags: &[&str], volumes: &[&str]) -> ImageFacts {
        ImageFacts {
            id: format!("sha256:{}", "ab".repeat(32)),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![],
            volumes: volumes.iter().map(|v| v.to_string()).collect(),
            working_dir: None,
        }
    }
}

/// Most `VOLUME`s an image may declare.
pub const MAX_VOLUMES: usize = 32;

/// Container trees an image volume may not be in: the kernel's and the devices'.
const VOLUME_DENY: &[&str] = &["/proc", "/sys", "/dev"];

/// The image's `VOLUME` paths as Docker uses them (cleaned, as Go's `filepath.Clean`
/// does), checked: at most [`MAX_VOLUMES`], each absolute, usable, not `/`, not in
/// `/proc`, `/sys` or `/dev`, and not the same as or above a forced mount
/// ([`mounts::FORCED_TARGETS`]; exactly `/tmp` is fine, it is a tmpfs already). Sorted,
/// without duplicates. The message says what is wrong, for the user.
pub fn volume_paths(volumes: &[String]) -> Result<Vec<String>, String> {
    if volumes.len() > MAX_VOLUMES {
        return Err(format!(
            "the image declares {} VOLUMEs, more than the {MAX_VOLUMES} urun accepts",
            volumes.len()
        ));
    }
    let mut out = Vec::new();
    for v in volumes {
        let p = clean_path(v).ok_or_else(|| {
            format!("the image declares VOLUME {v:?}, which is not an absolute path")
        })?;
        mounts::validate_container_path(&p)
            .map_err(|e| format!("the image declares VOLUME {v:?}: {e}"))?;
        if p == "/" {
            return Err("the image declares VOLUME / (its whole file system)".into());
        }
        let path = Path::new(&p);
        if let Some(d) = VOLUME_DENY
            .iter()
            .find(|d| mounts::under(path, Path::new(d)))
        {
            return Err(format!("the image declares VOLUME {p}, inside {d}"));
        }
        if let Some(f) = mounts::FORCED_TARGETS
            .iter()
            .find(|f| mounts::under(Path::new(f), path) && p != "/tmp")
        {
            return Err(format!(
                "the image declares VOLUME {p}, which would hide {f} that urun mounts there"
            ));
        }
        out.push(p);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Lexically cleans an absolute path as Go's `filepath.Clean` does (Docker cleans
/// volume paths that way): repeated `/` and `.` dropped, `..` taken back (never above
/// `/`), no trailing `/`. `None` for a relative path.
pub fn clean_path(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn fam(s: &str) -> String {
        Reference::parse(s)
            .unwrap_or_else(|e| panic!("{e}"))
            .familiar()
    }

    #[test]
    fn familiar_forms_are_dockers() {
        for (typed, want) in [
            ("debian", "debian:latest"),
            ("debian:12", "debian:12"),
            ("library/debian:12", "debian:12"),
            ("docker.io/library/debian:12", "debian:12"),
            ("index.docker.io/library/debian", "debian:latest"),
            ("docker.io/team/app", "team/app:latest"),
            ("docker.io/library/a/b", "library/a/b:latest"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/x:1", "localhost:5000/x:1"),
            ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1"),
            (
                "registry.example.org/team/x:1",
                "registry.example.org/team/x:1",
            ),
            ("team/a__b.c-d---e_f:A_1.x-y", "team/a__b.c-d---e_f:A_1.x-y"),
            ("urun-test/busybox", "urun-test/busybox:latest"),
        ] {
            assert_eq!(fam(typed), want, "{typed}");
        }
        let id = format!("sha256:{D}");
        assert_eq!(fam(&id), id);
        assert_eq!(fam(&format!("debian@{id}")), format!("debian@{id}"));
        // a tag beside a digest is dropped, as docker drops it
        assert_eq!(fam(&format!("debian:12@{id}")), format!("debian@{id}"));
    }

    #[test]
    fn registries_and_pulls() {
        let r = |s: &str| Reference::parse(s).unwrap();
        assert_eq!(r("debian").registry(), Some("docker.io"));
        assert_eq!(r("library/debian:12").registry(), Some("docker.io"));
        assert_eq!(r("localhost/x").registry(), Some("localhost"));
        assert_eq!(r("127.0.0.1:5000/a/b").registry(), Some("127.0.0.1:5000"));
        assert_eq!(r("index.docker.io/x/y").registry(), Some("docker.io"));
        assert_eq!(r(&format!("sha256:{D}")).registry(), None);
        assert_eq!(
            r("debian").pull_parts(),
            Some(("debian".into(), "latest".into()))
        );
        assert_eq!(
            r("127.0.0.1:5000/a/b:v1").pull_parts(),
            Some(("127.0.0.1:5000/a/b".into(), "v1".into()))
        );
        assert_eq!(
            r(&format!("a:1@sha256:{D}")).pull_parts(),
            Some(("a".into(), format!("sha256:{D}")))
        );
        assert_eq!(r(&format!("sha256:{D}")).pull_parts(), None);
        assert!(r(&format!("a@sha256:{D}")).is_pinned());
        assert!(r(&format!("sha256:{D}")).is_pinned());
        assert!(!r("a:1").is_pinned());
    }

    #[test]
    fn ids_only_in_full_and_nothing_option_or_path_like() {
        for bad in [
            "",
            "-v",
            "--privileged",
            "/etc",
            "./x",
            "../x",
            "a b",
            "a\nb",
            "x/../y",
            "x//y",
            "Debian",
            "Registry.example.org/x",
            "x:",
            "x:-1",
            "x:.a",
            "x@sha256:00",
            "x@md5:0123",
            "a/",
            "/a",
            "a.",
            "a-",
            "-a",
            "sha256:a667ef",
            "sha256:",
            D,
            "a@b@c",
            "[::1]:5000/x",
            "host:99999/x",
            "host:-1/x",
            "x:a..b",
            "docker.io/a.b/c",
            "docker.io/localhost/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
        let e = Reference::parse("sha256:a667ef").unwrap_err().0;
        assert!(e.contains("in full"), "{e}");
        let e = Reference::parse(D).unwrap_err().0;
        assert!(e.contains(&format!("sha256:{D}")), "{e}");
        // a short hexadecimal string is a valid name: whether it names the image it
        // resolves to is checked afterwards (`names`)
        assert!(Reference::parse("a667ef").is_ok());
    }

    #[test]
    fn an_id_prefix_match_is_not_a_name_of_the_image() {
        let img = ImageFacts {
            id: format!("sha256:{D}"),
            repo_tags: vec!["team/app:v1".into(), "registry.example.org/x:2".into()],
            repo_digests: vec![format!("team/app@sha256:{D}")],
            volumes: vec![],
            working_dir: None,
        };
        let names = |s: &str| Reference::parse(s).unwrap().names(&img);
        for yes in [
            "team/app:v1",
            "docker.io/team/app:v1",
            "registry.example.org/x:2",
            &format!("sha256:{D}"),
            &format!("team/app@sha256:{D}"),
            &format!("docker.io/team/app:v9@sha256:{D}"),
        ] {
            assert!(names(yes), "{yes}");
        }
        for no in [
            "0123456789ab",
            "0123456789ab:latest",
            "team/app",
            "team/app:v2",
            "app:v1",
            "registry.example.org/x",
            &format!("other@sha256:{D}"),
            &format!("sha256:{}", D.replace('0', "f")),
        ] {
            assert!(!names(no), "{no}");
        }
    }

    #[test]
    fn volume_paths_are_cleaned_and_checked() {
        let v = |s: &[&str]| volume_paths(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(
            v(&[
                "/data/",
                "/var//lib/x",
                "/a/./b",
                "/data",
                "/tmp",
                "/tmp/cache",
                "/etc/ssl"
            ]),
            Ok(vec![
                "/a/b".to_string(),
                "/data".into(),
                "/etc/ssl".into(),
                "/tmp".into(),
                "/tmp/cache".into(),
                "/var/lib/x".into()
            ])
        );
        for bad in [
            "relative",
            "/",
            "/..",
            "/etc",
            "/etc/passwd",
            "/sbin",
            "/usr",
            "/usr/sbin",
            "/sbin/docker-init",
            "/proc",
            "/sys/x",
            "/dev/shm",
            "/a\nb",
        ] {
            assert!(v(&[bad]).is_err(), "{bad:?} accepted");
        }
        let many: Vec<String> = (0..=MAX_VOLUMES).map(|i| format!("/v{i}")).collect();
        assert!(volume_paths(&many).unwrap_err().contains("more than"));
        assert_eq!(
            volume_paths(&many[..MAX_VOLUMES]).unwrap().len(),
            MAX_VOLUMES
        );
    }

    /// Strings shaped like references: registry-ish, path-ish, tag and digest parts
    /// from small alphabets that hit the separators, plus arbitrary noise.
    fn reference_like() -> impl Strategy<Value = String> {
        let part = "[a-zA-Z0-9._:/@-]{0,24}";
        prop_oneof![
            part.prop_map(String::from),
            (
                "(localhost|[a-z0-9.-]{1,12}(:[0-9]{1,6})?|)",
                "[a-z0-9._-]{1,12}(/[a-z0-9._-]{1,12}){0,2}",
                "(:[A-Za-z0-9_.-]{1,10})?",
                prop_oneof![Just(String::new()), Just(format!("@sha256:{D}"))],
            )
                .prop_map(|(reg, path, tag, dig)| if reg.is_empty() {
                    format!("{path}{tag}{dig}")
                } else {
                    format!("{reg}/{path}{tag}{dig}")
                }),
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn parsing_never_panics(s in any::<String>()) {
            let _ = Reference::parse(&s);
        }

        #[test]
        fn normalizing_is_idempotent(s in reference_like()) {
            if let Ok(r) = Reference::parse(&s) {
                let f = r.familiar();
                let again = Reference::parse(&f).expect("the familiar form parses");
                prop_assert_eq!(&again, &r);
                prop_assert_eq!(again.familiar(), f);
            }
        }

        #[test]
        fn the_registry_is_the_one_the_familiar_form_names(s in reference_like()) {
            if let Ok(r) = Reference::parse(&s) {
                let f = r.familiar();
                match r.registry() {
                    None => prop_assert!(f.starts_with("sha256:")),
                    Some(DOCKER_HUB) => {
                        // Hub references never name a registry in familiar form
                        let first = f.split('/').next().unwrap();
                        prop_assert!(!f.contains('/') || !(first.contains(['.', ':']) || first == "localhost"));
                    }
                    Some(reg) => {
                        let prefix = format!("{reg}/");
                        prop_assert!(f.starts_with(&prefix));
                    }
                }
                if let Some((name, _)) = r.pull_parts() {
                    let named = Reference::parse(&name).unwrap();
                    prop_assert_eq!(named.registry(), r.registry());
                }
            }
        }

        #[test]
        fn accepted_references_never_look_like_options_or_paths(s in reference_like()) {
            if Reference::parse(&s).is_ok() {
                prop_assert!(s.as_bytes()[0].is_ascii_alphanumeric(), "{:?}", s);
                prop_assert!(!s.contains("..") && !s.contains("//") && !s.ends_with('/'), "{:?}", s);
                prop_assert!(s.bytes().all(|b| b.is_ascii_graphic()), "{:?}", s);
                prop_assert!(s.len() <= MAX_REFERENCE);
            }
        }

        #[test]
        fn an_id_prefix_is_never_accepted_as_an_id(hex in "[0-9a-f]{1,63}") {
            let id = format!("sha256:{hex}");
            prop_assert!(Reference::parse(&id).is_err());
        }

        #[test]
        fn cleaned_volume_paths_are_plain(p in "/([a-z.]{0,3}/){0,6}[a-z.]{0,3}") {
            let c = clean_path(&p).unwrap();
            prop_assert!(mounts::validate_container_path(&c).is_ok(), "{:?} -> {:?}", p, c);
            prop_assert_eq!(clean_path(&c).unwrap(), c.clone());
        }
    }
}
