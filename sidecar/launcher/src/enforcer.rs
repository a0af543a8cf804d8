//! Hands the coverage report to the pod's enforcer, which forwards it to
//! the policy service (the container's log alone is seen by nobody).
//!
//! The connection is made before the sandbox exists: with Landlock ABI 6
//! the confined launcher could no longer reach an abstract socket created
//! outside it, while a socket connected before keeps working. The launcher
//! then waits briefly for the enforcer's answer, so that it is still
//! `palisade-launch` (not yet the app) while the enforcer checks who sent
//! the report. Nothing here may keep the app from starting: every failure
//! is returned for a line on stderr, and every wait is bounded (connecting
//! included).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use palisade_common::launch::{REPORT_ACK, REPORT_SOCKET};

/// How long to wait for the enforcer to listen: it starts before the app
/// containers, but may not have bound its socket yet.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(1);
/// How long to wait for the enforcer to take the report.
pub const ANSWER_PATIENCE: Duration = Duration::from_secs(1);
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// Connects to the enforcer's socket in the pod's network namespace.
pub fn connect(patience: Duration) -> io::Result<UnixStream> {
    connect_to(REPORT_SOCKET, patience)
}

/// Non-blocking, so that a full listen backlog (an app flooding the
/// enforcer's socket) costs at most `patience`, never a hang: a blocking
/// AF_UNIX connect waits for room in the backlog for as long as it takes.
fn connect_to(name: &str, patience: Duration) -> io::Result<UnixStream> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let address = UnixAddr::new_abstract(name.as_bytes())?;
    let deadline = Instant::now() + patience;
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        match connect(fd.as_raw_fd(), &address) {
            Ok(()) => {
                let stream = UnixStream::from(fd);
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            // Not listening yet, or its backlog is full: try again.
            Err(nix::errno::Errno::ECONNREFUSED | nix::errno::Errno::EAGAIN)
                if Instant::now() < deadline =>
            {
                std::thread::sleep(RETRY_EVERY);
            }
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Sends one report line and waits for the enforcer's answer.
pub fn send(mut stream: UnixStream, line: &str, patience: Duration) -> io::Result<()> {
    stream.set_write_timeout(Some(patience))?;
    stream.set_read_timeout(Some(patience))?;
    stream.write_all(line.as_bytes())?;
    stream.write_all(b"\n")?;
    let mut answer = [0u8; REPORT_ACK.len()];
    stream.read_exact(&mut answer)?;
    if answer != REPORT_ACK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected answer from the enforcer",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};

    fn unique(tag: &str) -> String {
        format!("palisade-test/{tag}/{}", std::process::id())
    }

    #[test]
    fn the_report_reaches_a_listener_and_its_answer_ends_the_wait() {
        let name = unique("answer");
        let listener =
            UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            (&stream).write_all(REPORT_ACK).unwrap();
            line
        });
        let stream = connect_to(&name, Duration::from_millis(10)).unwrap();
        send(stream, r#"{"level":"full"}"#, Duration::from_secs(5)).unwrap();
        assert_eq!(server.join().unwrap(), "{\"level\":\"full\"}\n");
    }

    #[test]
    fn a_missing_enforcer_is_retried_until_the_patience_runs_out() {
        let started = Instant::now();
        let error = connect_to(&unique("nobody"), Duration::from_millis(120)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        assert!(started.elapsed() >= Duration::from_millis(120));
    }

    #[test]
    fn a_full_backlog_costs_at_most_the_patience() {
        let name = unique("flooded");
        let _listener =
            UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        // Nobody accepts: fill the backlog (at most somaxconn entries).
        let mut held = Vec::new();
        let error = loop {
            match connect_to(&name, Duration::ZERO) {
                Ok(stream) => held.push(stream),
                Err(error) => break error,
            }
            assert!(held.len() < 100_000, "the backlog never filled");
        };
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
        let error = connect_to(&name, Duration::from_millis(120)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
    }

    #[test]
    fn a_silent_enforcer_costs_at_most_the_patience() {
        let name = unique("silent");
        let _listener =
            UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let stream = connect_to(&name, Duration::ZERO).unwrap();
        let error = send(stream, "{}", Duration::from_millis(50)).unwrap_err();
        assert!(
            matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{error}"
        );
    }
}
