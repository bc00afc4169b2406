//! A stand-in for the Entra ID token endpoint (`login.microsoftonline.com`),
//! which cannot run on this machine: HTTPS on loopback with a certificate
//! from a throw-away CA, answering `POST /<tenant>/oauth2/v2.0/token` as the
//! OAuth 2.0 client-credentials grant does. It records every request so a
//! test can check what `azure_identity` sent (secret, or certificate
//! assertion) and hands out numbered tokens (`entra-token-1`, ...) that the
//! Event Hubs peer then sees in CBS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// One token request as received.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The path, `/<tenant>/oauth2/v2.0/token`.
    pub path: String,
    /// The form fields of the body.
    pub form: BTreeMap<String, String>,
}

/// A running token endpoint; stops when dropped.
pub struct EntraAuthority {
    address: SocketAddr,
    ca_pem: String,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    refuse: Arc<AtomicBool>,
    client_secret: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EntraAuthority {
    pub async fn start() -> Result<Self> {
        let (ca_pem, config) = certificates()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(AtomicBool::new(false));
        let client_secret = Arc::new(Mutex::new(None));
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let state = Authority {
            requests: requests.clone(),
            refuse: refuse.clone(),
            client_secret: client_secret.clone(),
        };
        let task = tokio::spawn(serve(listener, acceptor, state));
        Ok(Self {
            address,
            ca_pem,
            requests,
            refuse,
            client_secret,
            task,
        })
    }

    /// While on, token requests are answered 401 `invalid_client`, as Entra
    /// ID answers a wrong secret.
    pub fn refuse(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
    }

    /// From now on a client secret other than `secret` is refused (401).
    pub fn accept_only_secret(&self, secret: &str) {
        if let Ok(mut expected) = self.client_secret.lock() {
            *expected = Some(secret.to_string());
        }
    }

    /// `https://127.0.0.1:<port>`, the `authorityHost` to configure.
    pub fn authority_host(&self) -> String {
        format!("https://{}", self.address)
    }

    /// The PEM of the CA that signed the endpoint's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for EntraAuthority {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A CA, and a server certificate for 127.0.0.1 that it signed.
fn certificates() -> Result<(String, ServerConfig)> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Backhaul test authority CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let server_key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?
        .signed_by(&server_key, &ca)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![server.der().clone()], key)
        .context("the authority's certificate")?;
    Ok((ca.pem(), config))
}

/// What the connections share.
#[derive(Clone)]
struct Authority {
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    refuse: Arc<AtomicBool>,
    client_secret: Arc<Mutex<Option<String>>>,
}

impl Authority {
    fn refuses(&self, form: &BTreeMap<String, String>) -> bool {
        let expected = self.client_secret.lock().ok().and_then(|e| e.clone());
        let wrong_secret = match (&expected, form.get("client_secret")) {
            (Some(expected), Some(given)) => expected != given,
            _ => false,
        };
        self.refuse.load(Ordering::SeqCst) || wrong_secret
    }
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, state: Authority) {
    while let Ok((stream, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(stream).await {
                let _ = answer(tls, &state).await;
            }
        });
    }
}

/// Answers the requests of one connection (HTTP/1.1, keep-alive).
async fn answer(
    stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    state: &Authority,
) -> Result<()> {
    let mut stream = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut length = 0;
        loop {
            let mut header = String::new();
            stream.read_line(&mut header).await?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
        let form: BTreeMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        let refused = state.refuses(&form);
        let number = {
            let mut all = state
                .requests
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?;
            all.push(TokenRequest { path, form });
            all.len()
        };
        let (status, json) = if refused {
            (
                "401 Unauthorized",
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}"#.to_string(),
            )
        } else {
            (
                "200 OK",
                format!(
                    r#"{{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"entra-token-{number}"}}"#
                ),
            )
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\n\
             Content-Length: {}\r\n\r\n{json}",
            json.len()
        );
        stream.get_mut().write_all(response.as_bytes()).await?;
        stream.get_mut().flush().await?;
    }
}
