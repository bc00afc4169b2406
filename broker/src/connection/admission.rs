//! Who gets in: the TLS handshake (and the client certificate's CN), the
//! WebSocket upgrade, the password check, and the CONNACK that refuses a
//! client.

use std::sync::Arc;

use bytes::BytesMut;
use rumqttd::protocol::{ConnAck, ConnectReturnCode, Login, Packet};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};

use super::Io;
use crate::broker::{ListenerContext, Shared};
use crate::codec::Codec;
use crate::passwd::{PasswordFile, Verified};
use crate::stats::AuthFailure;
use crate::ConnectionError;

/// The handshakes before MQTT: TLS on a TLS listener, then the WebSocket
/// upgrade on a WebSocket listener. Returns the MQTT byte stream and the
/// subject CN of the client certificate if there is one.
pub(super) async fn handshake<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    listener: &ListenerContext,
    shared: &Shared,
) -> Result<(Io, Option<String>), ConnectionError> {
    let (io, cn) = tls_handshake(stream, listener, shared).await?;
    let Some(websocket) = &listener.websocket else {
        return Ok((io, cn));
    };
    let max_packet_size = listener.limits.max_packet_size;
    let io = crate::websocket::accept(io, websocket, max_packet_size).await?;
    Ok((Box::new(io), cn))
}

/// The TLS handshake of a TLS listener, with the subject CN of the client
/// certificate if there is one. Failures are counted by reason.
async fn tls_handshake<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    listener: &ListenerContext,
    shared: &Shared,
) -> Result<(Io, Option<String>), ConnectionError> {
    let Some(acceptor) = &listener.tls else {
        return Ok((Box::new(stream), None));
    };
    match acceptor.accept(stream).await {
        Ok(tls) => {
            let cn = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| crate::tls::common_name(cert));
            Ok((Box::new(tls), cn))
        }
        Err(err) => {
            shared
                .stats
                .auth_failures
                .inc(crate::tls::handshake_failure(&err));
            Err(ConnectionError::TlsHandshake(err.to_string()))
        }
    }
}

/// Checks the CONNECT's credentials against the password file: on the
/// blocking pool, a few at a time. The username, or why it failed.
pub(super) async fn check_password(
    shared: &Shared,
    file: &Arc<PasswordFile>,
    login: Option<Login>,
) -> Result<String, AuthFailure> {
    let Some(Login { username, password }) = login else {
        return Err(AuthFailure::NoCredentials);
    };
    if username.is_empty() {
        return Err(AuthFailure::NoCredentials);
    }
    let _slot = shared.verify_slots.acquire().await;
    let file = file.clone();
    let verified = tokio::task::spawn_blocking(move || {
        file.verify(&username, &password)
            .eq(&Verified::Yes)
            .then_some(username)
    })
    .await
    .ok()
    .flatten();
    verified.ok_or(AuthFailure::BadCredentials)
}

/// Answers CONNECT with a refusal and closes.
pub(super) async fn refuse(
    codec: &Codec,
    writer: &mut WriteHalf<Io>,
    code: ConnectReturnCode,
) -> Result<(), ConnectionError> {
    let mut out = BytesMut::new();
    let refusal = ConnAck {
        session_present: false,
        code,
    };
    codec.write(Packet::ConnAck(refusal, None), &mut out)?;
    writer.write_all(&out).await?;
    writer.flush().await?;
    writer.shutdown().await?;
    Ok(())
}
