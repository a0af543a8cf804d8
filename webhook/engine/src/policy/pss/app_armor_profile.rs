//! appArmorProfile: never Unconfined, in the fields or the legacy
//! annotations.

use super::{Control, ControlId, Findings, Level, Pod};

pub(super) const BASELINE: Control = Control {
    id: ControlId::AppArmorProfile,
    level: Level::Baseline,
    linux_only: false,
    check,
};

const ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

fn check(pod: &Pod<'_>, out: &mut Findings) {
    let unconfined = |t: Option<&str>| t == Some("Unconfined");
    if unconfined(
        pod.security_context()
            .and_then(|sc| sc.app_armor_profile.as_ref())
            .map(|p| p.type_.as_str()),
    ) {
        out.add(
            "spec.securityContext.appArmorProfile.type",
            "AppArmor profile Unconfined is not allowed",
        );
    }
    for c in &pod.containers {
        if unconfined(
            c.security_context
                .and_then(|sc| sc.app_armor_profile.as_ref())
                .map(|p| p.type_.as_str()),
        ) {
            out.for_container(
                c,
                format!("{}.securityContext.appArmorProfile.type", c.path),
                "AppArmor profile Unconfined is not allowed",
            );
        }
    }
    for (key, value) in pod.annotations {
        // Like pod-security-admission: empty (the runtime default),
        // runtime/default and localhost/* are allowed.
        if key.starts_with(ANNOTATION_PREFIX)
            && !value.is_empty()
            && value != "runtime/default"
            && !value.starts_with("localhost/")
        {
            out.add(
                format!("metadata.annotations[{key:?}]"),
                format!("AppArmor profile {value:?} is not allowed"),
            );
        }
    }
}
