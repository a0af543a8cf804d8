//! capabilities: baseline allows adding only the default set; restricted
//! requires dropping ALL and allows adding only NET_BIND_SERVICE.

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const BASELINE: Control = Control {
    id: ControlId::Capabilities,
    level: Level::Baseline,
    linux_only: false,
    check: baseline,
};

pub(super) const RESTRICTED: Control = Control {
    id: ControlId::Capabilities,
    level: Level::Restricted,
    linux_only: true,
    check: restricted,
};

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn baseline(pod: &Pod<'_>, out: &mut Findings) {
    for c in &pod.containers {
        let added = c
            .security_context
            .and_then(|sc| sc.capabilities.as_ref())
            .and_then(|caps| caps.add.as_ref());
        for (i, cap) in added.into_iter().flatten().enumerate() {
            if !BASELINE_CAPABILITIES.contains(&cap.as_str()) {
                out.for_container(
                    c,
                    format!("{}.securityContext.capabilities.add[{i}]", c.path),
                    format!("adding capability {cap} is not allowed"),
                );
            }
        }
    }
}

fn restricted(pod: &Pod<'_>, out: &mut Findings) {
    for c in &pod.containers {
        let caps = c.security_context.and_then(|sc| sc.capabilities.as_ref());
        let drops_all = caps
            .and_then(|caps| caps.drop.as_ref())
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            out.add(
                format!("{}.securityContext.capabilities.drop", c.path),
                format!("container {:?} must drop ALL capabilities", c.name),
            );
        }
        for (i, cap) in caps
            .and_then(|caps| caps.add.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            if cap != "NET_BIND_SERVICE" {
                out.for_container(
                    c,
                    format!("{}.securityContext.capabilities.add[{i}]", c.path),
                    format!("adding capability {cap} is not allowed (only NET_BIND_SERVICE)"),
                );
            }
        }
    }
}
