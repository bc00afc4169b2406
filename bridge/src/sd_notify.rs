//! systemd's service notification protocol (`sd_notify(3)`), without
//! libsystemd: one datagram of `KEY=VALUE` lines to the socket named by
//! `$NOTIFY_SOCKET`. The unit (`packaging/systemd/backhaul.service`) is
//! `Type=notify` with a watchdog, so systemd starts dependent units only once
//! devices can connect, and restarts an appliance whose runtime or queue
//! committer hangs instead of leaving a silent process that acknowledges
//! nothing.
//!
//! Outside systemd (no `$NOTIFY_SOCKET`) nothing is sent and nothing fails:
//! [`Notifier::from_env`] returns `None`.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where the notifications go: a file system path or, for a `$NOTIFY_SOCKET`
/// starting with `@`, a name in Linux's abstract socket namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: Target,
}

impl Notifier {
    /// The notifier of `$NOTIFY_SOCKET`, or `None` when it is unset or empty
    /// (not started by systemd, or not as `Type=notify`). A socket that
    /// cannot be created is logged and treated as absent: notifications
    /// never stop the appliance.
    pub fn from_env() -> Option<Self> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        if value.is_empty() {
            return None;
        }
        match Self::new(&value) {
            Ok(notifier) => Some(notifier),
            Err(err) => {
                tracing::warn!(%err, socket = ?value, "cannot use NOTIFY_SOCKET; systemd will not hear from Backhaul");
                None
            }
        }
    }

    /// A notifier for the socket `address` (`$NOTIFY_SOCKET` syntax).
    pub fn new(address: &OsStr) -> io::Result<Self> {
        Ok(Self {
            socket: UnixDatagram::unbound()?,
            target: target_of(address)?,
        })
    }

    /// Sends `state`: newline-separated assignments such as `READY=1`.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let sent = match &self.target {
            Target::Path(path) => self.socket.send_to(state.as_bytes(), path)?,
            Target::Abstract(name) => send_abstract(&self.socket, name, state.as_bytes())?,
        };
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", state.len()),
            ));
        }
        Ok(())
    }

    /// [`send`](Self::send), logging a failure instead of returning it: a
    /// lost notification must not stop the data flows.
    pub fn notify(&self, state: &str) {
        if let Err(err) = self.send(state) {
            tracing::warn!(%err, "cannot notify systemd");
        }
    }
}

fn target_of(address: &OsStr) -> io::Result<Target> {
    match address.as_bytes() {
        [b'@', name @ ..] => Ok(Target::Abstract(name.to_vec())),
        [b'/', ..] => Ok(Target::Path(PathBuf::from(address))),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an abstract name (@...)",
        )),
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &[u8], data: &[u8]) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(data, &address)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist on Linux only",
    ))
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` (as
/// `sd_watchdog_enabled(3)` advises), when the watchdog is meant for this
/// process (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_of(&usec, pid.as_deref(), std::process::id())
}

fn watchdog_interval_of(usec: &str, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    let usec: u64 = usec.trim().parse().ok().filter(|usec| *usec > 0)?;
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert_eq!(
            target_of(OsStr::new("/run/systemd/notify")).unwrap(),
            Target::Path(PathBuf::from("/run/systemd/notify"))
        );
        assert_eq!(
            target_of(OsStr::new("@backhaul/notify")).unwrap(),
            Target::Abstract(b"backhaul/notify".to_vec())
        );
        assert_eq!(
            target_of(OsStr::new("relative")).unwrap_err().to_string(),
            "NOTIFY_SOCKET is neither an absolute path nor an abstract name (@...)"
        );
    }

    #[test]
    fn the_watchdog_interval_is_half_the_timeout_and_only_for_its_process() {
        assert_eq!(
            watchdog_interval_of("30000000", None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_of("30000000", Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval_of("30000000", Some("8"), 7), None);
        assert_eq!(watchdog_interval_of("0", None, 7), None);
        assert_eq!(watchdog_interval_of("soon", None, 7), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_datagram_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("backhaul-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        let notifier = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        notifier.send("READY=1\nSTATUS=testing").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=testing");
    }
}
