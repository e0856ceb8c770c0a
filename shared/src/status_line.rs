//! The CLI's live status line on a terminal, drawn on stderr from the progress events
//! (`progress`): the phase, each listing's objects and pages, each blueprint's writes and
//! the time paused for rate limits. Log lines print above it (`ClearLine` wipes it first).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;

/// Set while a status line may be on screen.
static SHOWN: AtomicBool = AtomicBool::new(false);
/// Redraws at most this often: a terminal is slower than 100 pages a second.
const REDRAW: Duration = Duration::from_millis(100);
/// Longer lines would wrap, and `\r` only returns to the start of the last row.
const MAX_WIDTH: usize = 150;
const CLEAR: &[u8] = b"\r\x1b[K";

#[derive(Default)]
struct Listing {
    objects: u64,
    pages: u64,
    finished: u64,
}

#[derive(Default)]
struct State {
    phase: String,
    listings: BTreeMap<String, Listing>,
    written: BTreeMap<String, (u64, u64)>,
    waited_ms: u64,
    drawn_at: Option<Instant>,
}

impl State {
    fn line(&self) -> String {
        let mut parts = vec![self.phase.clone()];
        // Every listing runs at once: users first, as a person reads an org; a line too
        // long for the terminal loses its end, not the users.
        let mut listings: Vec<(&String, &Listing)> = self.listings.iter().collect();
        listings.sort_by_key(|(name, _)| reading_order(name));
        for (name, l) in listings {
            let mut part = format!("{} {} ({} pages", short_name(name), l.objects, l.pages);
            if name.contains("{id}") {
                part += &format!(", {} lists", l.finished);
            }
            parts.push(part + ")");
        }
        for (blueprint, (written, of)) in &self.written {
            parts.push(format!("{blueprint} {written}/{of}"));
        }
        if self.waited_ms > 0 {
            parts.push(format!(
                "rate-limit waits {:.1} s",
                self.waited_ms as f64 / 1000.0
            ));
        }
        let mut line = parts.join(" · ");
        if line.chars().count() > MAX_WIDTH {
            line = line.chars().take(MAX_WIDTH - 1).collect::<String>() + "…";
        }
        line
    }
}

fn reading_order(listing: &str) -> usize {
    let order = [
        "/api/v1/users",
        "/api/v1/groups",
        "/api/v1/groups/{id}/users",
        "/api/v1/apps",
        "/api/v1/apps/{id}/users",
    ];
    order.iter().position(|l| *l == listing).unwrap_or(order.len())
}

/// `/api/v1/groups/{id}/users` → `group members`, as a person reads it.
fn short_name(listing: &str) -> &str {
    match listing {
        "/api/v1/users" => "users",
        "/api/v1/groups" => "groups",
        "/api/v1/groups/{id}/users" => "group members",
        "/api/v1/apps" => "apps",
        "/api/v1/apps/{id}/users" => "app users",
        other => other,
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    text: BTreeMap<&'static str, String>,
    numbers: BTreeMap<&'static str, u64>,
    last: bool,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text.insert(field.name(), value.to_owned());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.numbers.insert(field.name(), value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.numbers.insert(field.name(), value.max(0) as u64);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "last" {
            self.last = value;
        }
    }
}

/// The layer that draws the status line; give it the progress events only.
#[derive(Default)]
pub struct StatusLine {
    state: Mutex<State>,
}

impl<S: Subscriber> Layer<S> for StatusLine {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let number = |name| fields.numbers.get(name).copied().unwrap_or(0);
        let text = |name| fields.text.get(name).cloned().unwrap_or_default();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut now = false;
        match fields.message.as_str() {
            "page" => {
                let name = text("listing");
                // A whole listing's end is always shown; the per-id ones come by hundreds.
                now = fields.last && !name.contains("{id}");
                let listing = state.listings.entry(name).or_default();
                listing.objects += number("objects");
                listing.pages += 1;
                listing.finished += u64::from(fields.last);
            }
            "rate limit pause" => state.waited_ms += number("wait_ms"),
            "writing" => {
                let (written, of) = (number("written"), number("of"));
                now = written == of;
                state.written.insert(text("blueprint"), (written, of));
            }
            "phase" => {
                // Each phase shows its own counts; the waits add up over the run.
                state.phase = text("phase");
                state.listings.clear();
                state.written.clear();
                now = true;
            }
            _ => return,
        }
        if now || state.drawn_at.is_none_or(|at| at.elapsed() >= REDRAW) {
            state.drawn_at = Some(Instant::now());
            let mut line = CLEAR.to_vec();
            line.extend_from_slice(state.line().as_bytes());
            let _ = std::io::stderr().write_all(&line);
            SHOWN.store(true, Ordering::Relaxed);
        }
    }
}

/// Wipes the status line, so that what follows (a log line, the report) starts clean.
pub fn clear() {
    if SHOWN.swap(false, Ordering::Relaxed) {
        let _ = std::io::stderr().write_all(CLEAR);
    }
}

/// Stderr for log lines printed while a status line may be on screen: each line wipes it
/// first, and the next progress event draws it again below.
#[derive(Clone, Copy, Default)]
pub struct ClearLine;

impl<'a> MakeWriter<'a> for ClearLine {
    type Writer = std::io::Stderr;
    fn make_writer(&'a self) -> Self::Writer {
        clear();
        std::io::stderr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_listings_writes_and_waits() {
        let mut state = State {
            phase: "reading Okta".into(),
            ..State::default()
        };
        state.listings.insert(
            "/api/v1/groups/{id}/users".into(),
            Listing {
                objects: 4_200,
                pages: 31,
                finished: 12,
            },
        );
        state.written.insert("oktaUser".into(), (200, 1_000));
        state.waited_ms = 3_300;
        assert_eq!(
            state.line(),
            "reading Okta · group members 4200 (31 pages, 12 lists) · oktaUser 200/1000 · rate-limit waits 3.3 s"
        );
    }
}
