//! hostProcess: no Windows HostProcess pods or containers.

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const BASELINE: Control = Control {
    id: ControlId::HostProcess,
    level: Level::Baseline,
    linux_only: false,
    check,
};

fn check(pod: &Pod<'_>, out: &mut Findings) {
    if pod
        .security_context()
        .and_then(|sc| sc.windows_options.as_ref())
        .and_then(|w| w.host_process)
        == Some(true)
    {
        out.add(
            "spec.securityContext.windowsOptions.hostProcess",
            "Windows HostProcess pods are not allowed",
        );
    }
    for c in &pod.containers {
        if c.security_context
            .and_then(|sc| sc.windows_options.as_ref())
            .and_then(|w| w.host_process)
            == Some(true)
        {
            out.for_container(
                c,
                format!("{}.securityContext.windowsOptions.hostProcess", c.path),
                "Windows HostProcess containers are not allowed",
            );
        }
    }
}
