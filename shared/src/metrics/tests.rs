//! Unit tests of `metrics`.

use super::*;
use crate::report::{ApiStats, BlueprintReport, Failure};

/// Emits into a buffer and parses each line back.
fn lines(documents: &[Document]) -> Vec<Value> {
    let mut out = Vec::new();
    emit(&mut out, documents).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with('\n'));
    text.lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON document"))
        .collect()
}

/// Metric name → unit, as declared in the directive.
fn declared(doc: &Value) -> Vec<(String, String)> {
    doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["Name"].as_str().unwrap().to_owned(),
                m["Unit"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every declared metric and dimension has a value at the root (EMF drops it otherwise).
fn assert_valid(doc: &Value) {
    let aws = &doc["_aws"];
    assert!(aws["Timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    let directive = &aws["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], NAMESPACE);
    for set in directive["Dimensions"].as_array().unwrap() {
        for name in set.as_array().unwrap() {
            assert!(
                doc[name.as_str().unwrap()].is_string(),
                "dimension {name} in {doc}"
            );
        }
    }
    for (name, _) in declared(doc) {
        let value = &doc[&name];
        assert!(
            value.is_number() || value.as_array().is_some_and(|a| a.iter().all(Value::is_number)),
            "metric {name} in {doc}"
        );
    }
}

fn report() -> Report {
    let mut report = Report {
        duration_ms: 1234,
        okta: ApiStats {
            calls: 146,
            rate_limited: 2,
            rate_limit_wait_ms: 500,
        },
        port: ApiStats {
            calls: 40,
            rate_limited: 1,
            rate_limit_wait_ms: 250,
        },
        ..Report::default()
    };
    *report.blueprint("oktaUser") = BlueprintReport {
        created: 3,
        updated: 2,
        unchanged: 10,
        deleted: 1,
        failed: vec![Failure {
            identifier: "00u1".into(),
            reason: "422".into(),
        }],
        ..BlueprintReport::default()
    };
    report.blueprint("oktaGroup").created = 5;
    report
}

#[test]
fn resync_documents() {
    let docs = lines(&resync(Some(&report()), true, Some("req-1")));
    assert_eq!(docs.len(), 3, "the run, then one per blueprint");
    docs.iter().for_each(assert_valid);

    let run = &docs[0];
    assert_eq!(run["Function"], "resync");
    assert_eq!(run["requestId"], "req-1");
    assert_eq!(
        run["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Function"]])
    );
    assert_eq!(run["ResyncFailed"], 1);
    assert_eq!(run["OktaCalls"], 146);
    assert_eq!(run["PortCalls"], 40);
    assert_eq!(run["Okta429s"], 2);
    assert_eq!(run["RateLimitWaitMs"], 750);
    assert_eq!(run["DurationMs"], 1234);
    let units = declared(run);
    assert!(units.contains(&("DurationMs".into(), "Milliseconds".into())));
    assert!(units.contains(&("OktaCalls".into(), "Count".into())));
    assert!(units.contains(&("ResyncFailed".into(), "Count".into())));

    // BTreeMap order: oktaGroup, oktaUser.
    let user = &docs[2];
    assert_eq!(user["Blueprint"], "oktaUser");
    assert_eq!(user["Function"], "resync");
    assert_eq!(
        user["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Function"], ["Function", "Blueprint"]])
    );
    for (name, value) in [
        ("EntitiesCreated", 3),
        ("EntitiesUpdated", 2),
        ("EntitiesUnchanged", 10),
        ("EntitiesDeleted", 1),
        ("EntitiesFailed", 1),
    ] {
        assert_eq!(user[name], value, "{name}");
    }
    assert_eq!(docs[1]["Blueprint"], "oktaGroup");
    assert_eq!(docs[1]["EntitiesCreated"], 5);
}

#[test]
fn resync_without_report_and_dry_run() {
    let docs = lines(&resync(None, true, None));
    assert_eq!(docs.len(), 1);
    assert_valid(&docs[0]);
    assert_eq!(docs[0]["ResyncFailed"], 1);
    assert!(docs[0].get("requestId").is_none());
    assert_eq!(declared(&docs[0]).len(), 1);

    let mut dry = report();
    dry.dry_run = true;
    let docs = lines(&resync(Some(&dry), false, None));
    assert_eq!(docs.len(), 1, "a dry run writes no entities");
    assert_eq!(docs[0]["ResyncFailed"], 0);
    assert_eq!(docs[0]["dryRun"], true);
}

#[test]
fn webhook_documents() {
    let accepted = WebhookOutcome {
        received: 5,
        ignored: 2,
        queued: 3,
        ..WebhookOutcome::default()
    };
    let docs = lines(&webhook(&accepted, Some("r")));
    assert_eq!(docs.len(), 1);
    assert_valid(&docs[0]);
    assert_eq!(docs[0]["Function"], "webhook");
    assert_eq!(
        (
            &docs[0]["EventsReceived"],
            &docs[0]["EventsIgnored"],
            &docs[0]["EventsQueued"],
            &docs[0]["DeliveriesRefused"]
        ),
        (&json!(5), &json!(2), &json!(3), &json!(0))
    );
    assert_eq!(
        docs[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Function"]])
    );

    let refused = WebhookOutcome {
        refused: Some("unauthorized"),
        ..WebhookOutcome::default()
    };
    let docs = lines(&webhook(&refused, None));
    assert_valid(&docs[0]);
    assert_eq!(docs[0]["DeliveriesRefused"], 1);
    assert_eq!(docs[0]["Reason"], "unauthorized");
    assert_eq!(
        docs[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Function"], ["Function", "Reason"]])
    );

    let verification = WebhookOutcome {
        verification: true,
        ..WebhookOutcome::default()
    };
    let docs = lines(&webhook(&verification, None));
    assert_eq!(docs[0]["Verifications"], 1);
    assert!(docs[0].get("DeliveriesRefused").is_none());
}

fn message(id: &str, uuid: &str, event_type: &str, published: Option<&str>) -> (String, String) {
    let mut body = json!({ "uuid": uuid, "eventType": event_type, "targets": [] });
    if let Some(p) = published {
        body["published"] = json!(p);
    }
    (id.to_owned(), body.to_string())
}

#[test]
fn lags_count_applied_events_once() {
    let now = DateTime::parse_from_rfc3339("2026-11-28T12:00:10Z")
        .unwrap()
        .with_timezone(&Utc);
    let messages = vec![
        message(
            "m1",
            "e1",
            "user.lifecycle.create",
            Some("2026-11-28T12:00:00.000Z"),
        ),
        message(
            "m2",
            "e2",
            "user.lifecycle.create",
            Some("2026-11-28T12:00:09.500Z"),
        ),
        // Failed message: not written.
        message(
            "m3",
            "e3",
            "user.lifecycle.create",
            Some("2026-11-28T11:00:00.000Z"),
        ),
        // Duplicate of e1.
        message(
            "m4",
            "e1",
            "user.lifecycle.create",
            Some("2026-11-28T12:00:00.000Z"),
        ),
        // No processor handles it.
        message("m5", "e5", "user.session.start", Some("2026-11-28T11:00:00.000Z")),
        // No published time, or not a queued event at all.
        message("m6", "e6", "user.lifecycle.create", None),
        ("m7".into(), "not json".into()),
        // Published after `now` (clock skew): zero, not negative.
        message("m8", "e8", "user.lifecycle.create", Some("2026-11-28T12:00:11Z")),
    ];
    let lags = event_lags(
        &messages,
        &["m3".to_owned()],
        |e| e.event_type.starts_with("user.lifecycle."),
        now,
    );
    assert_eq!(lags, vec![10_000, 500, 0]);
}

#[test]
fn consumer_documents() {
    let report = BatchReport {
        failed_messages: vec!["m3".into()],
        events: 7,
        duplicates: 1,
        ignored: 1,
        converged: 4,
        okta_calls: 9,
        ..BatchReport::default()
    };
    let docs = lines(&consumer(&report, &[10_000, 500], Some("req")));
    assert_eq!(docs.len(), 1);
    assert_valid(&docs[0]);
    assert_eq!(docs[0]["Function"], "consumer");
    assert_eq!(docs[0]["Events"], 7);
    assert_eq!(docs[0]["Duplicates"], 1);
    assert_eq!(docs[0]["FailedMessages"], 1);
    assert_eq!(docs[0]["OktaCalls"], 9);
    assert_eq!(docs[0]["EventLagMs"], json!([10_000, 500]));
    assert!(declared(&docs[0]).contains(&("EventLagMs".into(), "Milliseconds".into())));

    // No applied event: no lag metric at all (an empty array is not valid EMF).
    let docs = lines(&consumer(&report, &[], None));
    assert!(docs[0].get("EventLagMs").is_none());
    assert!(!declared(&docs[0]).iter().any(|(n, _)| n == "EventLagMs"));

    // Over 100 values spill into further documents of at most 100.
    let lags: Vec<u64> = (0..250).collect();
    let docs = lines(&consumer(&report, &lags, None));
    assert_eq!(docs.len(), 3);
    docs.iter().for_each(assert_valid);
    let sizes: Vec<usize> = docs
        .iter()
        .map(|d| d["EventLagMs"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    assert_eq!(docs[0]["Events"], 7);
    assert!(docs[1].get("Events").is_none(), "counts are emitted once");
}

#[test]
fn empty_documents_are_not_written() {
    let mut out = Vec::new();
    emit(&mut out, &[Document::new("x")]).unwrap();
    assert!(out.is_empty());
}
