//! Entra ID service principals for Event Hubs: the `ClientSecret` and
//! `ClientCertificate` authentication methods, built on `azure_identity`.
//! The SDK asks the credential for a token (scope
//! `https://eventhubs.azure.net/.default`) and puts it on the AMQP
//! connection through CBS as a `jwt`; the credential caches and renews it.
//!
//! Built when the configuration loads, so a damaged certificate or a bad
//! authority address is a configuration error, not a parked flow.

use std::fmt;
use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, SecretBytes, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    ClientCertificateCredential, ClientCertificateCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions,
};

/// What proves the service principal's identity. Secret: never logged.
pub enum PrincipalProof {
    ClientSecret(String),
    /// A PKCS#12 file (certificate and RSA private key).
    Certificate {
        pkcs12: Vec<u8>,
        password: Option<String>,
    },
}

/// A service principal, with its secrets resolved.
pub struct ServicePrincipal {
    pub tenant_id: String,
    pub client_id: String,
    pub proof: PrincipalProof,
    /// `https://...`; `None` is the public cloud's `login.microsoftonline.com`.
    pub authority_host: Option<String>,
    /// PEM certificate authorities trusted for the authority besides the
    /// system's.
    pub authority_ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for ServicePrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServicePrincipal")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("authority_host", &self.authority_host)
            .finish_non_exhaustive()
    }
}

/// The token credential for `principal`; the error says what is wrong
/// without quoting a secret.
pub fn credential(principal: ServicePrincipal) -> Result<Arc<dyn TokenCredential>, String> {
    let client_options = client_options(&principal)?;
    match principal.proof {
        PrincipalProof::ClientSecret(secret) => {
            let options = ClientSecretCredentialOptions { client_options };
            let credential = ClientSecretCredential::new(
                &principal.tenant_id,
                principal.client_id,
                Secret::new(secret),
                Some(options),
            )
            .map_err(|err| err.to_string())?;
            Ok(credential)
        }
        PrincipalProof::Certificate { pkcs12, password } => {
            let options = ClientCertificateCredentialOptions {
                client_options,
                password: password.map(Secret::new),
            };
            let credential = ClientCertificateCredential::new(
                principal.tenant_id,
                principal.client_id,
                SecretBytes::new(pkcs12),
                Some(options),
            )
            .map_err(|err| err.to_string())?;
            Ok(credential)
        }
    }
}

fn client_options(principal: &ServicePrincipal) -> Result<ClientOptions, String> {
    let mut options = ClientOptions::default();
    if let Some(host) = &principal.authority_host {
        if !host.starts_with("https://") {
            return Err(format!("authority host '{host}' must start with https://"));
        }
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host.trim_end_matches('/').to_string();
        options.cloud = Some(Arc::new(CloudConfiguration::Custom(custom)));
    }
    if let Some(pem) = &principal.authority_ca_pem {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|err| format!("the authority CA file is not PEM certificates: {err}"))?;
        if roots.is_empty() {
            return Err("the authority CA file holds no certificate".into());
        }
        let client = reqwest::Client::builder()
            .tls_certs_merge(roots)
            .build()
            .map_err(|err| format!("cannot build the HTTPS client for the authority: {err}"))?;
        options.transport = Some(Transport::new(Arc::new(client)));
    }
    Ok(options)
}
