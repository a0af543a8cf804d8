//! The pod's sockets: listeners and egress judged, and who holds them.
//! Each new listener and connection is also added to the observations,
//! judged or not. A socket belongs to the pod's network namespace, not to
//! a container: it is observed with no container (naming the one would
//! mean reading every process's descriptors for every socket).

use palisade_common::judge::Judge;

use super::*;

/// What the monitor keeps of the pod's sockets between scans.
pub(super) struct Sockets {
    /// Listeners and connections judged under the current policy.
    pub(super) listeners: HashSet<SocketKey>,
    pub(super) egress: HashSet<SocketKey>,
    /// Listeners and connections already added to the observations (kept
    /// across policy changes, which re-judge them).
    pub(super) observed: HashSet<SocketKey>,
    pub(super) last_scan: Option<Instant>,
    /// Socket counts at the last table read (see `sockets::fingerprint`).
    pub(super) counts: Option<Vec<u64>>,
    pub(super) last_full_scan: Option<Instant>,
    /// The kernel's ephemeral port range: a local port in it is a client's.
    pub(super) ephemeral: (u16, u16),
    /// Peers of the enforcer's own TCP connections (the policy service):
    /// the ones it closed linger unowned (see `rules::left_by_the_enforcer`).
    pub(super) own_peers: HashSet<(IpAddr, u16)>,
}

/// More own peers than this (a Service moved many times) starts the set afresh.
const MAX_OWN_PEERS: usize = 16;

impl Sockets {
    pub(super) fn new(ephemeral: (u16, u16)) -> Self {
        Self {
            listeners: HashSet::new(),
            egress: HashSet::new(),
            observed: HashSet::new(),
            last_scan: None,
            counts: None,
            last_full_scan: None,
            ephemeral,
            own_peers: HashSet::new(),
        }
    }

    /// A new policy judges every socket again, at once.
    pub(super) fn forget_verdicts(&mut self) {
        self.listeners.clear();
        self.egress.clear();
        self.last_scan = None;
        self.last_full_scan = None;
    }

    /// Whether the tables are read now: every `interval`, and then only
    /// when the pod's socket counts moved or a full scan is due (one
    /// socket replacing another keeps the counts).
    pub(super) fn scan_due(&mut self, interval: Duration, proc_root: &Path) -> bool {
        if self.last_scan.is_some_and(|t| t.elapsed() < interval) {
            return false;
        }
        self.last_scan = Some(Instant::now());
        let counts = sockets::fingerprint(proc_root);
        let full_due = self
            .last_full_scan
            .is_none_or(|t| t.elapsed() >= FULL_SOCKET_SCAN_EVERY);
        if counts.is_some() && counts == self.counts && !full_due {
            return false;
        }
        self.counts = counts;
        self.last_full_scan = Some(Instant::now());
        true
    }
}

impl Monitor {
    pub(super) fn check_sockets(&mut self, bundle: &RuntimeBundle) {
        let own: HashSet<u64> = procfs::socket_inodes(self.proc_root(), self.self_pid)
            .into_iter()
            .collect();
        let judges: Vec<(&RuntimePolicy, Judge)> = bundle
            .policies
            .iter()
            .map(|p| (p, Judge::new(&p.rules)))
            .collect();
        let sockets = sockets::all(self.proc_root());
        let listening: HashSet<(Proto, IpAddr, u16)> = sockets
            .iter()
            .filter(|s| s.is_tcp_listener())
            .map(|s| (s.proto, s.local.0, s.local.1))
            .collect();
        let is_own = |s: &Socket| s.inode != 0 && own.contains(&s.inode);
        for socket in sockets
            .iter()
            .filter(|s| s.proto == Proto::Tcp && is_own(s))
        {
            if self.sockets.own_peers.len() >= MAX_OWN_PEERS {
                self.sockets.own_peers.clear();
            }
            self.sockets.own_peers.insert(socket.remote);
        }
        let mut present = HashSet::new();
        for socket in &sockets {
            if is_own(socket) || rules::left_by_the_enforcer(socket, &self.sockets.own_peers) {
                continue;
            }
            let key = SocketKey {
                proto: socket.proto,
                local: socket.local,
                remote: socket.remote,
                inode: socket.inode,
            };
            present.insert(key);
            let role = rules::socket_role(socket, &listening, self.sockets.ephemeral);
            // Once per socket: a policy change re-judges every socket, and
            // that is no new listener or connection.
            if let Some(item) = observed(socket, role) {
                if self.sockets.observed.insert(key) {
                    self.reporter.observe("", item);
                }
            }
            match role {
                SocketRole::Listener if self.sockets.listeners.insert(key) => {
                    self.judge_listener(socket, &judges)
                }
                SocketRole::Egress if self.sockets.egress.insert(key) => {
                    self.judge_egress(socket, &judges)
                }
                _ => {}
            }
        }
        // Closed sockets are forgotten: the next one on that port or to
        // that address is a new finding.
        self.sockets.listeners.retain(|k| present.contains(k));
        self.sockets.egress.retain(|k| present.contains(k));
        self.sockets.observed.retain(|k| present.contains(k));
    }

    pub(super) fn judge_listener(&self, socket: &Socket, judges: &[(&RuntimePolicy, Judge)]) {
        let port = socket.local.1;
        let policy = rules::reported_by(
            judges
                .iter()
                .filter(|(_, judge)| !judge.listener_allowed(port))
                .map(|(p, _)| *p),
            |p| self.weight(p, Rule::UnexpectedListener),
        );
        if let Some(policy) = policy {
            let v = Violation {
                rule: Rule::UnexpectedListener,
                policy,
                message: format!("{:?} listener on {}:{port}", socket.proto, socket.local.0),
            };
            let (process, action) = self.owner_action(socket.inode, &v);
            let id = socket_event_id(&v, self.acted_mode(&v), socket);
            self.emit(&v, id, process, action);
        }
    }

    pub(super) fn judge_egress(&self, socket: &Socket, judges: &[(&RuntimePolicy, Judge)]) {
        let (ip, port) = socket.remote;
        let policy = rules::reported_by(
            judges
                .iter()
                .filter(|(_, judge)| !judge.egress_allowed(ip, port))
                .map(|(p, _)| *p),
            |p| self.weight(p, Rule::UnexpectedEgress),
        );
        if let Some(policy) = policy {
            let proto = match socket.proto {
                Proto::Tcp => "TCP",
                Proto::Udp => "UDP",
            };
            let v = Violation {
                rule: Rule::UnexpectedEgress,
                policy,
                message: format!(
                    "{proto} connection to {ip}:{port} is not in the egress allow-list"
                ),
            };
            let (process, action) = self.owner_action(socket.inode, &v);
            let id = socket_event_id(&v, self.acted_mode(&v), socket);
            self.emit(&v, id, process, action);
        }
    }

    /// The process holding socket `inode` and, under enforce, the outcome
    /// of stopping it. When no process with readable descriptors holds it,
    /// those whose descriptors are closed are the suspects, and
    /// `hidden::hidden_owner` decides whether they are stopped.
    pub(super) fn owner_action(
        &self,
        inode: u64,
        v: &Violation<'_>,
    ) -> (Option<ProcessInfo>, Option<Action>) {
        let mode = self.acted_mode(v);
        let enforce = mode == Mode::Enforce;
        if inode == 0 {
            return (
                None,
                enforce.then_some(Action::NotKilled(NotKilled::NoOwner)),
            );
        }
        // PID 1 is the pod's infrastructure (pause) process, never the app.
        let suspects = match owners::find(self.proc_root(), inode, &[self.self_pid, 1]) {
            Holder::Found(pid) => {
                let Some(owner) = procfs::read(self.proc_root(), pid) else {
                    return (
                        None,
                        enforce.then_some(Action::NotKilled(NotKilled::Exited)),
                    );
                };
                let action =
                    enforce.then(|| procfs::kill_exact(self.proc_root(), owner.pid, owner.start));
                return (Some(self.process_info(&owner)), action);
            }
            Holder::Unreadable(pids) => pids,
        };
        let candidates: Vec<Candidate> = suspects
            .into_iter()
            .filter_map(|pid| {
                let ids = procfs::ids(self.proc_root(), pid)?;
                Some(Candidate {
                    pid,
                    why: rules::why_unreadable(ids, self.own_uid, self.own_gid),
                })
            })
            .collect();
        let stop = match hidden::hidden_owner(&candidates, mode, v.policy.rules.non_dumpable) {
            HiddenOwner::Leave(why) => return (None, enforce.then_some(Action::NotKilled(why))),
            HiddenOwner::Stop(pids) => pids,
        };
        let stopped: Vec<(Proc, Action)> = stop
            .into_iter()
            .filter_map(|pid| procfs::read(self.proc_root(), pid))
            // One that turned readable since is not a suspect any more.
            .filter(|p| owners::still_unreadable(self.proc_root(), p.pid))
            .map(|p| {
                let action = procfs::kill_exact(self.proc_root(), p.pid, p.start);
                (p, action)
            })
            .collect();
        match stopped.as_slice() {
            [] => (None, Some(Action::NotKilled(NotKilled::Exited))),
            [(p, action)] => (Some(self.process_info(p)), Some(action.clone())),
            [(_, first), ..] => {
                let killed = stopped.iter().filter(|(_, a)| *a == Action::Killed).count();
                let action = if killed > 0 {
                    Action::KilledAll(killed)
                } else {
                    first.clone()
                };
                (None, Some(action))
            }
        }
    }
}

/// What the observations record of a listener (its port) or a connection
/// (where to); nothing of the rest.
fn observed(socket: &Socket, role: SocketRole) -> Option<Observed> {
    match role {
        SocketRole::Listener => Some(Observed::Listen {
            protocol: socket.proto.into(),
            port: socket.local.1,
        }),
        SocketRole::Egress => Some(Observed::Egress {
            address: socket.remote.0,
            port: socket.remote.1,
            protocol: socket.proto.into(),
        }),
        SocketRole::Inbound | SocketRole::Local | SocketRole::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockstat(root: &Path, tcp_inuse: u32) {
        let net = root.join("self/net");
        std::fs::create_dir_all(&net).unwrap();
        std::fs::write(
            net.join("sockstat"),
            format!("TCP: inuse {tcp_inuse} orphan 0 tw 0 alloc 1 mem 1\nUDP: inuse 0 mem 0\n"),
        )
        .unwrap();
        std::fs::write(net.join("sockstat6"), "TCP6: inuse 0\nUDP6: inuse 0\n").unwrap();
    }

    #[test]
    fn tables_are_read_when_the_counts_move_and_not_while_they_stay() {
        let root = tempfile::tempdir().unwrap();
        sockstat(root.path(), 3);
        let mut sockets = Sockets::new((32768, 60999));
        assert!(sockets.scan_due(Duration::ZERO, root.path()), "first look");
        assert!(
            !sockets.scan_due(Duration::ZERO, root.path()),
            "nothing moved"
        );
        sockstat(root.path(), 4);
        assert!(
            sockets.scan_due(Duration::ZERO, root.path()),
            "a new socket"
        );
        // Not before the interval, whatever moved.
        sockstat(root.path(), 5);
        assert!(!sockets.scan_due(Duration::from_secs(3600), root.path()));
        // A new policy judges every socket again at once.
        sockets.forget_verdicts();
        assert!(sockets.scan_due(Duration::from_secs(3600), root.path()));
    }

    #[test]
    fn without_socket_counts_the_tables_are_read_every_interval() {
        let root = tempfile::tempdir().unwrap();
        let mut sockets = Sockets::new((32768, 60999));
        assert!(sockets.scan_due(Duration::ZERO, root.path()));
        assert!(sockets.scan_due(Duration::ZERO, root.path()));
    }
}
