//! Serves the Okta and Port simulators on loopback with a generated org until interrupted,
//! and prints the environment okta-port needs to reach them, also written to the env file
//! (`export KEY=VALUE` lines: `. FILE` in a shell, or `cargo lambda watch --env-file FILE`).
//! Used for local development (docs/development.md) and the benchmarks.
//!
//! Every server takes a free loopback port, and the files go to this checkout's `.local/`
//! (`--dir`), so two people, or two checkouts, on one machine never collide.
//!
//! With `--sqs` it also starts moto's server (or uses `--sqs <endpoint>`), creates an SQS
//! queue and adds what the three functions need: `EVENTS_QUEUE_URL`, `OKTA_WEBHOOK_SECRET`
//! (the `events/` samples' secret), the `AWS_*` settings for moto, and a free port for
//! `cargo lambda watch` (`LAMBDA_INVOKE_PORT`). Unless `--quiet`, it prints a line whenever
//! the simulated Port changes, and each line typed on stdin changes the org and writes the
//! delivery Okta would send for it to `delivery.json` in `--dir`.

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
    /// Where the env file and the deliveries go (default: this checkout's `.local/`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The env file (default: `okta-port.env` in `--dir`).
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Also serve SQS for the functions: `--sqs` starts moto's server on a free port,
    /// `--sqs <endpoint>` uses one already running.
    #[arg(long, num_args = 0..=1, default_missing_value = "start")]
    sqs: Option<String>,
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
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ has a parent")
            .join(".local")
    });
    std::fs::create_dir_all(&dir)?;
    let env_file = args.env_file.clone().unwrap_or_else(|| dir.join("okta-port.env"));
    let delivery_file = dir.join("delivery.json");
    let variables = match args.sqs.as_deref() {
        Some(endpoint) => {
            let endpoint = match endpoint {
                // Started for this process (a free port), stopped with it.
                "start" => okta_port_tests::moto::start_server().await,
                given => given.to_owned(),
            };
            let client = okta_port_tests::moto::sqs_client(&endpoint).await;
            let (queue_url, _dlq) = okta_port_tests::moto::create_queue(&client, "okta-port-events").await;
            let mut vars = env.function_variables(&endpoint, &queue_url);
            vars.push(("LAMBDA_INVOKE_PORT", harness::free_port().to_string()));
            vars
        }
        None => env.variables(),
    };
    let exports = harness::env_file_text(&variables);
    print!("{exports}");
    std::fs::write(&env_file, &exports)?;
    eprintln!("environment written to {}", env_file.display());
    eprintln!("simulators up ({} users); Ctrl-C to stop", args.users);
    if args.quiet {
        return tokio::signal::ctrl_c().await;
    }
    eprintln!(
        "press Enter to change the org (a group renamed, a department, a membership, a \
         deprovisioning); the delivery Okta would send goes to {}",
        delivery_file.display()
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
                    std::fs::write(&delivery_file, delivery.to_string())?;
                    eprintln!(
                        "org changed ({} events); delivery written to {}",
                        events.len(),
                        delivery_file.display()
                    );
                }
                // stdin closed (background, CI): keep serving until interrupted.
                None => return tokio::signal::ctrl_c().await,
            },
        }
    }
}
