//! `weir-bench compare`: every scenario of the suite against Weir and one or more NATS JetStream
//! servers (e.g. Debian's 2.9 and a current release), interleaved over several repetitions, each
//! repetition starting with the next system (Weir, JetStream 2.9, JetStream 2.15; then JetStream
//! 2.9, JetStream 2.15, Weir; ...), plus the disk's own sequential write limit; prints one Markdown
//! table of medians with the Weir/JetStream ratio per JetStream, and which of the benchmark
//! issue's targets held (`targets.rs`).
//!
//! Each run is a child `weir-bench run --json` process with its own fresh server, so no run
//! inherits another's caches, connections or memory.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::system::{self, Environment, System};
use crate::targets::{self, CaseMedians};
use crate::{disk, wakeup};

/// The knobs of a comparison.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Repetitions of the whole suite (medians and min–max are reported).
    #[arg(long, default_value_t = 3)]
    pub repetitions: usize,
    /// Messages per run (some cases use a fraction, see the table).
    #[arg(long, default_value_t = 200_000)]
    pub count: u64,
    /// Run only these cases (by name; repeatable).
    #[arg(long)]
    pub only: Vec<String>,
    /// Add the deep-backlog case: publish this many GiB, then drain it from the disk.
    #[arg(long)]
    pub backlog_gib: Option<f64>,
    /// Also write the table to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// A nats-server binary to compare with (repeatable: one column per JetStream version).
    #[arg(long = "nats-server", default_value = "nats-server")]
    pub nats_servers: Vec<PathBuf>,
    /// Seconds without load before each run of a fixed-rate latency case, and after the disk
    /// measurement that starts each repetition. On a VM that hands
    /// free memory back to its host (BENCHMARKS.md, "Memory of this VM"), a run that freed a
    /// few GiB of page cache stalled the latency run right after it: Weir's Sync p99 at 50,000
    /// msgs/s was 16–26 ms straight after such a run of another system, 2.6–3.1 ms 10 s later.
    #[arg(long, default_value_t = 10)]
    pub settle_seconds: u64,
    #[command(flatten)]
    pub env: Environment,
}

/// A system in the comparison: Weir, or JetStream from one nats-server binary.
struct Contender {
    system: System,
    nats_server: PathBuf,
    /// The column heading: "Weir", "JetStream 2.15.1".
    label: String,
}

/// Weir first, then one JetStream per `--nats-server`, labelled with its version.
fn contenders(args: &CompareArgs) -> Result<Vec<Contender>> {
    let first = args.nats_servers.first().cloned().unwrap_or_else(|| "nats-server".into());
    let mut all = vec![Contender { system: System::Weir, nats_server: first, label: "Weir".into() }];
    for path in &args.nats_servers {
        let version = system::nats_server_version(path)?;
        all.push(Contender {
            system: System::Jetstream,
            nats_server: path.clone(),
            label: format!("JetStream {version}"),
        });
    }
    Ok(all)
}

/// Which figure of a run a case compares.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Figure {
    /// Acknowledged publishes per second.
    Publish,
    /// Messages received (and acknowledged) per second, over all consumers.
    Consume,
    /// End-to-end p99 in milliseconds (lower is better).
    EndToEndP99,
}

/// One row of the table.
#[derive(Debug)]
struct Case {
    name: String,
    about: String,
    args: Vec<String>,
    /// Messages of this case's runs, as a fraction of `--count`.
    count_fraction: f64,
    figure: Figure,
    /// Compared with the disk limit (publish cases): with fdatasync per write (Sync) or not.
    disk: Option<bool>,
}

fn case(name: &str, about: &str, args: &str, figure: Figure) -> Case {
    let args = args.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let sync = args.windows(2).any(|w| w[0] == "--durability" && w[1] == "sync");
    let disk = (figure == Figure::Publish).then_some(sync);
    Case { name: name.into(), about: about.into(), args, count_fraction: 1.0, figure, disk }
}

impl Case {
    /// Whether its runs start after `--settle-seconds` without load: a tail latency is what
    /// the previous run's after-effects spoil; throughput over a run is hardly moved by them.
    fn settles(&self) -> bool {
        self.figure == Figure::EndToEndP99
    }
}

/// The suite: 1 KiB messages; 256 messages in flight per producer (16 requests of 16, or 256 of 1)
/// except where a case says otherwise.
fn cases(args: &CompareArgs) -> Vec<Case> {
    const BATCHED: &str = "--batch 16 --window 16";
    const LATENCY: &str = "--batch 16 --window 64 --warmup-seconds 1";
    let mut cases = vec![
        case(
            "publish",
            "Async, 8 partitions, batches of 16",
            &format!("--scenario publish {BATCHED}"),
            Figure::Publish,
        ),
        case(
            "publish-single",
            "Async, 8 partitions, one message per request",
            "--scenario publish --batch 1 --window 256",
            Figure::Publish,
        ),
        case(
            "publish-4-producers",
            "Async, 4 producer connections, batches of 16",
            &format!("--scenario publish --producers 4 {BATCHED}"),
            Figure::Publish,
        ),
        case(
            "publish-sync",
            "Sync (fdatasync before ack), batches of 16",
            &format!("--scenario publish --durability sync {BATCHED}"),
            Figure::Publish,
        ),
        // Group commit grows with what is in flight: 1,024 messages (64 requests of 16).
        case(
            "publish-sync-deep",
            "Sync, 64 requests of 16 in flight",
            "--scenario publish --durability sync --batch 16 --window 64",
            Figure::Publish,
        ),
        case("pubsub", "Async, publish and consume together", &format!("--scenario pubsub {BATCHED}"), Figure::Consume),
        // Sustained: the cases above write about 210 MiB in a second or two. Fifteen and ten
        // times as many messages show what a broker keeps up once the page cache it fills is
        // no longer free memory it gets cheaply (BENCHMARKS.md, "Memory of this VM").
        Case {
            count_fraction: 15.0,
            ..case(
                "publish-sustained",
                "Async, batches of 16, 15 times the messages",
                &format!("--scenario publish {BATCHED}"),
                Figure::Publish,
            )
        },
        Case {
            count_fraction: 10.0,
            ..case(
                "pubsub-sustained",
                "Async, publish and consume together, 10 times the messages",
                &format!("--scenario pubsub {BATCHED}"),
                Figure::Consume,
            )
        },
        // Open loop at fixed rates, 16 messages per request (3,125 requests/s at 50,000 msgs/s).
        // Steady state: messages sent in the first second are left out (5 s at 50,000 msgs/s:
        // 4 s measured; 10 s at 20,000).
        Case {
            count_fraction: 1.25,
            ..case(
                "latency-sync-50k",
                "Sync, fixed 50,000 msgs/s, end-to-end p99 ms after 1 s warm-up",
                &format!("--scenario pubsub --durability sync --rate 50000 {LATENCY}"),
                Figure::EndToEndP99,
            )
        },
        case(
            "latency-sync-20k",
            "Sync, fixed 20,000 msgs/s, end-to-end p99 ms after 1 s warm-up",
            &format!("--scenario pubsub --durability sync --rate 20000 {LATENCY}"),
            Figure::EndToEndP99,
        ),
        case(
            "latency-async-20k",
            "Async, fixed 20,000 msgs/s, end-to-end p99 ms after 1 s warm-up",
            &format!("--scenario pubsub --rate 20000 {LATENCY}"),
            Figure::EndToEndP99,
        ),
        case(
            "drain-cache",
            "backlog consumed from the page cache",
            &format!("--scenario drain {BATCHED} --receive-batch 256"),
            Figure::Consume,
        ),
        case(
            "drain-disk",
            "backlog evicted from the page cache, consumed from disk",
            &format!("--scenario drain-cold {BATCHED} --receive-batch 256"),
            Figure::Consume,
        ),
        case(
            "partitions-1",
            "Async publish, 1 partition",
            &format!("--scenario publish --partitions 1 {BATCHED}"),
            Figure::Publish,
        ),
        case(
            "partitions-64",
            "Async publish, 64 partitions",
            &format!("--scenario publish --partitions 64 {BATCHED}"),
            Figure::Publish,
        ),
        case(
            "partitions-1024",
            "Async publish, 1024 partitions",
            &format!("--scenario publish --partitions 1024 {BATCHED}"),
            Figure::Publish,
        ),
        Case {
            count_fraction: 0.1,
            ..case(
                "broadcast-20",
                "fan-out: 20 consumers each get every message",
                &format!("--scenario pubsub --fan-out --consumers 20 {BATCHED}"),
                Figure::Consume,
            )
        },
    ];
    if let Some(gib) = args.backlog_gib {
        let count = gib * (1u64 << 30) as f64 / 1024.0;
        cases.push(Case {
            count_fraction: count / args.count as f64,
            ..case(
                "backlog",
                &format!("{gib} GiB backlog, drained from disk"),
                &format!("--scenario drain-cold {BATCHED} --receive-batch 256"),
                Figure::Consume,
            )
        });
    }
    if !args.only.is_empty() {
        cases.retain(|c| args.only.contains(&c.name));
    }
    cases
}

/// What one run reported, or why it did not.
type Run = std::result::Result<Value, String>;

/// Runs the suite and prints (and optionally writes) the table.
pub async fn compare(args: CompareArgs) -> Result<()> {
    let cases = cases(&args);
    if cases.is_empty() {
        bail!("no case matches --only {:?}", args.only);
    }
    let contenders = contenders(&args)?;
    let scratch = args.env.scratch.clone().unwrap_or_else(std::env::temp_dir);
    let mut runs: Vec<Vec<Vec<Run>>> = cases.iter().map(|_| contenders.iter().map(|_| Vec::new()).collect()).collect();
    let mut disk_limits: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut wakeups = Vec::new();
    for repetition in 1..=args.repetitions {
        wakeups.extend(wakeup::round_trip_micros()?);
        let bytes = args.count * 1024;
        for (slot, sync) in [false, true].into_iter().enumerate() {
            disk_limits[slot].push(disk::sequential_write_mib_per_s(&scratch, bytes, sync)?);
        }
        // The disk measurement wrote and deleted a few hundred MiB: the same pause as before a
        // fixed-rate run, so the first run after it does not meet the memory it just freed.
        tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
        for (c, case) in cases.iter().enumerate() {
            for s in turn_order(contenders.len(), repetition - 1) {
                let contender = &contenders[s];
                eprintln!("[{repetition}/{}] {} on {}", args.repetitions, case.name, contender.label);
                if case.settles() {
                    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
                }
                let run = run_child(contender, case, &args).await?;
                if let Err(why) = &run {
                    eprintln!("  not measured: {why}");
                }
                runs[c][s].push(run);
            }
        }
    }
    let table = render(&args, &contenders, &cases, &runs, &disk_limits, &wakeups)?;
    println!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
        // Every run's full report, one JSON object per line, next to the table.
        let raw: String = cases
            .iter()
            .zip(&runs)
            .flat_map(|(case, systems)| {
                let reports = systems.iter().flatten().filter_map(|r| r.as_ref().ok());
                reports.map(|r| format!("{}\n", serde_json::json!({"case": case.name, "report": r})))
            })
            .collect();
        let path = path.with_extension("jsonl");
        std::fs::write(&path, raw).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The order the systems run a case in, repetition `round` (from 0): each repetition starts one
/// system later, so that over as many repetitions as systems each opens a case once, right after
/// the previous case's last run (or the disk measurement). A run's figures depend on what ran
/// just before it on this machine (memory it freed, caches it left: BENCHMARKS.md, "Memory of
/// this VM"); a fixed order would hand the first system that place every time.
fn turn_order(systems: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..systems).map(move |i| (i + round) % systems)
}

async fn run_child(contender: &Contender, case: &Case, args: &CompareArgs) -> Result<Run> {
    let system = contender.system;
    let count = ((args.count as f64 * case.count_fraction) as u64).max(1000);
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .args(["run", "--json", "--system", &format!("{system:?}").to_lowercase(), "--count", &count.to_string()])
        .args(&case.args)
        .args(args.env.as_args())
        .arg("--nats-server")
        .arg(&contender.nats_server)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(1800), command.output())
        .await
        .context("a run took more than 30 minutes")??;
    if !output.status.success() {
        // anyhow's report: "Error: <context>", then the causes, then possibly a backtrace.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let why = stderr
            .lines()
            .take_while(|l| !l.starts_with("Stack backtrace"))
            .map(|l| l.trim().trim_start_matches("Error: "))
            .filter(|l| !l.is_empty() && *l != "Caused by:")
            .collect::<Vec<_>>()
            .join(" / ");
        return Ok(Err(why));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().context("a run printed nothing")?;
    Ok(Ok(serde_json::from_str(line).with_context(|| format!("a run printed {line:?}"))?))
}

/// Median, min and max.
fn spread(mut values: Vec<f64>) -> Option<(f64, f64, f64)> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let median = *values.get(values.len() / 2)?;
    Some((median, values[0], values[values.len() - 1]))
}

fn figure_of(run: &Value, figure: Figure) -> Option<f64> {
    match figure {
        Figure::Publish => run["publish_msgs_per_s"].as_f64(),
        Figure::Consume => run["consume_msgs_per_s"].as_f64(),
        Figure::EndToEndP99 => run["end_to_end"]["p99_ms"].as_f64(),
    }
}

/// The p99 latency a case is judged by: send-to-ack for publishing, end-to-end otherwise.
fn p99_of(run: &Value, figure: Figure) -> Option<f64> {
    match figure {
        Figure::Publish => run["send_ack"]["p99_ms"].as_f64(),
        _ => run["end_to_end"]["p99_ms"].as_f64(),
    }
}

fn cell(values: Option<(f64, f64, f64)>, figure: Figure) -> String {
    match values {
        None => "n/a".into(),
        Some((median, min, max)) if figure == Figure::EndToEndP99 => format!("{median:.2} ms ({min:.2}–{max:.2})"),
        Some((median, min, max)) => format!("{} ({}–{})", thousands(median), thousands(min), thousands(max)),
    }
}

pub(crate) fn thousands(v: f64) -> String {
    let digits = format!("{v:.0}");
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn render(
    args: &CompareArgs,
    contenders: &[Contender],
    cases: &[Case],
    runs: &[Vec<Vec<Run>>],
    disk_limits: &[Vec<f64>; 2],
    wakeups: &[f64],
) -> Result<String> {
    let mut out = String::new();
    let machine = machine();
    let labels: Vec<&str> = contenders.iter().map(|c| c.label.as_str()).collect();
    writeln!(
        out,
        "{}, {} repetitions, 1 KiB messages, single node, replication 1.",
        labels.join(" vs "),
        args.repetitions
    )?;
    writeln!(out, "Machine: {machine}. Client and server share the machine.")?;
    if let Some(threads) = args.env.server_threads {
        writeln!(out, "Servers confined to {threads} scheduler thread(s): weir-sidecar --worker-threads, GOMAXPROCS.")?;
    }
    let [async_disk, sync_disk] = disk_limits.clone().map(spread);
    let disk =
        |d: Option<(f64, f64, f64)>| d.map_or("n/a".into(), |(m, lo, hi)| format!("{m:.0} MiB/s ({lo:.0}–{hi:.0})"));
    writeln!(
        out,
        "Disk sequential write limit ({} MiB in 1 MiB writes): {} with one fdatasync at the end, {} with fdatasync after every write.\n",
        args.count / 1024,
        disk(async_disk),
        disk(sync_disk)
    )?;
    if let Some((median, lo, hi)) = spread(wakeups.to_vec()) {
        writeln!(
            out,
            "{}, at the start of each repetition: {median:.1} µs ({lo:.1}–{hi:.1}). Every system here is threads \
             waking each other; compare tables measured at similar values (BENCHMARKS.md).\n",
            wakeup::WHAT
        )?;
    }
    writeln!(
        out,
        "Figures are medians (min–max). Throughput in msgs/s, higher is better; latency in ms, lower is better. \
         Each repetition starts with the next system. Runs of the fixed-rate cases, and the first run after each \
         disk measurement, start after {} s without load.\n",
        args.settle_seconds
    )?;
    let jetstreams = &labels[1..];
    let all = labels.join(" / ");
    let mut header = vec!["case".to_owned(), "what".to_owned()];
    header.extend(labels.iter().map(|l| l.to_string()));
    header.extend(jetstreams.iter().map(|j| format!("Weir/{j}")));
    for figure in ["publish msgs/s", "p99 ms", "server cores", "load generator cores", "peak RSS MiB"] {
        header.push(format!("{figure} {all}"));
    }
    header.push("Weir MiB/s of disk limit".into());
    writeln!(out, "| {} |", header.join(" | "))?;
    writeln!(out, "|{}", "---|".repeat(header.len()))?;
    let mut notes = Vec::new();
    let mut medians = Vec::new();
    for (case, per_contender) in cases.iter().zip(runs) {
        let ok: Vec<Vec<Value>> =
            per_contender.iter().map(|runs| runs.iter().filter_map(|r| r.as_ref().ok()).cloned().collect()).collect();
        let median = |runs: &[Value], f: &dyn Fn(&Value) -> Option<f64>| {
            spread(runs.iter().filter_map(f).collect()).map(|s| s.0)
        };
        let figures: Vec<_> =
            ok.iter().map(|runs| spread(runs.iter().filter_map(|r| figure_of(r, case.figure)).collect())).collect();
        medians.push(CaseMedians {
            name: case.name.clone(),
            figure: figures.iter().map(|f| f.map(|s| s.0)).collect(),
            weir_publish: median(&ok[0], &|r| r["publish_msgs_per_s"].as_f64()),
            weir_peak_rss_mib: median(&ok[0], &|r| r["server_peak_rss_mib"].as_f64()),
        });
        let mut row = vec![case.name.clone(), case.about.clone()];
        row.extend(figures.iter().map(|f| cell(*f, case.figure)));
        for j in &figures[1..] {
            row.push(match (figures[0], j) {
                (Some(w), Some(j)) if case.figure == Figure::EndToEndP99 => {
                    format!("{:.2}× (lower is better)", w.0 / j.0)
                }
                (Some(w), Some(j)) => format!("**{:.2}×**", w.0 / j.0),
                _ => "–".into(),
            });
        }
        let per_system = |f: &dyn Fn(&Value) -> Option<f64>, show: &dyn Fn(f64) -> String| {
            ok.iter().map(|runs| median(runs, f).map_or("n/a".into(), show)).collect::<Vec<_>>().join(" / ")
        };
        row.push(per_system(&|r| r["publish_msgs_per_s"].as_f64(), &thousands));
        row.push(per_system(&|r| p99_of(r, case.figure), &|v| format!("{v:.2}")));
        row.push(per_system(&|r| r["server_cpu_cores"].as_f64(), &|v| format!("{v:.2}")));
        row.push(per_system(&|r| r["client_cpu_cores"].as_f64(), &|v| format!("{v:.2}")));
        row.push(per_system(&|r| r["server_peak_rss_mib"].as_f64(), &|v| format!("{v:.0}")));
        row.push(match (case.disk, figures[0]) {
            (Some(sync), Some(w)) => {
                let limit = if sync { sync_disk } else { async_disk };
                limit.map_or("n/a".into(), |l| format!("{:.0}%", w.0 / 1024.0 / l.0 * 100.0))
            }
            _ => "".into(),
        });
        writeln!(out, "| {} |", row.join(" | "))?;
        for (contender, runs) in contenders.iter().zip(per_contender) {
            if let Some(Err(why)) = runs.iter().find(|r| r.is_err()) {
                notes.push(format!("- {} on {}: not measured: {why}", case.name, contender.label));
            }
        }
    }
    if !notes.is_empty() {
        writeln!(out, "\n{}", notes.join("\n"))?;
    }
    writeln!(
        out,
        "\nThe targets of the benchmark issue, judged from these medians (ratios against every JetStream):\n"
    )?;
    write!(out, "{}", targets::render(&targets::judge(&medians, jetstreams)))?;
    writeln!(out, "\nCommand lines: `weir-bench run --system weir|jetstream --count N <args>` with these args:\n")?;
    for case in cases {
        writeln!(out, "- {}: `{}`", case.name, case.args.join(" "))?;
    }
    Ok(out)
}

/// CPU model, cores and kernel, from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|v| v.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(String::new(), |kb| format!(", {:.0} GiB RAM", kb as f64 / (1 << 20) as f64));
    format!("{model}, {cores} cores{memory}, Linux {}", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_min_max() {
        assert_eq!(spread(vec![3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(spread(vec![]), None);
    }

    /// The pause before runs is paid by the fixed-rate cases only: before every run it would
    /// add about 25 minutes to the suite, and two-second pubsub throughput was no different
    /// with a pause (BENCHMARKS.md, "Next steps").
    #[test]
    fn only_the_fixed_rate_cases_settle() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            compare: CompareArgs,
        }
        let args = <Cli as clap::Parser>::parse_from(["compare"]).compare;
        assert_eq!(args.settle_seconds, 10);
        for case in cases(&args) {
            let fixed_rate = case.args.iter().any(|a| a == "--rate");
            assert_eq!(case.settles(), fixed_rate, "{case:?}");
        }
    }

    #[test]
    fn each_repetition_starts_with_the_next_system() {
        let orders: Vec<Vec<usize>> = (0..3).map(|round| turn_order(3, round).collect()).collect();
        assert_eq!(orders, [[0, 1, 2], [1, 2, 0], [2, 0, 1]]);
        for system in 0..3 {
            let firsts = orders.iter().filter(|o| o[0] == system).count();
            assert_eq!(firsts, 1, "system {system} runs first once");
        }
        assert_eq!(turn_order(1, 5).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn thousands_separates_digits() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
