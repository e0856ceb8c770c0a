//! `okta-port`: one full resync, blueprint setup, and the local tooling around them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use okta_port::App;
use okta_port::sync::RunOverrides;

#[derive(Parser)]
#[command(name = "okta-port", version, about = "Keep a Port catalog in step with Okta")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one full resync from the environment's configuration.
    Resync {
        /// Print what would be created, updated and deleted, without writing anything.
        #[arg(long)]
        dry_run: bool,
        /// Let the resync delete more than DELETION_THRESHOLD of a blueprint's entities.
        #[arg(long)]
        allow_mass_deletion: bool,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create the oktaUser, oktaGroup and oktaApplication blueprints if they are missing.
    Blueprints,
    /// Make sure Okta's event hook points at the webhook: create it, update its event
    /// list, activate and verify it as needed (needs OKTA_WEBHOOK_SECRET).
    EnsureHook {
        /// The webhook's URL (its Function URL); default WEBHOOK_URL.
        #[arg(long)]
        url: Option<String>,
        /// Also push OKTA_WEBHOOK_SECRET to an existing hook (after rotating it): Okta
        /// never shows the secret it has, so this cannot be detected.
        #[arg(long)]
        update_secret: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    okta_port::telemetry::init_cli("info");
    let cli = Cli::parse();
    // The environment, with SECRETS_ARN's secret merged under it when that is set.
    let app = match App::from_environment().await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("okta-port: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Resync {
            dry_run,
            allow_mass_deletion,
            json,
        } => {
            match app
                .resync(RunOverrides {
                    dry_run,
                    allow_mass_deletion,
                })
                .await
            {
                Ok(report) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&report).expect("report serializes")
                        );
                    } else {
                        print!("{}", report.to_text());
                    }
                    if report.is_success() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e @ okta_port::sync::SyncError::Configuration(_)) => {
                    eprintln!("okta-port: resync refused before writing anything: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("okta-port: resync failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::EnsureHook { url, update_secret } => {
            match app.ensure_hook_with(url.as_deref(), update_secret).await {
                Ok(outcome) => {
                    println!("{}", serde_json::to_string_pretty(&outcome).expect("serializes"));
                    if !outcome.changed() {
                        eprintln!("the event hook was already up to date");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("okta-port: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Blueprints => match app.ensure_blueprints().await {
            Ok(created) if created.is_empty() => {
                println!("all blueprints exist");
                ExitCode::SUCCESS
            }
            Ok(created) => {
                println!("created: {}", created.join(", "));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("okta-port: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
