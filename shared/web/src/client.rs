//! Who the client is when the server sits behind proxies: the peer address, unless the peer is a
//! proxy the operator trusts, in which case the address that proxy reports (`Forwarded`, RFC
//! 7239, or `X-Forwarded-For`), walking back through trusted proxies only. By default no proxy is
//! trusted: a header anyone can write never decides the client's address (the sign-in throttle
//! counts by it).

use std::net::IpAddr;

use ipnet::IpNet;
use poem::http::{header, HeaderMap};
use poem::Request;

/// The proxies whose forwarding headers are believed (`PREFIX_TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses a comma-separated list of CIDRs or addresses (`10.0.0.0/8, ::1`); empty trusts
    /// none.
    ///
    /// # Errors
    ///
    /// The first entry that is neither, in a message.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{entry:?} is not an address or CIDR"))?;
            nets.push(net);
        }
        Ok(Self(nets))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer's, or — when the peer is trusted — the nearest address in
    /// the forwarding chain that is not a trusted proxy. An entry that cannot be read ends the
    /// walk at the last hop that could (a trusted proxy): a forged or broken header never
    /// yields an address of the sender's choosing.
    pub fn client_ip(&self, req: &Request) -> Option<IpAddr> {
        let peer = req.remote_addr().as_socket_addr()?.ip();
        Some(self.client_behind(peer, req.headers()))
    }

    /// [`TrustedProxies::client_ip`] for a peer address and the request's headers.
    pub fn client_behind(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let chain = forwarded_chain(headers);
        let mut client = peer;
        for hop in chain.iter().rev() {
            let Some(ip) = hop else { break };
            client = canonical(*ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// A client address for a log field, written only if the line is: the address, or `-` when
/// there is none.
pub fn client_shown(ip: Option<IpAddr>) -> impl std::fmt::Display {
    struct Shown(Option<IpAddr>);
    impl std::fmt::Display for Shown {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self.0 {
                Some(ip) => ip.fmt(f),
                None => f.write_str("-"),
            }
        }
    }
    Shown(ip)
}

/// IPv4-mapped IPv6 addresses as IPv4, so one rule covers both spellings.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The addresses the proxies reported, nearest last: `Forwarded`'s `for=` parameters when the
/// request has that header, else `X-Forwarded-For`'s entries; `None` for an entry that is not
/// an address (`unknown`, an obfuscated name, garbage).
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name| {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{0}").to_owned())
            .collect::<Vec<_>>()
            .join(",")
    };
    let forwarded = values(header::FORWARDED);
    if !forwarded.is_empty() {
        return forwarded
            .split(',')
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.eq_ignore_ascii_case("for").then(|| parse_node(v))?
                })
            })
            .collect();
    }
    let xff = values(header::HeaderName::from_static("x-forwarded-for"));
    if xff.is_empty() {
        return Vec::new();
    }
    xff.split(',').map(|v| v.trim().parse::<IpAddr>().ok()).collect()
}

/// A `Forwarded` node: `192.0.2.1`, `"[2001:db8::1]:4711"`, `"192.0.2.1:80"`.
fn parse_node(value: &str) -> Option<IpAddr> {
    let v = value.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    v.parse().ok().or_else(|| v.rsplit_once(':').and_then(|(ip, _)| ip.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(proxies: &TrustedProxies, peer: &str, headers: &[(&str, &str)]) -> IpAddr {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        proxies.client_behind(peer.parse().expect("peer"), &map)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn headers_count_only_from_trusted_proxies() {
        let none = TrustedProxies::default();
        let spoofed = [("x-forwarded-for", "10.9.9.9")];
        assert_eq!(client(&none, "198.51.100.7", &spoofed), ip("198.51.100.7"), "none trusted");
        let lb = TrustedProxies::parse("127.0.0.1/32, 10.0.0.0/8").expect("list");
        assert_eq!(client(&lb, "198.51.100.7", &spoofed), ip("198.51.100.7"), "not a proxy");
        let via = [("x-forwarded-for", "6.6.6.6, 203.0.113.5, 10.1.2.3")];
        assert_eq!(client(&lb, "127.0.0.1", &via), ip("203.0.113.5"), "nearest untrusted hop");
        let all = [("x-forwarded-for", "10.1.1.1")];
        assert_eq!(client(&lb, "127.0.0.1", &all), ip("10.1.1.1"), "proxies all the way");
        let broken = [("x-forwarded-for", "6.6.6.6, garbage")];
        assert_eq!(client(&lb, "127.0.0.1", &broken), ip("127.0.0.1"), "unreadable hop ends it");
        let fwd = [("forwarded", "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https")];
        assert_eq!(client(&lb, "::ffff:127.0.0.1", &fwd), ip("2001:db8::1"), "Forwarded, mapped");
        let split = [("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "10.0.0.2")];
        assert_eq!(client(&lb, "127.0.0.1", &split), ip("6.6.6.6"), "header lines in order");
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.example").is_err());
        assert_eq!(TrustedProxies::parse(" ").expect("empty"), TrustedProxies::default());
        assert_eq!(client_shown(None).to_string(), "-");
        assert_eq!(client_shown(Some(ip("192.0.2.1"))).to_string(), "192.0.2.1");
    }
}
