//! `HOST[:PORT]` to one socket address, by one rule for every program.
//!
//! The rule: a literal address is taken as written; a name takes its first IPv4 address, else
//! its first address. Why IPv4 first: names of dual-stack hosts (`localhost`, `kitchen.local`)
//! usually list IPv6 first (RFC 6724 ordering), but the stream is IPv4 unless configured
//! otherwise (the default group and the legacy channel are IPv4), a receiver sends its time
//! queries from a socket of its stream's family, and an IPv6 answer for a LAN name is often
//! link-local, unusable without a scope. IPv4 is the answer that works with the defaults; an
//! IPv6 peer is chosen by writing its address (`[fd00::7]:45300`).

use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use crate::NetError;

/// Resolves one `HOST:PORT` (`HOST` alone takes `default_port`; IPv6 literals in brackets,
/// `[ff05::77]:45300`, or bare without a port). See the module doc for which address of a name
/// is taken.
pub fn resolve(spec: &str, default_port: u16) -> Result<SocketAddr, NetError> {
    let bad = |why| NetError::BadAddress {
        spec: spec.to_string(),
        why,
    };
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(bad("empty"));
    }
    if let Ok(a) = spec.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = spec.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| bad("port is not a number 0-65535"))?,
            None if tail.is_empty() => default_port,
            None => return Err(bad("text after ']'")),
        };
        let ip = h
            .parse::<Ipv6Addr>()
            .map_err(|_| bad("not an IPv6 address in brackets"))?;
        return Ok(SocketAddr::new(IpAddr::V6(ip), port));
    } else {
        match spec.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad("port is not a number 0-65535"))?,
            ),
            None => (spec, default_port),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if port == 0 {
        return Err(bad("port 0"));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| NetError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| NetError::NoAddress(host.to_string()))
}

/// Resolves every address, dropping duplicates (order kept).
pub fn resolve_all(specs: &[String], default_port: u16) -> Result<Vec<SocketAddr>, NetError> {
    let mut out: Vec<SocketAddr> = Vec::with_capacity(specs.len());
    for s in specs {
        let a = resolve(s, default_port)?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_resolve() {
        assert_eq!(
            resolve("239.255.77.77:45300", 1).unwrap(),
            "239.255.77.77:45300".parse().unwrap()
        );
        assert_eq!(
            resolve("127.0.0.1", 45300).unwrap(),
            "127.0.0.1:45300".parse().unwrap()
        );
        assert_eq!(
            resolve("[ff05::77]:1111", 1).unwrap(),
            "[ff05::77]:1111".parse().unwrap()
        );
        assert_eq!(
            resolve("[::1]", 45300).unwrap(),
            "[::1]:45300".parse().unwrap()
        );
        let l = resolve("localhost:1111", 1).unwrap();
        assert!(l.ip().is_loopback() && l.port() == 1111, "{l}");
        let all = resolve_all(&["127.0.0.1:5".to_string(), "127.0.0.1:5".to_string()], 1).unwrap();
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn a_name_prefers_its_ipv4_address() {
        // localhost resolves to 127.0.0.1 (and ::1 on hosts with IPv6).
        let l = resolve("localhost", 45300).unwrap();
        assert_eq!(l, "127.0.0.1:45300".parse().unwrap());
    }

    #[test]
    fn bad_destinations_say_what_is_wrong() {
        let e = resolve("host:notaport", 1).unwrap_err();
        assert!(e.to_string().contains("port is not a number"), "{e}");
        let e = resolve("", 1).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = resolve("no-such-host.invalid:45300", 1).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot resolve host \"no-such-host.invalid\""),
            "{e}"
        );
    }
}
