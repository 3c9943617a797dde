//! The six targets of the benchmark issue, judged from one `compare` run's medians, so every
//! table says by itself which targets held in that run instead of each reader working it out.
//!
//! A ratio target holds only against every JetStream of the run (2.9 and a current release): the
//! slower JetStream of an hour is not the one that counts.

use std::fmt::Write as _;

use crate::compare::thousands;

/// One case's medians, as `compare` renders them.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseMedians {
    /// The case's name in the table ("publish", "latency-sync-50k", ...).
    pub name: String,
    /// The figure the case compares (msgs/s, or ms for the latency cases), one per contender:
    /// Weir first, then each JetStream.
    pub figure: Vec<Option<f64>>,
    /// Weir's publish rate in the same runs (msgs/s).
    pub weir_publish: Option<f64>,
    /// Weir's peak resident memory in the same runs (MiB).
    pub weir_peak_rss_mib: Option<f64>,
}

/// Whether a target held, and the figures that decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub number: u8,
    pub target: &'static str,
    /// `None`: its case was not in this run.
    pub met: Option<bool>,
    pub measured: String,
}

const PUBLISH_RATIO: f64 = 1.5;
const PUBSUB_RATIO: f64 = 2.0;
const SYNC_MSGS_PER_S: f64 = 150_000.0;
const SYNC_50K_P99_MS: f64 = 5.0;
const PARTITIONS_SHARE: f64 = 0.8;
const BACKLOG_RSS_MIB: f64 = 512.0;

/// The targets in the order (target `n` is `TARGETS[n - 1]`).
const TARGETS: [&str; 6] = [
    "Async publish ≥ 1.5× JetStream",
    "publish and consume together ≥ 2× JetStream",
    "Sync publish ≥ 150,000 msgs/s",
    "end-to-end p99 ≤ 5 ms at 50,000 msgs/s, Sync",
    "1,024 partitions ≥ 80% of 8",
    "backlog: RSS < 512 MiB, drain from disk ≥ publish rate",
];

/// The six verdicts for a run's cases; `jetstreams` names the JetStream columns in order.
pub fn judge(cases: &[CaseMedians], jetstreams: &[&str]) -> Vec<Verdict> {
    let find = |name: &str| cases.iter().find(|c| c.name == name);
    let weir = |name: &str| find(name).and_then(|c| c.figure.first().copied().flatten());
    let sync =
        weir("publish-sync").map(|rate| (rate >= SYNC_MSGS_PER_S, format!("publish-sync {} msgs/s", thousands(rate))));
    let latency = weir("latency-sync-50k").map(|p99| (p99 <= SYNC_50K_P99_MS, format!("latency-sync-50k {p99:.2} ms")));
    let partitions = match (weir("partitions-1024"), weir("publish")) {
        (Some(many), Some(eight)) if eight > 0.0 => Some((
            many >= PARTITIONS_SHARE * eight,
            format!(
                "partitions-1024 {} against publish {} msgs/s: {:.0}%",
                thousands(many),
                thousands(eight),
                100.0 * many / eight
            ),
        )),
        _ => None,
    };
    let backlog = find("backlog").and_then(|c| {
        let (drain, publish) = (c.figure.first().copied().flatten()?, c.weir_publish.filter(|p| *p > 0.0)?);
        let rss = c.weir_peak_rss_mib;
        Some((
            drain >= publish && rss.is_some_and(|r| r < BACKLOG_RSS_MIB),
            format!(
                "backlog drained at {} msgs/s against {} published ({:.0}%), peak RSS {}",
                thousands(drain),
                thousands(publish),
                100.0 * drain / publish,
                rss.map_or("not measured".into(), |r| format!("{r:.0} MiB"))
            ),
        ))
    });
    [
        ratio(find("publish"), jetstreams, PUBLISH_RATIO).ok_or("publish"),
        ratio(find("pubsub"), jetstreams, PUBSUB_RATIO).ok_or("pubsub"),
        sync.ok_or("publish-sync"),
        latency.ok_or("latency-sync-50k"),
        partitions.ok_or("partitions-1024 and publish"),
        backlog.ok_or("backlog (--backlog-gib)"),
    ]
    .into_iter()
    .zip(1..)
    .map(|(judged, number)| {
        let target = TARGETS[usize::from(number) - 1];
        match judged {
            Ok((met, measured)) => Verdict { number, target, met: Some(met), measured },
            Err(case) => Verdict { number, target, met: None, measured: format!("{case} not in this run") },
        }
    })
    .collect()
}

/// Weir against every JetStream on a throughput case: whether it held against all, and the
/// figures; `None` without the case or Weir's figure.
fn ratio(case: Option<&CaseMedians>, jetstreams: &[&str], at_least: f64) -> Option<(bool, String)> {
    let case = case?;
    let weir = case.figure.first().copied().flatten()?;
    let mut met = !jetstreams.is_empty();
    let mut parts = Vec::new();
    // Indexed, not zipped: a JetStream column without a figure must fail the target, not vanish.
    for (i, label) in jetstreams.iter().enumerate() {
        match case.figure.get(i + 1).copied().flatten() {
            Some(theirs) if theirs > 0.0 => {
                let r = weir / theirs;
                met &= r >= at_least;
                parts.push(format!("{r:.2}× {label} ({})", thousands(theirs)));
            }
            _ => {
                met = false;
                parts.push(format!("{label} not measured"));
            }
        }
    }
    Some((met, format!("{} {} msgs/s: {}", case.name, thousands(weir), parts.join(", "))))
}

/// The verdicts as a Markdown table and a count.
pub fn render(verdicts: &[Verdict]) -> String {
    let mut out = String::from("| # | target | measured (Weir, medians) | met? |\n|---|---|---|---|\n");
    for v in verdicts {
        let met = match v.met {
            Some(true) => "**yes**",
            Some(false) => "no",
            None => "–",
        };
        let _ = writeln!(out, "| {} | {} | {} | {met} |", v.number, v.target, v.measured);
    }
    let judged = verdicts.iter().filter(|v| v.met.is_some()).count();
    let met = verdicts.iter().filter(|v| v.met == Some(true)).count();
    let _ = writeln!(out, "\nMet in this run: {met} of the {judged} targets whose cases ran.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, figure: &[Option<f64>]) -> CaseMedians {
        CaseMedians { name: name.into(), figure: figure.to_vec(), weir_publish: None, weir_peak_rss_mib: None }
    }

    fn full_run(publish: f64, jetstream_publish: [f64; 2]) -> Vec<CaseMedians> {
        vec![
            case("publish", &[Some(publish), Some(jetstream_publish[0]), Some(jetstream_publish[1])]),
            case("pubsub", &[Some(150_000.0), Some(70_000.0), Some(72_000.0)]),
            case("publish-sync", &[Some(155_000.0), None, Some(4_600.0)]),
            case("latency-sync-50k", &[Some(4.28), None, Some(57_000.0)]),
            case("partitions-1024", &[Some(0.8 * publish), Some(1.0), Some(1.0)]),
            CaseMedians {
                weir_publish: Some(277_000.0),
                weir_peak_rss_mib: Some(61.0),
                ..case("backlog", &[Some(345_000.0), None, Some(109_000.0)])
            },
        ]
    }

    const JETSTREAMS: [&str; 2] = ["JetStream 2.9.10", "JetStream 2.15.1"];

    fn met(verdicts: &[Verdict]) -> Vec<Option<bool>> {
        verdicts.iter().map(|v| v.met).collect()
    }

    #[test]
    fn a_run_meeting_every_target_says_so() {
        let verdicts = judge(&full_run(300_000.0, [200_000.0, 160_000.0]), &JETSTREAMS);
        assert_eq!(met(&verdicts), [Some(true); 6]);
        assert!(render(&verdicts).contains("Met in this run: 6 of the 6 targets"));
    }

    /// 1.47× against 2.9.10 fails target 1 even though 1.87× against 2.15.1 would pass.
    #[test]
    fn a_ratio_must_hold_against_every_jetstream() {
        let verdicts = judge(&full_run(296_878.0, [201_865.0, 158_623.0]), &JETSTREAMS);
        assert_eq!(verdicts[0].met, Some(false));
        assert!(verdicts[0].measured.contains("1.47× JetStream 2.9.10"), "{}", verdicts[0].measured);
        assert!(verdicts[0].measured.contains("1.87× JetStream 2.15.1"), "{}", verdicts[0].measured);
    }

    #[test]
    fn each_threshold_is_inclusive_and_just_below_it_fails() {
        let mut run = full_run(300_000.0, [200_000.0, 160_000.0]);
        run[2].figure[0] = Some(149_999.0);
        run[3].figure[0] = Some(5.01);
        run[4].figure[0] = Some(0.79 * 300_000.0);
        run[5].weir_peak_rss_mib = Some(512.0);
        assert_eq!(met(&judge(&run, &JETSTREAMS))[2..], [Some(false); 4]);
        run[2].figure[0] = Some(150_000.0);
        run[3].figure[0] = Some(5.0);
        run[5].weir_peak_rss_mib = Some(511.0);
        run[5].figure[0] = Some(276_999.0);
        assert_eq!(met(&judge(&run, &JETSTREAMS))[2..], [Some(true), Some(true), Some(false), Some(false)]);
    }

    /// A JetStream that failed to run cannot be beaten by a ratio; a case missing from the run
    /// (`--only`, or no `--backlog-gib`) is not judged at all.
    #[test]
    fn missing_figures_are_not_counted_as_met() {
        let mut run = full_run(300_000.0, [200_000.0, 160_000.0]);
        run[1].figure[1] = None;
        run[0].figure.truncate(2);
        run.retain(|c| c.name != "backlog");
        let verdicts = judge(&run, &JETSTREAMS);
        assert_eq!(verdicts[0].met, Some(false), "{}", verdicts[0].measured);
        assert!(verdicts[0].measured.contains("JetStream 2.15.1 not measured"), "{}", verdicts[0].measured);
        assert_eq!(verdicts[1].met, Some(false));
        assert_eq!(verdicts[5].met, None);
        assert!(render(&verdicts).contains("Met in this run: 3 of the 5 targets"));
        let only_backlog = judge(&full_run(300_000.0, [200_000.0, 160_000.0])[5..], &JETSTREAMS);
        assert_eq!(met(&only_backlog), [None, None, None, None, None, Some(true)]);
    }
}
