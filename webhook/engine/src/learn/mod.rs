//! Learned runtime allowlists: a RuntimePolicy drafted from what a
//! workload's enforcers saw it do (`palisade policy draft`), and a policy
//! replayed against recorded behaviour (`palisade policy replay`) with the
//! judgement the enforcer applies (`palisade_common::judge`).
//!
//! Both are pure: observations come in as values (the CLI fetches them from
//! the policy service), YAML text or a typed result goes out, so every
//! decision is tested without a server.
//!
//! - `draft`: what a draft allows, and how it says why (YAML with comments).
//! - `prevention`: whether a draft may confine the app, and where programs
//!   live.
//! - `replay`: which findings a policy would have had, and their outcomes.
//! - `yaml`: quoting that keeps any observed text one safe scalar or one
//!   comment line.

mod draft;
#[cfg(test)]
mod fixtures;
mod prevention;
mod replay;
mod yaml;

pub use draft::{draft, DraftOptions, MANY_ADDRESSES, MAX_EGRESS};
pub use replay::{replay, selects, Replay, ReplayFinding, WorkloadReplay};

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use palisade_common::observe::{Observed, ObservedRecord};

/// What was seen of one item across a workload's containers: the records
/// the service keeps per container, summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tally {
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Container names (or IDs where the service could not name them).
    pub containers: BTreeSet<String>,
}

impl Tally {
    fn of(record: &ObservedRecord) -> Self {
        Self {
            count: record.count,
            first_ms: record.first_ms,
            last_ms: record.last_ms,
            containers: BTreeSet::from([record.container.clone()]),
        }
    }

    pub fn add(&mut self, other: &Tally) {
        // Counts come from the network: saturate rather than overflow.
        self.count = self.count.saturating_add(other.count);
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
        self.containers.extend(other.containers.iter().cloned());
    }

    /// `app, sidecar`; an unnamed container shows as `(unknown)`.
    pub fn containers_text(&self) -> String {
        self.containers
            .iter()
            .map(|c| {
                if c.is_empty() {
                    "(unknown)"
                } else {
                    c.as_str()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every distinct item of `records` with its tally across containers.
pub(crate) fn tally(records: &[ObservedRecord]) -> BTreeMap<&Observed, Tally> {
    let mut items: BTreeMap<&Observed, Tally> = BTreeMap::new();
    for record in records {
        let seen = Tally::of(record);
        items
            .entry(&record.item)
            .and_modify(|t| t.add(&seen))
            .or_insert(seen);
    }
    items
}

/// Last second humantime can print (the end of year 9999).
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

/// UTC RFC 3339 (seconds) from Unix milliseconds. Times come from
/// enforcers over the network; humantime panics past year 9999, so a time
/// out of its range is shown as the number it is.
pub fn rfc3339(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(unsigned) if ms <= MAX_RFC3339_MS => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unsigned))
                .to_string()
        }
        _ => format!("{ms} ms since the epoch"),
    }
}

/// A span of milliseconds as a person reads it, to the second (`1h 2m 3s`).
pub fn duration_text(ms: i64) -> String {
    let seconds = u64::try_from(ms).unwrap_or(0) / 1000;
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

/// Text for a terminal: as it is when it has no control characters, else
/// escaped, so an observed path cannot move the cursor or fake a line.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if text.chars().any(yaml::needs_escape) {
        Cow::Owned(text.escape_debug().to_string())
    } else {
        Cow::Borrowed(text)
    }
}

/// `1 time`, `2 times`.
pub(crate) fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_out_of_humantimes_range_are_shown_not_panicked_on() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_630_462_000), "2026-12-07T08:01:02Z");
        assert_eq!(rfc3339(MAX_RFC3339_MS), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(i64::MAX),
            format!("{} ms since the epoch", i64::MAX)
        );
        assert_eq!(rfc3339(-1), "-1 ms since the epoch");
        assert_eq!(duration_text(3_723_400), "1h 2m 3s");
        assert_eq!(duration_text(-5), "0s");
    }

    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(printable("/usr/bin/curl"), "/usr/bin/curl");
        assert_eq!(printable("/tmp/a\nb\u{1b}[2J"), "/tmp/a\\nb\\u{1b}[2J");
        assert_eq!(printable("/tmp/\u{2028}x"), "/tmp/\\u{2028}x");
    }
}
