//! Which address a request comes from: the socket's peer, unless that peer
//! is a trusted proxy, in which case the proxies' `Forwarded` (RFC 7239) or,
//! without it, `X-Forwarded-For` header names it.
//!
//! The hops are read from the right (the nearest proxy's entry last) and
//! trusted proxies skipped: the first address that is not one is the
//! client. Entries further left were written by the client itself and prove
//! nothing. A hop that is not an address (`unknown`, an obfuscated name, a
//! typo) ends the walk at the proxy that wrote it, so garbage cannot choose
//! the address a client is counted under.

use crate::http::RequestHead;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

pub fn client_ip(peer: IpAddr, head: &RequestHead, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded = header_values(head, "forwarded");
    let hops: Vec<&str> = if forwarded.is_empty() {
        header_values(head, "x-forwarded-for").into_iter().flat_map(|v| v.split(',')).map(str::trim).collect()
    } else {
        forwarded.into_iter().flat_map(|v| v.split(',')).map(forwarded_for).collect()
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if is_trusted(&ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

fn header_values<'a>(head: &'a RequestHead, name: &str) -> Vec<&'a str> {
    head.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(&h.value).ok())
        .collect()
}

/// The `for=` parameter of one `Forwarded` element, or "" without one.
fn forwarded_for(element: &str) -> &str {
    element
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("for"))
        .map_or("", |(_, value)| value.trim())
}

/// An address as a hop names it: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]:80`, any of them quoted.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Header;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            target: "/".into(),
            minor_version: 1,
            headers: headers.iter().map(|(n, v)| Header { name: (*n).into(), value: v.as_bytes().to_vec() }).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = head(&[("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=203.0.113.9")]);
        assert_eq!(client_ip(ip("198.51.100.7"), &h, &[]), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("198.51.100.7"), &h, &nets(&["10.0.0.0/8"])), ip("198.51.100.7"));
    }

    #[test]
    fn a_trusted_proxy_names_the_client_from_the_right() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client wrote a fake first entry; proxy 10.1.1.1 appended the
        // real one; the last proxy (the peer) appended 10.1.1.1.
        let h = head(&[("X-Forwarded-For", "1.2.3.4, 203.0.113.9"), ("x-forwarded-for", "10.1.1.1")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        let h = head(&[("X-Forwarded-For", "10.2.2.2, 10.1.1.1")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("10.2.2.2"), "all trusted: the leftmost");
        let h = head(&[]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("127.0.0.1"), "no header: the peer");
    }

    #[test]
    fn forwarded_is_preferred_and_its_forms_are_read() {
        let trusted = nets(&["127.0.0.0/8"]);
        let h = head(&[
            ("X-Forwarded-For", "198.51.100.1"),
            ("Forwarded", r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#),
        ]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("2001:db8:cafe::17"));
        let h = head(&[("Forwarded", r#"for="192.0.2.61:8080""#)]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("192.0.2.61"));
    }

    #[test]
    fn garbage_ends_the_walk_at_the_proxy_that_wrote_it() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let h = head(&[("X-Forwarded-For", "203.0.113.9, unknown, 10.1.1.1")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("10.1.1.1"));
        let h = head(&[("Forwarded", "for=_hidden")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("127.0.0.1"));
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_selves() {
        let trusted = nets(&["127.0.0.1/32"]);
        let h = head(&[("X-Forwarded-For", "::ffff:203.0.113.9")]);
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), &h, &trusted), ip("203.0.113.9"));
    }
}
