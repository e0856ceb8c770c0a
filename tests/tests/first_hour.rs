//! What a platform engineer meets in the first hour: a run with no configuration names
//! everything missing at once (exit 2 from every subcommand), a long resync shows its
//! progress on a terminal and stays machine-readable elsewhere, and the Lambda logs one
//! progress line per phase, not per page.

use std::process::Command;

use okta_port::sync::RunOverrides;
use okta_port_tests::harness::{Env, LogCapture, cli_binary};
use okta_port_tests::orggen::{OrgSpec, generate};

fn cli() -> Command {
    let mut command = Command::new(cli_binary());
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

#[test]
fn a_run_without_configuration_names_every_missing_variable_at_once() {
    for (args, problems) in [
        (&["resync"][..], "4 configuration problems"),
        (&["blueprints"], "4 configuration problems"),
        // The URL is given; the hook's secret is missing too.
        (
            &["ensure-hook", "--url", "https://x.example"],
            "5 configuration problems",
        ),
    ] {
        let out = cli().args(args).output().expect("run the CLI");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(problems), "{args:?}: {stderr}");
        assert!(!stderr.contains("WEBHOOK_URL"), "{args:?}: {stderr}");
        assert_eq!(
            stderr.contains("OKTA_WEBHOOK_SECRET"),
            args[0] == "ensure-hook",
            "{args:?}: {stderr}"
        );
        for named in [
            "OKTA_DOMAIN",
            "OKTA_API_TOKEN",
            "PORT_CLIENT_ID",
            "PORT_CLIENT_SECRET",
        ] {
            assert!(stderr.contains(named), "{args:?} does not name {named}: {stderr}");
        }
    }
    // ensure-hook without --url also needs the hook's URL and secret: all six at once.
    let out = cli().args(["ensure-hook"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("6 configuration problems"), "{stderr}");
    for named in [
        "OKTA_DOMAIN",
        "PORT_CLIENT_SECRET",
        "WEBHOOK_URL",
        "--url",
        "OKTA_WEBHOOK_SECRET",
    ] {
        assert!(
            stderr.contains(named),
            "ensure-hook does not name {named}: {stderr}"
        );
    }
    // Invalid values are named alongside the missing ones.
    let out = cli()
        .args(["resync"])
        .env("OKTA_DOMAIN", "http://dev-1.okta.com")
        .env("OKTA_CLIENT_ID", "0oa1")
        .env("DELETION_THRESHOLD", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for named in [
        "OKTA_DOMAIN: must use https",
        "OKTA_KEY_ID",
        "OKTA_PRIVATE_KEY",
        "PORT_CLIENT_ID",
        "PORT_CLIENT_SECRET",
        "DELETION_THRESHOLD",
    ] {
        assert!(stderr.contains(named), "does not name {named}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_hook_without_a_url_is_a_configuration_error_that_mentions_url() {
    let env = Env::with_org(generate(&OrgSpec {
        users: 5,
        groups: 2,
        apps: 1,
        seed: 3,
    }))
    .await;
    let run = env.run_cli(&["ensure-hook"], &[]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("WEBHOOK_URL"), "{}", run.stderr);
    assert!(run.stderr.contains("--url"), "{}", run.stderr);
    assert!(run.stderr.contains("OKTA_WEBHOOK_SECRET"), "{}", run.stderr);
    assert!(env.okta.hooks().is_empty(), "nothing was registered");
}

fn org() -> okta_port_tests::orggen::Org {
    generate(&OrgSpec {
        users: 2_000,
        groups: 60,
        apps: 12,
        seed: 11,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_on_a_terminal_shows_live_progress_and_stays_plain_elsewhere() {
    let env = Env::with_org(org()).await;
    // On a terminal (a pseudo-terminal from util-linux's `script`).
    let binary = tokio::task::spawn_blocking(cli_binary).await.unwrap();
    let mut command = tokio::process::Command::new("script");
    command
        .args(["-qefc", &format!("{} resync", binary.display()), "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "xterm");
    for (k, v) in env.variables() {
        command.env(k, v);
    }
    let out = command.output().await.expect("run script");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}");
    // Drawn at most every 100 ms, but a phase's start and a listing's or a blueprint's end
    // are always drawn.
    for shown in [
        "\r\x1b[Kreading Okta",
        "users 2000 (11 pages)",
        "groups 60 (1 pages)",
        "apps 12 (1 pages)",
        "\r\x1b[Kwriting to Port",
        "oktaGroup 60/60",
        "oktaUser 2000/2000",
    ] {
        assert!(
            screen.contains(shown),
            "the status line lacks {shown:?}:\n{screen}"
        );
    }
    // The line is wiped before the report, which starts on a clean row.
    assert!(screen.contains("\r\x1b[Kblueprint "), "{screen}");

    // Without a terminal: no status line, no escape, one log line per phase, and the
    // report on stdout as before.
    let run = env.run_cli(&["resync"], &[("RUST_LOG", "info")]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        !run.stderr.contains('\r') && !run.stderr.contains('\x1b'),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("listed Okta users"), "{}", run.stderr);
    assert!(run.stderr.lines().count() < 20, "{}", run.stderr);
    assert!(run.stdout.starts_with("blueprint "), "{}", run.stdout);
    // --json: the report alone on stdout.
    let run = env.run_cli(&["resync", "--json"], &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    serde_json::from_str::<serde_json::Value>(&run.stdout).expect("stdout is the JSON report");
}

/// The Lambda logs at INFO: a dozen lines for a resync that reads almost a hundred pages.
#[tokio::test]
async fn the_lambda_logs_one_progress_line_per_phase_not_per_page() {
    let logs = LogCapture::default();
    let writer = logs.clone();
    let subscriber =
        okta_port::telemetry::lambda_subscriber(tracing_subscriber::EnvFilter::new("info"), move || {
            writer.clone()
        });
    let _guard = tracing::subscriber::set_default(subscriber);
    let env = Env::with_org(org()).await;
    let report = env.app().resync(RunOverrides::default()).await.unwrap();
    assert!(report.is_success(), "{}", report.to_text());
    assert!(report.okta.calls >= 80, "{} Okta calls", report.okta.calls);
    let text = logs.text();
    let lines = text.lines().count();
    assert!(
        lines <= 15,
        "{lines} log lines for {} Okta calls:\n{text}",
        report.okta.calls
    );
    for phase in ["listed Okta users", "listed Okta groups", "written to Port"] {
        assert!(text.contains(phase), "no {phase:?} line:\n{text}");
    }
}
