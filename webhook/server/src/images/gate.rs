//! Which registries a lookup may contact. The registry comes from the pod's
//! image name, so without a gate any pod author could make the admission
//! server send requests into its own network. Pure: the I/O that asks
//! these questions is in [`super::registry`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

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
    allowed.is_empty()
        && !listed_at_another_port(registry, allowed, insecure)
        && !is_internal(host_of(registry))
}

/// Whether a token realm or a redirect a registry names may be followed.
/// Such hosts are the registry's choice (an auth service, a blob store's
/// CDN), so the allow-list does not apply; but, as for registries, never
/// into the server's own network unless listed, and never from HTTPS down
/// to plain HTTP unless the target is listed as insecure.
pub fn may_follow(url: &Url, from_https: bool, reach: &Reach) -> bool {
    let (Some(host), Some(parsed)) = (url.host_str(), url.host()) else {
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
    if listed(&reach.allowed) || listed(&reach.insecure) {
        return true;
    }
    !listed_at_another_port(&target, &reach.allowed, &reach.insecure) && !is_internal_host(&parsed)
}

/// Whether `target` (`host[:port]`) is a host the operator listed only
/// with another port: listing `registry.internal:5000` opens that port,
/// not the host's others (its name may resolve inward, and is then let
/// through by [`reachable_addresses`]).
fn listed_at_another_port(target: &str, allowed: &[String], insecure: &[String]) -> bool {
    let host = host_of(target);
    allowed
        .iter()
        .chain(insecure)
        .filter(|entry| !entry.starts_with("*."))
        .any(|entry| {
            host_of(entry).eq_ignore_ascii_case(host) && !entry.eq_ignore_ascii_case(target)
        })
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
///
/// The host is read as a URL parser reads it, since the request URL is
/// built from it: `127.1`, `2130706433` or `0x7f.0.0.1` are 127.0.0.1
/// there. A host that does not parse is treated as internal.
fn is_internal(host: &str) -> bool {
    let parsed = if host.contains(':') {
        // Bare IPv6 (`host_of` drops the brackets).
        host.parse::<Ipv6Addr>().ok().map(Host::Ipv6)
    } else {
        Host::parse(host).ok()
    };
    parsed.is_none_or(|host| is_internal_host(&host))
}

fn is_internal_host<S: AsRef<str>>(host: &Host<S>) -> bool {
    match host {
        Host::Domain(name) => {
            let name = name.as_ref().trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Host::Ipv4(ip) => is_internal_ip(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => is_internal_ip(IpAddr::V6(*ip)),
    }
}

/// Anything but a public unicast address: loopback, private, link-local,
/// shared (CGNAT, used by some clusters), reserved, multicast, and IPv6
/// addresses that carry an IPv4 one (mapped, compatible, NAT64, 6to4,
/// Teredo) judged by it.
fn is_internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, _] = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || a == 0
                || (a == 100 && (b & 0xc0) == 64)
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b & 0xfe) == 18)
                || a >= 240
        }
        IpAddr::V6(ip) => {
            let s = ip.segments();
            let embedded = |high: u16, low: u16| {
                let [h1, h2] = high.to_be_bytes();
                let [l1, l2] = low.to_be_bytes();
                is_internal_ip(IpAddr::V4(Ipv4Addr::new(h1, h2, l1, l2)))
            };
            ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64
                || (s[0] == 0x2001 && s[1] == 0) // Teredo
                || ip.to_ipv4_mapped().is_some_and(|v4| is_internal_ip(IpAddr::V4(v4)))
                || (s[..6] == [0; 6] && embedded(s[6], s[7])) // IPv4-compatible
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] && embedded(s[6], s[7]))
                || (s[0] == 0x2002 && embedded(s[1], s[2])) // 6to4
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
            // Address literals as a URL parser reads them.
            "127.1:8080",
            "169.254.43518",
            "2130706433:6443",
            "0x7f.0.0.1",
            "0:10250",
            "localhost.",
            // Reserved and embedded forms.
            "198.18.0.1",
            "240.0.0.1",
            "224.0.0.1",
            "[64:ff9b::a9fe:a9fe]",
            "[2002:0a00:0001::1]",
            "[::10.0.0.1]",
            "[fec0::1]",
            "[ff02::1]",
        ] {
            assert!(!may_contact(internal, &[], &[]), "{internal}");
        }
        assert!(may_contact(
            "172.31.0.1:5000",
            &[],
            &list(&["172.31.0.1:5000"])
        ));
        assert!(may_contact("10.0.0.5", &list(&["10.0.0.5"]), &[]));
        // Public addresses in the same embedded forms stay public.
        assert!(may_contact("[64:ff9b::808:808]", &[], &[]));
        assert!(may_contact("[2002:808:808::1]", &[], &[]));
    }

    #[test]
    fn a_host_listed_with_a_port_is_open_at_that_port_only() {
        let insecure = list(&["registry.internal:5000"]);
        assert!(may_contact("registry.internal:5000", &[], &insecure));
        assert!(!may_contact("registry.internal:22", &[], &insecure));
        assert!(!may_contact("registry.internal", &[], &insecure));
        let reach = Reach {
            allowed: Vec::new(),
            insecure,
        };
        let url = |u: &str| Url::parse(u).unwrap();
        assert!(may_follow(
            &url("http://registry.internal:5000/token"),
            false,
            &reach
        ));
        assert!(!may_follow(
            &url("https://registry.internal:10250/"),
            true,
            &reach
        ));
        assert!(!may_follow(&url("https://127.1/"), true, &reach));
        assert!(!may_follow(&url("https://0x7f.1/"), true, &reach));
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
