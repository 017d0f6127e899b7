//! Preparation: an image's identity files, and one run's root-only directory with
//! the generated passwd/group and the pinned working directory.

use super::instance::RuntimeDir;
use super::workdir::PassedDir;
use super::Helper;
use crate::daemon::janitor::{Janitor, Whose};
use crate::policy::admission::{Admission, AdmittedImage, Identity};
use crate::policy::forced::{Inside, WorkMount};
use crate::policy::identity;
use crate::policy::rule::Refusal;
use crate::system;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;

impl Helper {
    /// The image's `/etc/passwd`, `/etc/group` and `/etc/shells`, read once per image
    /// ID without running it.
    /// The probe container is labelled like the run (`whose`), which is tracked, and
    /// removed through the janitor; each image `VOLUME` (as admitted) is a tmpfs in
    /// it, so Docker creates (and fills) no volume for it.
    pub(super) async fn image_files(
        &self,
        image: &AdmittedImage,
        whose: &Whose,
    ) -> anyhow::Result<Arc<ImageFiles>> {
        let image_id = image.id.as_str();
        if let Some(f) = self.image_files.lock().unwrap().get(image_id) {
            return Ok(f.clone());
        }
        let labels = self.janitor.owner().labels(&whose.request);
        let probe =
            crate::engine::config::probe_config(image_id, labels, &image.volumes, &image.runtime);
        let id = self
            .engine
            .create(probe)
            .await
            .context("creating the probe container")?;
        let got = self
            .engine
            .read_files(&id, &["/etc/passwd", "/etc/group", "/etc/shells"])
            .await;
        self.janitor.remove_container(&id, whose).await;
        let got = got?;
        let text = |i: usize| {
            got.get(i)
                .cloned()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let files = Arc::new(ImageFiles {
            passwd: text(0),
            group: text(1),
            shells: text(2),
        });
        let mut cache = self.image_files.lock().unwrap();
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(image_id.to_string(), files.clone());
        Ok(files)
    }

    /// Step 5's preparation, as admitted: the run's directory with the identity files
    /// generated for `who` and, if admitted, the pinned working directory (pinned on
    /// the directory's own thread, see [`super::workdir`]; a directory that does not
    /// answer in time is the refusal [`Prepare::Refused`], and the run's directory goes,
    /// a pin that lands later with it).
    pub(super) async fn prepare_inside(
        &self,
        whose: &Whose,
        admission: &Admission,
        image: &AdmittedImage,
        dir: Option<&mut PassedDir>,
    ) -> Result<(RunDir, Inside), Prepare> {
        let files = self.image_files(image, whose).await?;
        let run = RunDir::create(&self.runtime, whose, self.janitor.clone())?;
        let who = &admission.identity;
        let (passwd, group) = identity_files(&run, who, &files)?;
        let work = match (&admission.mount, dir) {
            (Some(m), Some(dir)) => {
                let mp = run.path.join(RunDir::WORK);
                let (at, read_only) = (mp.clone(), m.read_only);
                dir.ask(move |fd| system::pin_dir(fd, &at, read_only))
                    .await
                    .map_err(Prepare::Refused)??;
                Some(WorkMount {
                    source: mp,
                    target: m.target.clone(),
                })
            }
            _ => None,
        };
        let inside = Inside {
            passwd: Some(passwd),
            group: Some(group),
            groups: who.groups.clone(),
            work,
            volumes: image.volumes.clone(),
        };
        Ok((run, inside))
    }
}

/// Why step 5's preparation failed.
pub(super) enum Prepare {
    /// The passed directory did not answer in time (rule `mounts.workdir`).
    Refused(Refusal),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Prepare {
    fn from(e: anyhow::Error) -> Prepare {
        Prepare::Failed(e)
    }
}

impl From<std::io::Error> for Prepare {
    fn from(e: std::io::Error) -> Prepare {
        Prepare::Failed(e.into())
    }
}

/// Writes the run's passwd and group: the image's, with the caller's identity.
fn identity_files(
    run: &RunDir,
    who: &Identity,
    files: &ImageFiles,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let shell = identity::shell(
        system::user_shell(who.uid).as_deref(),
        &files.shells,
        &files.passwd,
    );
    let me = identity::Me {
        uid: who.uid,
        gid: who.gid,
        name: who.name.as_deref(),
        home: &who.home,
        shell: &shell,
    };
    let passwd = run.write("passwd", &identity::passwd(&files.passwd, &me))?;
    let extra: Vec<(u32, &str)> = who
        .named_groups
        .iter()
        .map(|(g, n)| (*g, n.as_str()))
        .collect();
    let group = run.write(
        "group",
        &identity::group(
            &files.group,
            who.primary.as_deref().map(|n| (who.gid, n)),
            &extra,
            who.name.as_deref(),
        ),
    )?;
    Ok((passwd, group))
}

/// Identity files an image ships (empty when absent).
pub(super) struct ImageFiles {
    passwd: String,
    group: String,
    shells: String,
}

/// One run's root-only directory `<runtime>/<request id>/`: `passwd`, `group` (0644,
/// bind-mounted read-only), `work` (the pinned working directory's mount point) and
/// `container` (the ID of the run's container, 0600, once it is created).
/// Dropping it unmounts and removes them, whatever way the run ended (retried by the
/// janitor until it succeeds).
pub(super) struct RunDir {
    path: PathBuf,
    whose: Whose,
    janitor: Janitor,
}

impl RunDir {
    pub(super) const FILES: &'static [&'static str] = &["passwd", "group", Self::CONTAINER];
    pub(super) const CONTAINER: &'static str = "container";
    pub(super) const WORK: &'static str = "work";

    pub(super) fn create(
        runtime: &RuntimeDir,
        whose: &Whose,
        janitor: Janitor,
    ) -> anyhow::Result<RunDir> {
        let path = runtime.run_dir(&whose.request);
        system::root_only_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        let run = RunDir {
            path,
            whose: whose.clone(),
            janitor,
        };
        system::root_only_dir(&run.path.join(Self::WORK))?;
        Ok(run)
    }

    pub(super) fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let p = self.path.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        Ok(p)
    }
}

impl RunDir {
    /// Records the run's container: a later urund removes it by this ID
    /// ([`RunDir::recorded_container`]) if this one dies during the run.
    pub(super) fn record_container(&self, id: &str) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let p = self.path.join(Self::CONTAINER);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .with_context(|| format!("recording the container in {}", p.display()))?;
        f.write_all(id.as_bytes())
            .with_context(|| format!("recording the container in {}", p.display()))
    }

    /// The container recorded in a run directory a previous urund left, if it is a
    /// full container ID (64 lowercase hex digits).
    pub(super) fn recorded_container(dir: &std::path::Path) -> Option<String> {
        let text = std::fs::read_to_string(dir.join(Self::CONTAINER)).ok()?;
        let id = text.trim();
        (id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| id.to_string())
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        self.janitor
            .remove_run_dir(self.path.clone(), Self::FILES, Self::WORK, &self.whose);
    }
}
