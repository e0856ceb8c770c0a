//! Benchmark: wall time, peak memory and API calls of full resyncs by the `okta-port` CLI
//! (a separate process, so its memory is measured alone) against the simulators serving a
//! generated org. Run 1 writes into an empty Port; run 2 finds nothing changed.
//!
//! cargo build --release -p okta-port && cargo run --release -p okta-port-tests --bin bench-resync -- --users 10000

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::Parser;
use okta_port_tests::harness::Env;
use okta_port_tests::orggen::{OrgSpec, generate};
use serde_json::Value;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    #[arg(long, default_value_t = 300)]
    groups: usize,
    #[arg(long, default_value_t = 60)]
    apps: usize,
    /// The okta-port binary to measure.
    #[arg(long, default_value = "target/release/okta-port")]
    bin: String,
}

/// Runs the CLI to completion and returns (report, wall seconds, peak RSS in MiB).
// The child is reaped by wait4 (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run(bin: &str, env: &[(&'static str, String)]) -> (Value, f64, f64) {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["resync", "--json"])
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
    // wait4 gives this child's own peak RSS.
    let mut status = 0;
    // SAFETY: plain FFI call with valid pointers to locals; the child is ours and not yet reaped.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage);
        usage
    };
    let wall = started.elapsed().as_secs_f64();
    let out = reader.join().expect("reader thread").expect("stdout");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad report ({e}): {out}"));
    (report, wall, usage.ru_maxrss as f64 / 1024.0)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let org = generate(&OrgSpec {
        users: args.users,
        groups: args.groups,
        apps: args.apps,
        seed: 7,
    });
    let env = Env::with_org(org).await;
    let vars = env.variables();
    println!(
        "org: {} users, {} groups, {} apps; binary {}",
        args.users, args.groups, args.apps, args.bin
    );
    println!(
        "{:<22} {:>8} {:>9} {:>10} {:>10} {:>9} {:>9}",
        "run", "wall s", "peak MiB", "Okta calls", "Port calls", "written", "unchanged"
    );
    for name in ["1: into empty Port", "2: nothing changed"] {
        let bin = args.bin.clone();
        let vars = vars.clone();
        let (report, wall, rss) = tokio::task::spawn_blocking(move || run(&bin, &vars))
            .await
            .expect("run");
        let sum = |key: &str| -> u64 {
            report["blueprints"]
                .as_object()
                .map_or(0, |b| b.values().map(|v| v[key].as_u64().unwrap_or(0)).sum())
        };
        println!(
            "{name:<22} {wall:>8.2} {rss:>9.1} {:>10} {:>10} {:>9} {:>9}",
            report["okta"]["calls"],
            report["port"]["calls"],
            sum("created") + sum("updated"),
            sum("unchanged")
        );
        assert!(
            report["errors"].as_array().is_some_and(|e| e.is_empty()),
            "run failed: {}",
            report["errors"]
        );
    }
}
