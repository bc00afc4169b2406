//! How a listener decides who a client is.
//!
//! - `Anonymous`: anyone; the client has no identity (a username in its
//!   CONNECT is not checked, so it is not used for authorization either).
//! - `Password`: the CONNECT's username and password against a password
//!   file; the identity is the username.
//! - `X509`: the TLS client certificate, checked against the listener's CA
//!   bundle during the handshake; the identity is the subject CN.

use std::sync::Arc;

use crate::passwd::PasswordFile;

#[derive(Debug, Clone)]
pub enum Authentication {
    Anonymous,
    Password(Arc<PasswordFile>),
    X509,
}

impl Authentication {
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Authentication::Anonymous)
    }
}
