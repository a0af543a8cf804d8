//! sysctls: only the safe, namespaced set.

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const BASELINE: Control = Control {
    id: ControlId::Sysctls,
    level: Level::Baseline,
    linux_only: false,
    check,
};

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

fn check(pod: &Pod<'_>, out: &mut Findings) {
    for (i, s) in pod
        .security_context()
        .and_then(|sc| sc.sysctls.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            out.add(
                format!("spec.securityContext.sysctls[{i}].name"),
                format!("sysctl {} is not in the safe set", s.name),
            );
        }
    }
}
