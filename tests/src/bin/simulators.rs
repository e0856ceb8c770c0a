//! Serves the Okta and Port simulators on loopback with a generated org until interrupted,
//! and prints the environment okta-port needs to reach them (also written to --env-file,
//! as `export KEY=VALUE` lines: `. FILE` in a shell, or `cargo lambda watch --env-file FILE`).
//! Used for local development (README "Local development") and the benchmarks.
//!
//! With `--sqs <endpoint>` (moto's server) it also creates an SQS queue and adds what the
//! three functions need: `EVENTS_QUEUE_URL`, `OKTA_WEBHOOK_SECRET` (the `events/` samples'
//! secret) and the `AWS_*` settings for moto. Unless `--quiet`, it prints a line whenever
//! the simulated Port changes, and each line typed on stdin changes the org and writes the
//! delivery Okta would send for it to `--delivery-file`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use okta_port_tests::harness::{self, Env, PortSnapshot};
use okta_port_tests::orggen::{OrgSpec, generate, hook_delivery};

#[derive(Parser)]
#[command(about = "Serve the Okta and Port simulators with a generated org")]
struct Args {
    #[arg(long, default_value_t = 2000)]
    users: usize,
    #[arg(long, default_value_t = 100)]
    groups: usize,
    #[arg(long, default_value_t = 30)]
    apps: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Also write the `export` lines to this file (for scripts and `cargo lambda watch --env-file`).
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// moto's SQS endpoint (e.g. http://127.0.0.1:5555): create a queue there and add the
    /// settings the webhook and consumer functions need.
    #[arg(long)]
    sqs: Option<String>,
    /// Where a line typed on stdin writes the delivery for the org change it makes.
    #[arg(long, default_value = "/tmp/okta-port-delivery.json")]
    delivery_file: PathBuf,
    /// Neither print Port changes nor read stdin (benchmarks).
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let org = generate(&OrgSpec {
        users: args.users,
        groups: args.groups,
        apps: args.apps,
        seed: args.seed,
    });
    let env = Env::with_org(org).await;
    let variables = match &args.sqs {
        Some(endpoint) => {
            let client = okta_port_tests::moto::sqs_client(endpoint).await;
            let (queue_url, _dlq) = okta_port_tests::moto::create_queue(&client, "okta-port-events").await;
            env.function_variables(endpoint, &queue_url)
        }
        None => env.variables(),
    };
    let exports = harness::env_file_text(&variables);
    print!("{exports}");
    if let Some(path) = &args.env_file {
        std::fs::write(path, &exports)?;
    }
    eprintln!("simulators up ({} users); Ctrl-C to stop", args.users);
    if args.quiet {
        return tokio::signal::ctrl_c().await;
    }
    eprintln!(
        "press Enter to change the org (a group renamed, a department, a membership, a \
         deprovisioning); the delivery Okta would send goes to {}",
        args.delivery_file.display()
    );

    let port = env.port.clone();
    tokio::spawn(async move {
        let mut before = PortSnapshot::take(&port);
        println!("{}", before.summary_since(&before));
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = PortSnapshot::take(&port);
            if now != before {
                println!("{}", now.summary_since(&before));
                before = now;
            }
        }
    });

    // stdin is read on a thread of its own (tokio's stdin needs a feature we do without).
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<()>();
    std::thread::spawn(move || {
        for _ in std::io::stdin().lines().map_while(Result::ok) {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    let mut round = 0u64;
    loop {
        tokio::select! {
            signal = tokio::signal::ctrl_c() => return signal,
            line = lines.recv() => match line {
                Some(()) => {
                    round += 1;
                    let events = env.okta.with_org(|org| harness::local_dev_changes(org, round));
                    let delivery = hook_delivery(&events, round);
                    std::fs::write(&args.delivery_file, delivery.to_string())?;
                    eprintln!(
                        "org changed ({} events); delivery written to {}",
                        events.len(),
                        args.delivery_file.display()
                    );
                }
                // stdin closed (background, CI): keep serving until interrupted.
                None => return tokio::signal::ctrl_c().await,
            },
        }
    }
}
