//! MQTT over WebSocket (MQTT 3.1.1 §6, MQTT 5 §6): the server handshake of a
//! WebSocket listener.
//!
//! The handshake runs in the connection's own task, after the TLS handshake
//! of a `wss` listener and under the same connect timeout, so a client that
//! stalls it holds up no one. It accepts only a GET on the listener's path
//! that offers the `mqtt` subprotocol (the one both MQTT versions name) and
//! answers with that subprotocol; anything else gets an HTTP error and is
//! closed. After it, [`stream::WebSocketIo`] turns binary frames back into
//! the MQTT byte stream the connection task reads, so authentication,
//! authorization and limits are exactly those of a TCP listener.

mod stream;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;

pub(crate) use self::stream::WebSocketIo;
use crate::ConnectionError;

/// The subprotocol MQTT over WebSocket must negotiate.
pub const SUBPROTOCOL: &str = "mqtt";

/// The WebSocket side of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketSettings {
    /// The HTTP path clients connect to, such as `/mqtt`.
    pub path: String,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        Self {
            path: "/mqtt".into(),
        }
    }
}

/// Runs the server handshake on `stream` and returns the MQTT byte stream
/// inside it. `max_packet_size` bounds a WebSocket message (an MQTT packet
/// and its fixed header), so a client cannot make us buffer a frame larger
/// than the packet we would accept.
// tungstenite's handshake callback must return its `ErrorResponse`.
#[allow(clippy::result_large_err)]
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    settings: &WebSocketSettings,
    max_packet_size: usize,
) -> Result<WebSocketIo<S>, ConnectionError> {
    let limit = max_packet_size.saturating_add(MAX_FIXED_HEADER);
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let path = settings.path.as_str();
    let check = |request: &Request, response: Response| check_request(path, request, response);
    match tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)).await {
        Ok(ws) => Ok(WebSocketIo::new(ws)),
        Err(WsError::Http(response)) => {
            let reason = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            Err(ConnectionError::WebSocketHandshake(reason))
        }
        Err(err) => Err(ConnectionError::WebSocketHandshake(err.to_string())),
    }
}

/// The largest MQTT fixed header: one type byte and four length bytes.
const MAX_FIXED_HEADER: usize = 5;

/// Accepts the upgrade request if it is for our path and offers `mqtt`;
/// the answer names the subprotocol, as MQTT requires.
#[allow(clippy::result_large_err)] // the signature of tungstenite's callback
fn check_request(
    path: &str,
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    if request.uri().path() != path {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            format!("no MQTT WebSocket endpoint at {}", request.uri().path()),
        ));
    }
    let offered = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim() == SUBPROTOCOL);
    if !offered {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            format!("the WebSocket subprotocol '{SUBPROTOCOL}' was not offered"),
        ));
    }
    response.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(response)
}

fn refusal(status: StatusCode, reason: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(reason));
    *response.status_mut() = status;
    response
}
