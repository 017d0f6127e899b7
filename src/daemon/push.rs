//! `urun push NAME[:TAG]`: promotes one of the caller's own, checked builds to the
//! policy's registry (`[build] registry`), as `<registry>/<namespace>/<user>/<name>:<tag>`.
//!
//! The security argument, in order:
//! 0. Only a caller who may build now ([`crate::policy::build::may_build`]: `[build]
//!    enabled`, membership of `[build] group`), refused with the same line and rule as
//!    `urun build`: promoting is part of building, and a member taken out of the build
//!    group promotes nothing more.
//! 1. Only a build the caller made through urun: the name must resolve to one of the
//!    caller's build records ([`super::builds`], written by urund after every check
//!    passed; an image's labels prove nothing), through one of its tags, and that tag
//!    must still name the recorded image on the engine. Others' images, images not
//!    built through urun and builds that failed a check (they have no record) are
//!    refused with one line (125) and nothing is done.
//! 2. Only under the caller's own name: the registry path is the local tag, which is
//!    always inside `<namespace>/<user>/`, behind the registry's address.
//! 3. The credentials come from the root-only file the policy names, read by urund at
//!    each push; users never see them, and neither the log nor the audit record
//!    carries them.
//! 4. Nothing is left: the registry name exists on the engine only for the push, and
//!    is removed whatever happened (a registry that is down, refuses, or is slower
//!    than `[build] max_runtime`). One push per user at a time, so two pushes of the
//!    same name cannot race on that name. If urund itself dies mid-push, its next
//!    start removes the name ([`leftover_push_names`]). The name cannot carry a mark
//!    of urund's (Docker pushes a local name to the registry, path and tag it names),
//!    so what proves it urund's is where it is and what it names: under
//!    `<registry>/<namespace>/`, where urund never pulls a tag (only digests, which
//!    make no tag: [`crate::policy::judge::judge_pull`]), so no user can have urund
//!    put a name there; exactly `<registry>/` and one of a build record's tags; and
//!    naming that record's image. Anything else there (an administrator's own tag, a
//!    name of another registry or namespace) is left alone.
//! 5. Recorded: the pushed digest goes into the build record (so a run by digest on
//!    any host traces back to the build: who, which Dockerfile and context) and into
//!    the audit record.

use super::audit::Record;
use super::builds::BuildRecord;
use super::images::{resolve, NOT_OWN};
use super::outbox::Outbox;
use super::pull::{send_progress, Throttle};
use super::serve::{daemon_error, End};
use super::Helper;
use crate::engine::{ImageSummary, RunError};
use crate::policy::build::{may_build, Build};
use crate::policy::rule::{Refusal, Rule};
use crate::system::{self, Caller};
use crate::wire::{status, Outcome, Progress};
use std::time::Duration;

/// A user's push in progress; leaves the set on drop.
struct PushSlot<'a> {
    helper: &'a Helper,
    uid: u32,
}

impl Drop for PushSlot<'_> {
    fn drop(&mut self) {
        self.helper.pushes.lock().unwrap().remove(&self.uid);
    }
}

/// `repo:tag` split at the tag's `:` (the last one after the last `/`). Pure.
pub(super) fn split_tag(reference: &str) -> Option<(&str, &str)> {
    let (repo, tag) = reference.rsplit_once(':')?;
    (!tag.contains('/') && !repo.is_empty() && !tag.is_empty()).then_some((repo, tag))
}

/// Which push events the client sees. bollard 0.19 drops the layer id of push
/// events, so per-layer byte counts cannot be told apart: only status changes go
/// through, each once in a row; the daemon's first line (the repository) and its
/// digest line are left out (urun's own last line says both).
#[derive(Default)]
pub(super) struct Shown {
    last: Option<String>,
}

impl Shown {
    pub(super) fn pass(&mut self, ev: Progress) -> Option<Progress> {
        let noise = ev.current.is_some()
            || ev.status.starts_with("The push refers to")
            || ev.status.contains("digest: sha256:")
            || self.last.as_deref() == Some(ev.status.as_str());
        if noise {
            return None;
        }
        self.last = Some(ev.status.clone());
        Some(ev)
    }
}

impl Helper {
    /// `urun push NAME[:TAG]` (see the module comment).
    pub(super) async fn push(
        &self,
        caller: &Caller,
        rec: &mut Record,
        name: &str,
        out: &Outbox,
    ) -> Result<Outcome, End> {
        let b = &self.policy.build;
        let refuse = |rule: Rule, m: String| Err(End::Refused(Refusal::new(rule, m)));
        // 0. Only who may build now.
        may_build(caller, &self.policy, self.group_gid, self.build_gid()).map_err(End::Refused)?;
        let Some(registry) = b.registry.as_deref() else {
            return refuse(
                Rule::BuildRegistry,
                "urun push: this host has no registry to push to ([build] registry is not \
                 set); nothing was pushed"
                    .into(),
            );
        };
        // 1. One of the caller's builds, by one of its names, still that image.
        let records = self.records(caller.uid)?;
        let target = resolve(name, caller.name.as_deref(), b, &records).map_err(|r| {
            End::Refused(match r.message.contains("more than one") {
                true => r,
                false => Refusal::new(
                    NOT_OWN,
                    format!(
                        "{name}: not one of your builds; urun push promotes only images you \
                         built with urun build (urun images lists them); nothing was pushed"
                    ),
                ),
            })
        })?;
        let id = target.record.image_id.clone();
        rec.image_id = Some(id.clone());
        let [local] = &target.tags[..] else {
            return refuse(
                NOT_OWN,
                format!(
                    "{name}: this build has {} names: push one of them (NAME[:TAG], urun \
                     images lists them); nothing was pushed",
                    target.tags.len()
                ),
            );
        };
        let here = self
            .engine
            .inspect_image(local)
            .await
            .map_err(|e| End::Failed(daemon_error(e)))?;
        if here.is_none_or(|f| f.id != id) {
            return refuse(
                NOT_OWN,
                format!("{name}: {local} no longer names your build; nothing was pushed"),
            );
        }
        // 2. Under the caller's own name, behind the registry's address.
        let Some((repo, tag)) = split_tag(local) else {
            return refuse(
                NOT_OWN,
                format!("{name}: not a NAME:TAG; nothing was pushed"),
            );
        };
        let remote = format!("{registry}/{repo}");
        let reference = format!("{remote}:{tag}");
        rec.image = reference.clone();
        // 3. The credentials, if the registry needs them.
        let auth = match &b.registry_auth {
            None => None,
            Some(path) => match system::load_registry_auth(&path.0) {
                Ok(a) => Some(a),
                Err(e) => {
                    eprintln!("urund: urun push: {e}");
                    return refuse(
                        Rule::BuildRegistry,
                        "urund cannot use its registry credentials ([build] registry_auth; \
                         its log says why); nothing was pushed"
                            .into(),
                    );
                }
            },
        };
        // 4. One at a time per user; the registry name removed whatever happens.
        let _slot = {
            let mut pushes = self.pushes.lock().unwrap();
            if !pushes.insert(caller.uid) {
                return refuse(
                    Rule::BuildRegistry,
                    "another urun push of yours is in progress; try again when it has \
                     finished (nothing was pushed)"
                        .into(),
                );
            }
            PushSlot {
                helper: self,
                uid: caller.uid,
            }
        };
        self.engine
            .tag(&id, &remote, tag)
            .await
            .map_err(|e| End::Failed(daemon_error(e)))?;
        let limit = Duration::from_secs(b.max_runtime.0);
        let pushed = tokio::time::timeout(limit, self.push_relaying(&remote, tag, auth, out)).await;
        if let Err(e) = self.engine.remove_image(&reference).await {
            // urund's next start removes it (leftover_push_names); say so meanwhile
            eprintln!(
                "urund: urun push: removing the name {reference} after the push: {e:#}; \
                 urund's next start removes it"
            );
        }
        let digest = match pushed {
            Err(_) => {
                return Err(End::Failed(RunError {
                    status: status::MAX_RUNTIME,
                    message: format!(
                        "push of {reference} stopped after {} ([build] max_runtime); the \
                         registry may hold a partial upload, nothing was recorded",
                        b.max_runtime
                    ),
                }))
            }
            Ok(Err(e)) if crate::engine::is_unreachable(&e) => {
                return Err(End::Failed(daemon_error(e)))
            }
            Ok(Err(e)) => {
                return Err(End::Failed(RunError {
                    status: status::REFUSED,
                    message: format!("{e:#}; nothing was recorded"),
                }))
            }
            Ok(Ok(d)) => d,
        };
        // 5. Recorded.
        let by_digest = format!("{remote}@{digest}");
        if let Err(e) = self.builds.add_digest(caller.uid, &id, &by_digest) {
            eprintln!(
                "urund: urun push: recording {by_digest} for uid {}: {e:#}",
                caller.uid
            );
        }
        rec.message = Some(format!("pushed {reference} as {by_digest}"));
        Ok(Outcome::Pushed { reference, digest })
    }

    /// The engine's push, its events relayed as `Progress` frames (as a pull's).
    async fn push_relaying(
        &self,
        remote: &str,
        tag: &str,
        auth: Option<crate::policy::build::RegistryAuth>,
        out: &Outbox,
    ) -> anyhow::Result<String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        let push = self.engine.push(
            remote,
            tag,
            auth.as_ref(),
            Box::new(move |ev| {
                let _ = tx.send(ev);
            }),
        );
        tokio::pin!(push);
        let mut throttle = Throttle::default();
        let mut shown = Shown::default();
        let mut reading = true;
        let result = loop {
            tokio::select! {
                r = &mut push => break r,
                Some(ev) = rx.recv() => {
                    let Some(ev) = shown.pass(ev) else { continue };
                    if let (true, Some((counting, frame))) = (reading, throttle.frame(ev)) {
                        reading = send_progress(out, counting, frame).await;
                    }
                }
            }
        };
        while let Ok(ev) = rx.try_recv() {
            let Some(ev) = shown.pass(ev) else { continue };
            if let (true, Some((counting, frame))) = (reading, throttle.frame(ev)) {
                reading = send_progress(out, counting, frame).await;
            }
        }
        result
    }
}

/// A registry name a push left on the run engine: the tag, and whose build it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Leftover {
    pub tag: String,
    pub uid: u32,
    pub user: String,
}

/// The registry names on the run engine that pushes of urund's left (see point 4 of
/// the module comment): each tag under `build`'s push prefix that is exactly
/// `<registry>/` and a tag of a build record of the image it names (`records_of`: the
/// valid records of an image ID). Pure.
pub(super) fn leftover_push_names(
    build: &Build,
    images: &[ImageSummary],
    records_of: impl Fn(&str) -> Vec<BuildRecord>,
) -> Vec<Leftover> {
    let (Some(registry), Some(prefix)) = (&build.registry, build.push_prefix()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for image in images {
        let mut candidates = image.repo_tags.iter().filter(|t| t.starts_with(&prefix));
        let Some(first) = candidates.next() else {
            continue;
        };
        let records = records_of(&image.id);
        for tag in std::iter::once(first).chain(candidates) {
            let record = records.iter().find(|r| {
                r.image_id == image.id && r.tags.iter().any(|x| format!("{registry}/{x}") == *tag)
            });
            if let Some(r) = record {
                out.push(Leftover {
                    tag: tag.clone(),
                    uid: r.uid,
                    user: r.user.clone(),
                });
            }
        }
    }
    out
}

impl Helper {
    /// At start: removes the registry names pushes of a urund that died left on the run
    /// engine ([`leftover_push_names`]), each logged and audited (`cleanup`). The number
    /// removed.
    pub(super) async fn sweep_push_names(&self) -> usize {
        if self.policy.build.registry.is_none() {
            return 0;
        }
        let images = match self.engine.list_images().await {
            Ok(i) => i,
            Err(e) => {
                eprintln!("urund: looking for names a stopped push left: {e:#}");
                return 0;
            }
        };
        let records_of = |id: &str| -> Vec<BuildRecord> {
            let holders = self.builds.holders(id).unwrap_or_else(|e| {
                eprintln!("urund: reading the build records: {e:#}");
                Vec::new()
            });
            holders
                .into_iter()
                .filter_map(|uid| self.builds.get(uid, id).ok().flatten())
                .collect()
        };
        let mut removed = 0;
        for l in leftover_push_names(&self.policy.build, &images, records_of) {
            let message = match self.engine.remove_image(&l.tag).await {
                Ok(_) => {
                    removed += 1;
                    format!(
                        "removed {}, the registry name of a push that a stopped urund left",
                        l.tag
                    )
                }
                Err(e) => format!(
                    "removing {}, the registry name of a push that a stopped urund left, \
                     failed: {e:#}",
                    l.tag
                ),
            };
            eprintln!("urund: {message} (uid {} {})", l.uid, l.user);
            self.audit.write(&super::audit::Record::cleanup(
                "", l.uid, &l.user, None, message,
            ));
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_sees_each_status_change_once_and_no_byte_counts() {
        let ev = |status: &str, current: Option<u64>| Progress {
            image: "r:1".into(),
            id: String::new(),
            status: status.into(),
            current,
            total: None,
        };
        let mut s = Shown::default();
        let seen: Vec<String> = [
            ev(
                "The push refers to repository [127.0.0.1:5000/urun/alice/app]",
                None,
            ),
            ev("Preparing", None),
            ev("Preparing", None),
            ev("Pushing", Some(10)),
            ev("Pushing", Some(20)),
            ev("Pushed", None),
            ev("Layer already exists", None),
            ev("1: digest: sha256:abc size: 5", None),
        ]
        .into_iter()
        .filter_map(|e| s.pass(e).map(|e| e.status))
        .collect();
        assert_eq!(seen, ["Preparing", "Pushed", "Layer already exists"]);
    }

    fn record(uid: u32, user: &str, c: char, tags: &[&str]) -> BuildRecord {
        BuildRecord::for_test(
            uid,
            user,
            format!("sha256:{}", c.to_string().repeat(64)),
            tags,
        )
    }

    fn summary(c: char, tags: &[&str]) -> ImageSummary {
        ImageSummary {
            id: format!("sha256:{}", c.to_string().repeat(64)),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_push_name_of_a_recorded_build_is_a_leftover() {
        let b = crate::policy::Policy::parse(
            "[build]\nregistry = \"r:5000\"\n",
            std::path::Path::new("/p"),
        )
        .unwrap()
        .build;
        let records = [
            record(
                1001,
                "alice",
                'a',
                &["urun/alice/app:1", "urun/alice/app:2"],
            ),
            record(1002, "bob", 'b', &["urun/bob/tool:1"]),
        ];
        let images = [
            summary(
                'a',
                &[
                    "urun/alice/app:1",
                    "r:5000/urun/alice/app:1",   // a push's: removed
                    "r:5000/urun/alice/other:1", // not a tag of the record
                    "r:5000/urun/bob/app:1",     // someone else's name for it
                    "r:5000/urunx/alice/app:1",  // another namespace
                    "r:50000/urun/alice/app:1",  // another registry
                    "s:5000/urun/alice/app:2",
                ],
            ),
            // bob's tag on an image that is not bob's build
            summary('c', &["r:5000/urun/bob/tool:1"]),
            summary('b', &["r:5000/urun/bob/tool:1x"]),
        ];
        let of = |id: &str| -> Vec<BuildRecord> {
            records
                .iter()
                .filter(|r| r.image_id == id)
                .cloned()
                .collect()
        };
        assert_eq!(
            leftover_push_names(&b, &images, of),
            [Leftover {
                tag: "r:5000/urun/alice/app:1".into(),
                uid: 1001,
                user: "alice".into()
            }]
        );
        // without a registry nothing is urund's
        let none = Build::default();
        assert!(leftover_push_names(&none, &images, of).is_empty());
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// Tags an engine might list near the push space: the registry or another,
        /// the namespace or a look-alike, a user's component, a name and a tag.
        fn tag() -> impl Strategy<Value = String> {
            (
                prop_oneof![Just("r:5000"), Just("r:500"), Just("s:5000")],
                prop_oneof![Just("urun"), Just("urunx"), Just("other/urun")],
                prop_oneof![Just("alice"), Just("bob"), Just("alice/urun/bob")],
                "[ab](/[ab])?",
                prop_oneof![Just("1"), Just("2")],
            )
                .prop_map(|(r, n, u, name, t)| format!("{r}/{n}/{u}/{name}:{t}"))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            /// Whatever the engine lists, a leftover is only ever a tag under the push
            /// prefix of an image whose own record has exactly that tag behind the
            /// registry, and it names that record's owner.
            #[test]
            fn a_leftover_is_always_a_recorded_builds_push_name(
                images in proptest::collection::vec(
                    (0u8..4, proptest::collection::vec(tag(), 0..4)), 0..6),
                records in proptest::collection::vec(
                    (0u8..4, prop_oneof![Just("alice"), Just("bob")],
                     proptest::collection::vec("[ab](/[ab])?:[12]", 0..3)), 0..5),
            ) {
                let b = crate::policy::Policy::parse(
                    "[build]\nregistry = \"r:5000\"\n",
                    std::path::Path::new("/p"),
                )
                .unwrap()
                .build;
                let id = |n: u8| format!("sha256:{}", n.to_string().repeat(64));
                let images: Vec<ImageSummary> = images
                    .iter()
                    .map(|(n, tags)| ImageSummary {
                        id: id(*n),
                        repo_tags: tags.clone(),
                        ..Default::default()
                    })
                    .collect();
                let records: Vec<BuildRecord> = records
                    .iter()
                    .map(|(n, user, names)| BuildRecord {
                        uid: if *user == "alice" { 1001 } else { 1002 },
                        user: user.to_string(),
                        image_id: id(*n),
                        tags: names.iter().map(|x| format!("urun/{user}/{x}")).collect(),
                        digests: vec![],
                        created: 1,
                        request: String::new(),
                        dockerfile: String::new(),
                        context: String::new(),
                    })
                    .collect();
                let of = |i: &str| -> Vec<BuildRecord> {
                    records.iter().filter(|r| r.image_id == i).cloned().collect()
                };
                for l in leftover_push_names(&b, &images, of) {
                    prop_assert!(l.tag.starts_with("r:5000/urun/"), "{:?}", l);
                    let names_it = |id: &str| {
                        images.iter().any(|i| i.id == id && i.repo_tags.contains(&l.tag))
                    };
                    let owner_has_it = records.iter().any(|r| {
                        names_it(&r.image_id)
                            && r.uid == l.uid
                            && r.user == l.user
                            && r.tags.iter().any(|x| format!("r:5000/{x}") == l.tag)
                    });
                    prop_assert!(owner_has_it, "{:?}", l);
                    let component = format!("r:5000/urun/{}/", l.user);
                    prop_assert!(l.tag.starts_with(&component), "{:?}", l);
                }
            }
        }
    }

    #[test]
    fn a_reference_splits_at_its_tag() {
        assert_eq!(split_tag("urun/alice/app:1"), Some(("urun/alice/app", "1")));
        assert_eq!(
            split_tag("host:5000/urun/alice/app:v2"),
            Some(("host:5000/urun/alice/app", "v2"))
        );
        assert_eq!(split_tag("host:5000/urun/alice/app"), None);
        assert_eq!(split_tag("app"), None);
    }
}
