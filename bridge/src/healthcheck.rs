//! `backhaul healthcheck`: one HTTP GET of `/readyz`, with std only, so that a
//! `FROM scratch` image can check itself without curl.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};

const TIMEOUT: Duration = Duration::from_secs(3);

/// `Ok` when the appliance at `address` answers `/readyz` with 200.
pub fn readyz(address: SocketAddr) -> Result<()> {
    // A wildcard bind address is reached on loopback.
    let target = if address.ip().is_unspecified() {
        SocketAddr::new(loopback_of(address), address.port())
    } else {
        address
    };
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET /readyz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading the answer of {target}"))?;
    let status = response.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .trim();
        bail!("{target}/readyz answered {status}: {body}");
    }
    Ok(())
}

fn loopback_of(address: SocketAddr) -> std::net::IpAddr {
    match address {
        SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    }
}
