//! hostPorts: no host ports (0 means none).

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const BASELINE: Control = Control {
    id: ControlId::HostPorts,
    level: Level::Baseline,
    linux_only: false,
    check,
};

fn check(pod: &Pod<'_>, out: &mut Findings) {
    for c in &pod.containers {
        for (i, port) in &c.host_ports {
            out.for_container(
                c,
                format!("{}.ports[{i}].hostPort", c.path),
                format!("hostPort {port} is not allowed"),
            );
        }
    }
}
