//! The pod's sockets from /proc/net/{tcp,tcp6,udp,udp6} (the network
//! namespace is shared by every container of the pod).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use palisade_common::observe::Protocol;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl From<Proto> for Protocol {
    fn from(proto: Proto) -> Self {
        match proto {
            Proto::Tcp => Protocol::Tcp,
            Proto::Udp => Protocol::Udp,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub proto: Proto,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    /// Kernel TCP state (0x0A listen, 0x01 established); 0x07 for bound UDP.
    pub state: u8,
    pub inode: u64,
}

/// Kernel TCP states (include/net/tcp_states.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
}

impl TcpState {
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x01 => TcpState::Established,
            0x02 => TcpState::SynSent,
            0x03 => TcpState::SynRecv,
            0x04 => TcpState::FinWait1,
            0x05 => TcpState::FinWait2,
            0x06 => TcpState::TimeWait,
            0x07 => TcpState::Close,
            0x08 => TcpState::CloseWait,
            0x09 => TcpState::LastAck,
            0x0A => TcpState::Listen,
            0x0B => TcpState::Closing,
            0x0C => TcpState::NewSynRecv,
            _ => return None,
        })
    }
}

impl Socket {
    pub fn tcp_state(&self) -> Option<TcpState> {
        TcpState::from_code(self.state)
    }

    pub fn is_tcp_listener(&self) -> bool {
        self.proto == Proto::Tcp && self.tcp_state() == Some(TcpState::Listen)
    }
}

/// The pod's own socket counts (`inuse` and `tw` of /proc/net/sockstat and
/// sockstat6, which are per network namespace; the other fields are
/// host-wide). Reading them costs nothing, while reading the socket tables
/// walks the host's whole connection hash: tables are read again only
/// when these move (or on a slower safety schedule).
pub fn fingerprint(proc_root: &Path) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    for file in ["sockstat", "sockstat6"] {
        let text = std::fs::read_to_string(proc_root.join("self/net").join(file)).ok()?;
        for line in text.lines() {
            let (proto, fields) = line.split_once(':')?;
            if !matches!(proto, "TCP" | "UDP" | "TCP6" | "UDP6") {
                continue;
            }
            let words: Vec<&str> = fields.split_whitespace().collect();
            for pair in words.chunks(2) {
                if let [key, value] = pair {
                    if matches!(*key, "inuse" | "tw") {
                        out.push(value.parse().ok()?);
                    }
                }
            }
        }
    }
    Some(out)
}

/// The kernel's ephemeral port range: unconnected UDP sockets there are
/// clients (a resolver's), not services.
pub fn ephemeral_ports(proc_root: &Path) -> (u16, u16) {
    std::fs::read_to_string(proc_root.join("sys/net/ipv4/ip_local_port_range"))
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// Every socket of the pod's network namespace, as seen through `proc_root`
/// (`/proc/self/net/...`).
pub fn all(proc_root: &Path) -> Vec<Socket> {
    let mut out = Vec::new();
    for (file, proto) in [
        ("tcp", Proto::Tcp),
        ("tcp6", Proto::Tcp),
        ("udp", Proto::Udp),
        ("udp6", Proto::Udp),
    ] {
        if let Some(text) = read_table(&proc_root.join("self/net").join(file)) {
            out.extend(text.lines().skip(1).filter_map(|l| parse_line(l, proto)));
        }
    }
    out
}

/// Reads a /proc/net table to its end. The kernel hands these out a page
/// or so per read(), so a short read says nothing about the end: only a
/// read of 0 bytes does (stopping earlier loses most of a busy pod's
/// connections).
fn read_table(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(64 * 1024);
    std::io::Read::read_to_end(&mut file, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

fn parse_line(line: &str, proto: Proto) -> Option<Socket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    Some(Socket {
        proto,
        local: parse_endpoint(fields.get(1)?)?,
        remote: parse_endpoint(fields.get(2)?)?,
        state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

/// `0100007F:1F90` (IPv4, little-endian words) or 32 hex digits (IPv6).
fn parse_endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let ip = match words.as_slice() {
        [w] => IpAddr::V4(Ipv4Addr::from(w.swap_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_and_ipv6_lines() {
        let l = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0";
        let s = parse_line(l, Proto::Tcp).unwrap();
        assert_eq!(s.local, ("127.0.0.1".parse().unwrap(), 8080));
        assert!(s.is_tcp_listener());
        assert_eq!(s.inode, 12345);
        let l6 = "   1: 00000000000000000000000001000000:0050 0000000000000000FFFF00000A00000A:C350 01 00000000:00000000 00:00000000 00000000  1000        0 999 1";
        let s = parse_line(l6, Proto::Tcp).unwrap();
        assert_eq!(s.local, ("::1".parse().unwrap(), 80));
        assert_eq!(s.remote, ("10.0.0.10".parse().unwrap(), 50000));
        assert_eq!(s.tcp_state(), Some(TcpState::Established));
    }

    #[test]
    fn sees_a_real_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(all(Path::new("/proc"))
            .iter()
            .any(|s| s.is_tcp_listener() && s.local.1 == port));
    }

    #[test]
    fn socket_counts_move_when_a_socket_opens() {
        let before = fingerprint(Path::new("/proc")).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_ne!(fingerprint(Path::new("/proc")).unwrap(), before);
        drop(l);
    }

    #[test]
    fn every_socket_of_a_busy_pod_is_read_not_just_the_first_page() {
        let listeners: Vec<_> = (0..300)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: std::collections::HashSet<u16> = all(Path::new("/proc"))
            .iter()
            .filter(|s| s.is_tcp_listener())
            .map(|s| s.local.1)
            .collect();
        let missing = listeners
            .iter()
            .filter(|l| !ports.contains(&l.local_addr().unwrap().port()))
            .count();
        assert_eq!(missing, 0, "{missing} of 300 listeners not read");
    }
}
