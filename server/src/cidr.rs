//! An IP address or CIDR block (`10.1.2.3`, `10.1.2.0/24`, `fd00::/8`), for SAEs recognised by
//! the address they connect from (`match = "address"`). IPv4 clients reaching a dual-stack
//! listener as IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`) match their IPv4 form.

use std::net::IpAddr;

/// A network: an address and the number of leading bits that must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR` (a single address) or `ADDR/PREFIX`; the bits past the prefix must be zero.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.trim().parse().map_err(|_| {
            format!("{s:?} is not an IP address or CIDR block (e.g. 10.1.2.3 or 10.1.2.0/24)")
        })?;
        let net = net.to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?,
        };
        let c = Self { net, prefix };
        if c.masked(net) != bits(net) {
            return Err(format!(
                "{s:?}: the address has bits set past the /{prefix} prefix"
            ));
        }
        Ok(c)
    }

    /// Whether `ip` lies in this network.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && self.masked(ip) == bits(self.net)
    }

    fn masked(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let keep = u32::from(self.prefix);
        let mask = if keep == 0 {
            0
        } else {
            (u128::MAX << (128 - keep)) >> (128 - width)
        };
        bits(ip) & mask
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_blocks() {
        let one = Cidr::parse("10.1.2.3").unwrap();
        assert!(one.contains(ip("10.1.2.3")));
        assert!(!one.contains(ip("10.1.2.4")));
        assert!(one.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped form");
        let net = Cidr::parse("10.1.2.0/24").unwrap();
        assert!(net.contains(ip("10.1.2.255")));
        assert!(!net.contains(ip("10.1.3.0")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("192.0.2.1")));
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(
            Cidr::parse("127.0.0.0/8")
                .unwrap()
                .contains(ip("127.0.0.1"))
        );
    }

    #[test]
    fn malformed_values_are_refused_with_a_reason() {
        for (bad, says) in [
            ("10.1.2", "not an IP address"),
            ("host.example", "not an IP address"),
            ("10.1.2.0/33", "0 to 32"),
            ("fd00::/129", "0 to 128"),
            ("10.1.2.0/x", "0 to 32"),
            ("10.1.2.1/24", "bits set past the /24"),
        ] {
            let e = Cidr::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
