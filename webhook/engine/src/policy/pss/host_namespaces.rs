//! hostNamespaces: no hostNetwork, hostPID or hostIPC.

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const BASELINE: Control = Control {
    id: ControlId::HostNamespaces,
    level: Level::Baseline,
    linux_only: false,
    check,
};

fn check(pod: &Pod<'_>, out: &mut Findings) {
    for (field, set) in [
        ("hostNetwork", pod.spec.host_network),
        ("hostPID", pod.spec.host_pid),
        ("hostIPC", pod.spec.host_ipc),
    ] {
        if set == Some(true) {
            out.add(
                format!("spec.{field}"),
                format!("sharing the host namespace ({field}) is not allowed"),
            );
        }
    }
}
