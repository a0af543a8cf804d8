//! Egress allow-list entries: `CIDR` or `CIDR:port` (IPv6 as `[CIDR]:port`).

use std::net::IpAddr;

/// Why an egress entry is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressRuleError {
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("prefix length {text:?} must be 0..={max}")]
    Prefix { text: String, max: u8 },
    #[error("port {0:?} must be 0..=65535")]
    Port(String),
    #[error("{0:?}: unclosed '['")]
    Unclosed(String),
    #[error("{text:?}: unexpected {tail:?}")]
    Trailing { text: String, tail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressRule {
    pub network: IpAddr,
    pub prefix_len: u8,
    /// `None` allows every port.
    pub port: Option<u16>,
}

impl EgressRule {
    pub fn parse(text: &str) -> Result<Self, EgressRuleError> {
        let (cidr, port) = split_port(text)?;
        let (addr, prefix) = match cidr.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (cidr, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| EgressRuleError::Address(addr.to_string()))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(|| {
                EgressRuleError::Prefix {
                    text: p.to_string(),
                    max,
                }
            })?,
            None => max,
        };
        Ok(Self {
            network,
            prefix_len,
            port,
        })
    }

    pub fn allows(&self, ip: IpAddr, port: u16) -> bool {
        self.port.is_none_or(|p| p == port) && in_network(self.network, self.prefix_len, ip)
    }
}

fn split_port(text: &str) -> Result<(&str, Option<u16>), EgressRuleError> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| EgressRuleError::Port(p.to_string()))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (cidr, tail) = rest
            .split_once(']')
            .ok_or_else(|| EgressRuleError::Unclosed(text.to_string()))?;
        return match tail.strip_prefix(':') {
            Some(p) => Ok((cidr, Some(parse_port(p)?))),
            None if tail.is_empty() => Ok((cidr, None)),
            None => Err(EgressRuleError::Trailing {
                text: text.to_string(),
                tail: tail.to_string(),
            }),
        };
    }
    // A single ':' means IPv4 with port; more mean a bare IPv6 address.
    match text.matches(':').count() {
        1 => {
            let (cidr, p) = text.split_once(':').unwrap_or((text, ""));
            Ok((cidr, Some(parse_port(p)?)))
        }
        _ => Ok((text, None)),
    }
}

fn in_network(network: IpAddr, prefix_len: u8, ip: IpAddr) -> bool {
    match (network, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs_with_and_without_ports() {
        let r = EgressRule::parse("10.0.0.0/8:443").unwrap();
        assert!(r.allows("10.1.2.3".parse().unwrap(), 443));
        assert!(!r.allows("10.1.2.3".parse().unwrap(), 80));
        assert!(!r.allows("11.0.0.1".parse().unwrap(), 443));
        let any = EgressRule::parse("0.0.0.0/0").unwrap();
        assert!(any.allows("8.8.8.8".parse().unwrap(), 53));
        let v6 = EgressRule::parse("[fd00::/8]:53").unwrap();
        assert!(v6.allows("fd12::1".parse().unwrap(), 53));
        let host = EgressRule::parse("::1").unwrap();
        assert!(host.allows("::1".parse().unwrap(), 1));
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in ["10.0.0.0/33", "nope", "1.2.3.4:99999", "[::1"] {
            assert!(EgressRule::parse(bad).is_err(), "{bad}");
        }
    }
}
