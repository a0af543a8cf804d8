//! Which registries a lookup may contact. The registry comes from the pod's
//! image name, so without a gate any pod author could make the admission
//! server send requests into its own network. Pure: the I/O that asks
//! these questions is in [`super::registry`].

use std::net::{IpAddr, SocketAddr};

use reqwest::Url;

/// Who lookups may contact: the operator's lists from the lookup settings.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// `allowed_registries`: `host[:port]` or `*.domain` (empty: any public
    /// registry).
    pub allowed: Vec<String>,
    /// `insecure_registries`: `host[:port]` spoken to over plain HTTP.
    pub insecure: Vec<String>,
}

/// `allowed`: `host[:port]` or `*.domain` entries (empty: any public
/// registry); `insecure`: registries spoken to over HTTP, allowed too.
pub fn may_contact(registry: &str, allowed: &[String], insecure: &[String]) -> bool {
    let listed = |list: &[String]| list.iter().any(|entry| matches(entry, registry));
    if listed(allowed) || listed(insecure) {
        return true;
    }
    allowed.is_empty() && !is_internal(host_of(registry))
}

/// Whether a token realm or a redirect a registry names may be followed.
/// Such hosts are the registry's choice (an auth service, a blob store's
/// CDN), so the allow-list does not apply; but, as for registries, never
/// into the server's own network unless listed, and never from HTTPS down
/// to plain HTTP unless the target is listed as insecure.
pub fn may_follow(url: &Url, from_https: bool, reach: &Reach) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let target = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let listed = |list: &[String]| list.iter().any(|entry| matches(entry, &target));
    match url.scheme() {
        "https" => {}
        "http" if !from_https || listed(&reach.insecure) => {}
        _ => return false,
    }
    listed(&reach.allowed) || listed(&reach.insecure) || !is_internal(host_of(&target))
}

/// The addresses a name resolved to that lookups may connect to: all of
/// them for a host the operator listed, otherwise only public ones. Names
/// are judged by what they resolve to, so a public-looking name (or one
/// re-pointed after it was checked) cannot lead into the server's network.
pub fn reachable_addresses(
    host: &str,
    resolved: Vec<SocketAddr>,
    reach: &Reach,
) -> Vec<SocketAddr> {
    let listed = reach
        .allowed
        .iter()
        .chain(&reach.insecure)
        .any(|entry| names_host(entry, host));
    if listed {
        return resolved;
    }
    resolved
        .into_iter()
        .filter(|address| !is_internal_ip(address.ip()))
        .collect()
}

/// Whether a list entry (`host[:port]` or `*.domain`) names `host`.
fn names_host(entry: &str, host: &str) -> bool {
    if entry.starts_with("*.") {
        matches(entry, host)
    } else {
        host_of(entry).eq_ignore_ascii_case(host)
    }
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
/// entry may reach. Here a host is judged by what it says (an address
/// literal, `localhost`); where a name resolves to is judged when the
/// client connects ([`reachable_addresses`]).
fn is_internal(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(is_internal_ip)
}

fn is_internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                // 100.64.0.0/10, carrier-grade NAT, used by some clusters.
                || (ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_internal_ip(IpAddr::V4(v4)))
        }
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
    fn realms_and_redirects_go_anywhere_public_but_not_inward_nor_down_to_http() {
        let reach = |allowed: &[&str], insecure: &[&str]| Reach {
            allowed: list(allowed),
            insecure: list(insecure),
        };
        let url = |u: &str| Url::parse(u).unwrap();
        let listed_elsewhere = reach(&["ghcr.io"], &[]);
        // An auth service or CDN need not be on the allow-list.
        assert!(may_follow(
            &url("https://auth.docker.io/token"),
            true,
            &listed_elsewhere
        ));
        assert!(may_follow(
            &url("https://cdn.example/blob?sig=x"),
            true,
            &reach(&[], &[])
        ));
        for inward in [
            "https://169.254.169.254/latest/meta-data",
            "https://127.0.0.1:5000/token",
            "https://[::1]/token",
            "https://localhost/token",
            "https://10.1.2.3/",
        ] {
            assert!(
                !may_follow(&url(inward), true, &reach(&[], &[])),
                "{inward}"
            );
        }
        assert!(may_follow(
            &url("https://10.1.2.3/"),
            true,
            &reach(&["10.1.2.3"], &[])
        ));
        // Down to HTTP only where the operator said HTTP.
        assert!(!may_follow(
            &url("http://cdn.example/"),
            true,
            &reach(&[], &[])
        ));
        assert!(may_follow(
            &url("http://cdn.example/"),
            false,
            &reach(&[], &[])
        ));
        assert!(may_follow(
            &url("http://127.0.0.1:5000/token"),
            true,
            &reach(&[], &["127.0.0.1:5000"])
        ));
        assert!(!may_follow(
            &url("ftp://cdn.example/"),
            false,
            &reach(&[], &[])
        ));
    }

    #[test]
    fn a_name_leads_only_to_public_addresses_unless_listed() {
        let address = |a: &str| -> SocketAddr { a.parse().unwrap() };
        let resolved = vec![
            address("10.0.0.7:0"),
            address("93.184.216.34:0"),
            address("[fd00::1]:0"),
        ];
        let open = Reach::default();
        assert_eq!(
            reachable_addresses("evil.example", resolved.clone(), &open),
            [address("93.184.216.34:0")]
        );
        assert!(
            reachable_addresses("evil.example", vec![address("169.254.169.254:0")], &open)
                .is_empty()
        );
        let listed = Reach {
            allowed: Vec::new(),
            insecure: list(&["registry.internal:5000"]),
        };
        assert_eq!(
            reachable_addresses("registry.internal", resolved.clone(), &listed),
            resolved
        );
        let wildcard = Reach {
            allowed: list(&["*.corp.example"]),
            insecure: Vec::new(),
        };
        assert_eq!(
            reachable_addresses("reg.corp.example", resolved.clone(), &wildcard),
            resolved
        );
        assert_eq!(
            reachable_addresses("corp.example", resolved, &wildcard).len(),
            1
        );
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
