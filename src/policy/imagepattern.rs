//! `images.allow` patterns: the globs of [`crate::policy::Pattern`] (`*` any run of
//! characters, also `/`; `?` one character) plus one owner-aware placeholder,
//! `{user}`, which stands for exactly the caller's own component of the build
//! namespace ([`crate::policy::build::namespace_user`]: their user name, or their uid
//! in digits when the name is not a repository path component). With
//! `allow = ["registry.example:5000/urun/{user}/*"]` each member runs only the images
//! promoted under their own name.
//!
//! The rules that make the placeholder mean "the caller's own, nobody else's", each
//! checked when the policy is read (the error names the line and `images.allow`):
//! - only `{user}` is known; any other `{...}`, and a lone `{` or `}`, is an error
//!   (a reference never contains a brace, so nothing is lost);
//! - at most one `{user}`, and it is a whole path component: at the start or after
//!   a `/`, and followed by a `/` (so `urun/{user}x/*` cannot reach `urun/alicex/`);
//! - no `*` or `?` before it (a `*` there matches `/` too: `*/urun/{user}/*` would
//!   admit `reg/urun/bob/urun/alice/app`, a name bob owns).
//!
//! Matching never turns the user's component into glob syntax: the text before the
//! placeholder and the component are compared literally, then the rest is matched as
//! a glob. A component that is not a repository path component (which
//! `namespace_user` never returns) matches nothing. Pure.
#![forbid(unsafe_code)]

use crate::policy::build::path_component;
use crate::policy::model::glob_match;
use serde::{de, Deserialize, Deserializer};
use std::fmt;

/// The placeholder for the caller's own namespace component.
pub const USER: &str = "{user}";

/// Longest pattern (as [`crate::policy::Pattern`]).
const MAX_PATTERN: usize = 255;

/// One `images.allow` entry. Built only by [`ImagePattern::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePattern {
    /// As written in the policy (what messages and `urun --policy` show).
    text: String,
    /// `Some((before, after))` around the one `{user}`; `None`: a plain glob.
    owner: Option<(String, String)>,
}

impl ImagePattern {
    /// Parses a pattern as written in the policy; the error is one line for the
    /// administrator.
    pub fn parse(s: &str) -> Result<ImagePattern, String> {
        if s.is_empty()
            || s.len() > MAX_PATTERN
            || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'[')
        {
            return Err(format!(
                "invalid pattern {s:?}: 1 to {MAX_PATTERN} printable characters, `*` and `?` \
                 as wildcards, {USER} for the caller's own name"
            ));
        }
        // Every brace must belong to a `{user}`.
        let mut rest = s;
        let mut found = Vec::new();
        while let Some(i) = rest.find(['{', '}']) {
            let at = s.len() - rest.len() + i;
            if rest[i..].starts_with(USER) {
                found.push(at);
                rest = &rest[i + USER.len()..];
                continue;
            }
            let shown = match rest[i..].starts_with('{') {
                true => match rest[i..].find('}') {
                    Some(j) => format!("unknown placeholder {}", &rest[i..=i + j]),
                    None => "a `{` without its `}`".to_string(),
                },
                false => "a `}` without its `{`".to_string(),
            };
            return Err(format!(
                "invalid pattern {s:?}: {shown}; the only placeholder is {USER} (the \
                 caller's own name)"
            ));
        }
        let owner = match found[..] {
            [] => None,
            [at] => {
                let (before, after) = (&s[..at], &s[at + USER.len()..]);
                if !(before.is_empty() || before.ends_with('/')) || !after.starts_with('/') {
                    return Err(format!(
                        "invalid pattern {s:?}: {USER} must be a whole path component, \
                         between `/`s (as in registry.example.org/urun/{USER}/*)"
                    ));
                }
                if before.contains(['*', '?']) {
                    return Err(format!(
                        "invalid pattern {s:?}: no `*` or `?` before {USER} (a wildcard there \
                         would match inside another user's name)"
                    ));
                }
                Some((before.to_string(), after.to_string()))
            }
            _ => {
                return Err(format!(
                    "invalid pattern {s:?}: {USER} may appear only once"
                ))
            }
        };
        Ok(ImagePattern {
            text: s.to_string(),
            owner,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has the `{user}` placeholder.
    pub fn is_owner(&self) -> bool {
        self.owner.is_some()
    }

    /// Whether `subject` (a reference in Docker's familiar form) matches, for a
    /// caller whose namespace component is `user`. `user` is compared literally,
    /// never read as a glob; one that is not a repository path component matches
    /// nothing.
    pub fn matches(&self, subject: &str, user: &str) -> bool {
        match &self.owner {
            None => glob_match(self.text.as_bytes(), subject.as_bytes()),
            Some((before, after)) => {
                path_component(user)
                    && subject
                        .strip_prefix(before.as_str())
                        .and_then(|r| r.strip_prefix(user))
                        .is_some_and(|r| glob_match(after.as_bytes(), r.as_bytes()))
            }
        }
    }
}

impl fmt::Display for ImagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ImagePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ImagePattern::parse(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> ImagePattern {
        ImagePattern::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn user_stands_for_exactly_the_callers_component() {
        let own = p("reg.example:5000/urun/{user}/*");
        assert!(own.is_owner());
        assert!(own.matches("reg.example:5000/urun/alice/app:1", "alice"));
        assert!(own.matches("reg.example:5000/urun/alice/a/b@sha256:00", "alice"));
        for other in [
            "reg.example:5000/urun/bob/app:1",
            "reg.example:5000/urun/alicex/app:1",
            "reg.example:5000/urun/alic/app:1",
            "reg.example:5000/urun/alice",
            "other:5000/urun/alice/app:1",
            "reg.example:5000/urun/bob/urun/alice/app:1",
            "urun/alice/app:1",
        ] {
            assert!(!own.matches(other, "alice"), "{other}");
        }
        // the uid in digits when the name is not a component
        assert!(own.matches("reg.example:5000/urun/1001/app:1", "1001"));
        assert!(!own.matches("reg.example:5000/urun/1001/app:1", "1002"));
        // at the start: Docker Hub names
        let hub = p("{user}/*");
        assert!(hub.matches("alice/app:latest", "alice"));
        assert!(!hub.matches("bob/app:latest", "alice"));
        // a plain glob ignores the user
        let glob = p("reg.example:5000/urun/*");
        assert!(!glob.is_owner());
        assert!(glob.matches("reg.example:5000/urun/bob/app:1", "alice"));
    }

    #[test]
    fn a_user_component_is_never_read_as_a_glob() {
        let own = p("r:1/urun/{user}/*");
        for bad in ["*", "?", "a*", "*/x", "", "a/b", "A", "a b", "-a"] {
            assert!(!own.matches("r:1/urun/x/app:1", bad), "{bad:?}");
            assert!(
                !own.matches(&format!("r:1/urun/{bad}/app:1"), bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unknown_or_misplaced_placeholders_are_refused_with_one_line() {
        for (bad, why) in [
            ("r/urun/{users}/*", "unknown placeholder {users}"),
            ("r/urun/{uid}/*", "unknown placeholder {uid}"),
            ("r/urun/{USER}/*", "unknown placeholder {USER}"),
            ("r/urun/{}/*", "unknown placeholder {}"),
            ("r/urun/{user/*", "without its `}`"),
            ("r/urun/user}/*", "without its `{`"),
            ("r/urun/{user}x/*", "whole path component"),
            ("r/urun/x{user}/*", "whole path component"),
            ("r/urun/{user}", "whole path component"),
            ("r/urun/{user}*", "whole path component"),
            ("*/urun/{user}/*", "no `*` or `?` before"),
            ("r?/urun/{user}/*", "no `*` or `?` before"),
            ("{user}/{user}/*", "only once"),
            ("", "invalid pattern"),
            ("a[b]", "invalid pattern"),
            ("a b", "invalid pattern"),
        ] {
            let e = ImagePattern::parse(bad).unwrap_err();
            assert!(e.contains(why) && !e.contains('\n'), "{bad}: {e}");
        }
    }

    /// Reference matcher: expand the placeholder textually, then glob; fine when the
    /// user component is a path component (which holds no glob characters).
    fn expanded(p: &str, user: &str, s: &str) -> bool {
        let text = p.replace(USER, user);
        glob_match(text.as_bytes(), s.as_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn parsing_never_panics_and_errors_are_one_line(s in prop_oneof![
            any::<String>(),
            "[a-z{}/*?:.]{0,24}",
            "[a-z/*]{0,8}\\{user\\}[a-z/*]{0,8}",
        ]) {
            match ImagePattern::parse(&s) {
                Ok(pat) => {
                    prop_assert_eq!(pat.as_str(), s.as_str());
                    prop_assert_eq!(pat.is_owner(), s.contains(USER));
                }
                Err(e) => prop_assert!(!e.contains('\n'), "{}", e),
            }
        }

        #[test]
        fn an_accepted_pattern_has_no_brace_outside_one_user_placeholder(
            s in "[a-z{}/*?]{0,10}(\\{user\\})?[a-z{}/*?]{0,10}",
        ) {
            if let Ok(pat) = ImagePattern::parse(&s) {
                let without = s.replacen(USER, "", 1);
                prop_assert!(!without.contains(['{', '}']), "{:?}", s);
                if pat.is_owner() {
                    let (before, after) = s.split_once(USER).unwrap();
                    prop_assert!(!before.contains(['*', '?']));
                    prop_assert!(before.is_empty() || before.ends_with('/'));
                    prop_assert!(after.starts_with('/'));
                }
            }
        }

        #[test]
        fn matching_agrees_with_textual_expansion_for_valid_components(
            before in "([a-z]{1,3}/){0,3}",
            after in "/[a-z*?/]{0,6}",
            user in "[a-z0-9]{1,4}([._-][a-z0-9]{1,3})?",
            subject in "([a-z0-9._-]{1,4}/){0,5}[a-z0-9:*?]{0,4}",
        ) {
            let text = format!("{before}{USER}{after}");
            let pat = ImagePattern::parse(&text).unwrap();
            prop_assert_eq!(pat.matches(&subject, &user), expanded(&text, &user, &subject));
        }

        #[test]
        fn an_owner_pattern_only_ever_admits_names_under_the_callers_own_component(
            before in "([a-z]{1,3}/){1,3}",
            after in "/[a-z*?/]{0,6}",
            user in "[a-z0-9]{1,4}",
            other in "[a-z0-9*?/]{1,6}",
            tail in "[a-z0-9/:]{0,8}",
        ) {
            let pat = ImagePattern::parse(&format!("{before}{USER}{after}")).unwrap();
            let subject = format!("{before}{other}{tail}");
            if pat.matches(&subject, &user) {
                let prefix = format!("{before}{user}/");
                prop_assert!(subject.starts_with(&prefix), "{} admitted {} for {}", pat, subject, user);
            }
            // whatever the "user" is, if it is not a component nothing matches
            if !path_component(&other) {
                prop_assert!(!pat.matches(&subject, &other));
            }
        }
    }
}
