//! Wiring: the real clients and the default mapping, built once per process (per Lambda
//! cold start) from the configuration.

use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde_json::Value;

use crate::config::{Config, ConfigError, HookConfig, ResyncOptions};
use crate::hooks::{self, HookError, HookOutcome};
use crate::mapping::AppMapping;
use crate::mapping::config::MappingConfigError;
use crate::metrics;
use crate::okta::{self, OktaError};
use crate::port::{self, PortError, PortSink};
use crate::report::Report;
use crate::secrets::{self, Lookup, SecretsError};
use crate::sync::catchup::{self, CatchupError, CatchupReport};
use crate::sync::live::{self, BatchReport, Context, Processor};
use crate::sync::{self, RunOverrides, SyncError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Okta(#[from] OktaError),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Mapping(#[from] MappingConfigError),
}

#[derive(Debug, thiserror::Error)]
pub enum HookSetupError {
    #[error(transparent)]
    Config(ConfigError),
    #[error(transparent)]
    Hook(#[from] HookError),
}

/// Why one invocation of the scheduled resync failed. The function returns it as an error,
/// so the invocation counts as failed and the ResyncErrors alarm fires.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("invalid resync input: {0}")]
    Input(#[from] serde_json::Error),
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The run finished but is incomplete: failed listings or entities, refused deletions.
    #[error("resync incomplete: {summary}")]
    Incomplete { summary: String, report: Box<Report> },
    /// A resumable run was asked for where no `STATE_URL` can hold its checkpoint.
    #[error("a resumable resync needs STATE_URL (s3://bucket/prefix) for its checkpoint")]
    NoStateStore,
}

impl InvocationError {
    /// The run's report, when it got that far.
    pub fn report(&self) -> Option<&Report> {
        match self {
            InvocationError::Incomplete { report, .. } => Some(report),
            _ => None,
        }
    }
}

pub struct App {
    pub okta: okta::Client,
    pub port: port::Client,
    pub mapping: AppMapping,
    pub options: ResyncOptions,
    pub hook: HookConfig,
    /// `STATE_URL`: where state that outlives a run is kept (the catch-up's cursor).
    pub state_url: Option<String>,
    events_queue_url: Option<String>,
    /// The catch-up cursor's key: one per Okta org and installation.
    catchup_key: String,
    /// The resync checkpoint's name in the state store: one per Okta org and installation.
    resync_checkpoint: String,
    /// The scheduled catch-up's state store and queue client, once per process.
    catchup_io: tokio::sync::OnceCell<(Box<dyn crate::state::StateStore>, crate::queue::Sqs)>,
    /// Set once Port's blueprint definitions were read for the mapping (live path).
    blueprints_read: tokio::sync::OnceCell<()>,
}

impl App {
    pub fn new(config: &Config) -> Result<Self, AppError> {
        // A bad mapping configuration is refused here, before anything is written.
        let mapping = AppMapping::load(&config.mapping)?;
        let mut options = config.resync.clone();
        if let Some(threshold) = mapping.deletion_threshold() {
            options.deletion_threshold = threshold;
        }
        Ok(Self {
            okta: okta::Client::new(&config.okta)?,
            port: port::Client::new(&config.port)?,
            mapping,
            options,
            hook: config.hook.clone(),
            state_url: config.state_url.clone(),
            events_queue_url: config.events_queue_url.clone(),
            catchup_key: state_key("catchup", config),
            resync_checkpoint: state_key("resync-checkpoint", config),
            catchup_io: tokio::sync::OnceCell::new(),
            blueprints_read: tokio::sync::OnceCell::new(),
        })
    }

    /// Reads the configuration from the process environment alone (no `SECRETS_ARN`) and
    /// builds the clients.
    pub fn from_env() -> Result<Self, AppError> {
        Self::new(&Config::from_env()?)
    }

    /// Reads the configuration from the environment, with `SECRETS_ARN`'s secret merged
    /// under it when that is set (read once per process), and builds the clients. What the
    /// functions and the CLI use.
    pub async fn from_environment() -> Result<Self, AppError> {
        Self::from_lookup(&secrets::environment().await?)
    }

    /// Reads the configuration through `lookup` and builds the clients.
    pub fn from_lookup(lookup: &Lookup) -> Result<Self, AppError> {
        Self::new(&Config::from_lookup(|name| lookup.get(name))?)
    }

    pub async fn resync(&self, overrides: RunOverrides) -> Result<Report, SyncError> {
        sync::resync(
            &self.okta,
            &self.port,
            &self.mapping,
            &overrides.apply(&self.options),
        )
        .await
    }

    /// A resync that goes on from the checkpoint in the store `state_url` names, if there
    /// is one, and that stops reading Okta at `stop_at` and writing at `write_stop_at`
    /// with a new checkpoint saved (the report then says it is resumable).
    pub async fn resumable_resync(
        &self,
        overrides: RunOverrides,
        state_url: &str,
        stop_at: Option<tokio::time::Instant>,
        write_stop_at: Option<tokio::time::Instant>,
    ) -> Result<Report, SyncError> {
        let store = crate::state::from_url(state_url)
            .await
            .map_err(|e| SyncError::Checkpoint(e.into()))?;
        let options = overrides.apply(&self.options);
        let budget = sync::Budget {
            stop_at,
            write_stop_at,
            name: &self.resync_checkpoint,
            checkpoints: Some(store.as_ref()),
            max_age: options.checkpoint_max_age,
        };
        sync::resync_within(&self.okta, &self.port, &self.mapping, &options, budget).await
    }

    /// One invocation of the scheduled resync function: the run (with the schedule's
    /// overrides), then, with `WEBHOOK_URL` set, the event hook check. Anything short of
    /// complete is an error carrying the report.
    pub async fn scheduled_resync(&self, payload: Value) -> Result<Report, InvocationError> {
        self.scheduled_resync_until(payload, Duration::ZERO).await
    }

    /// `scheduled_resync` in an invocation with `left` to go. Input `{"resumable": true}`
    /// (how the state machine invokes it) makes the run resumable: it reads Okta for two
    /// thirds of `left` at most and writes until nine tenths, keeps a checkpoint in
    /// `STATE_URL`, and answers with a report whose `resumable` says whether to invoke it
    /// again.
    pub async fn scheduled_resync_until(
        &self,
        payload: Value,
        left: Duration,
    ) -> Result<Report, InvocationError> {
        let resumable = payload.get("resumable").and_then(Value::as_bool).unwrap_or(false);
        let mut payload = payload;
        if let Some(fields) = payload.as_object_mut() {
            fields.remove("resumable");
        }
        let overrides = scheduled_overrides(payload)?;
        let mut report = match (resumable, &self.state_url) {
            (false, _) => self.resync(overrides).await?,
            (true, None) => return Err(InvocationError::NoStateStore),
            (true, Some(url)) => {
                let now = tokio::time::Instant::now();
                let stop_at = (!left.is_zero()).then(|| now + left * 2 / 3);
                let write_stop_at = (!left.is_zero()).then(|| now + left * 9 / 10);
                self.resumable_resync(overrides, url, stop_at, write_stop_at)
                    .await?
            }
        };
        if report.resumable {
            tracing::info!(
                listings_left = report.listings_left,
                "resync paused; the state machine invokes it again"
            );
            return Ok(report);
        }
        if self.hook.url.is_some() {
            // A hook problem must not block the resync, but it fails the invocation.
            match self.ensure_hook(None).await {
                Ok(outcome) => tracing::info!(?outcome, "event hook checked"),
                Err(e) => report.errors.push(format!("event hook: {e}")),
            }
        }
        if let Ok(json) = serde_json::to_string(&report) {
            tracing::info!(report = %json, "resync finished");
        }
        if report.is_success() {
            Ok(report)
        } else {
            Err(InvocationError::Incomplete {
                summary: report.failure_summary(),
                report: Box::new(report),
            })
        }
    }

    /// Makes sure Okta's event hook points at `url` (default: `WEBHOOK_URL`), with our
    /// event list, active and verified.
    pub async fn ensure_hook(&self, url: Option<&str>) -> Result<HookOutcome, HookSetupError> {
        self.ensure_hook_with(url, false).await
    }

    /// `ensure_hook`, also pushing the configured secret to an existing hook (after a rotation).
    pub async fn ensure_hook_with(
        &self,
        url: Option<&str>,
        push_secret: bool,
    ) -> Result<HookOutcome, HookSetupError> {
        let (url, secret) = self.hook.require(url).map_err(HookSetupError::Config)?;
        Ok(hooks::ensure_hook(&self.okta, url, &self.hook.header, secret, push_secret).await?)
    }

    /// One System Log catch-up pass (`sync::catchup`), its cursor in the store `state_url`
    /// names; `since` overrides the cursor.
    pub async fn catch_up(
        &self,
        state_url: &str,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<CatchupReport, CatchupError> {
        let store = crate::state::from_url(state_url).await?;
        self.read_blueprints().await;
        let processors = live::default_processors();
        let ctx = self.live();
        let sink = catchup::ApplyNow {
            ctx: &ctx,
            processors: &processors,
        };
        catchup::catch_up(&self.okta, &sink, store.as_ref(), &self.catchup_key, since).await
    }

    /// The resync function's scheduled catch-up (input `{"catchUp": true}`): one System Log
    /// pass whose new events go onto the events queue, for the consumer to apply.
    pub async fn scheduled_catch_up(&self) -> Result<CatchupReport, CatchupError> {
        let state_url = self.state_url.as_deref().ok_or(CatchupError::Missing(
            "STATE_URL",
            "where the catch-up keeps its cursor",
        ))?;
        let queue_url = self.events_queue_url.clone().ok_or(CatchupError::Missing(
            "EVENTS_QUEUE_URL",
            "where the catch-up queues the events",
        ))?;
        // Built once per process: a warm function reuses its S3 and SQS clients every pass.
        let (store, queue) = self
            .catchup_io
            .get_or_try_init(|| async {
                let store = crate::state::from_url(state_url).await?;
                Ok::<_, CatchupError>((store, crate::queue::Sqs::from_env(queue_url).await))
            })
            .await?;
        let sink = catchup::Enqueue(queue);
        let report = catchup::catch_up(&self.okta, &sink, store.as_ref(), &self.catchup_key, None).await?;
        if let Ok(json) = serde_json::to_string(&report) {
            tracing::info!(report = %json, "catch-up finished");
        }
        Ok(report)
    }

    /// The live path's view of the clients and mapping.
    pub fn live(&self) -> Context<'_> {
        Context {
            okta: &self.okta,
            port: &self.port,
            mapping: &self.mapping,
        }
    }

    /// Applies a batch of queue messages `(message id, body)` with the default processors.
    pub async fn apply_batch(
        &self,
        messages: &[(String, String)],
        processors: &[Box<dyn Processor>],
    ) -> BatchReport {
        self.read_blueprints().await;
        live::apply_batch(messages, processors, &self.live()).await
    }

    /// `apply_batch`, bounded by `budget` (the invocation's time left, less a margin): work
    /// still waiting then (an Okta that keeps answering 429, a stalled Port) is handed back
    /// to the queue as failed messages, rather than cut off by Lambda's timeout.
    pub async fn apply_batch_within(
        &self,
        messages: &[(String, String)],
        processors: &[Box<dyn Processor>],
        budget: std::time::Duration,
    ) -> BatchReport {
        match tokio::time::timeout(budget, self.apply_batch(messages, processors)).await {
            Ok(report) => report,
            Err(_) => {
                let reason = format!(
                    "not finished within the invocation's time ({} ms were left for it); handed back to the queue",
                    budget.as_millis()
                );
                tracing::warn!(messages = messages.len(), "{reason}");
                BatchReport {
                    failed_messages: messages.iter().map(|(id, _)| id.clone()).collect(),
                    failures: messages
                        .iter()
                        .map(|(id, _)| (id.clone(), reason.clone()))
                        .collect(),
                    events: messages.len(),
                    ..BatchReport::default()
                }
            }
        }
    }

    /// The consumer function's invocation: applies the SQS batch within the time `left`
    /// (less a margin to report), emits its metrics, and names the failed messages.
    pub async fn consume(
        &self,
        event: SqsEvent,
        processors: &[Box<dyn Processor>],
        left: Duration,
        request_id: &str,
    ) -> SqsBatchResponse {
        let messages = live::sqs_messages(event);
        let report = self
            .apply_batch_within(&messages, processors, consumer_budget(left))
            .await;
        tracing::info!(?report, "batch done");
        let lags = live::applied_event_lags(&messages, &report, processors);
        metrics::emit_stdout(&metrics::consumer(&report, &lags, Some(request_id)));
        let mut response = SqsBatchResponse::default();
        for id in report.failed_messages {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
        response
    }

    /// Tells the mapping how Port defines its blueprints, once per process. On failure the
    /// next batch tries again (a relation's cardinality then falls back to ours).
    async fn read_blueprints(&self) {
        use crate::mapping::Mapping;
        if matches!(self.mapping, AppMapping::Builtin(_)) {
            return; // its cardinalities are its own
        }
        let read = self
            .blueprints_read
            .get_or_try_init(|| async {
                for bp in self.mapping.blueprint_ids() {
                    if let Some(definition) = self.port.blueprint(&bp).await? {
                        self.mapping.learn_blueprint(&definition);
                    }
                }
                Ok::<(), PortError>(())
            })
            .await;
        if let Err(e) = read {
            tracing::warn!(error = %e, "could not read the blueprints from Port");
        }
    }

    /// Creates the missing blueprints; returns the ones it created.
    pub async fn ensure_blueprints(&self) -> Result<Vec<String>, PortError> {
        use crate::mapping::Mapping;
        self.port.ensure_blueprints(&self.mapping.blueprints()).await
    }
}

/// The resync function's input. EventBridge Scheduler hands the schedule's `Input` over
/// verbatim; a classic EventBridge rule wraps it in an envelope whose `detail` holds it.
/// Both may be empty.
/// Whether the resync function's input asks for a catch-up pass (`{"catchUp": true}`, as
/// the stack's catch-up schedule sends it) rather than a resync.
pub fn is_catch_up(event: &Value) -> bool {
    event["catchUp"] == true || event["detail"]["catchUp"] == true
}

pub fn scheduled_overrides(event: Value) -> Result<RunOverrides, serde_json::Error> {
    let input = match event {
        Value::Object(mut map) if map.contains_key("detail-type") && map.contains_key("source") => {
            map.remove("detail").unwrap_or(Value::Null)
        }
        other => other,
    };
    match input {
        Value::Null => Ok(RunOverrides::default()),
        Value::Object(ref m) if m.is_empty() => Ok(RunOverrides::default()),
        other => serde_json::from_value(other),
    }
}

/// The name of what `kind` keeps in the state store: one per Okta org and installation,
/// so one store can serve several.
fn state_key(kind: &str, config: &Config) -> String {
    format!(
        "{kind}-{}-{}",
        config.okta.base_url.host_str().unwrap_or("okta"),
        config.port.installation_id
    )
}

/// Time kept back from the consumer's deadline to report the batch's failures.
const CONSUMER_MARGIN: Duration = Duration::from_secs(3);

/// The time a batch's work may take: what the invocation has left, less the margin. A
/// short invocation keeps three quarters for the work; a deadline already past (a local
/// emulator's) gets Lambda's longest timeout, since the real one is unknown.
fn consumer_budget(left: Duration) -> Duration {
    if left.is_zero() {
        return Duration::from_secs(900);
    }
    left.saturating_sub(CONSUMER_MARGIN.min(left / 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_schedule_shapes_are_accepted() {
        assert_eq!(scheduled_overrides(json!({})).unwrap(), RunOverrides::default());
        assert_eq!(scheduled_overrides(Value::Null).unwrap(), RunOverrides::default());
        assert!(scheduled_overrides(json!({ "dryRun": true })).unwrap().dry_run);
        let envelope = json!({
            "version": "0", "id": "1", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2026-11-28T02:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/nightly"], "detail": {}
        });
        assert_eq!(
            scheduled_overrides(envelope.clone()).unwrap(),
            RunOverrides::default()
        );
        let mut with_detail = envelope;
        with_detail["detail"] = json!({ "allowMassDeletion": true });
        assert!(scheduled_overrides(with_detail).unwrap().allow_mass_deletion);
        assert!(scheduled_overrides(json!({ "dryRun": "yes" })).is_err());
    }
}
