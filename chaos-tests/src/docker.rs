//! The Docker engine, for what testcontainers does not do: the faults
//! (`network disconnect`, `kill -s KILL`, `pause`), internal networks with
//! aliases, tmpfs volumes and container logs. Everything goes through the
//! `docker` CLI, as testcontainers' `Cli` client does, because the CLI
//! negotiates the API version with any engine (Debian 12's 20.10 included).

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Runs `docker <args>`; its standard output, or an error with its
/// standard error.
pub fn docker(args: &[&str]) -> Result<String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Fails unless a Docker engine answers. The chaos suites need one; they
/// never pass by skipping.
pub fn require_engine() -> Result<String> {
    match docker(&["version", "--format", "{{.Server.Version}}"]) {
        Ok(version) => Ok(version.trim().to_string()),
        Err(err) => bail!(
            "the chaos suites need a Docker engine (`docker version` must reach a \
             server; start dockerd or set DOCKER_HOST): {err:#}"
        ),
    }
}

/// A container's standard output and error, for failure messages.
pub fn logs(container: &str) -> String {
    let output = Command::new("docker").args(["logs", container]).output();
    match output {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(err) => format!("(docker logs {container}: {err})"),
    }
}

/// The last `lines` lines of a container's log.
pub fn log_tail(container: &str, lines: usize) -> String {
    let all = logs(container);
    let tail: Vec<&str> = all.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// `docker kill -s KILL`: the process dies as in a power cut; the container
/// and its volumes stay.
pub fn kill9(container: &str) -> Result<()> {
    docker(&["kill", "-s", "KILL", container]).map(drop)
}

/// The host pid of a running container's main process.
pub fn host_pid(container: &str) -> Result<i32> {
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", container])?;
    let pid: i32 = pid.trim().parse().context("docker inspect .State.Pid")?;
    if pid <= 0 {
        bail!("container {container} is not running");
    }
    Ok(pid)
}

/// SIGKILL straight to the container's main process (the signal `docker
/// kill -s KILL` sends), without the CLI's ~100 ms of start-up: for a kill
/// that must land inside a short window, such as a replay in progress.
pub fn kill9_pid(pid: i32) -> Result<()> {
    // SAFETY: kill(2) with a pid docker reported for the container.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        bail!("kill -9 {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// `docker start` of a stopped or killed container (same volumes, same
/// published ports, same networks).
pub fn start(container: &str) -> Result<()> {
    docker(&["start", container]).map(drop)
}

/// `docker stop`: SIGTERM, then SIGKILL after `grace_secs`.
pub fn stop(container: &str, grace_secs: u32) -> Result<()> {
    docker(&["stop", "-t", &grace_secs.to_string(), container]).map(drop)
}

/// `docker pause`: every process of the container frozen. Its sockets stay
/// open and nothing answers: no FIN, no RST.
pub fn pause(container: &str) -> Result<()> {
    docker(&["pause", container]).map(drop)
}

pub fn unpause(container: &str) -> Result<()> {
    docker(&["unpause", container]).map(drop)
}

/// A network the suite creates for one test and removes when dropped.
/// `--internal`: it never becomes a container's route to the outside, so
/// the ports a container publishes stay on the network it was created on
/// while this one is connected and disconnected.
pub struct InternalNetwork {
    pub name: String,
}

impl InternalNetwork {
    pub fn create(name: &str) -> Result<Self> {
        // A leftover of an aborted run of the same test and process id.
        let _ = docker(&["network", "rm", name]);
        docker(&["network", "create", "--internal", name])?;
        Ok(Self {
            name: name.to_string(),
        })
    }

    /// Connects `container`, reachable from the others on this network as
    /// `alias` (if any).
    pub fn connect(&self, container: &str, alias: Option<&str>) -> Result<()> {
        let mut args = vec!["network", "connect"];
        if let Some(alias) = alias {
            args.extend(["--alias", alias]);
        }
        args.extend([self.name.as_str(), container]);
        docker(&args).map(drop)
    }

    /// Hard link loss: the container's interface on this network is gone;
    /// open connections through it die without a FIN reaching anyone.
    pub fn disconnect(&self, container: &str) -> Result<()> {
        docker(&["network", "disconnect", "--force", &self.name, container]).map(drop)
    }
}

impl Drop for InternalNetwork {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// A named volume on a tmpfs of a fixed size, owned by `uid`: a data
/// directory that fills up. Removed when dropped.
pub struct TmpfsVolume {
    pub name: String,
}

impl TmpfsVolume {
    pub fn create(name: &str, size: &str, uid: u32) -> Result<Self> {
        let _ = docker(&["volume", "rm", "--force", name]);
        let options = format!("o=size={size},uid={uid},gid={uid},mode=0700");
        docker(&[
            "volume",
            "create",
            "--driver",
            "local",
            "--opt",
            "type=tmpfs",
            "--opt",
            "device=tmpfs",
            "--opt",
            &options,
            name,
        ])?;
        Ok(Self {
            name: name.to_string(),
        })
    }
}

impl Drop for TmpfsVolume {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "--force", &self.name]);
    }
}
