//! What enforcers saw their pods do, aggregated: the raw material of
//! learned allowlists (`palisade policy draft`) and of replaying a policy
//! against recorded behaviour (`palisade policy replay`).
//!
//! An enforcer sums what it sees per container and item (never one entry
//! per exec) and sends the sums as an [`ObservationBatch`]; the policy
//! service adds them to its per-workload totals.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::policy::Mode;
use crate::wire::PodRef;

/// Transport protocol of a listener or a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One thing a container was seen doing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Observed {
    /// A program ran: where from, what it was (content hash), and whether
    /// the file was the container image's own, unchanged.
    Executable {
        path: String,
        /// Lower-case hex SHA-256 of the file; absent when it could not be
        /// read or was too big to hash.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        from_image: bool,
    },
    /// A process name (`comm`) and its parent's.
    Process {
        name: String,
        #[serde(default)]
        parent: String,
    },
    /// A listening socket.
    Listen { protocol: Protocol, port: u16 },
    /// An outgoing connection.
    Egress {
        address: IpAddr,
        port: u16,
        protocol: Protocol,
    },
}

/// The kinds of [`Observed`], as stored and queried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObservedKind {
    Executable,
    Process,
    Listen,
    Egress,
}

impl ObservedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObservedKind::Executable => "executable",
            ObservedKind::Process => "process",
            ObservedKind::Listen => "listen",
            ObservedKind::Egress => "egress",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            ObservedKind::Executable,
            ObservedKind::Process,
            ObservedKind::Listen,
            ObservedKind::Egress,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

impl Observed {
    pub fn kind(&self) -> ObservedKind {
        match self {
            Observed::Executable { .. } => ObservedKind::Executable,
            Observed::Process { .. } => ObservedKind::Process,
            Observed::Listen { .. } => ObservedKind::Listen,
            Observed::Egress { .. } => ObservedKind::Egress,
        }
    }

    /// A short, unique text for the item within its kind: the key it is
    /// summed under.
    pub fn key(&self) -> String {
        match self {
            Observed::Executable { path, sha256, .. } => {
                format!("{path}@{}", sha256.as_deref().unwrap_or("-"))
            }
            Observed::Process { name, parent } => format!("{name}<{parent}"),
            Observed::Listen { protocol, port } => format!("{}/{port}", protocol.as_str()),
            Observed::Egress {
                address,
                port,
                protocol,
            } => match address {
                IpAddr::V4(a) => format!("{}/{a}:{port}", protocol.as_str()),
                IpAddr::V6(a) => format!("{}/[{a}]:{port}", protocol.as_str()),
            },
        }
    }

    /// Whether the item is well-formed enough to store: bounded text, an
    /// absolute path, a hash that is one.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Observed::Executable { path, sha256, .. } => {
                if !path.starts_with('/') || path.len() > MAX_TEXT {
                    return Err(format!(
                        "executable path {path:?} must be absolute, at most {MAX_TEXT} bytes"
                    ));
                }
                match sha256 {
                    Some(h) if !is_sha256_hex(h) => {
                        Err(format!("sha256 {h:?} is not 64 lower-case hex digits"))
                    }
                    _ => Ok(()),
                }
            }
            Observed::Process { name, parent } => {
                if name.is_empty() || name.len() > MAX_TEXT || parent.len() > MAX_TEXT {
                    Err("process name must be 1..=256 bytes".into())
                } else {
                    Ok(())
                }
            }
            Observed::Listen { .. } | Observed::Egress { .. } => Ok(()),
        }
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observed::Executable {
                path,
                sha256,
                from_image,
            } => {
                write!(f, "executable {path}")?;
                if let Some(h) = sha256 {
                    write!(f, " (sha256 {})", &h[..h.len().min(12)])?;
                }
                if !from_image {
                    write!(f, ", not from the image")?;
                }
                Ok(())
            }
            Observed::Process { name, parent } if parent.is_empty() => write!(f, "process {name}"),
            Observed::Process { name, parent } => write!(f, "process {name} (parent {parent})"),
            Observed::Listen { protocol, port } => {
                write!(f, "listener {}/{port}", protocol.as_str())
            }
            Observed::Egress {
                address,
                port,
                protocol,
            } => write!(f, "egress {} to {address}:{port}", protocol.as_str()),
        }
    }
}

/// Longest path or name an observation may carry.
pub const MAX_TEXT: usize = 256;

pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An item with how often and when it was seen, in one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// The container's ID as its cgroup names it (`containerd://` form
    /// without the scheme), or empty when the enforcer cannot tell.
    #[serde(default)]
    pub container: String,
    pub item: Observed,
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// `POST /api/v1/observations`: what one enforcer summed since its last
/// batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservationBatch {
    pub pod: PodRef,
    pub observations: Vec<Observation>,
    /// Items the enforcer could not keep (its own bound) since the last
    /// batch: counted, so the service can say its view is incomplete.
    #[serde(default)]
    pub overflow: u64,
}

/// The controller a pod belongs to, stable across rollouts: a Deployment
/// (through its ReplicaSets), StatefulSet, DaemonSet, CronJob (through its
/// Jobs), Job, another controller by its kind, or the Pod itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub namespace: String,
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `CronJob`, `Job`,
    /// `ReplicaSet`, `Pod`, or another controller's kind.
    pub kind: String,
    pub name: String,
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.namespace,
            self.kind.to_ascii_lowercase(),
            self.name
        )
    }
}

/// One workload as `GET /api/v1/workloads` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRecord {
    pub workload: WorkloadRef,
    /// Labels of its pods (the last pod seen), which a drafted policy
    /// selects by.
    #[serde(default)]
    pub pod_labels: BTreeMap<String, String>,
    /// The strictest mode of the runtime policies that select its pods
    /// (`None`: no runtime policy does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// When its first observation arrived.
    pub first_ms: i64,
    /// When an item it had never shown before last arrived.
    pub last_new_ms: i64,
    /// When anything last arrived.
    pub last_seen_ms: i64,
    /// Distinct items stored.
    pub items: u64,
    /// Items not stored because the workload reached its bound.
    pub overflow: u64,
}

/// One stored item of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedRecord {
    /// Container name where the pod's status told it, else its ID.
    pub container: String,
    pub item: Observed,
    /// Image digest (or reference) of the container when the item was
    /// last seen; empty when unknown.
    #[serde(default)]
    pub image: String,
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// `GET /api/v1/workloads/{namespace}/{kind}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadObservations {
    pub workload: WorkloadRecord,
    pub observed: Vec<ObservedRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_read_and_write_their_wire_form() {
        let json = r#"[
            {"kind": "executable", "path": "/usr/bin/curl", "sha256": "ab", "fromImage": true},
            {"kind": "process", "name": "curl", "parent": "sh"},
            {"kind": "listen", "protocol": "tcp", "port": 8080},
            {"kind": "egress", "address": "10.0.0.1", "port": 443, "protocol": "udp"}
        ]"#;
        let items: Vec<Observed> = serde_json::from_str(json).unwrap();
        assert_eq!(
            items[0],
            Observed::Executable {
                path: "/usr/bin/curl".into(),
                sha256: Some("ab".into()),
                from_image: true
            }
        );
        assert_eq!(items[2].kind(), ObservedKind::Listen);
        let back: Vec<Observed> =
            serde_json::from_str(&serde_json::to_string(&items).unwrap()).unwrap();
        assert_eq!(back, items);
    }

    #[test]
    fn keys_tell_items_of_a_kind_apart() {
        let exe = |h: Option<&str>| Observed::Executable {
            path: "/bin/sh".into(),
            sha256: h.map(String::from),
            from_image: true,
        };
        assert_ne!(exe(Some("a")).key(), exe(Some("b")).key());
        assert_ne!(exe(None).key(), exe(Some("a")).key());
        let v6 = Observed::Egress {
            address: "::1".parse().unwrap(),
            port: 53,
            protocol: Protocol::Udp,
        };
        assert_eq!(v6.key(), "udp/[::1]:53");
    }

    #[test]
    fn malformed_items_are_refused() {
        let relative = Observed::Executable {
            path: "bin/sh".into(),
            sha256: None,
            from_image: false,
        };
        assert!(relative.check().is_err());
        let bad_hash = Observed::Executable {
            path: "/bin/sh".into(),
            sha256: Some("XYZ".into()),
            from_image: false,
        };
        assert!(bad_hash.check().is_err());
        let empty = Observed::Process {
            name: String::new(),
            parent: String::new(),
        };
        assert!(empty.check().is_err());
        assert_eq!(ObservedKind::parse("egress"), Some(ObservedKind::Egress));
    }
}
