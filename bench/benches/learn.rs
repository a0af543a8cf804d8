//! Learn, review, enforce: drafting a policy from a workload's week of
//! observations at the item bound (2000), replaying the draft against
//! them, and the enforcer's judgement of one exec against allowlists of
//! 10, 100 and 2000 entries.

use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use palisade_bench::learn::{allowlist, hex64, week_of_observations};
use palisade_common::judge::{self, ExecutableFacts};
use palisade_common::policy::PolicyDocument;
use palisade_engine::learn::{draft, replay, DraftOptions};

/// Items a workload keeps at most (`service.max_items_per_workload`).
const BOUND: usize = 2000;

fn learn(c: &mut Criterion) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let week = week_of_observations(BOUND, now_ms);
    let options = DraftOptions::default();
    c.bench_function("learn/draft", |b| {
        b.iter(|| draft(black_box(&week), &options))
    });
    let policy = PolicyDocument::from_yaml(&draft(&week, &options)).expect("a draft parses");
    let observed = [week];
    c.bench_function("learn/replay", |b| {
        b.iter(|| replay(black_box(&policy), &observed))
    });
}

fn judge(c: &mut Criterion) {
    for n in [10, 100, 2000] {
        let rules = allowlist(n);
        // The list's last entry, the image's own file: every entry is
        // looked at before it is found.
        let last = rules.allowed_executables.last().expect("entries");
        let listed = ExecutableFacts {
            path: &last.path,
            sha256: last.sha256.as_deref(),
            from_image: true,
        };
        let sha256 = hex64("dropped");
        let unlisted = ExecutableFacts {
            path: "/tmp/x",
            sha256: Some(&sha256),
            from_image: false,
        };
        assert!(judge::executable(&rules, &listed).is_none());
        assert!(judge::executable(&rules, &unlisted).is_some());
        c.bench_function(&format!("judge/executable/{n}/listed"), |b| {
            b.iter(|| judge::executable(black_box(&rules), black_box(&listed)))
        });
        c.bench_function(&format!("judge/executable/{n}/unlisted"), |b| {
            b.iter(|| judge::executable(black_box(&rules), black_box(&unlisted)))
        });
        // The drift check's question for a file not from the image.
        c.bench_function(&format!("judge/pinned/{n}/unlisted"), |b| {
            b.iter(|| judge::pinned(black_box(&rules), black_box(&unlisted)))
        });
    }
}

criterion_group!(benches, learn, judge);
criterion_main!(benches);
