//! The local Docker engine, through its command-line client, for the tests
//! that check the packages in real containers. Without a reachable engine
//! these tests fail and say so: they never pass by skipping.

#![allow(dead_code)] // each test binary uses part of it

use std::path::Path;
use std::process::{Command, Output};

/// Panics unless `docker info` reaches an engine.
pub fn require_engine() {
    if let Some(problem) = engine_problem(None) {
        panic!("{problem}");
    }
}

/// Why no engine is reachable (at `docker_host`, else the default), or
/// `None` when `docker info` answers.
pub fn engine_problem(docker_host: Option<&str>) -> Option<String> {
    let mut command = Command::new("docker");
    command.args(["info", "--format", "{{.ServerVersion}}"]);
    if let Some(host) = docker_host {
        command.env("DOCKER_HOST", host);
    }
    match command.output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "no Docker engine reachable: `docker info` said: {}; this test needs one \
             (start dockerd) and never passes by skipping",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(err) => Some(format!(
            "no Docker client: {err}; this test needs Docker (apt-get install docker.io) \
             and never passes by skipping"
        )),
    }
}

/// Runs `docker args`; the output whatever the exit status.
pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker client runs")
}

/// Runs `docker args`, panicking with its stderr on failure; stdout.
pub fn docker(args: &[&str]) -> String {
    let out = docker_output(args);
    assert!(
        out.status.success(),
        "docker {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image must exist; a test names the script that makes it.
pub fn require_image(image: &str, made_by: &str) {
    let out = docker_output(&["image", "inspect", "--format", "{{.Id}}", image]);
    assert!(
        out.status.success(),
        "image {image} missing: make it with `{made_by}` (scripts/test.sh does)"
    );
}

/// A container removed (with its anonymous volumes) when dropped.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --name <unique> <args>`.
    pub fn run(prefix: &str, args: &[&str]) -> Self {
        let name = format!("{prefix}-{}", std::process::id());
        let _ = docker_output(&["rm", "-f", "-v", &name]);
        let mut all = vec!["run", "-d", "--name", name.as_str()];
        all.extend_from_slice(args);
        docker(&all);
        Self { name }
    }

    /// `docker exec <container> args`: (exit code, stdout, stderr).
    pub fn exec(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(args);
        let out = docker_output(&all);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `exec` that must succeed; its stdout.
    pub fn sh(&self, script: &str) -> String {
        let (code, stdout, stderr) = self.exec(&["sh", "-c", script]);
        assert_eq!(code, 0, "`{script}` failed: {stdout}{stderr}");
        stdout
    }

    /// Copies a host file into the container.
    pub fn copy_in(&self, from: &Path, to: &str) {
        docker(&[
            "cp",
            from.to_str().expect("UTF-8 path"),
            &format!("{}:{to}", self.name),
        ]);
    }

    /// `docker inspect --format <format>`, trimmed.
    pub fn inspect(&self, format: &str) -> String {
        docker(&["inspect", "--format", format, &self.name])
            .trim()
            .to_string()
    }

    /// The host port published for `port/tcp`.
    pub fn host_port(&self, port: u16) -> u16 {
        let mapping = docker(&["port", &self.name, &format!("{port}/tcp")]);
        mapping
            .lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no host port for {port}: {mapping}"))
    }

    pub fn logs(&self) -> String {
        let out = docker_output(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker_output(&["rm", "-f", "-v", &self.name]);
    }
}
