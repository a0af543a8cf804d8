//! Why a pod gets no enforcer, or a weaker one: typed, so the status
//! annotation, audit annotations, metric labels and the docs speak of the
//! same finite set (like linkerd's injection reason codes).

use std::fmt;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use serde::{Serialize, Serializer};

/// The pod gets no enforcer (resource defaults still apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// `palisade.dev/inject: "false"` on the pod.
    OptedOut,
    /// `hostNetwork: true` with `injection.skip_host_network` set.
    HostNetwork,
    /// `hostPID: true`: the apiserver forbids `shareProcessNamespace` with
    /// it, and in the host's PID namespace the enforcer would watch (and
    /// report as this pod's) every process on the node.
    HostPid,
    /// `spec.os.name: windows` (or a `kubernetes.io/os: windows` node
    /// selector): the enforcer is a Linux binary, and its Linux
    /// securityContext fields and `shareProcessNamespace` are forbidden in
    /// Windows pods.
    Windows,
}

/// The enforcer is injected but sees less than usual.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DegradeReason {
    /// The pod says `shareProcessNamespace: false`; that choice is kept, so
    /// the enforcer sees the pod's sockets (shared network namespace) but
    /// not the app's processes.
    ProcessNamespaceNotShared,
}

impl SkipReason {
    pub const ALL: [SkipReason; 4] = [
        SkipReason::OptedOut,
        SkipReason::HostNetwork,
        SkipReason::HostPid,
        SkipReason::Windows,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::OptedOut => "opted-out",
            SkipReason::HostNetwork => "host-network",
            SkipReason::HostPid => "host-pid",
            SkipReason::Windows => "windows",
        }
    }

    /// Whether the reason follows from the pod's spec alone (and so holds
    /// whoever wrote the pod): such pods are exempt from `requireEnforcer`.
    /// Opting out is exempt by its own rule (the annotation).
    pub fn is_spec_derived(self) -> bool {
        !matches!(self, SkipReason::OptedOut)
    }
}

impl DegradeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DegradeReason::ProcessNamespaceNotShared => "process-namespace-not-shared",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DegradeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SkipReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for DegradeReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What injection did to a pod, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InjectionResult {
    Injected,
    Degraded,
    Skipped,
}

/// The `reason` label of `palisade_injections_total`: `none` for a full
/// injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonLabel {
    None,
    Skipped(SkipReason),
    Degraded(DegradeReason),
}

impl InjectionResult {
    pub fn as_str(self) -> &'static str {
        match self {
            InjectionResult::Injected => "injected",
            InjectionResult::Degraded => "degraded",
            InjectionResult::Skipped => "skipped",
        }
    }
}

impl ReasonLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonLabel::None => "none",
            ReasonLabel::Skipped(r) => r.as_str(),
            ReasonLabel::Degraded(r) => r.as_str(),
        }
    }
}

impl EncodeLabelValue for InjectionResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

impl EncodeLabelValue for ReasonLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_kebab_case_words() {
        let mut seen = std::collections::BTreeSet::new();
        for text in SkipReason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain([DegradeReason::ProcessNamespaceNotShared.as_str()])
        {
            assert!(
                text.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{text}"
            );
            assert!(seen.insert(text), "{text} twice");
        }
    }

    #[test]
    fn only_opting_out_is_not_read_from_the_spec() {
        for reason in SkipReason::ALL {
            assert_eq!(reason.is_spec_derived(), reason != SkipReason::OptedOut);
        }
    }
}
