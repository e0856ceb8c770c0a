//! `okta-port`: one full resync, blueprint setup, and the local tooling around them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use okta_port::App;
use okta_port::app::AppError;
use okta_port::config::{HookConfig, Problems};
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
        /// Keep a checkpoint in this directory: a run that must stop saves where it
        /// stands there, and the next run goes on from it (for backfills of large orgs).
        #[arg(long, value_name = "DIR")]
        state: Option<std::path::PathBuf>,
        /// With --state: stop reading Okta after this many seconds, save the checkpoint
        /// and exit 75; run the same command again to go on.
        #[arg(long, value_name = "SECS", requires = "state")]
        time_budget: Option<u64>,
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
    /// Read Okta's System Log for the events the hook missed (an outage, a deploy) and
    /// apply them to Port, from the cursor kept in STATE_URL (default: a directory under
    /// $XDG_STATE_HOME or ~/.local/state); the first pass starts one hour back.
    Catchup {
        /// Read from this time (RFC 3339) instead of the stored cursor.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Store the credentials set in this environment (OKTA_API_TOKEN or the service app's
    /// OKTA_CLIENT_ID, OKTA_PRIVATE_KEY and OKTA_KEY_ID, PORT_CLIENT_ID, PORT_CLIENT_SECRET,
    /// OKTA_WEBHOOK_SECRET) in a Secrets Manager secret, keeping its other keys. Prints
    /// the names it stored, never a value.
    PutSecret {
        /// The secret: the stack's SecretArn output (or WebhookSecretArn).
        #[arg(long)]
        secret_id: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = matches!(
        cli.command,
        Command::Resync { json: true, .. } | Command::Catchup { json: true, .. }
    );
    okta_port::telemetry::init_cli("info", !json);
    if let Command::PutSecret { secret_id } = &cli.command {
        return put_secret(secret_id).await;
    }
    let app = match ready(&cli.command).await {
        Ok(app) => app,
        Err(message) => {
            eprintln!("okta-port: {message}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Resync {
            dry_run,
            allow_mass_deletion,
            json,
            state,
            time_budget,
        } => {
            let overrides = RunOverrides {
                dry_run,
                allow_mass_deletion,
            };
            let resumable = state.map(|dir| Resumable {
                dir,
                budget: time_budget.map(std::time::Duration::from_secs),
            });
            resync(&app, overrides, resumable, json).await
        }
        Command::EnsureHook { url, update_secret } => ensure_hook(&app, url.as_deref(), update_secret).await,
        Command::PutSecret { .. } => unreachable!("handled before the configuration is read"),
        Command::Blueprints => blueprints(&app).await,
        Command::Catchup { since, json } => catchup(&app, since, json).await,
    }
}

/// `catchup`: one pass; exit 1 when a page or an event failed (the cursor then stays).
async fn catchup(app: &App, since: Option<chrono::DateTime<chrono::Utc>>, json: bool) -> ExitCode {
    let state_url = app.state_url.clone().unwrap_or_else(default_state_url);
    let result = app.catch_up(&state_url, since).await;
    okta_port::status_line::clear();
    match result {
        Ok(report) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("report serializes")
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!(
                "catch-up from {}: {} events in {} pages, {} new ({} handled, {} set aside), {} objects converged; cursor {}",
                report.since,
                report.events,
                report.pages,
                report.new_events,
                report.handled,
                report.malformed,
                report.converged,
                report.cursor.as_deref().unwrap_or("not set (nothing logged yet)")
            );
            ExitCode::SUCCESS
        }
        Err(e @ okta_port::sync::catchup::CatchupError::State(okta_port::state::StateError::Url(..))) => {
            eprintln!("okta-port: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("okta-port: catch-up failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The CLI's state directory when STATE_URL is not set: $XDG_STATE_HOME/okta-port, else
/// ~/.local/state/okta-port.
fn default_state_url() -> String {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    format!("file://{}", base.join("okta-port").display())
}

/// The app over the environment (with SECRETS_ARN's secret merged under it when set), or
/// every configuration problem at once: for `ensure-hook`, the hook's own among them.
async fn ready(command: &Command) -> Result<App, String> {
    let lookup = okta_port::secrets::environment()
        .await
        .map_err(|e| e.to_string())?;
    match App::from_lookup(&lookup) {
        Ok(app) => Ok(app),
        Err(AppError::Config(e)) => {
            let mut problems = Problems::default();
            problems.check::<()>(Err(e));
            if let Command::EnsureHook { url, .. } = command {
                let hook = HookConfig::from_lookup(|name| lookup.get(name));
                problems.check(hook.require(url.as_deref()));
            }
            Err(problems
                .into_result()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `resync --state DIR [--time-budget SECS]`.
struct Resumable {
    dir: std::path::PathBuf,
    budget: Option<std::time::Duration>,
}

/// Exit code of a run that stopped at its time budget and can go on (EX_TEMPFAIL).
const EXIT_RESUMABLE: u8 = 75;

/// `resync`: the report on stdout (text or JSON); exit 1 when it lists failures, 2 when
/// the mapping configuration cannot work, 75 when it stopped at its time budget with a
/// checkpoint saved.
async fn resync(app: &App, overrides: RunOverrides, resumable: Option<Resumable>, json: bool) -> ExitCode {
    let result = match resumable {
        None => app.resync(overrides).await,
        Some(Resumable { dir, budget }) => {
            let dir = match std::path::absolute(&dir) {
                Ok(dir) => dir,
                Err(e) => {
                    eprintln!("okta-port: --state {}: {e}", dir.display());
                    return ExitCode::from(2);
                }
            };
            // Reading stops early enough for the pages already asked for to arrive in
            // the budget; writing stops when it is spent.
            let now = tokio::time::Instant::now();
            let stop_at = budget.map(|b| now + b.saturating_sub(okta_port::sync::READ_DRAIN));
            let url = format!("file://{}", dir.display());
            app.resumable_resync(overrides, &url, stop_at, budget.map(|b| now + b))
                .await
        }
    };
    okta_port::status_line::clear();
    match result {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serializes")
                );
            } else {
                print!("{}", report.to_text());
            }
            if report.resumable {
                ExitCode::from(EXIT_RESUMABLE)
            } else if report.is_success() {
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

/// `ensure-hook`: what was done, as JSON; exit 2 on a configuration error.
async fn ensure_hook(app: &App, url: Option<&str>, update_secret: bool) -> ExitCode {
    match app.ensure_hook_with(url, update_secret).await {
        Ok(outcome) => {
            println!("{}", serde_json::to_string_pretty(&outcome).expect("serializes"));
            if !outcome.changed() {
                eprintln!("the event hook was already up to date");
            }
            ExitCode::SUCCESS
        }
        Err(e @ okta_port::app::HookSetupError::Config(_)) => {
            eprintln!("okta-port: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("okta-port: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `blueprints`: creates the missing ones.
async fn blueprints(app: &App) -> ExitCode {
    match app.ensure_blueprints().await {
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
    }
}

/// `put-secret`: needs no configuration but the credentials it stores and AWS's own.
async fn put_secret(secret_id: &str) -> ExitCode {
    match okta_port::secrets::put_from_environment(secret_id).await {
        Ok(keys) => {
            println!("stored in {secret_id}: {}", keys.join(", "));
            ExitCode::SUCCESS
        }
        Err(e @ okta_port::secrets::PutSecretError::NothingToStore) => {
            eprintln!("okta-port: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("okta-port: {e}");
            ExitCode::FAILURE
        }
    }
}
