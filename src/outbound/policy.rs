//! Which addresses a room may reach. By default none of the host's own or
//! its private networks' (loopback, RFC 1918, link-local, CGNAT, unique
//! local, multicast, reserved), so a room cannot be used to call the
//! services next to the server. The check is made on the addresses a name
//! resolves to, inside the resolver the HTTP client connects with, so a
//! name that resolves to a public address when checked and a private one
//! when connected (DNS rebinding) cannot slip through; every redirect is
//! resolved, and checked, the same way.

use ipnet::IpNet;
use std::net::IpAddr;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};

/// Networks refused unless allowed.
const DENIED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b:1::/48",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// The addresses outbound requests may connect to.
#[derive(Debug, Clone)]
pub struct AddressPolicy {
    denied: Vec<IpNet>,
    /// Networks reachable although in `denied` (`fetch_allow`).
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    /// The default deny-list, lifted entirely by `allow_private`, or for
    /// the networks in `allowed`.
    pub fn new(allow_private: bool, allowed: Vec<IpNet>) -> AddressPolicy {
        let denied = if allow_private {
            Vec::new()
        } else {
            DENIED.iter().map(|net| net.parse().expect("the deny-list's networks are valid")).collect()
        };
        AddressPolicy { denied, allowed }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !self.denied.iter().any(|net| net.contains(&ip)) || self.allowed.iter().any(|net| net.contains(&ip))
    }
}

/// The system resolver, keeping only the addresses the policy permits.
#[derive(Debug)]
pub(super) struct GuardedResolver {
    pub(super) policy: AddressPolicy,
}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        // An address needs no lookup (with a timeout set, ureq's resolver
        // spends a thread on each one).
        let literal = uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']')).and_then(|h| h.parse().ok());
        let resolved = match (literal, uri.port_u16().or_else(|| default_port(uri))) {
            (Some(ip), Some(port)) => {
                let mut one = self.empty();
                one.push(std::net::SocketAddr::new(ip, port));
                one
            }
            _ => DefaultResolver::default().resolve(uri, config, timeout)?,
        };
        let mut kept = self.empty();
        for addr in resolved.iter().filter(|addr| self.policy.permits(addr.ip())) {
            kept.push(*addr);
        }
        if kept.is_empty() {
            let host = uri.host().unwrap_or_default();
            let message = format!(
                "{host} is a private or local address ({}), which rooms may not reach \
                 (allow_private_fetch or fetch_allow lift this)",
                resolved.first().map(|a| a.ip().to_string()).unwrap_or_default()
            );
            return Err(ureq::Error::Io(std::io::Error::new(std::io::ErrorKind::PermissionDenied, message)));
        }
        Ok(kept)
    }
}

fn default_port(uri: &ureq::http::Uri) -> Option<u16> {
    match uri.scheme_str() {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_local_addresses_are_refused_by_default() {
        let policy = AddressPolicy::new(false, Vec::new());
        for denied in
            ["127.0.0.1", "10.1.2.3", "172.20.0.1", "192.168.1.1", "169.254.169.254", "100.100.0.1", "0.0.0.0"]
        {
            assert!(!policy.permits(ip(denied)), "{denied}");
        }
        for denied in ["::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "ff02::1"] {
            assert!(!policy.permits(ip(denied)), "{denied}");
        }
        for public in ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "172.32.0.1", "::ffff:8.8.8.8"] {
            assert!(policy.permits(ip(public)), "{public}");
        }
    }

    #[test]
    fn the_deny_list_is_lifted_entirely_or_for_listed_networks() {
        assert!(AddressPolicy::new(true, Vec::new()).permits(ip("127.0.0.1")));
        let policy = AddressPolicy::new(false, vec!["127.0.0.1/32".parse().unwrap()]);
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(!policy.permits(ip("127.0.0.2")));
        assert!(!policy.permits(ip("10.0.0.1")));
    }
}
