//! CloudWatch metrics through the Embedded Metric Format: each document is one JSON line on
//! stdout, which Lambda ships to CloudWatch Logs, which extracts the metrics. No
//! PutMetricData call, so no IAM permission and no latency.
//!
//! Every document has the `Function` dimension; per-blueprint documents also declare
//! `[Function, Blueprint]`, so each metric can be read per blueprint or summed per function.
//! The emitters below build the documents; `emit` writes them to any `Write` (stdout in the
//! functions, a buffer in tests).

use std::collections::HashSet;
use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::events::QueuedEvent;
use crate::report::{BatchReport, Report};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "OktaPort";
/// EMF allows at most 100 values in one metric's array.
pub const MAX_VALUES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One EMF document: the `Function` dimension, optional further dimensions, metrics and
/// plain properties (searchable in Logs Insights, not metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    dimensions: Vec<(String, String)>,
    metrics: Vec<(String, Unit, Value)>,
    properties: Map<String, Value>,
}

impl Document {
    pub fn new(function: &str) -> Self {
        Self {
            dimensions: vec![("Function".into(), function.into())],
            metrics: Vec::new(),
            properties: Map::new(),
        }
    }

    /// Adds a dimension: the document then declares both `[Function]` and
    /// `[Function, <every added dimension>]`.
    pub fn dimension(mut self, name: &str, value: &str) -> Self {
        self.dimensions.push((name.into(), value.into()));
        self
    }

    /// A property that is not a metric (say, the request id).
    pub fn property(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    pub fn count(mut self, name: &str, value: u64) -> Self {
        self.metrics.push((name.into(), Unit::Count, json!(value)));
        self
    }

    pub fn millis(mut self, name: &str, value: u64) -> Self {
        self.metrics.push((name.into(), Unit::Milliseconds, json!(value)));
        self
    }

    /// Several values of one metric (at most `MAX_VALUES`; EMF counts each as a sample).
    pub fn values(mut self, name: &str, unit: Unit, values: &[u64]) -> Self {
        debug_assert!(values.len() <= MAX_VALUES);
        self.metrics.push((name.into(), unit, json!(values)));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// The document as EMF JSON, stamped `timestamp_ms` (milliseconds since the epoch).
    pub fn to_json(&self, timestamp_ms: i64) -> Value {
        let names: Vec<&str> = self.dimensions.iter().map(|(n, _)| n.as_str()).collect();
        let mut sets = vec![vec!["Function"]];
        if names.len() > 1 {
            sets.push(names);
        }
        let metrics: Vec<Value> = self
            .metrics
            .iter()
            .map(|(name, unit, _)| json!({ "Name": name, "Unit": unit.as_str() }))
            .collect();
        let mut root = self.properties.clone();
        for (name, value) in &self.dimensions {
            root.insert(name.clone(), json!(value));
        }
        for (name, _, value) in &self.metrics {
            root.insert(name.clone(), value.clone());
        }
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{ "Namespace": NAMESPACE, "Dimensions": sets, "Metrics": metrics }],
            }),
        );
        Value::Object(root)
    }
}

/// Writes each document as one line (one `write_all`, so lines never interleave with log
/// lines written by another thread to the same stdout).
pub fn emit(out: &mut dyn Write, documents: &[Document]) -> io::Result<()> {
    let now = Utc::now().timestamp_millis();
    for document in documents.iter().filter(|d| !d.is_empty()) {
        let mut line = document.to_json(now).to_string();
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    out.flush()
}

/// `emit` to stdout; a failure to write metrics is logged, never fatal.
pub fn emit_stdout(documents: &[Document]) {
    if let Err(e) = emit(&mut io::stdout().lock(), documents) {
        tracing::warn!(error = %e, "could not write metrics");
    }
}

fn with_request_id(document: Document, request_id: Option<&str>) -> Document {
    match request_id {
        Some(id) => document.property("requestId", id),
        None => document,
    }
}

/// The resync function's metrics. `report` is `None` when the run stopped before producing
/// one; `failed` says whether the invocation fails (`ResyncFailed` 1). A dry run writes
/// nothing, so it reports no entity counts.
pub fn resync(report: Option<&Report>, failed: bool, request_id: Option<&str>) -> Vec<Document> {
    const FUNCTION: &str = "resync";
    let mut run =
        with_request_id(Document::new(FUNCTION), request_id).count("ResyncFailed", u64::from(failed));
    let mut documents = Vec::new();
    if let Some(report) = report {
        run = run
            .count("OktaCalls", report.okta.calls)
            .count("PortCalls", report.port.calls)
            .count("Okta429s", report.okta.rate_limited)
            .count("Port429s", report.port.rate_limited)
            .millis(
                "RateLimitWaitMs",
                report.okta.rate_limit_wait_ms + report.port.rate_limit_wait_ms,
            )
            .millis("DurationMs", report.duration_ms)
            .count("Unmapped", report.unmapped.len() as u64)
            .property("dryRun", report.dry_run);
        if !report.dry_run {
            for (blueprint, b) in &report.blueprints {
                documents.push(
                    with_request_id(Document::new(FUNCTION), request_id)
                        .dimension("Blueprint", blueprint)
                        .count("EntitiesCreated", b.created as u64)
                        .count("EntitiesUpdated", b.updated as u64)
                        .count("EntitiesUnchanged", b.unchanged as u64)
                        .count("EntitiesDeleted", b.deleted as u64)
                        .count("EntitiesFailed", b.failed.len() as u64),
                );
            }
        }
    }
    documents.insert(0, run);
    documents
}

/// What one webhook request did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookOutcome {
    /// Events in the delivery.
    pub received: usize,
    /// Events okta-port does not handle, dropped.
    pub ignored: usize,
    /// Events the queue accepted.
    pub queued: usize,
    /// Events that could not be used (set aside; the rest of the delivery went through).
    pub malformed: usize,
    /// Why the request was refused (answered 4xx or 5xx), if it was.
    pub refused: Option<&'static str>,
    /// Okta's verification GET (not a delivery).
    pub verification: bool,
}

/// The webhook function's metrics for one request. A refusal's document also carries the
/// `Reason` dimension.
pub fn webhook(outcome: &WebhookOutcome, request_id: Option<&str>) -> Vec<Document> {
    let mut document = with_request_id(Document::new("webhook"), request_id);
    if outcome.verification && outcome.refused.is_none() {
        return vec![document.count("Verifications", 1)];
    }
    if let Some(reason) = outcome.refused {
        document = document.dimension("Reason", reason);
    }
    vec![
        document
            .count("EventsReceived", outcome.received as u64)
            .count("EventsIgnored", outcome.ignored as u64)
            .count("EventsQueued", outcome.queued as u64)
            .count("EventsMalformed", outcome.malformed as u64)
            .count("DeliveriesRefused", u64::from(outcome.refused.is_some())),
    ]
}

/// The consumer's metrics for one batch. `lags_ms` is the lag of each applied event (see
/// `event_lags`); past `MAX_VALUES` they spill into further documents.
pub fn consumer(report: &BatchReport, lags_ms: &[u64], request_id: Option<&str>) -> Vec<Document> {
    const FUNCTION: &str = "consumer";
    let mut chunks = lags_ms.chunks(MAX_VALUES);
    let mut batch = with_request_id(Document::new(FUNCTION), request_id)
        .count("Events", report.events as u64)
        .count("Duplicates", report.duplicates as u64)
        .count("EventsIgnored", report.ignored as u64)
        .count("ObjectsConverged", report.converged as u64)
        .count("FailedMessages", report.failed_messages.len() as u64)
        .count("OktaCalls", report.okta_calls);
    if let Some(first) = chunks.next() {
        batch = batch.values("EventLagMs", Unit::Milliseconds, first);
    }
    let mut documents = vec![batch];
    documents.extend(chunks.map(|chunk| {
        with_request_id(Document::new(FUNCTION), request_id).values("EventLagMs", Unit::Milliseconds, chunk)
    }));
    documents
}

/// For each event of a batch that was applied (its message did not fail, a processor
/// handles its type), the time from its Okta `published` to `now`, in milliseconds: the
/// lag from the change in Okta to its write in Port, as of the end of the batch. Each event
/// (by uuid) counts once; messages that are not queued events, or have no parsable
/// `published`, are left out.
pub fn event_lags(
    messages: &[(String, String)],
    failed_messages: &[String],
    handled: impl Fn(&QueuedEvent) -> bool,
    now: DateTime<Utc>,
) -> Vec<u64> {
    let failed: HashSet<&str> = failed_messages.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    messages
        .iter()
        .filter(|(id, _)| !failed.contains(id.as_str()))
        .filter_map(|(_, body)| crate::events::parse_message(body).ok().flatten())
        .filter(|event| handled(event))
        .filter(|event| event.uuid.as_ref().is_none_or(|u| seen.insert(u.clone())))
        .filter_map(|event| DateTime::parse_from_rfc3339(event.published.as_deref()?).ok())
        .map(|published| (now - published.with_timezone(&Utc)).num_milliseconds().max(0) as u64)
        .collect()
}

#[cfg(test)]
mod tests;
