//! The receive low-water mark of the sink's socket (`SO_RCVLOWAT`): how
//! many bytes must be waiting before the kernel wakes the sink's task.
//!
//! A destination sends its PUBACKs as they come, a few per segment. Woken
//! for every segment, the sink read each at once, and every read that
//! emptied the socket with small segments pending made Linux send a bare
//! ACK (`tcp_cleanup_rbuf`), which in turn let the destination send the
//! PUBACKs it had just gathered as one more tiny segment. All that for
//! PUBACKs the sink could not use yet: a window is reported only once its
//! front is confirmed, and a held-back refill waits for half the slots.
//! With the mark at the bytes of the PUBACKs awaited, the sink wakes once
//! they are there (BENCHMARKS.md, session 9: over 20 times fewer reads in a
//! replay, bare ACKs to the destination from 1 per 28 PUBACKs to 1 per
//! 131–153, about 30 % less CPU on the edge per replayed message).
//!
//! Off Linux, or if the kernel refuses, the mark stays at one byte and is
//! not asked for again: the sink is woken per segment as before, which
//! costs CPU and nothing else.

use std::os::fd::AsRawFd;

use tokio::net::TcpStream;
use tracing::debug;

/// The fewest bytes of one PUBACK (fixed header and packet id; MQTT 5
/// leaves out the reason code when it is Success).
pub(super) const PUBACK_MIN_LEN: usize = 4;

/// The highest mark set: far below the socket's receive buffer, so the
/// kernel never grows the buffer for it or clamps the window to it.
const MAX_MARK: usize = 16 * 1024;

/// The mark last set on one socket.
#[derive(Debug)]
pub(super) struct LowWater {
    bytes: usize,
    /// The kernel refused the option before any mark was set (not Linux,
    /// or a kernel without it): it is not asked again on this socket, since
    /// the sink sets the mark before every wait.
    refused: bool,
}

impl Default for LowWater {
    fn default() -> Self {
        Self {
            bytes: 1,
            refused: false,
        }
    }
}

impl LowWater {
    /// Wakes the task only once `bytes` are waiting (at least 1, at most
    /// [`MAX_MARK`]). Lowering the mark below what is already waiting
    /// wakes it at once.
    pub fn set(&mut self, stream: &TcpStream, bytes: usize) {
        let bytes = bytes.clamp(1, MAX_MARK);
        if bytes == self.bytes || self.refused {
            return;
        }
        match set_rcvlowat(stream, bytes) {
            Ok(()) => self.bytes = bytes,
            Err(err) => {
                // With a mark in force a refusal is retried: the next wait
                // may need it lowered (a PINGRESP is 2 bytes).
                self.refused = self.bytes == 1;
                debug!(%err, bytes, "SO_RCVLOWAT refused; woken per segment");
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn set_rcvlowat(stream: &TcpStream, bytes: usize) -> std::io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is the stream's, open while it is borrowed;
    // `value` is valid for reads of a c_int.
    let done = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_rcvlowat(_stream: &TcpStream, _bytes: usize) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::timeout;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (ours, theirs) =
            tokio::join!(TcpStream::connect(("127.0.0.1", port)), listener.accept());
        (ours.unwrap(), theirs.unwrap().0)
    }

    #[tokio::test]
    async fn the_task_wakes_only_once_the_mark_is_reached() {
        let (ours, mut theirs) = pair().await;
        let mut mark = LowWater::default();
        mark.set(&ours, 8);
        theirs.write_all(&[1, 2, 3, 4]).await.unwrap();
        let early = timeout(Duration::from_millis(200), ours.readable()).await;
        assert!(early.is_err(), "woken with 4 of 8 bytes waiting");
        theirs.write_all(&[5, 6, 7, 8]).await.unwrap();
        let mut ours = ours;
        let mut got = [0; 8];
        timeout(Duration::from_secs(5), ours.read_exact(&mut got))
            .await
            .expect("not woken with 8 of 8 bytes waiting")
            .unwrap();
        assert_eq!(got, [1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[tokio::test]
    async fn lowering_the_mark_wakes_the_task_for_what_waits() {
        let (ours, mut theirs) = pair().await;
        let mut mark = LowWater::default();
        mark.set(&ours, 8);
        theirs.write_all(&[0xD0, 0x00]).await.unwrap();
        let early = timeout(Duration::from_millis(200), ours.readable()).await;
        assert!(early.is_err(), "woken with 2 of 8 bytes waiting");
        mark.set(&ours, 1);
        timeout(Duration::from_secs(5), ours.readable())
            .await
            .expect("not woken after the mark went down to 1 byte")
            .unwrap();
        let mut got = [0; 2];
        assert_eq!(ours.try_read(&mut got).unwrap(), 2);
        assert_eq!(got, [0xD0, 0x00]);
    }

    /// The mark the kernel holds for `stream`.
    fn kernel_mark(stream: &TcpStream) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for writes of a c_int.
        let done = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(done, 0, "{}", std::io::Error::last_os_error());
        value
    }

    #[tokio::test]
    async fn the_mark_stays_between_one_byte_and_the_cap() {
        let (ours, _theirs) = pair().await;
        let mut mark = LowWater::default();
        mark.set(&ours, 400);
        assert_eq!(kernel_mark(&ours), 400);
        mark.set(&ours, 0);
        assert_eq!(kernel_mark(&ours), 1);
        mark.set(&ours, usize::MAX);
        assert_eq!(kernel_mark(&ours), MAX_MARK as libc::c_int);
    }
}
