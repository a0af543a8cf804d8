//! Which workload a reporting pod belongs to, and what its containers are.
//!
//! Observations are kept per workload, not per pod: pods come and go with
//! every rollout, while a Deployment, StatefulSet, DaemonSet or CronJob
//! stays, and that is what a learned policy selects. The pod's controller
//! says which; for a ReplicaSet or a Job it takes one more read (their
//! Deployment or CronJob). The same pod read gives its labels and maps the
//! container IDs enforcers see in cgroups to container names and images.
//!
//! The decisions are pure functions ([`pod_owner`], [`owner_of`],
//! [`containers`], [`Cached::serves`]); [`WorkloadResolver`] does the
//! reads, cached per pod, and never fails: without an apiserver, or when a
//! read fails, the workload is the pod itself (`Pod`/name, no labels).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use palisade_common::observe::WorkloadRef;
use palisade_common::wire::PodRef;

/// How long a pod's workload is trusted: owners do not change in a pod's
/// life, so this only bounds the staleness of its labels.
pub const CACHE_TTL: Duration = Duration::from_secs(600);
/// How long a failed read is not retried: a heartbeat storm while the
/// apiserver struggles must not become a storm of reads.
const FAILURE_TTL: Duration = Duration::from_secs(30);
/// A container ID the cached pod does not know (a restarted container has
/// a new one) re-reads the pod, at most this often.
const REFRESH_AFTER: Duration = Duration::from_secs(30);
/// Pods remembered at most.
const CACHE_MAX: usize = 10_000;
/// Longest the reads for one batch may take before it is stored under the
/// pod itself.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a pod's controller reference says to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The workload is this kind and name.
    Workload { kind: String, name: String },
    /// A ReplicaSet: its own controller (a Deployment) is the workload,
    /// or, when it has none, the ReplicaSet itself.
    ReplicaSet(String),
    /// A Job: its controller (a CronJob) is the workload, or the Job.
    Job(String),
}

/// The controller among `owners` (at most one has `controller: true`).
fn controller(owners: &[OwnerReference]) -> Option<&OwnerReference> {
    owners.iter().find(|o| o.controller == Some(true))
}

/// The API group of an `apiVersion` (`apps/v1` -> `apps`, `v1` -> core).
fn group(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(group, _)| group)
}

/// The next step from a pod's `ownerReferences`: its controller's kind,
/// or the pod itself when no controller owns it.
pub fn pod_owner(pod_name: &str, owners: &[OwnerReference]) -> Owner {
    match controller(owners) {
        None => Owner::Workload {
            kind: "Pod".into(),
            name: pod_name.into(),
        },
        Some(o) if o.kind == "ReplicaSet" && group(&o.api_version) == "apps" => {
            Owner::ReplicaSet(o.name.clone())
        }
        Some(o) if o.kind == "Job" && group(&o.api_version) == "batch" => {
            Owner::Job(o.name.clone())
        }
        Some(o) => Owner::Workload {
            kind: o.kind.clone(),
            name: o.name.clone(),
        },
    }
}

/// The workload an intermediate object (`kind`/`name`: a ReplicaSet or a
/// Job) stands for: its controller (a Deployment, a CronJob, or another
/// controller that makes them), else itself.
pub fn owner_of(kind: &str, name: &str, owners: &[OwnerReference]) -> (String, String) {
    match controller(owners) {
        Some(o) => (o.kind.clone(), o.name.clone()),
        None => (kind.into(), name.into()),
    }
}

/// A container as an observation names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    /// The image digest the runtime reports (`imageID`), else the image
    /// reference of the spec.
    pub image: String,
}

/// A container ID without its runtime's scheme (`containerd://ID` -> `ID`),
/// the form an enforcer reads from a cgroup.
pub fn bare_container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, bare)| bare)
}

/// Container ID -> name and image, from every container status of `pod`
/// (app, init and ephemeral containers).
pub fn containers(pod: &Pod) -> HashMap<String, Container> {
    let Some(status) = &pod.status else {
        return HashMap::new();
    };
    let lists: [&Option<Vec<ContainerStatus>>; 3] = [
        &status.container_statuses,
        &status.init_container_statuses,
        &status.ephemeral_container_statuses,
    ];
    lists
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|s| {
            let id = bare_container_id(s.container_id.as_deref()?);
            if id.is_empty() {
                return None;
            }
            let image = if s.image_id.is_empty() {
                s.image.clone()
            } else {
                s.image_id.clone()
            };
            Some((
                id.to_string(),
                Container {
                    name: s.name.clone(),
                    image,
                },
            ))
        })
        .collect()
}

/// What the service knows of a reporting pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub workload: WorkloadRef,
    /// The pod's labels, which a drafted policy selects by.
    pub labels: BTreeMap<String, String>,
    /// By bare container ID.
    pub containers: HashMap<String, Container>,
}

impl PodFacts {
    /// The pod as its own workload, knowing nothing more of it.
    pub fn unresolved(pod: &PodRef) -> Self {
        Self {
            workload: WorkloadRef {
                namespace: pod.namespace.clone(),
                kind: "Pod".into(),
                name: pod.name.clone(),
            },
            labels: BTreeMap::new(),
            containers: HashMap::new(),
        }
    }

    /// The container name and image to store for an observation's
    /// `container` (an ID): the status's name when it maps the ID, else
    /// the ID as sent and no image.
    pub fn container(&self, id: &str) -> (String, String) {
        match self.containers.get(bare_container_id(id)) {
            Some(c) => (c.name.clone(), c.image.clone()),
            None => (id.to_string(), String::new()),
        }
    }

    fn knows(&self, id: &str) -> bool {
        id.is_empty() || self.containers.contains_key(bare_container_id(id))
    }
}

/// A cache entry.
#[derive(Debug, Clone)]
pub struct Cached {
    facts: Arc<PodFacts>,
    read_at: Instant,
    until: Instant,
}

impl Cached {
    /// Whether this entry answers a batch naming `container_ids` at `now`:
    /// unexpired, and either knowing every ID or read too recently to read
    /// again.
    pub fn serves(&self, container_ids: &[&str], now: Instant) -> bool {
        now < self.until
            && (container_ids.iter().all(|id| self.facts.knows(id))
                || now < self.read_at + REFRESH_AFTER)
    }
}

#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("reading {what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the pod of that name is another one now (uid {found})")]
    OtherPod { found: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Resolves reporting pods through the apiserver, when there is one.
pub struct WorkloadResolver {
    client: Option<kube::Client>,
    /// By pod uid (namespace/name when a batch has none).
    cache: Mutex<HashMap<String, Cached>>,
}

impl WorkloadResolver {
    /// `None`: the service runs without a cluster; every pod is its own
    /// workload.
    pub fn new(client: Option<kube::Client>) -> Self {
        Self {
            client,
            cache: Mutex::default(),
        }
    }

    /// The facts of `pod` for a batch naming `container_ids`; the pod
    /// alone when they cannot be read.
    pub async fn resolve(&self, pod: &PodRef, container_ids: &[&str]) -> Arc<PodFacts> {
        let Some(client) = &self.client else {
            return Arc::new(PodFacts::unresolved(pod));
        };
        let key = if pod.uid.is_empty() {
            format!("{}/{}", pod.namespace, pod.name)
        } else {
            pod.uid.clone()
        };
        let now = Instant::now();
        if let Some(hit) = self
            .lock()
            .get(&key)
            .filter(|c| c.serves(container_ids, now))
        {
            return hit.facts.clone();
        }
        let read = tokio::time::timeout(LOOKUP_TIMEOUT, look_up(client, pod))
            .await
            .unwrap_or(Err(LookupError::Timeout(LOOKUP_TIMEOUT)));
        let (facts, ttl) = match read {
            Ok(facts) => (facts, CACHE_TTL),
            Err(e) => {
                tracing::debug!(namespace = %pod.namespace, pod = %pod.name, uid = %pod.uid,
                    error = %e, "workload unknown: observations stored under the pod itself");
                (PodFacts::unresolved(pod), FAILURE_TTL)
            }
        };
        let facts = Arc::new(facts);
        let now = Instant::now();
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                facts: facts.clone(),
                read_at: now,
                until: now + ttl,
            },
        );
        facts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the pod, and its ReplicaSet or Job when it has one.
async fn look_up(client: &kube::Client, pod: &PodRef) -> Result<PodFacts, LookupError> {
    let ns = &pod.namespace;
    let api_error = |what: String| move |source| LookupError::Api { what, source };
    let found = Api::<Pod>::namespaced(client.clone(), ns)
        .get(&pod.name)
        .await
        .map_err(api_error(format!("pod {ns}/{}", pod.name)))?;
    let uid = found.metadata.uid.clone().unwrap_or_default();
    if !pod.uid.is_empty() && !uid.is_empty() && uid != pod.uid {
        return Err(LookupError::OtherPod { found: uid });
    }
    let owners = found
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    let (kind, name) = match pod_owner(&pod.name, owners) {
        Owner::Workload { kind, name } => (kind, name),
        Owner::ReplicaSet(name) => {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .get(&name)
                .await
                .map_err(api_error(format!("replicaset {ns}/{name}")))?;
            let owners = rs.metadata.owner_references.as_deref().unwrap_or_default();
            owner_of("ReplicaSet", &name, owners)
        }
        Owner::Job(name) => {
            let job = Api::<Job>::namespaced(client.clone(), ns)
                .get(&name)
                .await
                .map_err(api_error(format!("job {ns}/{name}")))?;
            let owners = job.metadata.owner_references.as_deref().unwrap_or_default();
            owner_of("Job", &name, owners)
        }
    };
    Ok(PodFacts {
        workload: WorkloadRef {
            namespace: ns.clone(),
            kind,
            name,
        },
        containers: containers(&found),
        labels: found.metadata.labels.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn mk_owner(api_version: &str, kind: &str, name: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller: Some(controller),
            ..Default::default()
        }
    }

    fn mk_status(name: &str, id: Option<&str>, image: &str, image_id: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            container_id: id.map(String::from),
            image: image.into(),
            image_id: image_id.into(),
            ..Default::default()
        }
    }

    fn workload(kind: &str, name: &str) -> Owner {
        Owner::Workload {
            kind: kind.into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_pod_of_a_replicaset_or_a_job_needs_one_more_read() {
        let rs = [mk_owner("apps/v1", "ReplicaSet", "web-7d9f", true)];
        assert_eq!(
            pod_owner("web-7d9f-x", &rs),
            Owner::ReplicaSet("web-7d9f".into())
        );
        let job = [mk_owner("batch/v1", "Job", "backup-2901", true)];
        assert_eq!(
            pod_owner("backup-2901-q", &job),
            Owner::Job("backup-2901".into())
        );
    }

    #[test]
    fn other_controllers_are_the_workload_and_a_pod_without_one_is_its_own() {
        let sts = [mk_owner("apps/v1", "StatefulSet", "db", true)];
        assert_eq!(pod_owner("db-0", &sts), workload("StatefulSet", "db"));
        let ds = [mk_owner("apps/v1", "DaemonSet", "agent", true)];
        assert_eq!(pod_owner("agent-abc", &ds), workload("DaemonSet", "agent"));
        let custom = [mk_owner("example.com/v1", "ReplicaSet", "odd", true)];
        assert_eq!(
            pod_owner("odd-1", &custom),
            workload("ReplicaSet", "odd"),
            "a ReplicaSet of another API group is that controller, not read as apps'"
        );
        // An owner that is not the controller does not make a workload.
        let not_controller = [mk_owner("apps/v1", "StatefulSet", "db", false)];
        assert_eq!(
            pod_owner("debug", &not_controller),
            workload("Pod", "debug")
        );
        assert_eq!(pod_owner("debug", &[]), workload("Pod", "debug"));
    }

    #[test]
    fn a_replicaset_stands_for_its_deployment_and_a_job_for_its_cronjob_else_themselves() {
        let deployment = [mk_owner("apps/v1", "Deployment", "web", true)];
        assert_eq!(
            owner_of("ReplicaSet", "web-7d9f", &deployment),
            ("Deployment".into(), "web".into())
        );
        assert_eq!(
            owner_of("ReplicaSet", "web-7d9f", &[]),
            ("ReplicaSet".into(), "web-7d9f".into())
        );
        let cronjob = [mk_owner("batch/v1", "CronJob", "backup", true)];
        assert_eq!(
            owner_of("Job", "backup-2901", &cronjob),
            ("CronJob".into(), "backup".into())
        );
        assert_eq!(owner_of("Job", "once", &[]), ("Job".into(), "once".into()));
    }

    fn mk_pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-7d9f-x".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![
                    mk_status(
                        "app",
                        Some("containerd://abc123"),
                        "registry.example/web:1",
                        "registry.example/web@sha256:aa",
                    ),
                    // Not started yet: no ID.
                    mk_status("late", None, "busybox", ""),
                ]),
                init_container_statuses: Some(vec![mk_status(
                    "enforcer",
                    Some("cri-o://def456"),
                    "palisade/enforcer:1",
                    "",
                )]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn container_ids_map_to_names_and_image_digests() {
        let found = containers(&mk_pod());
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found["abc123"],
            Container {
                name: "app".into(),
                image: "registry.example/web@sha256:aa".into()
            }
        );
        assert_eq!(
            found["def456"].image, "palisade/enforcer:1",
            "no digest yet: the reference"
        );
        assert!(containers(&Pod::default()).is_empty());

        let facts = PodFacts {
            containers: found,
            ..PodFacts::unresolved(&PodRef {
                namespace: "shop".into(),
                name: "web-7d9f-x".into(),
                uid: String::new(),
            })
        };
        assert_eq!(facts.workload.kind, "Pod");
        assert_eq!(
            facts.container("abc123"),
            ("app".into(), "registry.example/web@sha256:aa".into())
        );
        assert_eq!(facts.container("containerd://abc123").0, "app");
        assert_eq!(facts.container("ffff"), ("ffff".into(), String::new()));
        assert_eq!(facts.container(""), (String::new(), String::new()));
    }

    #[test]
    fn a_cached_pod_is_read_again_for_an_unknown_container_but_not_at_once() {
        let read_at = Instant::now();
        let mut facts = PodFacts::unresolved(&PodRef::default());
        facts.containers.insert(
            "abc".into(),
            Container {
                name: "app".into(),
                image: String::new(),
            },
        );
        let cached = Cached {
            facts: Arc::new(facts),
            read_at,
            until: read_at + CACHE_TTL,
        };
        let later = read_at + REFRESH_AFTER + Duration::from_secs(1);
        assert!(cached.serves(&["abc", ""], later));
        assert!(cached.serves(&["restarted"], read_at + Duration::from_secs(1)));
        assert!(!cached.serves(&["restarted"], later));
        assert!(!cached.serves(&["abc"], read_at + CACHE_TTL));
    }

    #[tokio::test]
    async fn without_an_apiserver_every_pod_is_its_own_workload() {
        let resolver = WorkloadResolver::new(None);
        let pod = PodRef {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "u".into(),
        };
        let facts = resolver.resolve(&pod, &["abc"]).await;
        assert_eq!(
            facts.workload,
            WorkloadRef {
                namespace: "shop".into(),
                kind: "Pod".into(),
                name: "web-0".into()
            }
        );
        assert!(facts.labels.is_empty());
    }
}
