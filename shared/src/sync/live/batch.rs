//! One batch of queue messages: parsed, grouped by object, converged in rounds, and each
//! failure reported against the messages that asked for the object.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{BatchReport, Context, FollowUps, Kind, Processor, Wanted, users::manager_dependents};
use crate::events::{QueuedEvent, parse_message};

/// Applies a batch of queue messages `(message id, body)`.
pub async fn apply_batch(
    messages: &[(String, String)],
    processors: &[Box<dyn Processor>],
    ctx: &Context<'_>,
) -> BatchReport {
    let calls_before = ctx.okta.stats().calls;
    let mut batch = Batch::default();
    for (message_id, body) in messages {
        batch.take_message(message_id, body, processors);
    }
    // Round one converges what the events asked, kind by kind (relation targets first).
    // Later rounds converge what earlier ones revealed: groups whose membership moved,
    // members of deleted groups, users whose manager may now resolve differently. Each
    // object is converged once per batch.
    for round in 0..MAX_ROUNDS {
        if batch.pending.is_empty() {
            break;
        }
        batch.run_round(round, processors, ctx).await;
    }
    batch.hand_back_leftovers();
    batch.log_not_converged();
    let mut report = batch.report;
    report.okta_calls = ctx.okta.stats().calls - calls_before;
    report
}

/// Objects to converge, per kind, with what is wanted of each.
type Pending = BTreeMap<Kind, BTreeMap<String, Wanted>>;

/// One batch's state between rounds.
#[derive(Default)]
struct Batch {
    report: BatchReport,
    /// Event uuids seen (a redelivered event counts as a duplicate).
    seen: HashSet<String>,
    pending: Pending,
    /// The messages that asked for each object: its failure is reported against them.
    askers: HashMap<(Kind, String), BTreeSet<String>>,
    done: HashSet<(Kind, String)>,
    /// Logged once for the batch: a broken mapping fails every object the same way.
    not_converged: Vec<String>,
}

/// What one round reveals for the next.
#[derive(Default)]
struct NextRound {
    pending: Pending,
    /// Values other users' `managerId` may name (round one only).
    manager_keys: BTreeSet<String>,
    converged_users: BTreeSet<String>,
    /// The messages behind `manager_keys`.
    user_askers: BTreeSet<String>,
}

impl Batch {
    /// Adds what one message's event asks to the pending work; a body that is not a
    /// queued event fails its message (it then goes to the DLQ).
    fn take_message(&mut self, message_id: &str, body: &str, processors: &[Box<dyn Processor>]) {
        let event: QueuedEvent = match parse_message(body) {
            Ok(Some(e)) => e,
            Ok(None) => {
                // Log Streaming sends what its rule matches; a type we do not handle is no error.
                self.report.events += 1;
                self.report.ignored += 1;
                return;
            }
            Err(reason) => {
                tracing::error!(message_id, error = %reason, "poison message");
                self.report.fail(message_id, reason);
                return;
            }
        };
        self.report.events += 1;
        if event.uuid.as_ref().is_some_and(|u| !self.seen.insert(u.clone())) {
            self.report.duplicates += 1;
        }
        let asked = BTreeSet::from([message_id.to_owned()]);
        let mut handled = false;
        for processor in processors.iter().filter(|p| p.handles(&event.event_type)) {
            handled = true;
            for (id, wanted) in processor.targets(&event) {
                want(
                    &mut self.pending,
                    &mut self.askers,
                    (processor.kind(), id),
                    wanted,
                    &asked,
                );
            }
        }
        if !handled {
            self.report.ignored += 1;
        }
    }

    async fn run_round(&mut self, round: usize, processors: &[Box<dyn Processor>], ctx: &Context<'_>) {
        let mut next = NextRound::default();
        for processor in processors {
            let kind = processor.kind();
            let Some(mut objects) = self.pending.remove(&kind) else {
                continue;
            };
            objects.retain(|id, _| !self.done.contains(&(kind, id.clone())));
            if objects.is_empty() {
                continue;
            }
            for (id, result) in processor.converge(ctx, &objects).await {
                self.settle(kind, id, result, round == 0, &mut next);
            }
        }
        // Users whose manager may resolve differently, found once, from round one's users.
        if !next.manager_keys.is_empty() {
            self.find_reports(ctx, &mut next).await;
        }
        self.pending = next.pending;
    }

    /// Records one object's outcome: its follow-ups go to the next round, asked by the
    /// same messages; its failure fails those messages.
    fn settle(
        &mut self,
        kind: Kind,
        id: String,
        result: Result<FollowUps, String>,
        first: bool,
        next: &mut NextRound,
    ) {
        self.done.insert((kind, id.clone()));
        self.report.converged += 1;
        let asked = self.askers.get(&(kind, id.clone())).cloned().unwrap_or_default();
        let follow = match result {
            Ok(follow) => follow,
            Err(reason) => {
                let reason = format!("{kind:?} {id}: {reason}");
                for message in &asked {
                    self.report.fail(message, reason.clone());
                }
                self.not_converged.push(reason);
                return;
            }
        };
        let members = Wanted {
            relations: true,
            ..Wanted::REFETCH
        };
        for (target_kind, ids, wanted) in [
            (Kind::Group, follow.groups, Wanted::REFETCH),
            (Kind::User, follow.refetch_users, members),
        ] {
            for target in ids {
                want(
                    &mut next.pending,
                    &mut self.askers,
                    (target_kind, target),
                    wanted,
                    &asked,
                );
            }
        }
        if first && !follow.manager_keys.is_empty() {
            next.manager_keys.extend(follow.manager_keys);
            next.user_askers.extend(asked);
        }
        if kind == Kind::User {
            next.converged_users.insert(id);
        }
    }

    async fn find_reports(&mut self, ctx: &Context<'_>, next: &mut NextRound) {
        match manager_dependents(ctx, &next.manager_keys, &next.converged_users).await {
            Ok(users) => {
                for user in users {
                    want(
                        &mut next.pending,
                        &mut self.askers,
                        (Kind::User, user),
                        Wanted::REFETCH,
                        &next.user_askers,
                    );
                }
            }
            Err(reason) => {
                for message in &next.user_askers {
                    self.report
                        .fail(message, format!("finding the reports of changed users: {reason}"));
                }
            }
        }
    }

    /// Work still pending after the last round is not dropped: the messages that led to it
    /// are reported failed, so they come back and the work is done then.
    fn hand_back_leftovers(&mut self) {
        for (kind, objects) in &self.pending {
            for id in objects
                .keys()
                .filter(|id| !self.done.contains(&(*kind, (*id).clone())))
            {
                for message in self.askers.get(&(*kind, id.clone())).into_iter().flatten() {
                    self.report.fail(
                        message,
                        format!("{kind:?} {id}: follow-up work left after {MAX_ROUNDS} rounds; retried with the message"),
                    );
                }
            }
        }
    }

    fn log_not_converged(&self) {
        if !self.not_converged.is_empty() {
            tracing::warn!(
                objects = self.not_converged.len(),
                examples = self.not_converged[..self.not_converged.len().min(3)].join("; "),
                "could not converge; their messages are retried"
            );
        }
    }
}

/// Adds `object` to `pending` with `wanted` (merged with what is already wanted of it),
/// asked by `asked`.
fn want(
    pending: &mut Pending,
    askers: &mut HashMap<(Kind, String), BTreeSet<String>>,
    object: (Kind, String),
    wanted: Wanted,
    asked: &BTreeSet<String>,
) {
    pending
        .entry(object.0)
        .or_default()
        .entry(object.1.clone())
        .or_default()
        .merge(wanted);
    askers.entry(object).or_default().extend(asked.iter().cloned());
}

/// Rounds in one batch: the events, then what each round revealed. Follow-ups do not
/// cascade far (each object is converged once), so this bound is rarely reached.
const MAX_ROUNDS: usize = 5;

/// `metrics::event_lags` as of now, for the events of `messages` that `processors` handle
/// and whose messages did not fail.
pub fn applied_event_lags(
    messages: &[(String, String)],
    report: &BatchReport,
    processors: &[Box<dyn Processor>],
) -> Vec<u64> {
    let handled = |e: &QueuedEvent| processors.iter().any(|p| p.handles(&e.event_type));
    crate::metrics::event_lags(messages, &report.failed_messages, handled, chrono::Utc::now())
}

/// The `(message id, body)` pairs of an SQS event; a record without a body is kept with an
/// empty one, so that it is reported as failed rather than lost.
pub fn sqs_messages(event: aws_lambda_events::event::sqs::SqsEvent) -> Vec<(String, String)> {
    event
        .records
        .into_iter()
        .map(|r| (r.message_id.unwrap_or_default(), r.body.unwrap_or_default()))
        .collect()
}
