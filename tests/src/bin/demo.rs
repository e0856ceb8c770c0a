//! The quick-start demo. Without Okta and Port credentials it starts both simulators on
//! loopback, runs a full resync into the simulated Port and shows a few entities; then
//! changes the org and sends Okta's events through the webhook handler, an in-memory queue
//! and the consumer; then loses a few events and shows the resync catching up. With credentials in the
//! environment it runs a dry-run resync against the real Okta and Port instead.

use std::process::ExitCode;

use okta_port::queue::MemoryQueue;
use okta_port::sync::RunOverrides;
use okta_port::{App, Report};
use okta_port_tests::expected::{APP_BLUEPRINT, GROUP_BLUEPRINT, USER_BLUEPRINT};
use okta_port_tests::harness::{Env, consume, deliver, normalize};
use okta_port_tests::orggen::{OrgSpec, generate};
use serde_json::Value;

fn show(title: &str, entity: Option<Value>) {
    match entity {
        Some(e) => println!(
            "{title}:\n{}\n",
            serde_json::to_string_pretty(&normalize(&e)).unwrap_or_default()
        ),
        None => println!("{title}: (not in Port)\n"),
    }
}

fn print_report(report: &Report) {
    println!("{}", report.to_text());
}

#[tokio::main]
async fn main() -> ExitCode {
    okta_port::telemetry::init_cli("warn", false);
    let set = |v: &str| std::env::var(v).is_ok_and(|v| !v.trim().is_empty());
    // An SSWS token or a service app (OKTA_CLIENT_ID with its key) both count.
    let okta = set("OKTA_DOMAIN") && (set("OKTA_API_TOKEN") || set("OKTA_CLIENT_ID"));
    let port = set("PORT_CLIENT_ID") && set("PORT_CLIENT_SECRET");
    let has_credentials = okta && port;
    let any = [
        "OKTA_DOMAIN",
        "OKTA_API_TOKEN",
        "OKTA_CLIENT_ID",
        "PORT_CLIENT_ID",
        "PORT_CLIENT_SECRET",
    ]
    .iter()
    .any(|v| set(v));
    if has_credentials {
        println!("Okta and Port credentials found: dry-run resync (nothing is written).\n");
        let report = match App::from_env() {
            Ok(app) => {
                app.resync(RunOverrides {
                    dry_run: true,
                    ..Default::default()
                })
                .await
            }
            Err(e) => {
                eprintln!("demo: {e}");
                return ExitCode::from(2);
            }
        };
        return match report {
            Ok(report) => {
                print_report(&report);
                if report.is_success() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("demo: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let org = generate(&OrgSpec {
        users: 250,
        groups: 15,
        apps: 6,
        seed: 42,
    });
    let (users, groups, apps) = (org.users.len(), org.groups.len(), org.apps.len());
    let env = Env::with_org(org).await;
    if any {
        println!(
            "Incomplete credentials ({} missing): using the simulators on loopback.",
            match (okta, port) {
                (false, false) => "Okta's and Port's",
                (false, true) => "Okta's: OKTA_DOMAIN and OKTA_API_TOKEN or OKTA_CLIENT_ID",
                _ => "Port's: PORT_CLIENT_ID and PORT_CLIENT_SECRET",
            }
        );
    } else {
        println!("No Okta or Port credentials: using the simulators on loopback.");
    }
    println!(
        "  Okta simulator {} ({users} users, {groups} groups, {apps} apps)",
        env.okta.base_url
    );
    println!("  Port simulator {}\n", env.port.base_url);

    println!("== 1. Full resync into an empty Port");
    let first = match env.resync().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_report(&first);

    // Pick objects to show and to change.
    let (managed, managed_mgr, leaver, mover, group, app) = env.okta.with_org(|org| {
        let id = |v: &Value| v["id"].as_str().unwrap_or_default().to_owned();
        let active: Vec<&Value> = org.users.iter().filter(|u| u["status"] == "ACTIVE").collect();
        let managed = active
            .iter()
            .find(|u| u["profile"]["managerId"].is_string())
            .map(|u| id(u))
            .unwrap_or_default();
        let group = org
            .groups
            .iter()
            .find(|g| g["type"] == "OKTA_GROUP")
            .map(id)
            .unwrap_or_default();
        let app = org.apps.last().map(id).unwrap_or_default();
        // Three other users: the new manager, a leaver and one who is deprovisioned.
        let mut others = active.iter().map(|u| id(u)).filter(|u| *u != managed);
        let (new_manager, leaver, mover) = (others.next(), others.next(), others.next());
        (
            managed,
            new_manager.unwrap_or_default(),
            leaver.unwrap_or_default(),
            mover.unwrap_or_default(),
            group,
            app,
        )
    });
    show(
        "A user, with its groups, applications and manager",
        env.port.entity(USER_BLUEPRINT, &managed),
    );
    show("A group", env.port.entity(GROUP_BLUEPRINT, &group));
    show("An application", env.port.entity(APP_BLUEPRINT, &app));

    println!("== 2. Live: changes in Okta reach Port through the event hook");
    let events = env.okta.with_org(|org| {
        org.set_manager_id(&managed, Some(&managed_mgr));
        println!("  {managed}: manager changed to {managed_mgr}");
        org.set_user_status(&mover, "DEPROVISIONED");
        println!("  {mover}: deprovisioned");
        org.rename_group(&group, "Platform Engineering (renamed)");
        println!("  {group}: renamed to \"Platform Engineering (renamed)\"");
        org.take_events()
    });
    let queue = MemoryQueue::default();
    let statuses = deliver(&events, 10, &queue).await;
    let queued = queue.messages().len();
    let consumed = consume(&env.app(), queue.drain(), 10, 3).await;
    let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    println!(
        "  Okta sent {} in {} (webhook answered {:?}); {queued} queued; the consumer \
         applied them in {} with {} Okta calls, {} failed\n",
        plural(events.len(), "event", "events"),
        plural(statuses.len(), "delivery", "deliveries"),
        statuses,
        plural(consumed.batches, "batch", "batches"),
        consumed.okta_calls,
        plural(consumed.dead.len(), "message", "messages")
    );
    show(
        "The user whose manager changed",
        env.port.entity(USER_BLUEPRINT, &managed),
    );
    show(
        "The deprovisioned user (kept, with its new status)",
        env.port.entity(USER_BLUEPRINT, &mover),
    );
    show("The renamed group", env.port.entity(GROUP_BLUEPRINT, &group));

    println!("== 3. Events lost while the hook was down: the nightly resync catches up");
    env.okta.with_org(|org| {
        org.delete_user(&leaver);
        println!("  {leaver}: deleted");
        org.delete_app(&app);
        println!("  {app}: application deleted");
        let lost = org.take_events().len();
        println!("  ({lost} events never delivered)\n");
    });
    let second = match env.resync().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_report(&second);
    show("The deleted user", env.port.entity(USER_BLUEPRINT, &leaver));
    show("The deleted application", env.port.entity(APP_BLUEPRINT, &app));
    let live_ok = consumed.dead.is_empty() && statuses.iter().all(|s| *s == 200);
    if first.is_success() && second.is_success() && live_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
