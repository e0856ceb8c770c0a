//! Mapping throughput: the hand-written built-in mapping against the built-in
//! port-app-config.yml evaluated with jq, on a generated org (default 100,000 users,
//! 300 groups, 60 apps, seed 7). Maps the whole snapshot as the resync does
//! (`sync::map_snapshot`) and prints entities per second, best of `--runs`.
//!
//! ```sh
//! cargo build --release -p okta-port-tests --bin bench-mapping
//! target/release/bench-mapping [--users 100000] [--runs 3] [--config path.yml]
//! ```

use std::collections::HashMap;
use std::time::Instant;

use okta_port::mapping::config::ConfigSource;
use okta_port::mapping::jq::JqMapping;
use okta_port::mapping::{DefaultMapping, Mapping};
use okta_port::sync::{WholeSnapshot as Snapshot, map_snapshot};
use okta_port_tests::orggen::{Org, OrgSpec, generate};

fn snapshot_of(org: &Org) -> Snapshot {
    let mut user_groups: HashMap<String, Vec<String>> = HashMap::new();
    for (group, members) in &org.group_members {
        for m in members {
            user_groups.entry(m.clone()).or_default().push(group.clone());
        }
    }
    let mut user_apps: HashMap<String, Vec<String>> = HashMap::new();
    for app in &org.apps {
        let id = app["id"].as_str().unwrap_or_default();
        for (user, _) in org.app_users(id) {
            user_apps.entry(user).or_default().push(id.to_owned());
        }
    }
    Snapshot {
        users: Some(org.users.clone()),
        groups: Some(org.groups.clone()),
        apps: Some(org.apps.clone()),
        user_groups: Some(user_groups),
        user_apps: Some(user_apps),
        errors: Vec::new(),
    }
}

fn bench<M: Mapping>(name: &str, mapping: &M, snapshot: &Snapshot, runs: usize) -> f64 {
    let mut best = f64::MAX;
    let mut entities = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let desired = map_snapshot(mapping, snapshot);
        let secs = start.elapsed().as_secs_f64();
        assert!(desired.failures.is_empty(), "{:?}", &desired.failures[..1]);
        entities = desired.entities.values().map(Vec::len).sum::<usize>();
        best = best.min(secs);
    }
    let rate = entities as f64 / best;
    println!(
        "{name:<28} {entities:>8} entities  {:>8.3} s  {rate:>12.0} entities/s",
        best
    );
    rate
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut users, mut runs, mut config) = (100_000usize, 3usize, None::<String>);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--users" => users = args.next().and_then(|v| v.parse().ok()).expect("--users N"),
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--config" => config = args.next(),
            other => panic!("unknown argument {other}"),
        }
    }
    let start = Instant::now();
    let org = generate(&OrgSpec {
        users,
        groups: 300,
        apps: 60,
        seed: 7,
    });
    let snapshot = snapshot_of(&org);
    let memberships: usize = snapshot.user_groups.iter().flatten().map(|(_, g)| g.len()).sum();
    let assignments: usize = snapshot.user_apps.iter().flatten().map(|(_, a)| a.len()).sum();
    println!(
        "org: {users} users, 300 groups, 60 apps, seed 7 ({memberships} memberships, {assignments} app assignments), generated in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let jq = JqMapping::builtin();
    println!(
        "built-in port-app-config.yml compiled in {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let builtin = bench("built-in (hand-written)", &DefaultMapping, &snapshot, runs);
    let configured = bench("jq, default config", &jq, &snapshot, runs);
    println!("jq / built-in: {:.2}x the time", builtin / configured);
    if let Some(path) = config {
        let custom = JqMapping::load(&ConfigSource::File(path.clone())).unwrap_or_else(|e| panic!("{e}"));
        bench(&format!("jq, {path}"), &custom, &snapshot, runs);
    }
}
