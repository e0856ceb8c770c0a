//! Serves the Okta and Port simulators on loopback with a generated org until interrupted,
//! and prints the environment okta-port needs to reach them (also written to --env-file).
//! Used for local development and the benchmarks.

use clap::Parser;
use okta_port_tests::harness::Env;
use okta_port_tests::orggen::{OrgSpec, generate};

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
    /// Also write the `export` lines to this file (for scripts).
    #[arg(long)]
    env_file: Option<std::path::PathBuf>,
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
    let exports: String = env
        .variables()
        .iter()
        .map(|(k, v)| format!("export {k}={v}\n"))
        .collect();
    print!("{exports}");
    if let Some(path) = args.env_file {
        std::fs::write(path, &exports)?;
    }
    eprintln!("simulators up ({} users); Ctrl-C to stop", args.users);
    tokio::signal::ctrl_c().await
}
