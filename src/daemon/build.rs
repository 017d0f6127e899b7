//! `urun build`, urund's side: one build connection, in the order of its security
//! argument (see docs/../BUILD-DESIGN and README "Building images"):
//!
//!   1. who: the caller from the kernel (done by [`Helper::serve`]);
//!   2. may they: `access.*`, `[build] enabled`, `group`, `max_concurrent` (counted
//!      here, in memory), `max_images` (the records), the tags and labels
//!      ([`crate::policy::build::admit_build`], pure);
//!   3. the context: `Context` frames until `ContextEnd`, counted against
//!      `[build] max_context` while they are read (refused at the first byte over),
//!      spooled into an unlinked root-only file in urund's state directory and hashed
//!      (with room for it across users, and deadlines of its own: [`super::spool`]);
//!      then checked as a hostile archive ([`crate::policy::buildcontext`]): names,
//!      types, links, the Dockerfile;
//!   4. the Dockerfile, statically ([`crate::policy::dockerfile::check`]) with the
//!      policy's image rules (or one's own builds) and what the build engine knows of
//!      the base images, which are made present first (on the build engine; copied
//!      from the run engine; pulled only where `[pull]` allows, never by the builder);
//!      any error refuses the build before anything runs;
//!   5. the build on the build engine with the forced settings
//!      ([`crate::policy::forced::build_settings`], the legacy builder), no tag, its
//!      output relayed; the whole of 3-7 under `[build] max_runtime`;
//!   6. the built image checked (its user, setuid files, secret-looking variables);
//!   7. moved to the run engine if the build engine is another, tagged in the
//!      caller's namespace, recorded in [`crate::daemon::builds`] (what makes it
//!      "own"); `Result` frame;
//!   8. the audit record (by [`Helper::serve`]).
//!
//! Anything but success leaves nothing on the build engine that this build made: the
//! builder removes its containers itself (rm, forcerm, also when the build is
//! cancelled by urund closing the connection); urund waits for that, and deletes the
//! build's intermediate images: those the engine says this build made
//! ([`crate::engine::own_images`]), never an image the output merely names.

use super::audit::{BuildAudit, Record};
use super::builds::BuildRecord;
use super::listen::Ticket;
use super::outbox::Outbox;
use super::request::ClientRead;
use super::request::{read_frame, FrameError};
use super::serve::{daemon_error, End};
use super::Helper;
use crate::engine::{own_images, BaseFacts, BuildEvent, BuildShape, Engine, RunError};
use crate::policy::build::{admit_build, BuildAdmission, BuildFacts};
use crate::policy::dockerfile::{self, BaseImage, CheckInput, Finding, Report, Severity};
use crate::policy::forced::{build_settings, BuildDigests};
use crate::policy::reference::Reference;
use crate::policy::rule::{Refusal, Rule};
use crate::policy::{buildcontext, imagecheck, judge};
use crate::system::{self, Caller};
use crate::wire::{status, BuildRequest, Kind, Outcome, Signal};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes per read of the spooled context when it is sent to the builder.
const CHUNK: usize = 256 * 1024;
/// Most distinct external images one build may use.
const MAX_BASES: usize = 16;
/// How long urund waits for the builder to remove a cancelled build's containers.
const CANCEL_WAIT: Duration = Duration::from_secs(30);
/// Most builder output kept for a `-q` build, shown if it fails.
const QUIET_TAIL: usize = 64 * 1024;
/// Most findings shown (and recorded); the rest are counted.
const MAX_FINDINGS: usize = 64;

/// What a build left on the build engine, as seen in the builder's output: candidates
/// for clean-up, never proof of anything (a RUN step can print the same lines, and a
/// cache hit names another build's image), so urund only waits for containers the
/// builder removes itself, and deletes only images the engine says this build made
/// ([`own_images`], review S1).
#[derive(Default)]
pub(super) struct Trace {
    /// The forced settings every step container of this build has (B2: a container
    /// named in the output is removed only if it has them).
    shape: BuildShape,
    containers: Vec<String>,
    /// Images named in the output (` ---> <id>`), and each stage's (aux), in order.
    images: Vec<String>,
    /// The build's base images (as urund resolved them) and its stages' images (aux):
    /// what a `COPY`/`ADD` step of this build makes its image on.
    anchors: Vec<String>,
    /// When the builder was started (seconds since the epoch); `None`: never.
    since: Option<i64>,
    /// The image the builder reported (aux), kept until it is moved or refused.
    built: Option<String>,
    /// Text not yet ended by a newline.
    partial: String,
}

impl Trace {
    /// Takes the builder's text. Pure.
    fn see(&mut self, text: &str) {
        self.partial.push_str(text);
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.line(line.trim_end());
        }
        if self.partial.len() > 4096 {
            self.partial.clear();
        }
    }

    fn line(&mut self, line: &str) {
        let hex =
            |s: &str| s.len() >= 12 && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some(id) = line.strip_prefix(" ---> Running in ") {
            if hex(id) && self.containers.len() < 1024 {
                self.containers.push(id.to_string());
            }
        } else if let Some(id) = line.strip_prefix(" ---> ") {
            if hex(id) && self.images.len() < 1024 {
                self.images.push(id.to_string());
            }
        }
    }
}

/// The context as urund received it.
struct Spool {
    file: Arc<File>,
    /// Its place among the contexts urund holds (released with the spool).
    _room: super::spool::Room,
    len: u64,
    /// sha256 of the stream, hex.
    sha: String,
}

/// A build counted against `[build] max_concurrent` while it lives, with its mark
/// (its step containers' `/dev/shm` size, which no other build in progress has).
struct BuildSlot<'a> {
    map: &'a Mutex<HashMap<u32, u32>>,
    uid: u32,
    marks: &'a Mutex<std::collections::BTreeSet<u16>>,
    mark: u16,
}

impl Drop for BuildSlot<'_> {
    fn drop(&mut self) {
        self.marks.lock().unwrap().remove(&self.mark);
        let mut m = self.map.lock().unwrap();
        match m.get(&self.uid).copied() {
            Some(n) if n > 1 => {
                m.insert(self.uid, n - 1);
            }
            _ => {
                m.remove(&self.uid);
            }
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn refused(rule: Rule, message: impl Into<String>) -> End {
    End::Refused(Refusal::new(rule, message))
}

/// A `FROM`/`COPY --from` image as a reference (`build.base`). A name of hexadecimal
/// digits only (`FROM 3f4e`) is refused even where such a tag exists: the builder
/// looks the text up again itself, and Docker reads it as the start of an image ID
/// when no tag of that name is there (any more) at that moment. With its tag
/// (`3f4e:latest`) it is never read as an ID.
fn base_reference(reference: &str) -> Result<Reference, End> {
    if !reference.is_empty() && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refused(
            Rule::BuildBase,
            format!(
                "image {reference:?}: Docker reads a name of hexadecimal digits only as the \
                 start of an image ID; name the image with its tag ({reference}:latest) or \
                 by its full ID sha256:<64 hex> (build.base)"
            ),
        ));
    }
    Reference::parse(reference).map_err(|e| refused(Rule::BuildBase, format!("{e} (build.base)")))
}

/// Refused: the image Docker found for `reference` does not carry it as a name.
fn not_its_name(reference: &str) -> End {
    refused(
        Rule::BuildBase,
        format!(
            "image {reference:?} is not a name of the image Docker found for it (Docker \
             matched the start of an image ID); name the image by a tag, a digest or its \
             full ID sha256:<64 hex> (build.base)"
        ),
    )
}

/// The base image `reference` on `engine`, only if the image found there carries
/// `wanted` as a name (else refused, `build.base`); its facts read by the full ID
/// that was checked. `Ok(None)`: not present there.
async fn checked_base(
    engine: &dyn Engine,
    wanted: &Reference,
    reference: &str,
) -> Result<Option<BaseFacts>, End> {
    let found = match engine.inspect_image(reference).await {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        Err(e) => return Err(End::Failed(daemon_error(e))),
    };
    if !wanted.names(&found) {
        return Err(not_its_name(reference));
    }
    match engine.base_image(&found.id).await {
        Ok(Some(b)) if b.id == found.id => Ok(Some(b)),
        Ok(_) => Err(End::Failed(RunError {
            status: status::REFUSED,
            message: format!("base image {reference} changed while it was checked"),
        })),
        Err(e) => Err(End::Failed(daemon_error(e))),
    }
}

/// A finding as the user sees it: `urun: build: <severity> [<rule>] <file>:<line>: <msg>`.
pub fn finding_line(dockerfile: &str, f: &Finding) -> String {
    format!(
        "urun: build: {} [{}] {}:{}: {}\n",
        f.severity,
        f.rule.id(),
        dockerfile,
        f.line,
        f.message
    )
}

impl Helper {
    /// One build connection, steps 2 to 7 of the module comment.
    pub(super) async fn serve_build(
        &self,
        caller: &Caller,
        rec: &mut Record,
        req: BuildRequest,
        rd: &mut ClientRead,
        out: &Outbox,
        ticket: &mut Ticket,
    ) -> End {
        rec.argv = std::iter::once("build".to_string())
            .chain(req.tags.iter().cloned())
            .collect();
        rec.image = req.dockerfile.clone();
        let (admission, slot) = match self.admit_build_request(caller, &req) {
            Ok(x) => x,
            Err(r) => return End::Refused(r),
        };
        ticket.running();
        let limit = self.policy.build.max_runtime;
        let trace = Mutex::new(Trace::default());
        let mut audit = BuildAudit::default();
        let mut delivered = false;
        let steps = self.build_steps(caller, rec, &req, rd, out, &trace, &mut audit, slot.mark);
        let end = match tokio::time::timeout(Duration::from_secs(limit.0), steps).await {
            // 7. Not under the deadline: delivered whole, or undone.
            Ok(Ok(image)) => {
                match self
                    .deliver(caller, rec, &admission, &image, &mut audit)
                    .await
                {
                    Ok(tags) => {
                        delivered = true;
                        let payload = Outcome::Built {
                            image_id: image.clone(),
                            tags,
                        }
                        .encode();
                        match out.frame(Kind::Result, payload).await {
                            Ok(()) => End::Exit(0),
                            Err(()) => End::ClientGone,
                        }
                    }
                    Err(end) => end,
                }
            }
            Ok(Err(end)) => end,
            Err(_) => {
                rec.decision = "allowed";
                rec.rule = Some(Rule::BuildMaxRuntime.id().into());
                End::Failed(RunError {
                    status: status::MAX_RUNTIME,
                    message: format!(
                        "build stopped after {limit} (policy [build] max_runtime); nothing was kept"
                    ),
                })
            }
        };
        // Whatever the end, the build's own untagged images go (a multi-stage build's
        // earlier stages, a failed build's steps); the built image stays only on
        // success on a build engine that is also the run engine.
        let mut trace = std::mem::take(&mut *trace.lock().unwrap());
        if delivered && !self.separate_build_engine() {
            trace.built = None;
        }
        self.clean_build(trace).await;
        // The mark is free again only once the build's containers are gone.
        drop(slot);
        self.sweep_namespace_copies().await;
        rec.build = Some(audit);
        end
    }

    /// Review B4: an own build copied to a separate build engine as a base (step 4,
    /// `save` by name then `load`) would stay there, tagged `<namespace>/<user>/…`,
    /// readable by any later build there and untouched by `urun rmi`. The last build
    /// to end removes every name in the build namespace from the build engine (the
    /// image goes with its last name, unless a container still uses it). Left while
    /// other builds run (one of them may be about to build `FROM` such a copy); a build
    /// that starts between the count and the removal fails with "not found", never
    /// anything worse.
    async fn sweep_namespace_copies(&self) {
        if !self.separate_build_engine() {
            return;
        }
        let running: u32 = self.building.lock().unwrap().values().sum();
        if running > 1 {
            return;
        }
        let images = match self.build_engine.list_images().await {
            Ok(i) => i,
            Err(e) => return eprintln!("urund: listing the build engine's images: {e:#}"),
        };
        for tag in images.iter().flat_map(|i| &i.repo_tags) {
            let ours = crate::policy::reference::Reference::parse(tag)
                .is_ok_and(|r| judge::in_build_namespace(&self.policy, &r));
            if ours {
                if let Err(e) = self.build_engine.remove_image(tag).await {
                    eprintln!("urund: removing the copy {tag} from the build engine: {e:#}");
                }
            }
        }
    }

    /// The gid of `[build] group`, if the policy names one and it exists.
    pub(super) fn build_gid(&self) -> Option<u32> {
        self.policy
            .build
            .group
            .as_ref()
            .and_then(|g| system::group_gid(&g.0).ok().flatten())
    }

    /// Step 2: the pure admission from what urund counts, and the build's place in
    /// `max_concurrent`, taken under the lock it was counted under.
    fn admit_build_request(
        &self,
        caller: &Caller,
        req: &BuildRequest,
    ) -> Result<(BuildAdmission, BuildSlot<'_>), Refusal> {
        let images = self.builds.count(caller.uid).unwrap_or_else(|e| {
            eprintln!("urund: {e:#}");
            0
        });
        let build_gid = self.build_gid();
        let mut running = self.building.lock().unwrap();
        let facts = BuildFacts {
            root_engine: !self.separate_build_engine() || !self.build_engine_userns,
            access_gid: self.group_gid,
            build_gid,
            running: running.get(&caller.uid).copied().unwrap_or(0),
            images,
        };
        let admission = admit_build(caller, &self.policy, req, &facts)?;
        let mark = {
            let mut marks = self.build_marks.lock().unwrap();
            let free = (0..crate::policy::forced::BUILD_MARKS).find(|m| !marks.contains(m));
            let Some(mark) = free else {
                return Err(Refusal::new(
                    Rule::BuildSpool,
                    "urund is busy: too many builds in progress; try again later",
                ));
            };
            marks.insert(mark);
            mark
        };
        running.insert(caller.uid, facts.running + 1);
        Ok((
            admission,
            BuildSlot {
                map: &self.building,
                uid: caller.uid,
                marks: &self.build_marks,
                mark,
            },
        ))
    }

    /// Steps 3 to 6, under `max_runtime`: the checked image, or how the build ended.
    #[allow(clippy::too_many_arguments)]
    async fn build_steps(
        &self,
        caller: &Caller,
        rec: &mut Record,
        req: &BuildRequest,
        rd: &mut ClientRead,
        out: &Outbox,
        trace: &Mutex<Trace>,
        audit: &mut BuildAudit,
        mark: u16,
    ) -> Result<String, End> {
        // 3. The context: counted while read, then checked as a hostile archive.
        let spool = self.read_context(rd, rec).await?;
        audit.context = spool.sha.clone();
        audit.context_bytes = spool.len;
        let (file, dockerfile_name) = (spool.file.clone(), req.dockerfile.clone());
        let checked = tokio::task::spawn_blocking(move || {
            buildcontext::check(AtReader { file, off: 0 }, &dockerfile_name)
        })
        .await;
        let context = match checked {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(refused(
                    Rule::BuildContext,
                    format!("build context: {e} (build.context); nothing was built"),
                ))
            }
            Err(e) => return Err(refused(Rule::BuildContext, format!("build context: {e}"))),
        };
        audit.dockerfile = hex(Sha256::digest(&context.dockerfile));
        let Ok(text) = String::from_utf8(context.dockerfile) else {
            return Err(refused(
                Rule::BuildContext,
                format!("{} is not UTF-8 text (build.context)", req.dockerfile),
            ));
        };
        // 4. The Dockerfile, with the base images present on the build engine.
        let (report, bases) = self.check_dockerfile(caller, req, &text, out).await?;
        trace
            .lock()
            .unwrap()
            .anchors
            .extend(bases.values().map(|b| b.id.clone()));
        audit.findings = report
            .findings
            .iter()
            .take(MAX_FINDINGS)
            .map(|f| format!("{}:{}:{}", f.rule.id(), f.severity, f.line))
            .collect();
        rec.image = report
            .facts
            .final_base
            .clone()
            .unwrap_or_else(|| "scratch".into());
        for f in report.findings.iter().take(MAX_FINDINGS) {
            if out
                .frame(Kind::Stderr, finding_line(&req.dockerfile, f).into_bytes())
                .await
                .is_err()
            {
                return Err(End::ClientGone);
            }
        }
        if report.refused() {
            let n = report.errors().count();
            return Err(refused(
                Rule::BuildChecks,
                format!(
                    "{}: {n} check(s) failed (listed above; policy [build.rules]); nothing was built",
                    req.dockerfile
                ),
            ));
        }
        // 5. The build.
        let digests = BuildDigests {
            dockerfile: audit.dockerfile.clone(),
            context: audit.context.clone(),
            checks: checks_label(&report),
        };
        let mut settings = build_settings(&self.policy.build, caller, req, &digests, mark);
        // The builder opens the Dockerfile urund wrote, by the name urund checked.
        settings.dockerfile = context.dockerfile_name.clone();
        trace.lock().unwrap().shape = BuildShape {
            memory: settings.memory,
            network: settings.network.to_string(),
            shm_size: settings.shm_size,
        };
        // What the builder reads: the archive's entries as urund read them, and the
        // checked Dockerfile written last by urund (defence in depth for B1).
        let body = context_body(spool.file.clone(), context.sent);
        // Only an image created from now on can be this build's (S1): the context, and
        // so anything its RUN steps print, is fixed before this second.
        trace.lock().unwrap().since = Some(now_secs());
        let image = self.run_build(req, &settings, body, rd, out, trace).await?;
        rec.image_id = Some(image.clone());
        trace.lock().unwrap().built = Some(image.clone());
        // 6. The built image's checks, above the final stage's base image's layers.
        let base = report
            .facts
            .final_base
            .as_ref()
            .and_then(|b| bases.get(b).map(|f| f.layers))
            .unwrap_or(0);
        self.check_image(&image, base, out, audit).await?;
        Ok(image)
    }

    /// Step 3: `Context` frames until `ContextEnd` into an unlinked root-only file,
    /// counted against `[build] max_context` as they come and hashed.
    async fn read_context(&self, rd: &mut ClientRead, rec: &mut Record) -> Result<Spool, End> {
        let limit = self.policy.build.max_context.0;
        // On disk under the state directory, with room for it across users (B3).
        let state = self.builds.path().parent().unwrap_or(self.builds.path());
        let dir = super::spool::dir(state).map_err(|e| {
            eprintln!("urund: the build spool: {e}");
            End::Failed(RunError {
                status: status::REFUSED,
                message: "urund cannot spool the build context (its log says why)".into(),
            })
        })?;
        let (file, room) = self
            .spool
            .open(&dir, &format!("context-{}", rec.request), limit)
            .map_err(End::Refused)?;
        let file = Arc::new(file);
        let started = tokio::time::Instant::now();
        let mut hasher = Sha256::new();
        let mut len: u64 = 0;
        loop {
            // A client that stops sending is cut off, whatever max_runtime says.
            let left = super::spool::TOTAL.saturating_sub(started.elapsed());
            let wait = super::spool::idle().min(left);
            let frame = match tokio::time::timeout(wait, read_frame(rd)).await {
                Err(_) => {
                    return Err(refused(
                        Rule::BuildSpool,
                        stalled_context(super::spool::idle(), super::spool::TOTAL),
                    ))
                }
                Ok(f) => f,
            };
            let frame = match frame {
                Ok(Some(f)) => f,
                Ok(None) => return Err(End::ClientGone),
                Err(FrameError::Io(_)) => return Err(End::ClientGone),
                Err(FrameError::Protocol(e)) => {
                    return Err(refused(Rule::Protocol, format!("bad frame: {e}")))
                }
            };
            match frame {
                (Kind::Context, p) => {
                    if len + p.len() as u64 > limit {
                        rec.bytes_in = len + p.len() as u64;
                        return Err(refused(
                            Rule::BuildMaxContext,
                            format!(
                                "the build context is larger than {} (policy [build] max_context); \
                                 nothing was built: leave files out with .dockerignore",
                                self.policy.build.max_context
                            ),
                        ));
                    }
                    hasher.update(&p);
                    let n = p.len() as u64;
                    // On a blocking thread: a disk that throttles writes holds up this
                    // build only, never urund's one runtime thread.
                    let f = file.clone();
                    let written = tokio::task::spawn_blocking(move || f.write_all_at(&p, len))
                        .await
                        .map_err(std::io::Error::other)
                        .and_then(|r| r);
                    if let Err(e) = written {
                        return Err(End::Failed(RunError {
                            status: status::REFUSED,
                            message: format!("urund cannot spool the build context: {e}"),
                        }));
                    }
                    len += n;
                }
                (Kind::ContextEnd, p) if p.is_empty() => break,
                (Kind::Signal, p) => return Err(interrupted(Signal::decode(&p).ok())),
                (k, _) => {
                    return Err(refused(
                        Rule::Protocol,
                        format!("unexpected {k:?} frame while reading the build context"),
                    ))
                }
            }
        }
        rec.bytes_in = len;
        Ok(Spool {
            file,
            _room: room,
            len,
            sha: hex(hasher.finalize()),
        })
    }

    /// Step 4: the check, twice: once to learn the images the build uses (and to
    /// refuse at once on what does not depend on them), then with what the build
    /// engine knows of them, once they are present there.
    async fn check_dockerfile(
        &self,
        caller: &Caller,
        req: &BuildRequest,
        text: &str,
        out: &Outbox,
    ) -> Result<(Report, BTreeMap<String, BaseFacts>), End> {
        let allowed = |r: &str| self.image_allowed_in_build(caller, r);
        let severity = &self.policy.build.rules.0;
        let input = |base: &dyn Fn(&str) -> Option<BaseImage>| -> Report {
            dockerfile::check(
                text,
                &CheckInput {
                    build_args: &req.build_args,
                    target: req.target.as_deref(),
                    network: self.policy.build.network,
                    image_allowed: &allowed,
                    base_image: base,
                    severity,
                },
            )
        };
        let first = input(&|_| None);
        let base_dependent = |f: &Finding| {
            use dockerfile::Rule as R;
            matches!(
                f.rule,
                R::UserUnresolved
                    | R::UserRoot
                    | R::UserRootGroup
                    | R::Onbuild
                    | R::HealthcheckMissing
            )
        };
        if first
            .findings
            .iter()
            .any(|f| f.severity == Severity::Error && !base_dependent(f))
        {
            return Ok((first, BTreeMap::new()));
        }
        let mut bases: BTreeMap<String, BaseImage> = BTreeMap::new();
        let mut facts_of: BTreeMap<String, BaseFacts> = BTreeMap::new();
        for u in first.facts.images.iter().filter(|u| u.allowed) {
            if bases.contains_key(&u.reference) {
                continue;
            }
            if bases.len() >= MAX_BASES {
                return Err(refused(
                    Rule::BuildBase,
                    format!("the build uses more than {MAX_BASES} images (build.base)"),
                ));
            }
            let facts = self.ensure_base(&u.reference, req.never_pull, out).await?;
            bases.insert(u.reference.clone(), facts.base.clone());
            facts_of.insert(u.reference.clone(), facts);
        }
        Ok((input(&|r| bases.get(r).cloned()), facts_of))
    }

    /// Whether a `FROM`/`COPY --from` image may be used: the run policy's image rules,
    /// or (with `[build] run_own`) one of the caller's own builds by its tag.
    fn image_allowed_in_build(&self, caller: &Caller, reference: &str) -> bool {
        let Ok(r) = judge::judge_image(&self.policy, caller, reference) else {
            let Ok(parsed) = judge::parse_reference(reference) else {
                return false;
            };
            return self.policy.build.run_own
                && judge::own_namespace(caller, &self.policy, &parsed)
                && self
                    .builds
                    .by_tag(caller.uid, &parsed.familiar())
                    .is_ok_and(|r| r.is_some());
        };
        // Allowed by images.allow; inside the namespace only one's own builds.
        !judge::in_build_namespace(&self.policy, &r)
            || (judge::own_namespace(caller, &self.policy, &r)
                && self
                    .builds
                    .by_tag(caller.uid, &r.familiar())
                    .is_ok_and(|x| x.is_some()))
    }

    /// Step 4: a base image present on the build engine: there already, copied from
    /// the run engine, or pulled (by urund, only where `[pull]` allows and the request
    /// did not say `--pull never`). On either engine the image found must carry
    /// `reference` as a tag, a repository digest or its full ID
    /// ([`Reference::names`], as a run's image must): Docker also reads a name that
    /// is no tag as the start of an image ID, which reaches images the policy never
    /// judged (other members' builds and their intermediate images). A copy is saved
    /// by the full ID that was checked and given the checked name on the build engine,
    /// never saved by the text typed.
    async fn ensure_base(
        &self,
        reference: &str,
        never_pull: bool,
        out: &Outbox,
    ) -> Result<BaseFacts, End> {
        let wanted = base_reference(reference)?;
        let engine = self.build_engine.as_ref();
        if let Some(b) = checked_base(engine, &wanted, reference).await? {
            return Ok(b);
        }
        // A digest is not carried by a `docker save` archive: such a base is pulled.
        let copyable = !matches!(
            wanted,
            Reference::Named {
                digest: Some(_),
                ..
            }
        );
        if self.separate_build_engine() && copyable {
            match self.engine.inspect_image(reference).await {
                Ok(Some(found)) => {
                    if !wanted.names(&found) {
                        return Err(not_its_name(reference));
                    }
                    if let Err(e) = engine.load(self.engine.save(&found.id)).await {
                        return Err(End::Failed(daemon_error(e)));
                    }
                    if let Some((repo, tag)) = wanted.pull_parts() {
                        if let Err(e) = engine.tag(&found.id, &repo, &tag).await {
                            return Err(End::Failed(daemon_error(e)));
                        }
                    }
                    if let Some(b) = checked_base(engine, &wanted, reference).await? {
                        return Ok(b);
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(End::Failed(daemon_error(e))),
            }
        }
        if never_pull {
            return Err(refused(
                Rule::BuildBase,
                format!("base image {reference} is not present, and --pull never was given (build.base)"),
            ));
        }
        let parsed = judge::judge_pull(&self.policy, reference).map_err(|r| {
            refused(
                Rule::BuildBase,
                format!(
                    "base image {reference} is not present: {} (build.base)",
                    r.message
                ),
            )
        })?;
        if let Err(e) = self.pull_on(engine, &parsed, out).await {
            return Err(End::Failed(daemon_error(e)));
        }
        match checked_base(engine, &wanted, reference).await? {
            Some(b) => Ok(b),
            None => Err(refused(
                Rule::BuildBase,
                format!("base image {reference} is still missing after the pull (build.base)"),
            )),
        }
    }

    /// Whether `[build] engine` is another daemon than the run engine.
    pub(super) fn separate_build_engine(&self) -> bool {
        !Arc::ptr_eq(&self.engine, &self.build_engine)
    }

    /// Step 5: the build, its output relayed (or kept, with `-q`, to be shown if it
    /// fails); a `Signal` from the client cancels it. The image ID, or how it ended.
    async fn run_build(
        &self,
        req: &BuildRequest,
        settings: &crate::policy::forced::BuildSettings,
        body: BoxStream<'static, std::io::Result<Bytes>>,
        rd: &mut ClientRead,
        out: &Outbox,
        trace: &Mutex<Trace>,
    ) -> Result<String, End> {
        let mut events = self.build_engine.build(settings, body);
        let mut tail = String::new();
        let mut image: Option<String> = None;
        // One read of the client's next frame at a time, kept across iterations so a
        // frame is never read in part and dropped.
        let mut next = Some(Box::pin(read_frame(rd)));
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    None => {
                        return image.ok_or_else(|| End::Failed(RunError {
                            status: status::REFUSED,
                            message: "the build engine ended the build without an image".into(),
                        }))
                    }
                    Some(Err(e)) => return Err(End::Failed(daemon_error(e))),
                    Some(Ok(BuildEvent::Output(t))) => {
                        trace.lock().unwrap().see(&t);
                        if req.quiet {
                            tail.push_str(&t);
                            if tail.len() > QUIET_TAIL {
                                let cut = tail.len() - QUIET_TAIL;
                                let cut = (cut..tail.len()).find(|i| tail.is_char_boundary(*i)).unwrap_or(0);
                                tail.drain(..cut);
                            }
                        } else if out.frame(Kind::Stdout, t.into_bytes()).await.is_err() {
                            return Err(End::ClientGone);
                        }
                    }
                    Some(Ok(BuildEvent::Failed(m))) => {
                        let text = format!("{tail}{m}\n");
                        if out.frame(Kind::Stderr, text.into_bytes()).await.is_err() {
                            return Err(End::ClientGone);
                        }
                        return Err(End::Exit(1));
                    }
                    Some(Ok(BuildEvent::Image(id))) => {
                        // Each stage's image is a candidate for clean-up too, and what
                        // a later stage's COPY may make its image on.
                        let mut t = trace.lock().unwrap();
                        if t.anchors.len() < 1024 {
                            t.anchors.push(id.clone());
                        }
                        if let Some(prev) = image.replace(id) {
                            if t.images.len() < 1024 {
                                t.images.push(prev);
                            }
                        }
                    }
                },
                f = async { next.as_mut().expect("polled only while set").await }, if next.is_some() => {
                    next = None;
                    match f {
                        Ok(Some((Kind::Signal, p))) => {
                            return Err(interrupted(Signal::decode(&p).ok()));
                        }
                        Ok(Some((k, _))) => {
                            return Err(refused(Rule::Protocol, format!("unexpected {k:?} frame during the build")))
                        }
                        // The client is done sending: only its reading matters now.
                        Ok(None) => {}
                        Err(_) => return Err(End::ClientGone),
                    }
                }
            }
        }
    }

    /// Step 6: the built image, read from its `docker save` stream by the pure
    /// [`imagecheck`] (on a blocking thread that pulls the stream from the engine),
    /// must be the image that was built, and pass: its user not root (through its own
    /// `/etc/passwd`), no setuid/setgid files its layers added (`[build] setuid`), no
    /// secret-looking `Env` names (a warning). Findings go to the client as lines; an
    /// error refuses the image (the caller's clean-up removes it).
    async fn check_image(
        &self,
        image: &str,
        base_layers: usize,
        out: &Outbox,
        audit: &mut BuildAudit,
    ) -> Result<(), End> {
        let reader = StreamReader {
            handle: tokio::runtime::Handle::current(),
            stream: self.build_engine.save(image),
            chunk: Bytes::new(),
        };
        let max = self.policy.build.max_image_size.0;
        let scanned =
            tokio::task::spawn_blocking(move || imagecheck::scan_bounded(reader, base_layers, max))
                .await;
        let scan = match scanned {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(refused(
                    Rule::BuildImage,
                    format!(
                        "the built image could not be checked: {e} (build.image); nothing was kept"
                    ),
                ))
            }
            Err(e) => return Err(refused(Rule::BuildImage, format!("image check: {e}"))),
        };
        if scan.image_id != image {
            return Err(refused(
                Rule::BuildImage,
                format!(
                    "the build engine saved {} for the built image {image} (build.image); nothing was kept",
                    scan.image_id
                ),
            ));
        }
        let findings = imagecheck::check(&scan, self.policy.build.setuid.0);
        for f in findings.iter().take(MAX_FINDINGS) {
            audit
                .findings
                .push(format!("{}:{}", f.rule.id(), f.severity));
            let line = format!(
                "urun: build: {} [{}] image: {}\n",
                f.severity,
                f.rule.id(),
                f.message
            );
            if out.frame(Kind::Stderr, line.into_bytes()).await.is_err() {
                return Err(End::ClientGone);
            }
        }
        if imagecheck::refused(&findings) {
            return Err(refused(
                Rule::BuildImage,
                "the built image failed a check (listed above; build.image); it was removed, \
                 nothing was tagged",
            ));
        }
        Ok(())
    }

    /// Step 7: the image on the run engine (moved there from a separate build engine,
    /// then deleted from it), tagged in the caller's namespace, and recorded; all of
    /// it, or (a step failed) the tags made and a moved image taken back. The full tags.
    async fn deliver(
        &self,
        caller: &Caller,
        rec: &mut Record,
        admission: &BuildAdmission,
        image: &str,
        audit: &mut BuildAudit,
    ) -> Result<Vec<String>, End> {
        // Whether the run engine had this image before (an identical earlier build):
        // then undoing a failed delivery leaves the image itself alone.
        let had = matches!(self.engine.inspect_image(image).await, Ok(Some(_)));
        let mut tags = Vec::new();
        let result = self
            .deliver_to(caller, rec, admission, image, audit, &mut tags)
            .await;
        if result.is_err() {
            for t in &tags {
                if let Err(e) = self.engine.remove_image(t).await {
                    eprintln!("urund: undoing tag {t}: {e:#}");
                }
            }
            if self.separate_build_engine() && !had {
                if let Err(e) = self.engine.delete_untagged(image, 0).await {
                    eprintln!("urund: undoing the move of {image}: {e:#}");
                }
            }
        }
        result.map(|()| tags)
    }

    /// [`Helper::deliver`]'s steps; `tags` gets each tag as it is made.
    async fn deliver_to(
        &self,
        caller: &Caller,
        rec: &mut Record,
        admission: &BuildAdmission,
        image: &str,
        audit: &mut BuildAudit,
        tags: &mut Vec<String>,
    ) -> Result<(), End> {
        if self.separate_build_engine() {
            if let Err(e) = self.engine.load(self.build_engine.save(image)).await {
                return Err(End::Failed(daemon_error(e)));
            }
            match self.engine.inspect_image(image).await {
                Ok(Some(f)) if f.id == image => {}
                Ok(_) => {
                    return Err(End::Failed(RunError {
                        status: status::REFUSED,
                        message: format!("image {image} did not arrive on the run engine"),
                    }))
                }
                Err(e) => return Err(End::Failed(daemon_error(e))),
            }
            match self.build_engine.delete_untagged(image, 0).await {
                Ok(_) => {}
                Err(e) => eprintln!("urund: removing {image} from the build engine: {e:#}"),
            }
        }
        for (repo, tag) in &admission.tags {
            if let Err(e) = self.engine.tag(image, repo, tag).await {
                return Err(End::Failed(daemon_error(e)));
            }
            tags.push(format!("{repo}:{tag}"));
        }
        audit.tags = tags.clone();
        let record = BuildRecord {
            uid: caller.uid,
            user: admission.user.clone(),
            image_id: image.to_string(),
            tags: tags.clone(),
            digests: vec![],
            created: now_secs().max(0) as u64,
            request: rec.request.clone(),
            dockerfile: audit.dockerfile.clone(),
            context: audit.context.clone(),
        };
        if let Err(e) = self.builds.record(&record) {
            eprintln!("urund: {e:#}");
            return Err(End::Failed(RunError {
                status: status::REFUSED,
                message: format!("urund could not record the build of {image}: {e}"),
            }));
        }
        Ok(())
    }

    /// After a build: waits (bounded) for the builder's own removal of the build's
    /// containers, removes those still there, and deletes the images the engine says
    /// this build made ([`own_images`]; one by one, never their parents with them).
    async fn clean_build(&self, trace: Trace) {
        let engine = self.build_engine.as_ref();
        let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
        if !trace.containers.is_empty() {
            loop {
                match engine
                    .existing_containers(&trace.containers, &trace.shape)
                    .await
                {
                    Ok(left) if left.is_empty() => break,
                    Ok(left) if tokio::time::Instant::now() >= deadline => {
                        for id in left {
                            eprintln!(
                                "urund: build container {id} outlived its build; removing it"
                            );
                            if let Err(e) = engine.remove(&id).await {
                                eprintln!("urund: {e:#}");
                            }
                        }
                        break;
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    Err(e) => {
                        eprintln!("urund: {e:#}");
                        break;
                    }
                }
            }
        }
        // The images: those the engine says this build made (S1), children first; an
        // image the engine keeps for a child not yet gone is tried again once the
        // others are.
        let Some(since) = trace.since else { return };
        let mut names: Vec<String> = trace.images.clone();
        names.extend(trace.built.iter().cloned());
        names.dedup();
        let mut records = Vec::new();
        for name in &names {
            match engine.image_record(name).await {
                Ok(Some(r)) => {
                    if !records
                        .iter()
                        .any(|x: &crate::engine::ImageRecord| x.id == r.id)
                    {
                        records.push(r);
                    }
                }
                Ok(None) => {}
                Err(e) => eprintln!("urund: {e:#}"),
            }
        }
        let mut left = own_images(&records, &trace.containers, &trace.anchors, since);
        for r in &records {
            if !r.tagged && r.created >= since && !left.contains(&r.id) {
                eprintln!(
                    "urund: image {}, named in a build's output, was not made by that build \
                     (another build's, or a cache hit); left alone",
                    r.id
                );
            }
        }
        while !left.is_empty() {
            let before = left.len();
            let mut kept = Vec::new();
            for image in left {
                match engine.delete_untagged(&image, since).await {
                    Ok(true) => {}
                    Ok(false) => kept.push(image),
                    Err(e) => eprintln!("urund: {e:#}"),
                }
            }
            left = kept;
            if left.len() == before {
                break;
            }
        }
    }
}

/// The `io.urun.build.checks` label: `ok`, or the findings as `rule:severity`.
fn checks_label(report: &Report) -> String {
    if report.findings.is_empty() {
        return "ok".into();
    }
    let mut s: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{}:{}", f.rule.id(), f.severity))
        .collect();
    s.dedup();
    s.truncate(16);
    s.join(",")
}

/// The client sent a signal (Ctrl-C): the build is cancelled, exit 128 + its number.
fn interrupted(signal: Option<Signal>) -> End {
    let n = signal.map_or(Signal::Int as u8, |s| s as u8);
    End::Failed(RunError {
        status: status::SIGNAL_BASE + n,
        message: "build interrupted; nothing was kept".into(),
    })
}

/// A [`Read`] over an engine's byte stream, for a blocking thread: each read waits
/// for the next chunk on urund's runtime (whose thread drives the connection), so the
/// engine is read only as fast as the reader takes it.
struct StreamReader {
    handle: tokio::runtime::Handle,
    stream: BoxStream<'static, std::io::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(c) => self.chunk = c?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Reads a spooled file from an offset of its own (the file's offset is shared).
struct AtReader {
    file: Arc<File>,
    off: u64,
}

impl Read for AtReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.off)?;
        self.off += n as u64;
        Ok(n)
    }
}

/// The builder's request body: `pieces` of the spooled context (read in [`CHUNK`]s)
/// and of urund's own making, in order.
fn context_body(
    file: Arc<File>,
    pieces: Vec<buildcontext::Piece>,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    use buildcontext::Piece;
    let chunks = pieces.into_iter().flat_map(|p| match p {
        Piece::Archive { start, end } => (start..end)
            .step_by(CHUNK)
            .map(|off| Piece::Archive {
                start: off,
                end: end.min(off + CHUNK as u64),
            })
            .collect::<Vec<_>>(),
        made => vec![made],
    });
    futures_util::stream::iter(chunks)
        .then(move |p| {
            let file = file.clone();
            async move {
                match p {
                    Piece::Made(b) => Ok(Bytes::from(b)),
                    Piece::Archive { start, end } => tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; (end - start) as usize];
                        file.read_exact_at(&mut buf, start)
                            .map(|()| Bytes::from(buf))
                    })
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r),
                }
            }
        })
        .boxed()
}

/// The one line for a build whose context stopped coming: `idle` without a frame, or
/// `total` in all.
fn stalled_context(idle: std::time::Duration, total: std::time::Duration) -> String {
    format!(
        "the build context stopped coming ({} s without data, or {} s in all); nothing was built",
        idle.as_secs_f64(),
        total.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_context_is_refused_with_one_plain_line() {
        let secs = std::time::Duration::from_secs;
        assert_eq!(
            stalled_context(secs(60), secs(600)),
            "the build context stopped coming (60 s without data, or 600 s in all); \
             nothing was built"
        );
        assert_eq!(
            stalled_context(std::time::Duration::from_millis(2500), secs(600)),
            "the build context stopped coming (2.5 s without data, or 600 s in all); \
             nothing was built"
        );
    }

    #[test]
    fn a_base_named_by_hex_digits_only_is_refused_as_docker_would_read_an_id_prefix() {
        let rule = |r: &str| match base_reference(r) {
            Err(End::Refused(x)) => Some(x.rule),
            Err(_) => panic!("{r}: not a refusal"),
            Ok(_) => None,
        };
        for r in ["3f", "3f57d9401f8d", "cafe", "0123456789"] {
            assert_eq!(rule(r), Some(Rule::BuildBase), "{r}");
        }
        assert_eq!(rule("sha256:3f57"), Some(Rule::BuildBase));
        for r in [
            "cafe:latest",
            "3f57d9401f8d:1",
            "busybox",
            "team/cafe",
            "debian:12",
        ] {
            assert_eq!(rule(r), None, "{r}");
        }
        let full = format!("sha256:{}", "3f".repeat(32));
        assert_eq!(rule(&full), None);
    }

    #[test]
    fn the_trace_takes_only_hex_ids_from_builder_shaped_lines() {
        let mut t = Trace::default();
        t.see("Step 1/3 : FROM busybox\n ---> 3f57d9401f8d\nStep 2/3 : RUN x\n ---> Running");
        t.see(" in 0123456789ab\nhello\n ---> not-hex\n ---> Running in ../etc\n");
        assert_eq!(t.images, vec!["3f57d9401f8d".to_string()]);
        assert_eq!(t.containers, vec!["0123456789ab".to_string()]);
    }
}
