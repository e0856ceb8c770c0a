//! The queue between the webhook and the consumer: the `EventQueue` trait the webhook hands
//! events to, `Sqs` (Amazon SQS through the AWS SDK) and `MemoryQueue`, an in-memory twin
//! for unit tests and the demo.
//!
//! `send_all` is all-or-nothing from the caller's point of view: it is `Ok` only once the
//! queue has accepted every message, so the webhook answers 200 only then, and Okta
//! redelivers otherwise. Delivery is at least once: a batch that failed in transit may have
//! been stored anyway and is sent again, so consumers must be idempotent.

use std::collections::HashSet;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::retry::RetryPolicy;

/// Entries per SendMessageBatch / DeleteMessageBatch call (an SQS limit).
pub const MAX_BATCH_ENTRIES: usize = 10;
/// Total body bytes per SendMessageBatch call. SQS has since raised its ceiling to 1 MiB,
/// but queues created earlier keep `MaximumMessageSize` = 256 KiB, so we stay under it.
pub const MAX_BATCH_BYTES: usize = 262_144;
/// Bytes of one message body (UTF-8).
pub const MAX_MESSAGE_BYTES: usize = 262_144;
/// Batches of one `send_all` in flight at once.
const MAX_CONCURRENT_BATCHES: usize = 8;

/// Where the webhook hands events on.
pub trait EventQueue: Send + Sync {
    /// Ok only once the queue has accepted every message (so the webhook can answer 200).
    fn send_all(&self, bodies: &[String]) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Why messages were not queued. Messages never include message bodies (they carry
/// personal data from Okta), only indexes, sizes and SQS's own codes.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Checked before anything is sent: the whole `send_all` fails and nothing is queued.
    #[error("message {index} is {bytes} bytes; a queue message may be at most {max} bytes")]
    TooLarge { index: usize, bytes: usize, max: usize },
    /// Checked before anything is sent: SQS refuses empty bodies.
    #[error("message {index} is empty; a queue message needs at least one character")]
    EmptyMessage { index: usize },
    /// The SQS call itself failed (network, permissions, missing queue, throttling…).
    #[error("SQS {operation} failed after {attempts} attempt(s): {message}")]
    Request {
        operation: &'static str,
        attempts: u32,
        message: String,
    },
    /// SQS answered but did not accept every entry.
    #[error(
        "SQS {operation} did not accept {failed} of {total} entries after {attempts} attempt(s) \
         (error code {code}, sender fault: {sender_fault})"
    )]
    Rejected {
        operation: &'static str,
        failed: usize,
        total: usize,
        attempts: u32,
        code: String,
        sender_fault: bool,
    },
    /// The queue cannot take messages at all (the in-memory queue set to fail).
    #[error("queue unavailable: {reason}")]
    Unavailable { reason: String },
}

/// Splits messages, given their sizes in bytes, into consecutive batches of at most
/// `MAX_BATCH_ENTRIES` entries and `MAX_BATCH_BYTES` bytes. Fails, before anything is sent,
/// on a message that can never be sent.
pub fn plan_batches(sizes: &[usize]) -> Result<Vec<Range<usize>>, QueueError> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, &size) in sizes.iter().enumerate() {
        if size == 0 {
            return Err(QueueError::EmptyMessage { index });
        }
        if size > MAX_MESSAGE_BYTES {
            return Err(QueueError::TooLarge {
                index,
                bytes: size,
                max: MAX_MESSAGE_BYTES,
            });
        }
        if index - start == MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES {
            batches.push(start..index);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        batches.push(start..sizes.len());
    }
    Ok(batches)
}

fn sizes_of(bodies: &[String]) -> Vec<usize> {
    bodies.iter().map(String::len).collect()
}

/// One message taken from the queue; delete it by `receipt_handle` once handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
}

/// An SQS queue, by URL.
#[derive(Debug, Clone)]
pub struct Sqs {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    retry: RetryPolicy,
}

impl Sqs {
    /// Client from the standard AWS configuration (environment, profile, role): region and
    /// endpoint included, so `AWS_ENDPOINT_URL` points it at moto.
    pub async fn from_env(queue_url: String) -> Sqs {
        let config = crate::aws::sdk_config(crate::aws::GENERAL).await;
        Sqs::new(aws_sdk_sqs::Client::new(&config), queue_url)
    }

    /// The webhook's queue: every send bounded by `aws::WEBHOOK_SEND`, so that a refused,
    /// throttled, failing or stalled SQS is a 503 well within Okta's 3 s.
    pub async fn for_webhook(queue_url: String) -> Sqs {
        let config = crate::aws::sdk_config(crate::aws::WEBHOOK_SEND).await;
        Sqs::new(aws_sdk_sqs::Client::new(&config), queue_url).with_retry(RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
        })
    }

    pub fn new(client: aws_sdk_sqs::Client, queue_url: String) -> Sqs {
        // Short waits: the webhook must answer Okta within a few seconds.
        let retry = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
        };
        Sqs {
            client,
            queue_url,
            retry,
        }
    }

    /// Replaces the policy for retrying entries SQS did not accept and transient errors.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Sqs {
        self.retry = retry;
        self
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Up to `max` messages (clamped to SQS's 1..=10), long-polling up to `wait_seconds`
    /// (clamped to 0..=20).
    pub async fn receive(&self, max: i32, wait_seconds: i32) -> Result<Vec<ReceivedMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait_seconds.clamp(0, 20))
            .send()
            .await
            .map_err(|err| request_error("ReceiveMessage", 1, &err))?;
        Ok(output
            .messages()
            .iter()
            .map(|m| ReceivedMessage {
                message_id: m.message_id().unwrap_or_default().to_owned(),
                receipt_handle: m.receipt_handle().unwrap_or_default().to_owned(),
                body: m.body().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// Deletes handled messages, in batches of 10. A message left undeleted comes back
    /// after its visibility timeout, so a failure here means redelivery, not loss.
    pub async fn delete(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        stream::iter(receipt_handles.chunks(MAX_BATCH_ENTRIES))
            .map(|chunk| self.delete_batch(chunk))
            .buffer_unordered(MAX_CONCURRENT_BATCHES)
            .try_collect()
            .await
    }

    async fn delete_batch(&self, handles: &[String]) -> Result<(), QueueError> {
        let entries = handles
            .iter()
            .enumerate()
            .map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|err| request_error("DeleteMessageBatch", 1, &err))?;
        match output.failed().first() {
            None => Ok(()),
            Some(first) => Err(QueueError::Rejected {
                operation: "DeleteMessageBatch",
                failed: output.failed().len(),
                total: handles.len(),
                attempts: 1,
                code: first.code().to_owned(),
                sender_fault: first.sender_fault(),
            }),
        }
    }

    /// Sends one planned batch, re-sending what SQS did not accept until the attempts run out.
    async fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError> {
        const OPERATION: &str = "SendMessageBatch";
        // Indexes into `bodies` not yet accepted; an entry's id is its index.
        let mut pending: Vec<usize> = (0..bodies.len()).collect();
        let mut attempt = 1;
        loop {
            let entries = pending
                .iter()
                .map(|&i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&bodies[i])
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let result = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            let error = match result {
                Ok(output) => {
                    let accepted: HashSet<&str> = output.successful().iter().map(|e| e.id()).collect();
                    pending.retain(|i| !accepted.contains(i.to_string().as_str()));
                    if pending.is_empty() {
                        return Ok(());
                    }
                    let first = output.failed().first();
                    let sender_fault = output.failed().iter().any(|e| e.sender_fault());
                    let rejected = QueueError::Rejected {
                        operation: OPERATION,
                        failed: pending.len(),
                        total: bodies.len(),
                        attempts: attempt,
                        code: first.map_or("MissingResult", |e| e.code()).to_owned(),
                        sender_fault,
                    };
                    // The sender's fault (say, invalid characters) does not go away by retrying.
                    if sender_fault {
                        return Err(rejected);
                    }
                    rejected
                }
                Err(err) if is_transient(&err) => request_error(OPERATION, attempt, &err),
                Err(err) => return Err(request_error(OPERATION, attempt, &err)),
            };
            if attempt >= self.retry.max_attempts {
                tracing::warn!(%error, "giving up on an SQS batch");
                return Err(error);
            }
            tracing::info!(%error, attempt, "retrying an SQS batch");
            tokio::time::sleep(self.retry.backoff(attempt)).await;
            attempt += 1;
        }
    }
}

impl EventQueue for Sqs {
    /// SendMessageBatch in batches of at most 10 entries and 256 KiB, several at once. A
    /// message that is empty or larger than 256 KiB fails the whole call before anything
    /// is sent, so the caller never has to work out which part was queued.
    async fn send_all(&self, bodies: &[String]) -> Result<(), QueueError> {
        let batches = plan_batches(&sizes_of(bodies))?;
        stream::iter(batches)
            .map(|range| self.send_batch(&bodies[range]))
            .buffer_unordered(MAX_CONCURRENT_BATCHES)
            .try_collect()
            .await
    }
}

/// Worth another try: throttling, server errors and failures in transit. A missing queue,
/// denied access or a malformed request will fail the same way again.
fn is_transient<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            status >= 500 || status == 429 || ctx.err().code().is_some_and(|c| c.contains("Throttl"))
        }
        _ => false,
    }
}

fn request_error<E>(operation: &'static str, attempts: u32, err: &SdkError<E, HttpResponse>) -> QueueError
where
    E: std::error::Error + 'static,
{
    QueueError::Request {
        operation,
        attempts,
        message: DisplayErrorContext(err).to_string(),
    }
}

/// In-memory twin of `Sqs` for unit tests and the demo: same validation, no network.
#[derive(Debug, Clone, Default)]
pub struct MemoryQueue {
    messages: Arc<Mutex<Vec<String>>>,
    failing: Arc<AtomicBool>,
}

impl MemoryQueue {
    /// The queued messages, oldest first.
    pub fn messages(&self) -> Vec<String> {
        self.lock().clone()
    }

    /// Takes every queued message out, oldest first.
    pub fn drain(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock())
    }

    /// While failing, `send_all` returns `Err` and stores nothing (an SQS outage).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // A panicking test thread must not hide the messages from the others.
        self.messages.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EventQueue for MemoryQueue {
    async fn send_all(&self, bodies: &[String]) -> Result<(), QueueError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(QueueError::Unavailable {
                reason: "the in-memory queue is set to fail".into(),
            });
        }
        plan_batches(&sizes_of(bodies))?;
        self.lock().extend_from_slice(bodies);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{{\"n\":{i}}}")).collect()
    }

    #[tokio::test]
    async fn memory_queue_stores_in_order_and_drains() {
        let queue = MemoryQueue::default();
        queue.send_all(&bodies(3)).await.unwrap();
        queue.send_all(&bodies(2)).await.unwrap();
        assert_eq!(queue.messages().len(), 5);
        assert_eq!(queue.messages()[3], "{\"n\":0}");
        // Clones share the same queue, as the webhook and a test would.
        let drained = queue.clone().drain();
        assert_eq!(drained, [bodies(3), bodies(2)].concat());
        assert!(queue.messages().is_empty());
        queue.send_all(&[]).await.unwrap();
        assert!(queue.drain().is_empty());
    }

    #[tokio::test]
    async fn failing_memory_queue_stores_nothing() {
        let queue = MemoryQueue::default();
        queue.set_failing(true);
        let err = queue.send_all(&bodies(4)).await.unwrap_err();
        assert!(matches!(err, QueueError::Unavailable { .. }), "{err}");
        assert!(queue.messages().is_empty());
        queue.set_failing(false);
        queue.send_all(&bodies(4)).await.unwrap();
        assert_eq!(queue.messages().len(), 4);
    }

    #[tokio::test]
    async fn memory_queue_refuses_oversized_batches_whole() {
        let queue = MemoryQueue::default();
        let mut batch = bodies(3);
        batch[1] = "x".repeat(MAX_MESSAGE_BYTES + 1);
        let err = queue.send_all(&batch).await.unwrap_err();
        assert!(matches!(err, QueueError::TooLarge { index: 1, .. }), "{err}");
        assert!(
            !err.to_string().contains("xxx"),
            "the error must not quote the body"
        );
        assert!(queue.messages().is_empty());
    }

    #[test]
    fn batches_split_by_count() {
        assert!(plan_batches(&[]).unwrap().is_empty());
        assert_eq!(plan_batches(&[10; 10]).unwrap(), vec![0..10]);
        assert_eq!(plan_batches(&[10; 25]).unwrap(), vec![0..10, 10..20, 20..25]);
    }

    #[test]
    fn batches_split_by_size() {
        // Three of 100 KiB do not fit in 256 KiB; two do.
        let kib100 = 100 * 1024;
        assert_eq!(plan_batches(&[kib100; 5]).unwrap(), vec![0..2, 2..4, 4..5]);
        // Exactly the limit fits in one batch, one byte more does not.
        assert_eq!(plan_batches(&[MAX_BATCH_BYTES - 1, 1]).unwrap(), vec![0..2]);
        assert_eq!(plan_batches(&[MAX_BATCH_BYTES - 1, 2]).unwrap(), vec![0..1, 1..2]);
        assert_eq!(
            plan_batches(&[MAX_MESSAGE_BYTES, 1, 1]).unwrap(),
            vec![0..1, 1..3]
        );
        // Small messages after a big one share a batch up to the count limit.
        let sizes: Vec<usize> = std::iter::once(200_000).chain([1_000; 12]).collect();
        assert_eq!(plan_batches(&sizes).unwrap(), vec![0..10, 10..13]);
    }

    #[test]
    fn every_batch_respects_both_limits() {
        let sizes: Vec<usize> = (0..500).map(|i| (i * 7919) % 90_000 + 1).collect();
        let batches = plan_batches(&sizes).unwrap();
        let mut next = 0;
        for batch in batches {
            assert_eq!(batch.start, next, "batches are consecutive");
            assert!(!batch.is_empty() && batch.len() <= MAX_BATCH_ENTRIES);
            assert!(sizes[batch.clone()].iter().sum::<usize>() <= MAX_BATCH_BYTES);
            next = batch.end;
        }
        assert_eq!(next, sizes.len());
    }

    #[test]
    fn unsendable_messages_are_refused_up_front() {
        let err = plan_batches(&[1, MAX_MESSAGE_BYTES + 1, 1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "message 1 is 262145 bytes; a queue message may be at most 262144 bytes"
        );
        assert!(matches!(
            plan_batches(&[1, 0]),
            Err(QueueError::EmptyMessage { index: 1 })
        ));
    }
}
