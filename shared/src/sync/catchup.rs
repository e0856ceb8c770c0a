//! System Log catch-up: the events the hook missed (a deploy, a throttle, an outage),
//! read from Okta's System Log and applied through the live path, from a cursor kept in
//! the state store.
//!
//! The cursor is the newest `published` time applied, with the `uuid`s seen in the last
//! [`OVERLAP`] before it. Each pass reads again from `OVERLAP` before the cursor (Okta's
//! log is eventually consistent: an event may appear after a newer one was listed) and
//! skips what it has seen. The cursor moves only when every page was read and every event
//! applied; otherwise it stays, and the next pass reads the same events again.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::live::{self, Context, Processor};
use crate::events::{HANDLED_EVENT_TYPES, parse_event};
use crate::okta::{LogPosition, OktaError, SystemLog};
use crate::queue::EventQueue;
use crate::state::{StateError, StateStore};

/// How far behind the cursor each pass reads again.
pub const OVERLAP: Duration = Duration::minutes(2);
/// Where a first pass starts when no `--since` is given.
pub const FIRST_LOOKBACK: Duration = Duration::hours(1);
/// Pages one pass reads at most (a million events); the rest waits for the next pass.
const MAX_PAGES: usize = 1000;
/// Events applied per batch, as the consumer would take them off the queue.
const BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum CatchupError {
    #[error("reading the System Log: {0}")]
    Log(#[from] OktaError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the stored cursor cannot be read ({0}); pass --since to start over")]
    Cursor(String),
    #[error("{0}; the cursor did not move")]
    HandOn(String),
    #[error("missing configuration: set the environment variable {0} ({1})")]
    Missing(&'static str, &'static str),
}

/// Where the last pass ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    pub published: Option<DateTime<Utc>>,
    /// Events published in the `OVERLAP` before `published`, already applied.
    pub seen: BTreeSet<String>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatchupReport {
    pub since: String,
    pub pages: usize,
    /// Events read, and those not seen before.
    pub events: usize,
    pub new_events: usize,
    /// New events of the types okta-port handles (applied, or queued for the consumer).
    pub handled: usize,
    /// Events that cannot be used (no type, targets of the wrong shape): set aside.
    pub malformed: usize,
    /// Objects converged (when the pass applies the events itself).
    pub converged: usize,
    /// The cursor saved at the end.
    pub cursor: Option<String>,
}

/// The System Log filter for the handled event types.
pub fn event_filter() -> String {
    HANDLED_EVENT_TYPES
        .iter()
        .map(|t| format!("eventType eq \"{t}\""))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// One catch-up pass: read from the cursor (or `since`), apply what is new, save the cursor.
pub async fn catch_up(
    log: &dyn SystemLog,
    sink: &dyn EventSink,
    store: &dyn StateStore,
    key: &str,
    since: Option<DateTime<Utc>>,
) -> Result<CatchupReport, CatchupError> {
    // `since` starts over: the stored cursor is neither read nor needed (even if corrupt).
    let cursor = match since {
        Some(_) => Cursor::default(),
        None => load_cursor(store, key).await?,
    };
    let start = since
        .or(cursor.published.map(|p| p - OVERLAP))
        .unwrap_or_else(|| Utc::now() - FIRST_LOOKBACK);
    let mut report = CatchupReport {
        since: start.to_rfc3339_opts(SecondsFormat::Millis, true),
        ..CatchupReport::default()
    };
    let from = report.since.clone();
    let events = read_log(log, &from, &mut report).await?;
    let fresh: Vec<&Value> = new_events(&events, &cursor.seen);
    report.new_events = fresh.len();
    let messages = to_messages(&fresh, &mut report);
    report.converged = sink.hand_on(&messages).await.map_err(CatchupError::HandOn)?;
    let next = advance(&cursor, &events);
    report.cursor = next
        .published
        .map(|p| p.to_rfc3339_opts(SecondsFormat::Millis, true));
    let bytes = serde_json::to_vec(&next).expect("cursors serialize");
    store.save(key, &bytes).await?;
    Ok(report)
}

async fn load_cursor(store: &dyn StateStore, key: &str) -> Result<Cursor, CatchupError> {
    match store.load(key).await? {
        None => Ok(Cursor::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| CatchupError::Cursor(e.to_string())),
    }
}

/// Every page from `since` up to the first empty one (a polling read always has a next).
async fn read_log(
    log: &dyn SystemLog,
    since: &str,
    report: &mut CatchupReport,
) -> Result<Vec<Value>, CatchupError> {
    let mut position = LogPosition::Since {
        since: since.to_owned(),
        filter: event_filter(),
    };
    let mut events = Vec::new();
    while report.pages < MAX_PAGES {
        let page = log.log_page(&position).await?;
        report.pages += 1;
        crate::progress::page("System Log events", page.events.len(), page.next.is_none());
        if page.events.is_empty() {
            break;
        }
        events.extend(page.events);
        match page.next {
            Some(next) => position = LogPosition::Next(next),
            None => break,
        }
    }
    report.events = events.len();
    Ok(events)
}

/// Events not applied before (by `uuid`), each once.
fn new_events<'a>(events: &'a [Value], seen: &BTreeSet<String>) -> Vec<&'a Value> {
    let mut taken = BTreeSet::new();
    events
        .iter()
        .filter(|e| match e["uuid"].as_str() {
            Some(uuid) => !seen.contains(uuid) && taken.insert(uuid.to_owned()),
            None => true,
        })
        .collect()
}

/// The handled events as queue messages `(uuid, body)`; the others are counted.
fn to_messages(events: &[&Value], report: &mut CatchupReport) -> Vec<(String, String)> {
    let mut messages = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match parse_event(event, None) {
            Ok(Some(queued)) => {
                let id = queued.uuid.clone().unwrap_or_else(|| format!("log-{index}"));
                messages.extend(queued.into_messages().into_iter().map(|body| (id.clone(), body)));
                report.handled += 1;
            }
            Ok(None) => {}
            Err(reason) => {
                tracing::warn!(
                    uuid = event["uuid"].as_str(),
                    reason,
                    "System Log event set aside"
                );
                report.malformed += 1;
            }
        }
    }
    messages
}

/// Where a pass hands its new events: to the live path at once (the CLI), or onto the
/// queue for the consumer (the scheduled catch-up in AWS).
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Hands every message on, or says what failed (the cursor then stays). Returns the
    /// objects converged, when the sink converges them itself.
    async fn hand_on(&self, messages: &[(String, String)]) -> Result<usize, String>;
}

/// Applies the events through the live path, in batches as the consumer takes them.
pub struct ApplyNow<'a> {
    pub ctx: &'a Context<'a>,
    pub processors: &'a [Box<dyn Processor>],
}

#[async_trait]
impl EventSink for ApplyNow<'_> {
    async fn hand_on(&self, messages: &[(String, String)]) -> Result<usize, String> {
        let (mut converged, mut failed, mut example) = (0, 0, String::new());
        for batch in messages.chunks(BATCH) {
            let result = live::apply_batch(batch, self.processors, self.ctx).await;
            converged += result.converged;
            failed += result.failed_messages.len();
            if example.is_empty()
                && let Some(reason) = result.failures.values().next()
            {
                example = reason.clone();
            }
        }
        if failed > 0 {
            return Err(format!(
                "{failed} of {} events could not be applied (e.g. {example})",
                messages.len()
            ));
        }
        Ok(converged)
    }
}

/// Puts the events on the queue; the consumer applies them (and retries what fails).
pub struct Enqueue<'a, Q: EventQueue>(pub &'a Q);

#[async_trait]
impl<Q: EventQueue> EventSink for Enqueue<'_, Q> {
    async fn hand_on(&self, messages: &[(String, String)]) -> Result<usize, String> {
        let bodies: Vec<String> = messages.iter().map(|(_, body)| body.clone()).collect();
        self.0
            .send_all(&bodies)
            .await
            .map_err(|e| format!("queueing the events: {e}"))?;
        Ok(0)
    }
}

/// The cursor after `events` were applied: the newest `published`, and the uuids seen in
/// the overlap before it (those of the old cursor included, while still in the window).
fn advance(cursor: &Cursor, events: &[Value]) -> Cursor {
    let published = |e: &Value| -> Option<DateTime<Utc>> {
        let text = e["published"].as_str()?;
        Some(DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc))
    };
    let newest = events.iter().filter_map(published).chain(cursor.published).max();
    let Some(newest) = newest else {
        return cursor.clone();
    };
    let window = newest - OVERLAP;
    let mut seen: BTreeSet<String> = events
        .iter()
        .filter(|e| published(e).is_some_and(|p| p >= window))
        .filter_map(|e| e["uuid"].as_str().map(str::to_owned))
        .collect();
    if cursor.published.is_some_and(|p| p >= window) {
        seen.extend(cursor.seen.iter().cloned());
    }
    Cursor {
        published: Some(newest),
        seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(uuid: &str, published: &str) -> Value {
        json!({ "uuid": uuid, "published": published, "eventType": "user.lifecycle.create", "target": [] })
    }

    #[test]
    fn the_cursor_keeps_the_overlap_and_skips_what_it_saw() {
        let first = [
            event("a", "2026-12-07T10:00:00.000Z"),
            event("b", "2026-12-07T10:05:00.000Z"),
            event("c", "2026-12-07T10:06:30.000Z"),
        ];
        let cursor = advance(&Cursor::default(), &first);
        assert_eq!(
            cursor.published.unwrap().to_rfc3339(),
            "2026-12-07T10:06:30+00:00"
        );
        assert_eq!(cursor.seen, BTreeSet::from(["b".to_owned(), "c".to_owned()]));
        // The next pass reads b and c again, and one event logged late, before c.
        let second = [
            event("b", "2026-12-07T10:05:00.000Z"),
            event("late", "2026-12-07T10:06:00.000Z"),
            event("c", "2026-12-07T10:06:30.000Z"),
        ];
        let fresh: Vec<&str> = new_events(&second, &cursor.seen)
            .iter()
            .map(|e| e["uuid"].as_str().unwrap())
            .collect();
        assert_eq!(fresh, ["late"]);
        // Nothing new: the cursor stays where it was, with what it saw.
        assert_eq!(advance(&cursor, &[]), cursor);
    }

    #[test]
    fn the_filter_names_every_handled_type() {
        let filter = event_filter();
        assert_eq!(filter.matches(" or ").count() + 1, HANDLED_EVENT_TYPES.len());
        assert!(filter.starts_with("eventType eq \""));
    }
}
