//! The only code that talks to the Docker daemon. A thin layer over bollard that
//! turns Docker's answers into what urund needs (an image ID, an exit status, a
//! docker-compatible error status).

use anyhow::{bail, Context, Result};
use bollard::container::AttachContainerResults;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;

pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

/// A failure the user should see with a specific exit status (docker's conventions).
#[derive(Debug)]
pub struct RunError {
    pub status: u8,
    pub message: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RunError {}

impl Engine {
    /// Connects to the daemon at `uri` (only `unix://` paths: urun never talks to a
    /// TCP daemon) and negotiates the API version down to what the daemon speaks.
    pub async fn connect(uri: &str) -> Result<Engine> {
        let Some(path) = uri.strip_prefix("unix://") else {
            bail!("docker host {uri:?}: only unix:// sockets are supported");
        };
        let docker = Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
            .with_context(|| format!("docker host {uri}"))?
            .negotiate_version()
            .await
            .with_context(|| format!("docker daemon at {uri} is unreachable"))?;
        Ok(Engine { docker })
    }

    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    /// Resolves a reference to an image ID, locally only. `Ok(None)` if not present.
    pub async fn resolve_image(&self, reference: &str) -> Result<Option<String>> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => Ok(img.id),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context("inspecting image")),
        }
    }

    pub async fn create(&self, body: ContainerCreateBody) -> Result<String> {
        let r = self
            .docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await
            .context("creating container")?;
        Ok(r.id)
    }

    pub async fn attach(&self, id: &str, stdin: bool) -> Result<AttachContainerResults> {
        let opts = AttachContainerOptionsBuilder::default()
            .stdin(stdin)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .logs(false)
            .build();
        self.docker
            .attach_container(id, Some(opts))
            .await
            .context("attaching to container")
    }

    /// Starts the container; a failure carries docker run's status (126/127/125).
    pub async fn start(&self, id: &str) -> std::result::Result<(), RunError> {
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|e| {
                let message = format!("cannot start container: {}", docker_message(&e));
                RunError {
                    status: start_error_status(&message),
                    message,
                }
            })
    }

    /// Waits until the container is not running; returns its exit status (0..=255;
    /// docker reports 128+N for a process killed by signal N).
    pub async fn wait(&self, id: &str) -> Result<i64> {
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut s = self.docker.wait_container(id, Some(opts));
        match s.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(anyhow::Error::new(e).context("waiting for container")),
            None => bail!("waiting for container: no answer from the daemon"),
        }
    }

    pub async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        let opts = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        match self.docker.kill_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context("signalling container")),
        }
    }

    /// Kills (if running) and removes a container; a missing one is not an error.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            // "removal already in progress"
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("removing container {id}"))),
        }
    }

    /// IDs of all containers (any state) carrying `label=value`.
    pub async fn labelled(&self, label: &str, value: &str) -> Result<Vec<String>> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{label}={value}")])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .context("listing containers")?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }
}

fn is_status(e: &DockerError, code: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// The daemon's own message for an error, without bollard's wrapping.
pub fn docker_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        e => e.to_string(),
    }
}

/// docker run's mapping of a failed start to an exit status: 127 when the command
/// does not exist, 126 when it cannot be executed, 125 otherwise.
pub fn start_error_status(message: &str) -> u8 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        127
    } else if message.contains("permission denied") || message.contains("is a directory") {
        126
    } else {
        125
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_errors_map_like_docker_run() {
        assert_eq!(start_error_status("OCI runtime create failed: exec: \"nosuch\": executable file not found in $PATH: unknown"), 127);
        assert_eq!(
            start_error_status("exec: \"/etc/passwd\": permission denied: unknown"),
            126
        );
        assert_eq!(start_error_status("cgroup setup failed"), 125);
    }
}
