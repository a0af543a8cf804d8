//! Which registries a lookup may contact. The registry comes from the pod's
//! image name, so without a gate any pod author could make the admission
//! server send requests into its own network. Pure.

use std::net::IpAddr;

/// `allowed`: `host[:port]` or `*.domain` entries (empty: any public
/// registry); `insecure`: registries spoken to over HTTP, allowed too.
pub fn may_contact(registry: &str, allowed: &[String], insecure: &[String]) -> bool {
    let listed = |list: &[String]| list.iter().any(|entry| matches(entry, registry));
    if listed(allowed) || listed(insecure) {
        return true;
    }
    allowed.is_empty() && !is_internal(host_of(registry))
}

fn matches(entry: &str, registry: &str) -> bool {
    match entry.strip_prefix("*.") {
        Some(domain) => host_of(registry)
            .strip_suffix(domain)
            .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
        None => entry.eq_ignore_ascii_case(registry),
    }
}

/// The host of `host[:port]` (IPv6 in brackets).
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// Loopback, private, link-local, unspecified: addresses only an explicit
/// entry may reach. Names are judged by what they say (`localhost`), not
/// what they resolve to: list registries for full control.
fn is_internal(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                // 100.64.0.0/10, carrier-grade NAT, used by some clusters.
                || (ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64)
        }
        Ok(IpAddr::V6(ip)) => {
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_internal(&v4.to_string()))
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn public_registries_are_open_internal_addresses_need_listing() {
        for public in ["docker.io", "ghcr.io", "registry.example:5000", "8.8.8.8"] {
            assert!(may_contact(public, &[], &[]), "{public}");
        }
        for internal in [
            "127.0.0.1:5000",
            "10.0.0.5",
            "172.31.0.1:5000",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "localhost:5000",
            "[::1]:5000",
            "[fd00::1]",
            "[fe80::1]",
            "[::ffff:10.0.0.1]",
            "0.0.0.0",
        ] {
            assert!(!may_contact(internal, &[], &[]), "{internal}");
        }
        assert!(may_contact(
            "172.31.0.1:5000",
            &[],
            &list(&["172.31.0.1:5000"])
        ));
        assert!(may_contact("10.0.0.5", &list(&["10.0.0.5"]), &[]));
    }

    #[test]
    fn an_allow_list_closes_everything_else() {
        let allowed = list(&["ghcr.io", "*.corp.example"]);
        assert!(may_contact("ghcr.io", &allowed, &[]));
        assert!(may_contact("registry.corp.example:443", &allowed, &[]));
        assert!(
            !may_contact("corp.example", &allowed, &[]),
            "*. needs a subdomain"
        );
        assert!(!may_contact("evilcorp.example", &allowed, &[]));
        assert!(!may_contact("docker.io", &allowed, &[]));
    }
}
