//! Prevention (`runtime.prevent: true` in a policy selecting the pod): app
//! containers start under `palisade-launch`, which confines them with
//! Landlock before it execs their command.
//!
//! - An init container from the enforcer image copies the launcher into an
//!   emptyDir (`palisade-launch --install-to`); app containers mount it
//!   read-only, so the app cannot replace it.
//! - Each app container with a `command` starts as
//!   `palisade-launch -- <command>` (its `args` follow as before), with the
//!   launch policy in `PALISADE_LAUNCH_POLICY`. The command's own directory
//!   counts as a program directory.
//! - A container without `command` runs its image's ENTRYPOINT and CMD,
//!   which the pod spec does not name: the server looks them up in the
//!   registry before planning ([`ImageCommands`]) and the container starts
//!   as `palisade-launch -- <ENTRYPOINT>` with `args` set to CMD when the
//!   pod gives none (what the runtime would have run). Its image is pinned
//!   to the manifest digest the command was read from (`name:tag@digest`),
//!   so a tag moved after admission cannot start another program under the
//!   launcher. When the lookup is off or fails, the container stays
//!   unconfined and the status annotation says why. Never a broken pod.
//!
//! Reinvocation-safe: a wrapped command and an existing install container
//! are left as they are.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use palisade_common::launch::{
    check_program_dir, LaunchPolicy, DEFAULT_PROGRAM_DIRS, LAUNCHER_DIR, LAUNCHER_PATH, POLICY_ENV,
};
use palisade_common::STATUS_ANNOTATION;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    append, list_exists, raw_json, read_text, read_value, restricted_security_context,
    sidecar_resources, unique_name, AddOp, ContainerList, Injector, MutateError, PodShape,
};

/// The emptyDir the launcher is installed into.
pub const LAUNCH_VOLUME: &str = "palisade-launch";
/// The init container that installs it.
pub const INSTALL_CONTAINER: &str = "palisade-launch-install";
/// The node label naming its architecture (GOARCH values).
const ARCH_LABEL: &str = "kubernetes.io/arch";
/// The launcher inside the enforcer image.
const LAUNCHER_IN_IMAGE: &str = "/usr/local/bin/palisade-launch";

/// What prevention reads of a pod beyond the injector's own view: the
/// labels (they select the policies) and each app container's command,
/// environment names and mount paths. Read only when some policy asks for
/// prevention, so other pods pay nothing for it.
#[derive(Debug, Default, Deserialize)]
pub struct LaunchShape {
    #[serde(default)]
    metadata: Option<LaunchMetadata>,
    #[serde(default)]
    spec: Option<LaunchSpec>,
}

#[derive(Debug, Default, Deserialize)]
struct LaunchMetadata {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LaunchSpec {
    #[serde(default)]
    containers: Option<Vec<LaunchContainer>>,
    #[serde(default)]
    image_pull_secrets: Option<Vec<SecretName>>,
    /// In the node's network namespace an abstract socket name is shared
    /// with the whole node: launchers there do not report to the enforcer.
    #[serde(default)]
    host_network: Option<bool>,
    #[serde(default)]
    node_selector: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
struct SecretName {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LaunchContainer {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    image_pull_policy: Option<String>,
    #[serde(default)]
    env: Option<Vec<EnvName>>,
    #[serde(default)]
    volume_mounts: Option<Vec<MountPath>>,
}

#[derive(Debug, Default, Deserialize)]
struct EnvName {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MountPath {
    #[serde(default)]
    mount_path: Option<String>,
}

impl LaunchShape {
    /// `hostNetwork: true`.
    fn host_network(&self) -> bool {
        self.spec.as_ref().and_then(|s| s.host_network) == Some(true)
    }

    pub fn from_json(text: &str) -> Result<Self, MutateError> {
        read_text(text)
    }

    pub fn from_value(value: &Value) -> Result<Self, MutateError> {
        read_value(value)
    }

    /// The pod's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .unwrap_or(&NONE)
    }

    fn container(&self, index: usize) -> Option<&LaunchContainer> {
        self.spec.as_ref()?.containers.as_ref()?.get(index)
    }

    /// The images of app containers that run their image's own command
    /// (no `command` in the spec), each once, in order. `is_enforcer`
    /// leaves the injected enforcer out.
    pub fn images_without_command(
        &self,
        is_enforcer: impl Fn(Option<&str>, Option<&str>) -> bool,
    ) -> Vec<String> {
        let containers = self.spec.as_ref().and_then(|s| s.containers.as_deref());
        let mut images: Vec<String> = Vec::new();
        for c in containers.unwrap_or_default() {
            let runs_image_command = c.command.as_deref().is_none_or(|c| c.is_empty());
            if !runs_image_command || is_enforcer(c.name.as_deref(), c.image.as_deref()) {
                continue;
            }
            if let Some(image) = c.image.as_deref().filter(|i| !i.is_empty()) {
                if !images.iter().any(|known| known == image) {
                    images.push(image.to_string());
                }
            }
        }
        images
    }

    /// The architecture the pod selects (`kubernetes.io/arch` in its
    /// `nodeSelector`): which platform of a multi-platform image it runs.
    pub fn architecture(&self) -> Option<String> {
        self.spec
            .as_ref()?
            .node_selector
            .as_ref()?
            .get(ARCH_LABEL)
            .cloned()
    }

    /// The names in `spec.imagePullSecrets`.
    pub fn pull_secrets(&self) -> Vec<String> {
        let secrets = self
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_deref());
        secrets
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s.name.clone())
            .collect()
    }
}

/// An image's own command, as its registry gives it in the image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageCommand {
    Known {
        entrypoint: Vec<String>,
        cmd: Vec<String>,
        /// The manifest digest the command was read from (`sha256:...`):
        /// a wrapped container's image is pinned to it.
        digest: String,
    },
    /// The lookup failed (registry unreachable or refusing, timeout, not an
    /// image); the reason, for the admission warning.
    Failed(String),
}

/// Image commands by image reference, as the pod spec writes it: what the
/// server looked up for a pod before planning. Empty when nothing was
/// looked up (offline commands, lookups turned off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageCommands(BTreeMap<String, ImageCommand>);

impl ImageCommands {
    /// Nothing looked up.
    pub const NONE: &'static ImageCommands = &ImageCommands(BTreeMap::new());

    pub fn insert(&mut self, image: impl Into<String>, command: ImageCommand) {
        self.0.insert(image.into(), command);
    }

    pub fn get(&self, image: &str) -> Option<&ImageCommand> {
        self.0.get(image)
    }

    /// The failed lookups, as `(image, reason)`.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().filter_map(|(image, c)| match c {
            ImageCommand::Failed(reason) => Some((image.as_str(), reason.as_str())),
            ImageCommand::Known { .. } => None,
        })
    }
}

impl FromIterator<(String, ImageCommand)> for ImageCommands {
    fn from_iter<I: IntoIterator<Item = (String, ImageCommand)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// The launch policy for a pod's labels, from the policies that select it
/// (`None`: the pod is not confined).
pub type LaunchFor<'a> = dyn Fn(&BTreeMap<String, String>) -> Option<LaunchPolicy> + 'a;

/// Prevention for one pod: the launch policy the selecting policies give,
/// what the pod says about its containers, and the commands of the images
/// that run their own (looked up by the server; [`ImageCommands::NONE`]
/// when nothing was).
#[derive(Debug, Clone, Copy)]
pub struct Prevent<'a> {
    pub policy: &'a LaunchPolicy,
    pub shape: &'a LaunchShape,
    pub images: &'a ImageCommands,
}

/// Why an app container starts without the launcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unconfined {
    /// No `command` in the pod spec and the image's was not looked up
    /// (lookups off, or offline).
    NoCommand,
    /// No `command` in the pod spec and the registry lookup of the image's
    /// failed (the admission warning says why).
    ImageLookupFailed,
    /// Neither the pod spec nor the image config names a command.
    ImageWithoutCommand,
    /// The container already mounts something at the launcher's path.
    MountPathTaken,
}

/// What prevention covers in a pod, for the status annotation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Prevention {
    pub confined: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unconfined: BTreeMap<String, Unconfined>,
    /// Containers whose image was pinned to the digest their command was
    /// looked up from, with that digest.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pinned: BTreeMap<String, String>,
}

impl Injector {
    /// Adds the install step and wraps every app container it can.
    pub(super) fn add_prevention(
        &self,
        pod: &PodShape,
        prevent: Prevent<'_>,
        run_as: (i64, Option<i64>),
        ops: &mut Vec<AddOp>,
    ) -> Result<Prevention, MutateError> {
        let installed = pod
            .containers(ContainerList::Init)
            .iter()
            .find(|c| c.name.as_deref() == Some(INSTALL_CONTAINER));
        let volume = match installed {
            Some(install) => install
                .volume_mounts
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find_map(|m| m.name.clone())
                .unwrap_or_else(|| LAUNCH_VOLUME.to_string()),
            None => {
                let taken: BTreeSet<String> =
                    pod.volume_names().into_iter().map(str::to_string).collect();
                let volume = unique_name(LAUNCH_VOLUME, &taken).into_owned();
                self.add_install_step(pod, &volume, run_as, ops)?;
                volume
            }
        };
        let mut prevention = Prevention::default();
        let host_network = prevent.shape.host_network();
        let earlier = earlier_pins(pod);
        for (index, container) in pod.containers(ContainerList::App).iter().enumerate() {
            if self
                .identity
                .claim(container.name.as_deref(), container.image.as_deref())
                .is_some()
            {
                continue;
            }
            let name = container.name.clone().unwrap_or_default();
            let Some(needs) = prevent.shape.container(index) else {
                continue;
            };
            let path_taken = needs
                .volume_mounts
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|m| m.mount_path.as_deref() == Some(LAUNCHER_DIR));
            let command = needs.command.as_deref().filter(|c| !c.is_empty());
            let start = match command {
                Some([first, ..]) if first == LAUNCHER_PATH => {
                    let still_pinned = |digest: &&String| {
                        needs
                            .image
                            .as_deref()
                            .and_then(|i| i.rsplit_once('@'))
                            .is_some_and(|(_, pinned_to)| pinned_to == digest.as_str())
                    };
                    if let Some(digest) = earlier.get(&name).filter(still_pinned) {
                        prevention.pinned.insert(name.clone(), digest.clone());
                    }
                    prevention.confined.push(name);
                    continue;
                }
                Some(command) => Ok(Start {
                    command: Cow::Borrowed(command),
                    args: None,
                    pin: None,
                }),
                None => image_start(needs, prevent.images),
            };
            match start {
                Err(reason) => {
                    prevention.unconfined.insert(name, reason);
                }
                Ok(_) if path_taken => {
                    prevention
                        .unconfined
                        .insert(name, Unconfined::MountPathTaken);
                }
                Ok(start) => {
                    let reports = !host_network;
                    if let Some(digest) = start.pin {
                        prevention.pinned.insert(name.clone(), digest.to_string());
                    }
                    wrap(needs, index, start, &volume, prevent.policy, reports, ops);
                    prevention.confined.push(name);
                }
            }
        }
        Ok(prevention)
    }

    fn add_install_step(
        &self,
        pod: &PodShape,
        volume: &str,
        (run_as_user, run_as_group): (i64, Option<i64>),
        ops: &mut Vec<AddOp>,
    ) -> Result<(), MutateError> {
        let resources = sidecar_resources(
            &self.settings.sidecar_resources,
            |key| pod.annotation(key).map(str::to_string),
            |name| pod.pod_level_sets(name),
        )?;
        let install = json!({
            "name": INSTALL_CONTAINER,
            "image": self.settings.image,
            "imagePullPolicy": self.settings.image_pull_policy,
            "command": [LAUNCHER_IN_IMAGE, "--install-to", LAUNCHER_DIR],
            "resources": resources,
            "securityContext": restricted_security_context(run_as_user, run_as_group),
            "volumeMounts": [{"name": volume, "mountPath": LAUNCHER_DIR}],
        });
        // First among init containers: it finishes before any app code runs.
        let init_present = pod.spec().init_containers.is_some();
        ops.push(if list_exists(ops, "/spec/initContainers", init_present) {
            AddOp::json("/spec/initContainers/0".into(), &install)
        } else {
            AddOp::json("/spec/initContainers".into(), &[install])
        });
        let definition = json!({"name": volume, "emptyDir": {"sizeLimit": "16Mi"}});
        append(
            ops,
            "/spec/volumes",
            pod.spec().volumes.is_some(),
            vec![raw_json(&definition)],
        );
        Ok(())
    }
}

/// The digests an earlier pass pinned containers to, by container, as the
/// status annotation says: read once per pod, and kept for a container
/// only while its image is indeed pinned to that digest (reinvocation
/// keeps the record; nothing else is taken from the annotation).
fn earlier_pins(pod: &PodShape) -> BTreeMap<String, String> {
    #[derive(Deserialize)]
    struct Status {
        #[serde(default)]
        prevention: Option<Pins>,
    }
    #[derive(Deserialize)]
    struct Pins {
        #[serde(default)]
        pinned: BTreeMap<String, String>,
    }
    pod.annotation(STATUS_ANNOTATION)
        .and_then(|text| serde_json::from_str::<Status>(text).ok())
        .and_then(|status| status.prevention)
        .map(|p| p.pinned)
        .unwrap_or_default()
}

/// What a wrapped container runs after `palisade-launch --`: the `command`
/// it gets, and `args` to set when the pod gives none (the image's CMD,
/// which a `command` in the spec would otherwise drop).
#[derive(Debug, Clone)]
struct Start<'a> {
    command: Cow<'a, [String]>,
    args: Option<Cow<'a, [String]>>,
    /// The digest to pin the image to (the command came from its config,
    /// and the reference does not name a digest yet).
    pin: Option<&'a str>,
}

impl Start<'_> {
    /// The program the launcher execs.
    fn program<'s>(&'s self, own_args: Option<&'s [String]>) -> Option<&'s str> {
        let args = own_args
            .filter(|a| !a.is_empty())
            .or(self.args.as_deref())
            .unwrap_or_default();
        self.command.first().or(args.first()).map(String::as_str)
    }
}

/// How a container without `command` starts: what the runtime would run,
/// ENTRYPOINT followed by the pod's `args` or else the image's CMD.
fn image_start<'a>(
    container: &'a LaunchContainer,
    images: &'a ImageCommands,
) -> Result<Start<'a>, Unconfined> {
    let image = container.image.as_deref().unwrap_or_default();
    // An empty list counts as none, as the runtime reads it.
    let own_args = container.args.as_deref().filter(|a| !a.is_empty());
    match images.get(image) {
        None => Err(Unconfined::NoCommand),
        Some(ImageCommand::Failed(_)) => Err(Unconfined::ImageLookupFailed),
        Some(ImageCommand::Known {
            entrypoint,
            cmd,
            digest,
        }) => {
            let start = Start {
                command: Cow::Owned(literal(entrypoint)),
                args: own_args.is_none().then(|| Cow::Owned(literal(cmd))),
                pin: pinnable(container).then_some(digest.as_str()),
            };
            match start.program(own_args) {
                Some(_) => Ok(start),
                None => Err(Unconfined::ImageWithoutCommand),
            }
        }
    }
}

/// Whether the container's image can be pinned to a digest: not when it
/// already names one, nor with `imagePullPolicy: Never` (the node then has
/// the image only as it was loaded, often under its tag alone, and a
/// digest reference would not find it: a broken pod).
fn pinnable(container: &LaunchContainer) -> bool {
    let image = container.image.as_deref().unwrap_or_default();
    !image.contains('@') && container.image_pull_policy.as_deref() != Some("Never")
}

/// Image config strings as pod spec strings with the same meaning: the
/// kubelet expands `$(VAR)` and turns `$$` into `$` in a spec's `command`
/// and `args`, never in an image's ENTRYPOINT and CMD.
fn literal(words: &[String]) -> Vec<String> {
    words.iter().map(|w| w.replace('$', "$$")).collect()
}

/// `palisade-launch -- <command>`, the launcher mounted read-only, and the
/// launch policy (unless the container sets its own).
#[allow(clippy::too_many_arguments)]
fn wrap(
    container: &LaunchContainer,
    index: usize,
    start: Start<'_>,
    volume: &str,
    launch: &LaunchPolicy,
    report_to_enforcer: bool,
    ops: &mut Vec<AddOp>,
) {
    let base = format!("/spec/containers/{index}");
    // `--container`: the launcher also hands its coverage report to the
    // pod's enforcer, which names the container in the event.
    let mut argv = vec![LAUNCHER_PATH.to_string()];
    if let Some(name) = container.name.as_deref().filter(|_| report_to_enforcer) {
        argv.extend(["--container".to_string(), name.to_string()]);
    }
    argv.push("--".to_string());
    argv.extend(start.command.iter().cloned());
    ops.push(AddOp::json(format!("{base}/command"), &argv));
    if let Some(args) = start.args.as_deref().filter(|a| !a.is_empty()) {
        ops.push(AddOp::json(format!("{base}/args"), &args));
    }
    // `name:tag@digest`: runtimes pull by the digest, people still read the
    // tag (and a tag moved after admission no longer changes what runs).
    if let (Some(digest), Some(image)) = (start.pin, container.image.as_deref()) {
        ops.push(AddOp::json(
            format!("{base}/image"),
            &format!("{image}@{digest}"),
        ));
    }
    let mount = json!({"name": volume, "mountPath": LAUNCHER_DIR, "readOnly": true});
    append(
        ops,
        &format!("{base}/volumeMounts"),
        container.volume_mounts.is_some(),
        vec![raw_json(&mount)],
    );
    let own_policy = container
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|e| e.name.as_deref() == Some(POLICY_ENV));
    if own_policy {
        return;
    }
    let program = start.program(container.args.as_deref()).unwrap_or_default();
    let policy = for_command(launch, program);
    let text = serde_json::to_string(&policy).unwrap_or_default();
    let env = json!({"name": POLICY_ENV, "value": text});
    append(
        ops,
        &format!("{base}/env"),
        container.env.is_some(),
        vec![raw_json(&env)],
    );
}

/// The launch policy with the command's directory as a program directory
/// (when it is absolute, not already covered, and a valid one).
fn for_command(launch: &LaunchPolicy, program: &str) -> LaunchPolicy {
    let mut policy = launch.clone();
    let Some(dir) = Path::new(program).parent().filter(|d| d.is_absolute()) else {
        return policy;
    };
    let covered = DEFAULT_PROGRAM_DIRS
        .iter()
        .map(Path::new)
        .chain(policy.program_dirs.iter().map(|d| d.as_path()))
        .any(|d| dir.starts_with(d));
    if !covered && check_program_dir(dir).is_ok() {
        policy.program_dirs.push(dir.to_path_buf());
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::super::tests::status;
    use super::super::Mutation;
    use super::*;
    use crate::settings::InjectionSettings;
    use std::path::PathBuf;

    fn confine(pod: &Value, settings: &InjectionSettings) -> Mutation {
        let launch = LaunchPolicy {
            program_dirs: vec![PathBuf::from("/opt/tools")],
            ..LaunchPolicy::default()
        };
        let shape = LaunchShape::from_value(pod).unwrap();
        let prevent = Prevent {
            policy: &launch,
            shape: &shape,
            images: ImageCommands::NONE,
        };
        Injector::new(settings)
            .plan(&PodShape::from_value(pod).unwrap(), Some(prevent))
            .unwrap()
    }

    fn applied(pod: &Value, settings: &InjectionSettings) -> Value {
        let mut out = pod.clone();
        let patch: json_patch::Patch =
            serde_json::from_slice(&confine(pod, settings).patch_json()).unwrap();
        json_patch::patch(&mut out, &patch).expect("patch applies");
        out
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "initContainers": [{"name": "migrate", "image": "app:1", "command": ["/app/migrate"]}],
                "containers": [
                    {"name": "app", "image": "app:1", "command": ["/app/bin/server", "--port"],
                     "args": ["8080"], "env": [{"name": "MODE", "value": "prod"}]},
                    {"name": "proxy", "image": "envoy:1"}
                ]
            }
        })
    }

    #[test]
    fn app_commands_start_under_the_launcher_installed_first() {
        for native in [true, false] {
            let settings = InjectionSettings {
                native_sidecar: native,
                ..InjectionSettings::default()
            };
            let out = applied(&pod(), &settings);
            let spec = &out["spec"];
            let init = spec["initContainers"].as_array().unwrap();
            assert_eq!(init[0]["name"], INSTALL_CONTAINER, "native: {native}");
            assert_eq!(
                init[0]["command"],
                json!([LAUNCHER_IN_IMAGE, "--install-to", LAUNCHER_DIR])
            );
            assert_eq!(init[0]["securityContext"]["runAsNonRoot"], true);
            assert_eq!(init[0]["volumeMounts"][0]["name"], LAUNCH_VOLUME);
            let app = &spec["containers"][0];
            assert_eq!(
                app["command"],
                json!([
                    LAUNCHER_PATH,
                    "--container",
                    "app",
                    "--",
                    "/app/bin/server",
                    "--port"
                ])
            );
            assert_eq!(app["args"], json!(["8080"]), "args are left as they are");
            let mount = app["volumeMounts"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .clone();
            assert_eq!(
                mount,
                json!({"name": LAUNCH_VOLUME, "mountPath": LAUNCHER_DIR, "readOnly": true})
            );
            let env = app["env"].as_array().unwrap();
            assert_eq!(env[0]["name"], "MODE");
            let policy = LaunchPolicy::from_json(env[1]["value"].as_str().unwrap())
                .expect("the launcher accepts what the injector writes");
            assert_eq!(
                policy.program_dirs,
                [PathBuf::from("/opt/tools"), PathBuf::from("/app/bin")]
            );
            // The app's own init container is not wrapped.
            let migrate = init.iter().find(|c| c["name"] == "migrate").unwrap();
            assert_eq!(migrate["command"], json!(["/app/migrate"]));
            let status = status(&out);
            assert_eq!(
                status["prevention"],
                json!({"confined": ["app"], "unconfined": {"proxy": "no-command"}})
            );
        }
    }

    #[test]
    fn a_container_using_the_launchers_path_is_left_unconfined() {
        let mut pod = pod();
        pod["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "tools", "mountPath": LAUNCHER_DIR}]);
        pod["spec"]["volumes"] = json!([{"name": "tools", "emptyDir": {}}]);
        let out = applied(&pod, &InjectionSettings::default());
        let app = &out["spec"]["containers"][0];
        assert_eq!(app["command"][0], "/app/bin/server");
        assert_eq!(app["volumeMounts"].as_array().unwrap().len(), 1);
        let status = status(&out);
        assert_eq!(
            status["prevention"]["unconfined"]["app"],
            "mount-path-taken"
        );
    }

    #[test]
    fn launchers_in_the_nodes_network_namespace_do_not_report_to_an_enforcer() {
        let mut pod = pod();
        pod["spec"]["hostNetwork"] = json!(true);
        let patched = applied(&pod, &InjectionSettings::default());
        assert_eq!(
            patched["spec"]["containers"][0]["command"],
            json!([LAUNCHER_PATH, "--", "/app/bin/server", "--port"])
        );
    }

    #[test]
    fn a_confined_pod_is_left_as_it_is_on_reinvocation() {
        let settings = InjectionSettings::default();
        let once = applied(&pod(), &settings);
        let again = confine(&once, &settings);
        assert!(
            again.ops.is_empty(),
            "{}",
            String::from_utf8_lossy(&again.patch_json())
        );
    }

    #[test]
    fn a_container_with_its_own_launch_policy_keeps_it_and_names_never_collide() {
        let mut pod = pod();
        pod["spec"]["containers"][0]["env"] =
            json!([{"name": POLICY_ENV, "value": "{\"programDirs\": [\"/srv\"]}"}]);
        pod["spec"]["volumes"] = json!([{"name": LAUNCH_VOLUME, "emptyDir": {}}]);
        let out = applied(&pod, &InjectionSettings::default());
        let app = &out["spec"]["containers"][0];
        assert_eq!(app["env"].as_array().unwrap().len(), 1);
        let ours = format!("{LAUNCH_VOLUME}-1");
        assert_eq!(app["volumeMounts"][0]["name"], ours.as_str());
        let volumes: Vec<&str> = out["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(volumes.contains(&LAUNCH_VOLUME) && volumes.contains(&ours.as_str()));
    }

    /// `pod()` with the proxy's image looked up as `images` says.
    fn confine_with(pod: &Value, images: &ImageCommands) -> Value {
        let launch = LaunchPolicy::default();
        let shape = LaunchShape::from_value(pod).unwrap();
        let prevent = Prevent {
            policy: &launch,
            shape: &shape,
            images,
        };
        let mutation = Injector::new(&InjectionSettings::default())
            .plan(&PodShape::from_value(pod).unwrap(), Some(prevent))
            .unwrap();
        let mut out = pod.clone();
        let patch: json_patch::Patch = serde_json::from_slice(&mutation.patch_json()).unwrap();
        json_patch::patch(&mut out, &patch).expect("patch applies");
        out
    }

    const ENVOY_DIGEST: &str =
        "sha256:4b3f6e8a2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f";

    fn envoy(entrypoint: &[&str], cmd: &[&str]) -> ImageCommands {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        [(
            "envoy:1".to_string(),
            ImageCommand::Known {
                entrypoint: owned(entrypoint),
                cmd: owned(cmd),
                digest: ENVOY_DIGEST.into(),
            },
        )]
        .into_iter()
        .collect()
    }

    fn launched_policy(container: &Value) -> LaunchPolicy {
        let env = container["env"].as_array().unwrap();
        let value = env.iter().find(|e| e["name"] == POLICY_ENV).unwrap()["value"]
            .as_str()
            .unwrap();
        LaunchPolicy::from_json(value).unwrap()
    }

    #[test]
    fn an_image_command_looked_up_starts_under_the_launcher_as_the_runtime_would_run_it() {
        let images = envoy(&["/opt/envoy/bin/envoy"], &["-c", "/etc/envoy.yaml"]);
        let out = confine_with(&pod(), &images);
        let proxy = &out["spec"]["containers"][1];
        assert_eq!(
            proxy["command"],
            json!([
                LAUNCHER_PATH,
                "--container",
                "proxy",
                "--",
                "/opt/envoy/bin/envoy"
            ])
        );
        assert_eq!(
            proxy["args"],
            json!(["-c", "/etc/envoy.yaml"]),
            "CMD, which a command in the spec would drop, becomes args"
        );
        assert_eq!(
            launched_policy(proxy).program_dirs,
            [PathBuf::from("/opt/envoy/bin")]
        );
        assert_eq!(
            proxy["image"],
            format!("envoy:1@{ENVOY_DIGEST}"),
            "pinned to the manifest the command was read from"
        );
        assert_eq!(
            status(&out)["prevention"],
            json!({"confined": ["app", "proxy"], "pinned": {"proxy": ENVOY_DIGEST}})
        );
        assert_eq!(
            out["spec"]["containers"][0]["image"],
            pod()["spec"]["containers"][0]["image"],
            "a container with its own command runs whatever its tag names"
        );
        let again = confine_with(&out, &images);
        assert_eq!(again, out, "reinvocation changes nothing");
    }

    #[test]
    fn an_image_already_pinned_to_a_digest_is_left_as_written() {
        let mut pod = pod();
        let pinned = format!("envoy:1@{ENVOY_DIGEST}");
        pod["spec"]["containers"][1]["image"] = json!(pinned);
        let images: ImageCommands = [(
            pinned.clone(),
            ImageCommand::Known {
                entrypoint: vec!["/opt/envoy/bin/envoy".into()],
                cmd: vec![],
                digest: ENVOY_DIGEST.into(),
            },
        )]
        .into_iter()
        .collect();
        let out = confine_with(&pod, &images);
        assert_eq!(out["spec"]["containers"][1]["image"], json!(pinned));
        assert_eq!(
            out["spec"]["containers"][1]["command"][4],
            "/opt/envoy/bin/envoy"
        );
        assert!(status(&out)["prevention"].get("pinned").is_none());
    }

    #[test]
    fn an_image_the_node_never_pulls_is_not_pinned() {
        let mut pod = pod();
        pod["spec"]["containers"][1]["imagePullPolicy"] = json!("Never");
        let out = confine_with(&pod, &envoy(&["/opt/envoy/bin/envoy"], &[]));
        let proxy = &out["spec"]["containers"][1];
        assert_eq!(
            proxy["image"], "envoy:1",
            "a side-loaded image has no digest name"
        );
        assert_eq!(proxy["command"][4], "/opt/envoy/bin/envoy");
        assert!(status(&out)["prevention"].get("pinned").is_none());
    }

    #[test]
    fn image_strings_keep_their_meaning_in_the_pod_spec() {
        let images = envoy(&["/bin/sh", "-c"], &["echo $HOME $(NAME) $$"]);
        let out = confine_with(&pod(), &images);
        let proxy = &out["spec"]["containers"][1];
        assert_eq!(
            proxy["args"],
            json!(["echo $$HOME $$(NAME) $$$$"]),
            "the kubelet turns these back into what the image said"
        );
    }

    #[test]
    fn the_pods_own_args_replace_the_images_cmd() {
        let mut pod = pod();
        pod["spec"]["containers"][1]["args"] = json!(["--log-level", "debug"]);
        let out = confine_with(&pod, &envoy(&["/opt/envoy/bin/envoy"], &["-c", "x"]));
        let proxy = &out["spec"]["containers"][1];
        assert_eq!(proxy["args"], json!(["--log-level", "debug"]));
    }

    #[test]
    fn an_image_with_cmd_only_runs_its_cmd_behind_the_launcher() {
        let out = confine_with(&pod(), &envoy(&[], &["/usr/bin/envoy", "-c", "x"]));
        let proxy = &out["spec"]["containers"][1];
        assert_eq!(
            proxy["command"],
            json!([LAUNCHER_PATH, "--container", "proxy", "--"])
        );
        assert_eq!(proxy["args"], json!(["/usr/bin/envoy", "-c", "x"]));
        // With the pod's own args and no ENTRYPOINT, the args are the command.
        let mut pod = pod();
        pod["spec"]["containers"][1]["args"] = json!(["/opt/envoy/bin/envoy"]);
        let out = confine_with(&pod, &envoy(&[], &["/usr/bin/envoy"]));
        let proxy = &out["spec"]["containers"][1];
        assert_eq!(proxy["args"], json!(["/opt/envoy/bin/envoy"]));
        assert_eq!(
            launched_policy(proxy).program_dirs,
            [PathBuf::from("/opt/envoy/bin")]
        );
    }

    #[test]
    fn what_the_lookup_could_not_give_leaves_the_container_unconfined_with_its_reason() {
        let failed: ImageCommands = [(
            "envoy:1".to_string(),
            ImageCommand::Failed("connection refused".into()),
        )]
        .into_iter()
        .collect();
        for (images, reason) in [
            (ImageCommands::NONE.clone(), "no-command"),
            (failed, "image-lookup-failed"),
            (envoy(&[], &[]), "image-without-command"),
        ] {
            let out = confine_with(&pod(), &images);
            let proxy = &out["spec"]["containers"][1];
            assert!(proxy.get("command").is_none(), "{reason}");
            assert!(proxy.get("args").is_none(), "{reason}");
            assert_eq!(status(&out)["prevention"]["unconfined"]["proxy"], reason);
        }
    }

    #[test]
    fn images_to_look_up_are_app_images_without_a_command_each_once() {
        let mut pod = pod();
        let containers = pod["spec"]["containers"].as_array_mut().unwrap();
        containers.push(json!({"name": "proxy-2", "image": "envoy:1", "command": []}));
        containers.push(json!({"name": "palisade-enforcer", "image": "enforcer:1"}));
        pod["spec"]["imagePullSecrets"] = json!([{"name": "regcred"}, {}]);
        let shape = LaunchShape::from_value(&pod).unwrap();
        let images = shape.images_without_command(|name, _| name == Some("palisade-enforcer"));
        assert_eq!(images, ["envoy:1"]);
        assert_eq!(shape.pull_secrets(), ["regcred"]);
        assert_eq!(shape.architecture(), None);
        pod["spec"]["nodeSelector"] = json!({"kubernetes.io/arch": "arm64", "disk": "ssd"});
        let shape = LaunchShape::from_value(&pod).unwrap();
        assert_eq!(shape.architecture().as_deref(), Some("arm64"));
    }

    #[test]
    fn the_commands_directory_becomes_a_program_directory_unless_covered_or_writable() {
        let launch = LaunchPolicy::default();
        let dirs = |program: &str| for_command(&launch, program).program_dirs;
        assert_eq!(dirs("/app/bin/server"), [PathBuf::from("/app/bin")]);
        assert!(dirs("/usr/local/bin/nginx").is_empty(), "under /usr");
        assert!(dirs("/tmp/run").is_empty(), "a temp dir never is one");
        assert!(dirs("server").is_empty(), "relative: looked up in PATH");
        assert!(dirs("/server").is_empty(), "/ is never one");
    }
}
