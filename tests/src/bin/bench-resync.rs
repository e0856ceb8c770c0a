//! Benchmark: wall time, peak memory, local disk and API calls of full resyncs by the
//! `okta-port` CLI (a separate process, so its memory is measured alone) against the
//! simulators serving a generated org. Run 1 writes into an empty Port; run 2 finds
//! nothing changed.
//!
//! cargo build --release -p okta-port -p okta-port-tests --bins
//! target/release/bench-resync --users 10000 --groups 500 --apps 100 --latency-ms 20
//! target/release/bench-resync ... --workforce          (Okta's workforce limits, 50 % share)
//! target/release/bench-resync ... --time-budget 2      (a resync resumed until complete)
//! target/release/bench-resync ... --config shared/resources/port-app-config.yml   (jq)

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use okta_port_tests::expected;
use okta_port_tests::harness::Env;
use okta_port_tests::okta_sim::{Bucket, OktaSimConfig};
use okta_port_tests::orggen::{OrgSpec, generate};
use okta_port_tests::port_sim::PortSimConfig;
use serde_json::Value;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    #[arg(long, default_value_t = 500)]
    groups: usize,
    #[arg(long, default_value_t = 100)]
    apps: usize,
    /// Added by the Okta simulator to every call.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Okta's published workforce limits per minute, of which this client gets `--share`.
    #[arg(long)]
    workforce: bool,
    #[arg(long, default_value_t = 0.5)]
    share: f64,
    /// Run the first resync with `--state` and this `--time-budget`, again and again
    /// until it completes.
    #[arg(long)]
    time_budget: Option<u64>,
    /// Only the first run (into an empty Port).
    #[arg(long)]
    once: bool,
    /// Map with this port-app-config (jq) instead of the built-in mapping; the blueprints
    /// are created first with `okta-port blueprints`.
    #[arg(long)]
    config: Option<String>,
    /// The okta-port binary to measure.
    #[arg(long, default_value = "target/release/okta-port")]
    bin: String,
}

struct Run {
    report: Value,
    code: i32,
    wall: f64,
    rss_mib: f64,
}

/// Runs the CLI to completion and returns its report, exit code, wall time and peak RSS.
///
/// The peak is the child's own `VmHWM`, polled until it exits: `ru_maxrss` from `wait4`
/// would count the memory of this process (which holds the simulated org), since Linux
/// carries the forking parent's high-water mark across `exec`.
// The child is reaped by wait4, not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run(bin: &str, args: &[String], env: &[(&'static str, String)]) -> Run {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["resync", "--json"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {bin}: {e} (build it with cargo build --release -p okta-port)")
        });
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let pid = child.id() as libc::pid_t;
    let status_file = format!("/proc/{pid}/status");
    let mut peak_kib = 0u64;
    let mut status = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(hwm) = text.lines().find_map(|l| l.strip_prefix("VmHWM:"))
        {
            let kib = hwm.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            peak_kib = peak_kib.max(kib);
        }
        // SAFETY: plain FFI call with a valid pointer to a local; the child is ours.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = started.elapsed().as_secs_f64();
    let out = reader.join().expect("reader thread").expect("stdout");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad report ({e}): {out}"));
    Run {
        report,
        code: libc::WEXITSTATUS(status),
        wall,
        rss_mib: peak_kib as f64 / 1024.0,
    }
}

/// Okta's last published workforce limits per minute, by simulator bucket.
const WORKFORCE: [(Bucket, u32); 6] = [
    (Bucket::Apps, 100),
    (Bucket::UsersList, 600),
    (Bucket::GroupsList, 500),
    (Bucket::GroupById, 1000),
    // Unpublished: `/groups/{id}/users` counts as "everything else under /api/v1".
    (Bucket::GroupUsers, 1200),
    (Bucket::UserById, 2000),
];

fn sum(report: &Value, key: &str) -> u64 {
    report["blueprints"]
        .as_object()
        .map_or(0, |b| b.values().map(|v| v[key].as_u64().unwrap_or(0)).sum())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let generated = Instant::now();
    let org = generate(&OrgSpec {
        users: args.users,
        groups: args.groups,
        apps: args.apps,
        seed: 7,
    });
    let (minimum, apps_calls) = expected::okta_page_minimum(&org);
    let okta_config = OktaSimConfig {
        latency: Duration::from_millis(args.latency_ms),
        ..OktaSimConfig::default()
    };
    let env = Env::start(org, okta_config, PortSimConfig::default()).await;
    let mut lower_bound = 0.0;
    if args.workforce {
        for (bucket, per_minute) in WORKFORCE {
            let limit = ((per_minute as f64) * args.share).floor() as u32;
            env.okta.set_rate_limit(bucket, limit, Duration::from_secs(60));
            if bucket == Bucket::Apps {
                // The busiest bucket: one window per `limit` calls, the last one started.
                lower_bound = (apps_calls.div_ceil(limit as u64) - 1) as f64 * 60.0;
            }
        }
    }
    println!(
        "org: {} users, {} groups, {} apps (generated in {:.1} s); Okta latency {} ms{}; page minimum {minimum} Okta calls ({apps_calls} in the apps bucket); binary {}",
        args.users,
        args.groups,
        args.apps,
        generated.elapsed().as_secs_f64(),
        args.latency_ms,
        if args.workforce {
            format!(
                ", workforce limits at {:.0} % share (busiest bucket's lower bound {lower_bound:.0} s)",
                args.share * 100.0
            )
        } else {
            String::new()
        },
        args.bin
    );
    println!(
        "{:<24} {:>5} {:>8} {:>9} {:>9} {:>10} {:>5} {:>10} {:>9} {:>9}",
        "run",
        "exit",
        "wall s",
        "peak MiB",
        "disk MiB",
        "Okta calls",
        "429s",
        "Port calls",
        "written",
        "unchanged"
    );
    let state = std::env::temp_dir().join(format!("bench-resync-{}", std::process::id()));
    let mut vars = env.variables();
    if let Some(config) = &args.config {
        let made = Command::new(&args.bin)
            .arg("blueprints")
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .status()
            .expect("okta-port blueprints");
        assert!(made.success(), "okta-port blueprints failed");
        vars.push(("PORT_APP_CONFIG_FILE", config.clone()));
    }
    let names: &[&str] = if args.once {
        &["1: into empty Port"]
    } else {
        &["1: into empty Port", "2: nothing changed"]
    };
    for (n, name) in names.iter().enumerate() {
        let resumed = n == 0 && args.time_budget.is_some();
        let cli: Vec<String> = match args.time_budget.filter(|_| resumed) {
            Some(budget) => vec![
                "--state".into(),
                state.display().to_string(),
                "--time-budget".into(),
                budget.to_string(),
            ],
            None => Vec::new(),
        };
        let (mut wall, mut rss, mut disk, mut okta, mut throttled, mut port, mut written, mut unchanged) =
            (0.0, 0.0f64, 0.0f64, 0, 0, 0, 0, 0);
        let mut runs = 0;
        loop {
            runs += 1;
            let (bin, cli, vars) = (args.bin.clone(), cli.clone(), vars.clone());
            let r = tokio::task::spawn_blocking(move || run(&bin, &cli, &vars))
                .await
                .expect("run");
            wall += r.wall;
            rss = rss.max(r.rss_mib);
            disk = disk.max(r.report["spilled_bytes"].as_f64().unwrap_or(0.0) / 1048576.0);
            okta += r.report["okta"]["calls"].as_u64().unwrap_or(0);
            throttled += r.report["okta"]["rate_limited"].as_u64().unwrap_or(0);
            port += r.report["port"]["calls"].as_u64().unwrap_or(0);
            written += sum(&r.report, "created") + sum(&r.report, "updated");
            unchanged += sum(&r.report, "unchanged");
            assert!(
                r.report["errors"].as_array().is_some_and(|e| e.is_empty()),
                "run failed: {}",
                r.report["errors"]
            );
            if r.code != 75 {
                let failed: Vec<&Value> = r.report["blueprints"]
                    .as_object()
                    .into_iter()
                    .flat_map(|b| b.values())
                    .flat_map(|b| b["failed"].as_array().into_iter().flatten())
                    .take(3)
                    .collect();
                assert_eq!(r.code, 0, "exit code; failed entities, e.g. {failed:?}");
                break;
            }
        }
        let label = if runs > 1 {
            format!("{name} ({runs} runs)")
        } else {
            name.to_string()
        };
        println!(
            "{label:<24} {:>5} {wall:>8.2} {rss:>9.1} {disk:>9.1} {okta:>10} {throttled:>5} {port:>10} {written:>9} {unchanged:>9}",
            0
        );
        if resumed {
            println!(
                "resumed: {okta} Okta calls for a page minimum of {minimum} ({:.3} x; {} resumptions)",
                okta as f64 / minimum as f64,
                runs - 1
            );
        }
        if args.workforce && n == 0 {
            println!(
                "workforce: {wall:.1} s for a lower bound of {lower_bound:.0} s ({:.2} x)",
                wall / lower_bound.max(1.0)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&state);
}
