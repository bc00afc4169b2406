//! The images the chaos suites run, built on this machine (no registry can
//! be reached, so everything is `FROM scratch`):
//!
//! - [`BACKHAUL`]: `packaging/build-image.sh` with the debug `backhaul` that
//!   `cargo test` builds (CI needs no release build);
//! - [`MOSQUITTO`]: Debian's `/usr/sbin/mosquitto` and the libraries `ldd`
//!   lists for it, with a configuration for a remote broker;
//! - [`EVENTHUBS_PEER`]: the in-tree `eventhubs-peer` binary, likewise.
//!
//! Test binaries run in parallel (nextest) or one after another (cargo
//! test), so each image is built at most once per run: a `OnceLock` within
//! a process, and across processes a file lock plus a stamp that records
//! which binary (path, size, mtime) the current image holds.

use std::fs::{self, File};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use crate::docker::docker;
use crate::process::backhaul_bin;

pub const BACKHAUL: &str = "backhaul-chaos/backhaul:test";
pub const MOSQUITTO: &str = "backhaul-chaos/mosquitto:test";
pub const EVENTHUBS_PEER: &str = "backhaul-chaos/eventhubs-peer:test";

/// The remote broker's configuration: persistent sessions survive a
/// restart (saved on SIGTERM), queues deep enough for a long outage.
const MOSQUITTO_CONF: &str = "listener 1883 0.0.0.0
allow_anonymous true
persistence true
persistence_location /mosquitto/data/
max_queued_messages 1000000
max_inflight_messages 1000
user root
log_dest stderr
log_timestamp false
";

/// Builds the three images, or finds them current.
pub fn ensure_all() -> Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_all().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_all() -> Result<()> {
    let backhaul = backhaul_bin()?;
    // target/<profile>, from this test executable in target/<profile>/deps
    // (not from the backhaul binary, which $BACKHAUL_BIN may put anywhere).
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable is in target/<profile>/deps")?
        .to_path_buf();
    let state = profile_dir.join("chaos-images");
    fs::create_dir_all(&state)?;
    let _lock = FileLock::acquire(&state.join("lock"))?;

    if !is_current(&state, BACKHAUL, &backhaul)? {
        let previous = image_id(BACKHAUL);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/build-image.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg("--binary")
            .arg(&backhaul)
            .args(["--tag", BACKHAUL])
            .status()
            .context("running packaging/build-image.sh")?;
        if !status.success() {
            bail!("packaging/build-image.sh --binary {backhaul:?} failed");
        }
        stamp(&state, BACKHAUL, &backhaul, previous)?;
    }

    let mosquitto = PathBuf::from("/usr/sbin/mosquitto");
    if !mosquitto.exists() {
        bail!("/usr/sbin/mosquitto missing (scripts/test.sh installs Debian's mosquitto)");
    }
    if !is_current(&state, MOSQUITTO, &mosquitto)? {
        let previous = image_id(MOSQUITTO);
        build_scratch(
            MOSQUITTO,
            &mosquitto,
            &[("mosquitto/config/mosquitto.conf", MOSQUITTO_CONF)],
            &["mosquitto/data"],
            r#"EXPOSE 1883
ENTRYPOINT ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]"#,
        )?;
        stamp(&state, MOSQUITTO, &mosquitto, previous)?;
    }

    let peer = profile_dir.join("eventhubs-peer");
    if !peer.exists() {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "backhaul-chaos-tests",
                "--bin",
                "eventhubs-peer",
            ])
            .status()?;
        if !status.success() {
            bail!("cargo build of the eventhubs-peer binary failed");
        }
    }
    if !is_current(&state, EVENTHUBS_PEER, &peer)? {
        let previous = image_id(EVENTHUBS_PEER);
        build_scratch(
            EVENTHUBS_PEER,
            &peer,
            &[],
            &[],
            r#"EXPOSE 5672 5673
ENTRYPOINT ["/usr/bin/eventhubs-peer", "--listen", "0.0.0.0", "--port", "5672", "--control-port", "5673"]"#,
        )?;
        stamp(&state, EVENTHUBS_PEER, &peer, previous)?;
    }
    Ok(())
}

/// What identifies a binary's build: path, size and modification time.
fn fingerprint(binary: &Path) -> Result<String> {
    let meta = fs::metadata(binary).with_context(|| format!("{binary:?}"))?;
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    Ok(format!("{} {} {mtime}", binary.display(), meta.len()))
}

fn image_id(tag: &str) -> Option<String> {
    docker(&["image", "inspect", "--format", "{{.Id}}", tag])
        .ok()
        .map(|s| s.trim().to_string())
}

fn stamp_path(state: &Path, tag: &str) -> PathBuf {
    state.join(tag.replace(['/', ':'], "_"))
}

/// The image `tag` exists and was built from this very `binary`.
fn is_current(state: &Path, tag: &str, binary: &Path) -> Result<bool> {
    let Some(id) = image_id(tag) else {
        return Ok(false);
    };
    let recorded = fs::read_to_string(stamp_path(state, tag)).unwrap_or_default();
    Ok(recorded == format!("{}\n{id}\n", fingerprint(binary)?))
}

/// Records which binary the freshly built `tag` holds, and removes the
/// image it replaced (`previous`), so rebuilds leave no dangling images.
fn stamp(state: &Path, tag: &str, binary: &Path, previous: Option<String>) -> Result<()> {
    let id = image_id(tag).with_context(|| format!("image {tag} missing after its build"))?;
    if let Some(previous) = previous.filter(|p| *p != id) {
        // Still used by a container of a concurrent run: it stays.
        let _ = docker(&["image", "rm", &previous]);
    }
    fs::write(
        stamp_path(state, tag),
        format!("{}\n{id}\n", fingerprint(binary)?),
    )?;
    Ok(())
}

/// An image `FROM scratch` holding `binary` at its own path (under
/// /usr/bin for binaries outside /usr), the dynamic loader and every
/// library `ldd` lists, `files` (path, contents), empty `dirs`, a passwd
/// with root, and the `dockerfile_tail` instructions.
fn build_scratch(
    tag: &str,
    binary: &Path,
    files: &[(&str, &str)],
    dirs: &[&str],
    dockerfile_tail: &str,
) -> Result<()> {
    let context = tempfile::tempdir()?;
    let rootfs = context.path().join("rootfs");
    let target = if binary.starts_with("/usr") {
        binary.to_path_buf()
    } else {
        Path::new("/usr/bin").join(binary.file_name().context("binary name")?)
    };
    copy_into(&rootfs, binary, &target)?;
    let ldd = Command::new("ldd").arg(binary).output().context("ldd")?;
    if !ldd.status.success() {
        bail!("ldd {binary:?}: {}", String::from_utf8_lossy(&ldd.stderr));
    }
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
    {
        copy_into(&rootfs, Path::new(lib), Path::new(lib))?;
    }
    for (path, contents) in files {
        let path = rootfs.join(path);
        fs::create_dir_all(path.parent().context("file in a directory")?)?;
        fs::write(path, contents)?;
    }
    for dir in dirs.iter().chain(&["tmp"]) {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    fs::create_dir_all(rootfs.join("etc"))?;
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/:/sbin/nologin\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
    fs::write(
        context.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY rootfs/ /\n{dockerfile_tail}\n"),
    )?;
    let context_dir = context.path().to_string_lossy().into_owned();
    docker(&["build", "--quiet", "--tag", tag, &context_dir])?;
    Ok(())
}

/// Copies `source` (following links) to `target` inside `rootfs`.
fn copy_into(rootfs: &Path, source: &Path, target: &Path) -> Result<()> {
    let dest = rootfs.join(target.strip_prefix("/").unwrap_or(target));
    fs::create_dir_all(dest.parent().context("a file in a directory")?)?;
    fs::copy(source, &dest).with_context(|| format!("copying {source:?}"))?;
    Ok(())
}

/// An exclusive `flock` held until dropped.
struct FileLock {
    _file: File,
}

impl FileLock {
    fn acquire(path: &Path) -> Result<Self> {
        let file = File::create(path)?;
        // SAFETY: flock on a descriptor this function owns; blocking is the
        // intent (another test binary is building the images).
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            bail!("flock {path:?}: {}", std::io::Error::last_os_error());
        }
        Ok(Self { _file: file })
    }
}
