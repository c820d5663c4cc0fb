//! Checks `metamesh run` makes before it starts the node.
//!
//! libp2p opens its TCP listeners with `SO_REUSEPORT`, so a second node
//! started on an occupied port would share it silently, and a listen error
//! arrives later as a swarm event. Binding each fixed-port listen address
//! (and the API address) once, plainly, first turns "port already in use"
//! into an immediate, fatal error naming the address.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};

use anyhow::{anyhow, Result};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

use crate::config::Config;

/// The socket a listen multiaddr binds: (address, is TCP). `None` for port
/// 0 (any free port) and for addresses that are not plain IP + TCP/UDP.
fn socket_of(addr: &Multiaddr) -> Option<(SocketAddr, bool)> {
    let mut it = addr.iter();
    let ip: IpAddr = match it.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let (port, tcp) = match it.next()? {
        Protocol::Tcp(p) => (p, true),
        Protocol::Udp(p) => (p, false),
        _ => return None,
    };
    (port != 0).then(|| (SocketAddr::new(ip, port), tcp))
}

fn in_use(what: &str, addr: &str, e: &std::io::Error) -> anyhow::Error {
    let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
        " (another metamesh node or another program is using it: stop that one, \
         or choose another address)"
    } else {
        ""
    };
    anyhow!(
        "cannot {what} {addr}: {}{hint}",
        super::exit::strip_os_error(&e.to_string())
    )
}

/// Fail clearly if a fixed listen port or the API port cannot be bound.
pub fn check_listen(cfg: &Config) -> Result<()> {
    for addr in cfg.listen_addrs() {
        let Some((sock, tcp)) = socket_of(&addr) else {
            continue;
        };
        let r = if tcp {
            TcpListener::bind(sock).map(drop)
        } else {
            UdpSocket::bind(sock).map(drop)
        };
        r.map_err(|e| in_use("listen on", &addr.to_string(), &e))?;
    }
    let api = cfg.api_addr()?;
    if api.port() != 0 {
        TcpListener::bind(api)
            .map(drop)
            .map_err(|e| in_use("serve the API on", &api.to_string(), &e))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn occupied_ports_are_named() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let mut cfg = Config::default();
        cfg.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}")];
        let e = check_listen(&cfg).unwrap_err().to_string();
        assert!(e.contains(&format!("/ip4/127.0.0.1/tcp/{port}")), "{e}");
        assert!(e.contains("in use"), "{e}");
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        cfg.api = format!("127.0.0.1:{port}");
        let e = check_listen(&cfg).unwrap_err().to_string();
        assert!(e.contains(&format!("API on 127.0.0.1:{port}")), "{e}");
        cfg.api = "127.0.0.1:0".into();
        check_listen(&cfg).unwrap();
        assert_eq!(
            socket_of(&"/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap()),
            None
        );
        assert_eq!(socket_of(&"/dns4/example.org/tcp/1".parse().unwrap()), None);
    }
}
