//! A RuntimePolicy drafted from what one workload was seen doing: every
//! executable by path and content, process names, listening ports and
//! egress destinations, each with a comment saying how often, when and
//! where it was seen, so the reviewer judges entries rather than trusting
//! them. Prevention is drafted only where it cannot break the workload.
//!
//! The draft errs towards allowing less: what cannot be written exactly
//! (a path the list would read as a prefix, a malformed hash) is left out
//! with a comment, so a replay shows it instead of a draft silently
//! allowing more than was seen.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use palisade_common::observe::{is_sha256_hex, Observed, Protocol, WorkloadObservations};
use palisade_common::policy::{Mode, API_VERSION, KIND};
use sha2::{Digest, Sha256};

use super::prevention::{plan, writable_dir, Prevention};
use super::yaml::{quote, Writer};
use super::{duration_text, plural, rfc3339, tally, Tally};

/// How to draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DraftOptions {
    /// `spec.mode` of the draft: `audit` by default, so a pushed draft
    /// reports before it kills.
    pub mode: Mode,
    /// Allow the image's own executables by construction (`zeroDrift`) and
    /// list only the others.
    pub zero_drift: bool,
}

impl Default for DraftOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Audit,
            zero_drift: false,
        }
    }
}

/// Pod labels that change with every rollout or pod: selecting by them
/// would select only the pods that were observed.
const PER_REVISION_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "batch.kubernetes.io/controller-uid",
    "controller-uid",
    "batch.kubernetes.io/job-name",
    "job-name",
    "apps.kubernetes.io/pod-index",
];

/// Egress entries one draft lists at most: beyond that, the list says more
/// about a crawler or a CDN than about a workload.
pub const MAX_EGRESS: usize = 256;

/// Distinct addresses on one port beyond which the draft says that a CIDR
/// (or no egress rule) may describe the destination better.
pub const MANY_ADDRESSES: usize = 16;

/// Longest `metadata.name` (a DNS label).
const MAX_NAME: usize = 63;

/// The draft of a RuntimePolicy for `observed`'s workload, as YAML with
/// comments. It parses with `PolicyDocument::from_yaml`.
pub fn draft(observed: &WorkloadObservations, options: &DraftOptions) -> String {
    let seen = Seen::of(observed);
    let mut doc = Writer::new();
    header(&mut doc, observed, &seen, options);
    doc.field(0, "apiVersion", &quote(API_VERSION));
    doc.field(0, "kind", &quote(KIND));
    doc.open(0, "metadata");
    let workload = &observed.workload.workload;
    doc.field(
        1,
        "name",
        &quote(&policy_name(&workload.kind, &workload.name)),
    );
    doc.open(0, "spec");
    if options.mode == Mode::Learn {
        doc.comment(
            1,
            "learn: nothing is reported or stopped; observations keep accumulating",
        );
    }
    doc.field(1, "mode", &quote(options.mode.as_str()));
    selector(&mut doc, observed);
    doc.open(1, "runtime");
    doc.field(2, "drift", "true");
    executables(&mut doc, &seen, options);
    processes(&mut doc, &seen);
    listeners(&mut doc, &seen);
    egress(&mut doc, &seen);
    prevention(&mut doc, &seen);
    doc.finish()
}

/// Items by key, each with its tally and what varied between sightings
/// (whether from the image, the parent, the protocol).
type Sightings<K, X> = BTreeMap<K, (Tally, BTreeSet<X>)>;

/// What was seen, by kind, each item with its tally across containers.
struct Seen<'a> {
    /// By (path, hash): one entry per content seen at a path.
    executables: Sightings<(&'a str, Option<&'a str>), bool>,
    processes: Sightings<&'a str, &'a str>,
    listeners: Sightings<u16, Protocol>,
    /// By (port, address), so one port's destinations are together.
    egress: Sightings<(u16, IpAddr), Protocol>,
}

impl<'a> Seen<'a> {
    fn of(observed: &'a WorkloadObservations) -> Self {
        let mut seen = Seen {
            executables: BTreeMap::new(),
            processes: BTreeMap::new(),
            listeners: BTreeMap::new(),
            egress: BTreeMap::new(),
        };
        fn add<K: Ord, X: Ord>(map: &mut Sightings<K, X>, key: K, tally: &Tally, extra: X) {
            match map.entry(key) {
                Entry::Vacant(entry) => {
                    entry.insert((tally.clone(), BTreeSet::from([extra])));
                }
                Entry::Occupied(mut entry) => {
                    let (sum, extras) = entry.get_mut();
                    sum.add(tally);
                    extras.insert(extra);
                }
            }
        }
        for (item, tally) in tally(&observed.observed) {
            match item {
                Observed::Executable {
                    path,
                    sha256,
                    from_image,
                } => add(
                    &mut seen.executables,
                    (path.as_str(), sha256.as_deref()),
                    &tally,
                    *from_image,
                ),
                Observed::Process { name, parent } => {
                    add(&mut seen.processes, name.as_str(), &tally, parent.as_str())
                }
                Observed::Listen { protocol, port } => {
                    add(&mut seen.listeners, *port, &tally, *protocol)
                }
                Observed::Egress {
                    address,
                    port,
                    protocol,
                } => add(&mut seen.egress, (*port, *address), &tally, *protocol),
            }
        }
        seen
    }

    fn count_text(&self) -> String {
        let total = self.executables.len()
            + self.processes.len()
            + self.listeners.len()
            + self.egress.len();
        format!(
            "{}: {}, {}, {}, {}",
            plural(total as u64, "distinct item", "distinct items"),
            plural(self.executables.len() as u64, "executable", "executables"),
            plural(self.processes.len() as u64, "process name", "process names"),
            plural(
                self.listeners.len() as u64,
                "listening port",
                "listening ports"
            ),
            plural(
                self.egress.len() as u64,
                "egress destination",
                "egress destinations"
            ),
        )
    }
}

/// `seen 12 times, first ..., last ...`.
fn seen_text(tally: &Tally) -> String {
    format!(
        "seen {}, first {}, last {}",
        plural(tally.count, "time", "times"),
        rfc3339(tally.first_ms),
        rfc3339(tally.last_ms)
    )
}

fn protocols_text(protocols: &BTreeSet<Protocol>) -> String {
    protocols
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join("+")
}

fn header(doc: &mut Writer, observed: &WorkloadObservations, seen: &Seen, options: &DraftOptions) {
    let record = &observed.workload;
    doc.comment(
        0,
        &format!(
            "Drafted by `palisade policy draft` from what the enforcers of {} saw it do.",
            record.workload
        ),
    );
    doc.comment(
        0,
        &format!(
            "Observed {} .. {} ({}); last new item {}.",
            rfc3339(record.first_ms),
            rfc3339(record.last_seen_ms),
            duration_text(record.last_seen_ms.saturating_sub(record.first_ms)),
            rfc3339(record.last_new_ms)
        ),
    );
    doc.comment(0, &format!("{}.", seen.count_text()));
    let images: BTreeSet<&str> = observed
        .observed
        .iter()
        .map(|r| r.image.as_str())
        .filter(|i| !i.is_empty())
        .collect();
    if !images.is_empty() {
        let images: Vec<&str> = images.into_iter().collect();
        doc.comment(0, &format!("Images: {}.", images.join(", ")));
    }
    if record.overflow > 0 {
        doc.comment(
            0,
            &format!(
                "WARNING: incomplete: {} were not recorded (the workload reached the service's \
                 bound); what was not recorded is not allowed below.",
                plural(record.overflow, "item", "items")
            ),
        );
    }
    if observed.observed.is_empty() {
        doc.comment(
            0,
            "Nothing was observed: the runtime rules below limit nothing but drift.",
        );
    }
    if options.zero_drift {
        doc.comment(
            0,
            "zeroDrift: the image's own executables are allowed as they are; only the others are listed.",
        );
    }
    doc.comment(
        0,
        "Review every entry, then replay it before enforcing: palisade policy replay FILE --since 24h",
    );
}

/// `learned-<kind>-<name>` as a DNS label (pod names may hold dots). A
/// name too long for one is cut and ends in a hash of the whole, so two
/// long names sharing a prefix do not draft the same policy name.
fn policy_name(kind: &str, name: &str) -> String {
    let full = format!("learned-{kind}-{name}").to_ascii_lowercase();
    let mut label = String::with_capacity(full.len());
    for c in full.chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && label.ends_with('-')) {
            label.push(c);
        }
    }
    let label = label.trim_end_matches('-');
    if label.len() <= MAX_NAME {
        return label.to_string();
    }
    let digest = hex::encode(&Sha256::digest(full.as_bytes())[..4]);
    // The label is ASCII: any byte index is a character boundary.
    let head = label[..MAX_NAME - digest.len() - 1].trim_end_matches('-');
    format!("{head}-{digest}")
}

/// The workload's namespace and its pods' labels, without those that
/// change per revision or per pod.
fn selector(doc: &mut Writer, observed: &WorkloadObservations) {
    let record = &observed.workload;
    doc.open(1, "selector");
    doc.open(2, "namespaces");
    doc.item(3, &quote(&record.workload.namespace));
    let stripped: Vec<&str> = record
        .pod_labels
        .keys()
        .map(String::as_str)
        .filter(|k| PER_REVISION_LABELS.contains(k))
        .collect();
    let labels: Vec<(&String, &String)> = record
        .pod_labels
        .iter()
        .filter(|(k, _)| !PER_REVISION_LABELS.contains(&k.as_str()))
        .collect();
    if !stripped.is_empty() {
        doc.comment(
            2,
            &format!(
                "left out, they change per revision or pod: {}",
                stripped.join(", ")
            ),
        );
    }
    if labels.is_empty() {
        doc.comment(
            2,
            &format!(
                "the pods had no other labels: this selects every pod of namespace {}; \
                 add podLabels to narrow it",
                record.workload.namespace
            ),
        );
        return;
    }
    doc.open(2, "podLabels");
    for (key, value) in labels {
        doc.pair(3, key, value);
    }
}

/// `from the image`, `not from the image`, or both across containers.
fn origin_text(from_image: &BTreeSet<bool>) -> &'static str {
    match (from_image.contains(&true), from_image.contains(&false)) {
        (true, false) => "from the image",
        (false, true) => "not from the image",
        _ => "from the image in some containers, not in others",
    }
}

/// Why an executable cannot be listed exactly; `None` when it can.
fn unlistable(path: &str, sha256: Option<&str>) -> Option<&'static str> {
    if !path.starts_with('/') {
        Some("its path is not absolute")
    } else if path.ends_with('*') {
        Some("its path ends in '*', which the list reads as a prefix")
    } else if sha256.is_some_and(|h| !is_sha256_hex(h)) {
        Some("its recorded sha256 is not one")
    } else {
        None
    }
}

fn executables(doc: &mut Writer, seen: &Seen, options: &DraftOptions) {
    let mut listed = Vec::new();
    let mut left_out = Vec::new();
    for ((path, sha256), (tally, from_image)) in &seen.executables {
        let only_image = !from_image.contains(&false);
        if options.zero_drift && only_image {
            continue;
        }
        match unlistable(path, *sha256) {
            Some(why) => left_out.push(format!("left out {path}: {why}")),
            None => listed.push((*path, *sha256, tally, from_image)),
        }
    }
    for note in &left_out {
        doc.comment(2, note);
    }
    if options.zero_drift {
        doc.field(2, "zeroDrift", "true");
    }
    if listed.is_empty() {
        let why = match (seen.executables.is_empty(), options.zero_drift) {
            (true, _) => "no executable was seen: allowedExecutables left out (an empty list allows any)",
            (false, true) => "every executable seen was the image's own: zeroDrift allows them",
            (false, false) => "no executable could be listed: allowedExecutables left out (an empty list allows any)",
        };
        doc.comment(2, why);
        return;
    }
    doc.open(2, "allowedExecutables");
    for (path, sha256, tally, from_image) in listed {
        let mut note = format!(
            "{}, {}, containers: {}",
            seen_text(tally),
            origin_text(from_image),
            tally.containers_text()
        );
        if sha256.is_none() {
            note.push_str("; content unknown (not hashed): any content at this path is allowed");
        }
        if let Some(dir) = writable_dir(path) {
            note.push_str(&format!("; REVIEW: runs from {dir}, which is writable"));
        }
        doc.comment(3, &note);
        doc.item_field(3, "path", &quote(path));
        if let Some(hash) = sha256 {
            doc.field(4, "sha256", &quote(hash));
        }
    }
}

fn processes(doc: &mut Writer, seen: &Seen) {
    if seen.processes.is_empty() {
        doc.comment(
            2,
            "no process name was seen: allowedProcesses left out (an empty list allows any)",
        );
        return;
    }
    doc.open(2, "allowedProcesses");
    for (name, (tally, parents)) in &seen.processes {
        let parents: Vec<&str> = parents
            .iter()
            .map(|p| if p.is_empty() { "(unknown)" } else { p })
            .collect();
        doc.comment(
            3,
            &format!(
                "{}, parents: {}, containers: {}",
                seen_text(tally),
                parents.join(", "),
                tally.containers_text()
            ),
        );
        doc.item(3, &quote(name));
    }
}

fn listeners(doc: &mut Writer, seen: &Seen) {
    if seen.listeners.is_empty() {
        doc.comment(
            2,
            "no listening port was seen: none is allowed (delete the line to allow any)",
        );
        doc.field(2, "allowedListenPorts", "[]");
        return;
    }
    doc.open(2, "allowedListenPorts");
    for (port, (tally, protocols)) in &seen.listeners {
        doc.comment(
            3,
            &format!(
                "{}, {}, containers: {}",
                seen_text(tally),
                protocols_text(protocols),
                tally.containers_text()
            ),
        );
        doc.item(3, &port.to_string());
    }
}

/// `10.0.0.1/32:443`, `[fd00::1/128]:443`: one address and port, in the
/// form `EgressRule::parse` reads.
fn egress_entry(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(a) => format!("{a}/32:{port}"),
        IpAddr::V6(a) => format!("[{a}/128]:{port}"),
    }
}

fn egress(doc: &mut Writer, seen: &Seen) {
    if seen.egress.is_empty() {
        doc.comment(
            2,
            "no egress was seen: none is allowed (delete the line to allow any)",
        );
        doc.field(2, "egressAllow", "[]");
        return;
    }
    // Past the bound, the destinations seen most often are kept.
    let mut by_count: Vec<&(u16, IpAddr)> = seen.egress.keys().collect();
    by_count.sort_by_key(|key| std::cmp::Reverse(seen.egress[*key].0.count));
    let kept: BTreeSet<&(u16, IpAddr)> = by_count.into_iter().take(MAX_EGRESS).collect();
    let mut per_port: BTreeMap<u16, usize> = BTreeMap::new();
    for (port, _) in seen.egress.keys() {
        *per_port.entry(*port).or_default() += 1;
    }
    let left_out = seen.egress.len() - kept.len();
    if left_out > 0 {
        doc.comment(
            2,
            &format!(
                "{} more destinations were seen and left out: only the {MAX_EGRESS} seen most \
                 often are listed (replay names the others; a CIDR may describe them better)",
                left_out
            ),
        );
    }
    doc.open(2, "egressAllow");
    let mut noted = BTreeSet::new();
    for key in kept {
        let (port, address) = *key;
        let addresses = per_port[&port];
        if addresses > MANY_ADDRESSES && noted.insert(port) {
            doc.comment(
                3,
                &format!(
                    "port {port}: {addresses} distinct addresses (more than {MANY_ADDRESSES}): \
                     a service behind changing addresses? a CIDR may describe it better"
                ),
            );
        }
        let (tally, protocols) = &seen.egress[key];
        doc.comment(
            3,
            &format!(
                "{}, {}, containers: {}",
                seen_text(tally),
                protocols_text(protocols),
                tally.containers_text()
            ),
        );
        doc.item(3, &quote(&egress_entry(address, port)));
    }
}

/// Most reasons a comment lists before it says "and N more".
const MAX_REASONS: usize = 5;

fn prevention(doc: &mut Writer, seen: &Seen) {
    let executables = seen
        .executables
        .iter()
        .flat_map(|((path, _), (_, from_image))| from_image.iter().map(move |f| (*path, *f)));
    match plan(executables) {
        Prevention::Safe { program_dirs } => {
            doc.comment(
                2,
                "prevention drafted: every executable seen came from the image, none from a \
                 writable directory (docs/prevention.md)",
            );
            doc.field(2, "prevent", "true");
            if !program_dirs.is_empty() {
                doc.open(2, "programDirs");
                for dir in &program_dirs {
                    doc.item(3, &quote(dir));
                }
            }
        }
        Prevention::Unsafe(problems) => {
            doc.comment(
                2,
                "prevention not drafted: confining the app would stop what it was seen doing:",
            );
            for problem in problems.iter().take(MAX_REASONS) {
                doc.comment(2, &format!("  {problem}"));
            }
            if problems.len() > MAX_REASONS {
                doc.comment(2, &format!("  and {} more", problems.len() - MAX_REASONS));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::fixtures::*;
    use palisade_common::policy::PolicyDocument;

    fn parse(text: &str) -> PolicyDocument {
        PolicyDocument::from_yaml(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn a_workload_that_never_listened_or_called_out_is_allowed_neither() {
        let mut quiet = web();
        quiet
            .observed
            .retain(|r| !matches!(r.item, Observed::Listen { .. } | Observed::Egress { .. }));
        let text = draft(&quiet, &DraftOptions::default());
        let runtime = parse(&text).spec.runtime.unwrap();
        assert_eq!(runtime.allowed_listen_ports, Some(Vec::new()), "{text}");
        assert_eq!(runtime.egress_allow, Some(Vec::new()), "{text}");
        assert!(
            text.contains("# no egress was seen: none is allowed (delete the line to allow any)\n    egressAllow: []\n"),
            "{text}"
        );
    }

    #[test]
    fn a_draft_is_a_valid_policy_with_every_entry_seen() {
        let text = draft(&web(), &DraftOptions::default());
        let doc = parse(&text);
        assert_eq!(doc.metadata.name, "learned-deployment-web");
        assert_eq!(doc.spec.mode, Mode::Audit);
        assert_eq!(doc.spec.selector.namespaces, ["shop"]);
        let runtime = doc.spec.runtime.expect("runtime");
        assert!(runtime.drift);
        let listed: Vec<(&str, Option<&str>)> = runtime
            .allowed_executables
            .iter()
            .map(|a| (a.path.as_str(), a.sha256.as_deref()))
            .collect();
        assert_eq!(
            listed,
            [
                ("/app/bin/server", Some(SERVER)),
                ("/usr/bin/curl", Some(SH))
            ]
        );
        assert_eq!(runtime.allowed_processes, ["server"]);
        assert_eq!(runtime.allowed_listen_ports, Some(vec![8080]));
        assert_eq!(
            runtime.egress_allow.unwrap(),
            ["[fd00::1/128]:443", "10.0.0.7/32:5432"]
        );
    }

    #[test]
    fn every_entry_says_how_often_when_and_where_it_was_seen() {
        let text = draft(&web(), &DraftOptions::default());
        assert!(
            text.contains(
                "# seen 12 times, first 2026-12-07T08:01:02Z, last 2026-12-07T09:01:02Z, \
             from the image, containers: app\n      - path: \"/usr/bin/curl\""
            ),
            "{text}"
        );
        assert!(text.contains("# seen 1 time, first"), "{text}");
        assert!(
            text.contains("parents: containerd-shim, containers: app"),
            "{text}"
        );
        assert!(text.contains("seen 40 times"), "{text}");
        assert!(text.starts_with(
            "# Drafted by `palisade policy draft` from what the enforcers of shop/deployment/web saw it do.\n\
             # Observed 2026-12-07T08:01:02Z .. 2026-12-07T09:01:02Z (1h); last new item 2026-12-07T08:02:02Z.\n\
             # 6 distinct items: 2 executables, 1 process name, 1 listening port, 2 egress destinations.\n"
        ), "{text}");
        assert!(!text.contains("incomplete"), "{text}");
    }

    #[test]
    fn an_incomplete_record_says_so_in_the_header() {
        let mut observed = web();
        observed.workload.overflow = 37;
        let text = draft(&observed, &DraftOptions::default());
        assert!(
            text.contains("# WARNING: incomplete: 37 items were not recorded"),
            "{text}"
        );
    }

    #[test]
    fn several_contents_at_one_path_are_one_entry_each() {
        let observed = workload(
            &[],
            vec![
                record(exe("/app/server", SERVER, true), 1),
                record(exe("/app/server", SH, false), 1),
            ],
        );
        let doc = parse(&draft(&observed, &DraftOptions::default()));
        let hashes: Vec<_> = doc
            .spec
            .runtime
            .unwrap()
            .allowed_executables
            .into_iter()
            .map(|a| a.sha256)
            .collect();
        assert_eq!(hashes, [Some(SH.to_string()), Some(SERVER.to_string())]);
    }

    #[test]
    fn zero_drift_lists_only_what_did_not_come_from_the_image() {
        let mut observed = web();
        observed
            .observed
            .push(record(exe("/data/plugins/tool", SH, false), 2));
        let options = DraftOptions {
            mode: Mode::Enforce,
            zero_drift: true,
        };
        let text = draft(&observed, &options);
        let doc = parse(&text);
        assert_eq!(doc.spec.mode, Mode::Enforce);
        let runtime = doc.spec.runtime.unwrap();
        assert!(runtime.zero_drift);
        let paths: Vec<_> = runtime
            .allowed_executables
            .iter()
            .map(|a| a.path.as_str())
            .collect();
        assert_eq!(paths, ["/data/plugins/tool"]);

        let text = draft(&web(), &options);
        let runtime = parse(&text).spec.runtime.unwrap();
        assert!(runtime.zero_drift && runtime.allowed_executables.is_empty());
        assert!(
            text.contains("every executable seen was the image's own: zeroDrift allows them"),
            "{text}"
        );
    }

    #[test]
    fn prevention_is_drafted_when_everything_ran_from_the_image_outside_scratch_space() {
        let text = draft(&web(), &DraftOptions::default());
        let runtime = parse(&text).spec.runtime.unwrap();
        assert!(runtime.prevent, "{text}");
        assert_eq!(runtime.program_dirs, ["/app/bin"], "/usr is a default");
        assert!(text.contains("# prevention drafted"), "{text}");
    }

    #[test]
    fn prevention_is_not_drafted_when_it_would_stop_what_ran() {
        let mut observed = web();
        observed.observed.push(record(exe("/tmp/x", SH, false), 41));
        let text = draft(&observed, &DraftOptions::default());
        let runtime = parse(&text).spec.runtime.unwrap();
        assert!(
            !runtime.prevent && runtime.program_dirs.is_empty(),
            "{text}"
        );
        assert!(text.contains("# prevention not drafted"), "{text}");
        assert!(
            text.contains(
                "not from the image, containers: app; REVIEW: runs from /tmp, which is writable\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("/tmp/x ran but was not the image's own file"),
            "{text}"
        );
        assert!(text.contains("/tmp/x lives under /tmp"), "{text}");
    }

    #[test]
    fn per_revision_labels_are_not_selected_by() {
        let text = draft(&web(), &DraftOptions::default());
        let doc = parse(&text);
        assert_eq!(
            doc.spec.selector.pod_labels,
            BTreeMap::from([("app".to_string(), "web".to_string())])
        );
        assert!(
            text.contains("left out, they change per revision or pod: pod-template-hash"),
            "{text}"
        );

        let bare = workload(
            &[
                ("controller-revision-hash", "7"),
                ("statefulset.kubernetes.io/pod-name", "db-0"),
            ],
            Vec::new(),
        );
        let text = draft(&bare, &DraftOptions::default());
        let doc = parse(&text);
        assert!(doc.spec.selector.pod_labels.is_empty());
        assert!(
            text.contains("this selects every pod of namespace shop"),
            "{text}"
        );
        assert!(text.contains("Nothing was observed"), "{text}");
    }

    #[test]
    fn a_hostile_path_stays_one_safe_scalar() {
        let hostile = "/app/x\"\nspec: {mode: learn} # y: z\u{85}\u{2028}'";
        let observed = workload(
            &[("app", "a\"b\nc: d")],
            vec![
                record(exe(hostile, SH, true), 1),
                record(
                    Observed::Process {
                        name: "sh\n- evil".into(),
                        parent: "p\r\n#".into(),
                    },
                    1,
                ),
            ],
        );
        let text = draft(&observed, &DraftOptions::default());
        let doc = parse(&text);
        let runtime = doc.spec.runtime.unwrap();
        assert_eq!(runtime.allowed_executables[0].path, hostile);
        assert_eq!(runtime.allowed_processes, ["sh\n- evil"]);
        assert_eq!(doc.spec.selector.pod_labels["app"], "a\"b\nc: d");
        assert_eq!(doc.spec.mode, Mode::Audit);
        // Nothing observed begins a line of its own: every line is a
        // comment, a key or an item the draft wrote.
        for line in text.lines() {
            let line = line.trim_start();
            assert!(
                line.starts_with('#')
                    || line.starts_with("- ")
                    || line.starts_with('"')
                    || line
                        .split_once(':')
                        .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_alphanumeric())),
                "{line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn what_cannot_be_listed_exactly_is_left_out_with_a_comment() {
        let observed = workload(
            &[],
            vec![
                record(exe("/app/run*", SH, true), 1),
                record(exe("/app/server", "not-a-hash", true), 1),
                record(
                    Observed::Executable {
                        path: "/app/unhashed".into(),
                        sha256: None,
                        from_image: true,
                    },
                    1,
                ),
            ],
        );
        let text = draft(&observed, &DraftOptions::default());
        let runtime = parse(&text).spec.runtime.unwrap();
        let paths: Vec<_> = runtime
            .allowed_executables
            .iter()
            .map(|a| a.path.as_str())
            .collect();
        assert_eq!(paths, ["/app/unhashed"]);
        assert!(
            text.contains("left out /app/run*: its path ends in '*'"),
            "{text}"
        );
        assert!(
            text.contains("left out /app/server: its recorded sha256 is not one"),
            "{text}"
        );
        assert!(text.contains("content unknown (not hashed)"), "{text}");
    }

    #[test]
    fn many_destinations_are_noted_and_bounded() {
        let mut observed = workload(&[], Vec::new());
        for i in 0..300u32 {
            let address = IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
            observed.observed.push(record(
                Observed::Egress {
                    address,
                    port: 443,
                    protocol: Protocol::Tcp,
                },
                u64::from(i) + 1,
            ));
        }
        let text = draft(&observed, &DraftOptions::default());
        let egress = parse(&text).spec.runtime.unwrap().egress_allow.unwrap();
        assert_eq!(egress.len(), MAX_EGRESS);
        assert!(
            egress.contains(&"10.1.1.43/32:443".to_string()),
            "the most seen (count 300) is kept"
        );
        assert!(
            !egress.contains(&"10.1.0.0/32:443".to_string()),
            "the least seen goes"
        );
        assert!(
            text.contains("# 44 more destinations were seen and left out"),
            "{text}"
        );
        assert!(
            text.contains("# port 443: 300 distinct addresses (more than 16)"),
            "{text}"
        );
    }

    #[test]
    fn policy_names_are_dns_labels_derived_from_the_workload() {
        assert_eq!(policy_name("Pod", "web-0"), "learned-pod-web-0");
        assert_eq!(policy_name("Pod", "web.v2"), "learned-pod-web-v2");
        let long = "a".repeat(100);
        let name = policy_name("Deployment", &long);
        assert_eq!(name.len(), 63, "{name}");
        assert!(name.starts_with("learned-deployment-aaa"));
        assert_ne!(name, policy_name("Deployment", &format!("{long}b")));
        assert_eq!(policy_name("Pod", "--Ü--"), "learned-pod");
    }
}
