//! What the pod was seen doing, summed between two sends: the raw
//! material of learned allowlists (`palisade policy draft`). Pure and
//! bounded: the monitor adds one sighting per judged process or new
//! socket (a hash-map update), the reporter takes the sums every interval
//! and, when the service cannot be reached, puts them back.
//!
//! Sums, not sightings: a pod that runs the same program a million times
//! sends one entry with its count. What does not fit the bound, and what
//! the service would refuse as malformed, is counted as overflow so the
//! service can say its view is incomplete.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use palisade_common::observe::{Observation, Observed, MAX_TEXT};

/// Distinct (container, item) entries kept between two sends. An entry
/// is at most about 400 bytes on the wire, so a full batch stays far below
/// the service's body limit; a pod that shows more than this in one
/// interval is not one a learned allowlist can describe anyway.
pub const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    count: u64,
    first_ms: i64,
    last_ms: i64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.count = self.count.saturating_add(other.count);
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
    }
}

/// The observations taken for one send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sums {
    /// Sorted by container and item, so a batch reads the same every time.
    pub observations: Vec<Observation>,
    /// Sightings not kept (see [`Observations`]).
    pub overflow: u64,
}

impl Sums {
    pub fn is_empty(&self) -> bool {
        self.observations.is_empty() && self.overflow == 0
    }
}

/// Sightings summed per container and item, at most `max` entries.
#[derive(Debug)]
pub struct Observations {
    entries: HashMap<(String, Observed), Tally>,
    overflow: u64,
    max: usize,
}

impl Default for Observations {
    fn default() -> Self {
        Self::new(MAX_ENTRIES)
    }
}

impl Observations {
    pub fn new(max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            overflow: 0,
            max,
        }
    }

    /// One sighting of `item` in `container` (a container ID, or empty)
    /// at `at_ms`.
    pub fn record(&mut self, container: &str, item: Observed, at_ms: i64) {
        let tally = Tally {
            count: 1,
            first_ms: at_ms,
            last_ms: at_ms,
        };
        self.add(container.to_string(), item, tally);
    }

    fn add(&mut self, container: String, item: Observed, tally: Tally) {
        // The service refuses a whole batch for one malformed item (a path
        // past its length limit, an empty name): such items are counted,
        // never sent.
        if item.check().is_err() || container.len() > MAX_TEXT {
            self.overflow = self.overflow.saturating_add(tally.count);
            return;
        }
        let full = self.entries.len() >= self.max;
        match self.entries.entry((container, item)) {
            Entry::Occupied(mut known) => known.get_mut().merge(tally),
            Entry::Vacant(new) if !full => {
                new.insert(tally);
            }
            Entry::Vacant(_) => self.overflow = self.overflow.saturating_add(tally.count),
        }
    }

    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.overflow == 0
    }

    /// Everything summed since the last take; the aggregator starts afresh.
    pub fn take(&mut self) -> Sums {
        let mut observations: Vec<Observation> = self
            .entries
            .drain()
            .map(|((container, item), t)| Observation {
                container,
                item,
                count: t.count,
                first_ms: t.first_ms,
                last_ms: t.last_ms,
            })
            .collect();
        observations.sort_by(|a, b| (&a.container, &a.item).cmp(&(&b.container, &b.item)));
        Sums {
            observations,
            overflow: std::mem::take(&mut self.overflow),
        }
    }

    /// Puts back sums that could not be sent, merged with what was seen
    /// since: nothing is lost to a failed send but what the bound refuses
    /// (counted as overflow, as always).
    pub fn restore(&mut self, sums: Sums) {
        self.overflow = self.overflow.saturating_add(sums.overflow);
        for o in sums.observations {
            let tally = Tally {
                count: o.count,
                first_ms: o.first_ms,
                last_ms: o.last_ms,
            };
            self.add(o.container, o.item, tally);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::observe::Protocol;

    const APP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn exe(path: &str) -> Observed {
        Observed::Executable {
            path: path.into(),
            sha256: Some("ab".repeat(32)),
            from_image: true,
        }
    }

    fn listen(port: u16) -> Observed {
        Observed::Listen {
            protocol: Protocol::Tcp,
            port,
        }
    }

    #[test]
    fn the_same_item_in_the_same_container_is_summed_with_its_first_and_last_sighting() {
        let mut seen = Observations::default();
        seen.record(APP, exe("/app/server"), 30);
        seen.record(APP, exe("/app/server"), 10);
        seen.record(APP, exe("/app/server"), 20);
        seen.record("", exe("/app/server"), 40);
        let sums = seen.take();
        assert_eq!(sums.overflow, 0);
        assert_eq!(
            sums.observations,
            [
                Observation {
                    container: String::new(),
                    item: exe("/app/server"),
                    count: 1,
                    first_ms: 40,
                    last_ms: 40,
                },
                Observation {
                    container: APP.into(),
                    item: exe("/app/server"),
                    count: 3,
                    first_ms: 10,
                    last_ms: 30,
                },
            ]
        );
    }

    #[test]
    fn a_take_starts_afresh() {
        let mut seen = Observations::default();
        seen.record("", listen(8080), 1);
        assert!(!seen.is_empty());
        assert_eq!(seen.take().observations.len(), 1);
        assert!(seen.is_empty());
        assert!(seen.take().is_empty());
    }

    #[test]
    fn beyond_the_bound_new_items_are_counted_not_kept_and_known_ones_still_sum() {
        let mut seen = Observations::new(2);
        seen.record("", listen(1), 1);
        seen.record("", listen(2), 1);
        seen.record("", listen(3), 1);
        seen.record("", listen(3), 2);
        seen.record("", listen(1), 3);
        let sums = seen.take();
        assert_eq!(sums.overflow, 2);
        let counts: Vec<u64> = sums.observations.iter().map(|o| o.count).collect();
        assert_eq!(counts, [2, 1]);
    }

    #[test]
    fn what_the_service_would_refuse_is_counted_never_sent() {
        let mut seen = Observations::default();
        seen.record("", exe(&format!("/{}", "a".repeat(MAX_TEXT))), 1);
        seen.record(
            "",
            Observed::Process {
                name: String::new(),
                parent: "sh".into(),
            },
            1,
        );
        let sums = seen.take();
        assert!(sums.observations.is_empty());
        assert_eq!(sums.overflow, 2);
    }

    #[test]
    fn a_failed_send_is_restored_and_merged_with_what_came_since() {
        let mut seen = Observations::default();
        seen.record(APP, exe("/app/server"), 10);
        seen.record("", listen(9), 10);
        let failed = seen.take();
        seen.record(APP, exe("/app/server"), 50);
        seen.restore(failed);
        let sums = seen.take();
        let server = sums
            .observations
            .iter()
            .find(|o| o.item == exe("/app/server"))
            .unwrap();
        assert_eq!((server.count, server.first_ms, server.last_ms), (2, 10, 50));
        assert_eq!(sums.observations.len(), 2);
    }

    #[test]
    fn restoring_stays_within_the_bound() {
        let mut seen = Observations::new(2);
        seen.record("", listen(1), 1);
        seen.record("", listen(2), 1);
        let failed = seen.take();
        seen.record("", listen(3), 1);
        seen.record("", listen(4), 1);
        seen.restore(Sums {
            overflow: 5,
            ..failed
        });
        let sums = seen.take();
        assert_eq!(sums.observations.len(), 2);
        assert_eq!(sums.overflow, 5 + 2, "earlier overflow kept, two refused");
    }
}
