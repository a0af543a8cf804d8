//! The pod's sockets from /proc/net/{tcp,tcp6,udp,udp6} (the network
//! namespace is shared by every container of the pod).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
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

const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0A;
const UDP_UNCONNECTED: u8 = 0x07;

impl Socket {
    pub fn is_listener(&self) -> bool {
        match self.proto {
            Proto::Tcp => self.state == TCP_LISTEN,
            Proto::Udp => self.state == UDP_UNCONNECTED && self.remote.1 == 0,
        }
    }

    /// An outbound TCP connection to somewhere other than this pod.
    pub fn is_egress(&self) -> bool {
        self.proto == Proto::Tcp
            && self.state == TCP_ESTABLISHED
            && !self.remote.0.is_loopback()
            && self.remote.0 != self.local.0
    }
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

/// Reads a /proc/net table in as few read() calls as possible: each call
/// makes the kernel walk the host-wide connection hash table from the
/// start (milliseconds on large hosts), so a small-buffer read loop, and
/// the final read that only confirms end-of-file, are avoided.
fn read_table(path: &Path) -> Option<String> {
    const CHUNK: usize = 256 * 1024;
    // A record is under 200 bytes: a read that stops this far short of a
    // full buffer reached the end of the table.
    const SLACK: usize = 4096;
    let mut file = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0;
    loop {
        let n = std::io::Read::read(&mut file, &mut buf[len..]).ok()?;
        len += n;
        if n == 0 || buf.len() - len > SLACK {
            break;
        }
        buf.resize(buf.len() + CHUNK, 0);
    }
    buf.truncate(len);
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
        assert!(s.is_listener());
        assert_eq!(s.inode, 12345);
        let l6 = "   1: 00000000000000000000000001000000:0050 0000000000000000FFFF00000A00000A:C350 01 00000000:00000000 00:00000000 00000000  1000        0 999 1";
        let s = parse_line(l6, Proto::Tcp).unwrap();
        assert_eq!(s.local, ("::1".parse().unwrap(), 80));
        assert_eq!(s.remote, ("10.0.0.10".parse().unwrap(), 50000));
        assert!(s.is_egress());
    }

    #[test]
    fn sees_a_real_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(all(Path::new("/proc"))
            .iter()
            .any(|s| s.is_listener() && s.local.1 == port));
    }
}
