//! `queue::Sqs` against real SQS protocol (moto): batching, receive/delete, and failures the
//! webhook must turn into a 5xx so Okta redelivers.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use okta_port::queue::{EventQueue, MAX_MESSAGE_BYTES, QueueError, ReceivedMessage, Sqs};
use okta_port_tests::moto;

async fn fresh_queue(prefix: &str) -> (aws_sdk_sqs::Client, Sqs) {
    let endpoint = moto::sqs_endpoint().await;
    let client = moto::sqs_client(&endpoint).await;
    let (queue_url, _dlq_url) = moto::create_queue(&client, prefix).await;
    (client.clone(), Sqs::new(client, queue_url))
}

/// Receives until `expected` messages came back (or 20 s passed).
async fn receive_all(sqs: &Sqs, expected: usize) -> Vec<ReceivedMessage> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut received = Vec::new();
    while received.len() < expected && Instant::now() < deadline {
        received.extend(sqs.receive(10, 1).await.expect("receive"));
    }
    received
}

/// Visible plus in-flight messages.
async fn messages_in(client: &aws_sdk_sqs::Client, queue_url: &str) -> u64 {
    let attributes = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default();
    attributes
        .values()
        .map(|v| v.parse::<u64>().expect("a count"))
        .sum()
}

fn sorted(mut bodies: Vec<String>) -> Vec<String> {
    bodies.sort();
    bodies
}

#[tokio::test]
async fn send_receive_delete_round_trip() {
    let (client, sqs) = fresh_queue("roundtrip").await;
    // 25 messages: three SendMessageBatch calls (10 + 10 + 5).
    let bodies: Vec<String> = (0..25)
        .map(|i| format!(r#"{{"deliveryId":"d-1","uuid":"event-{i}","eventType":"user.lifecycle.create"}}"#))
        .collect();
    sqs.send_all(&bodies).await.expect("SQS accepts all 25");
    assert_eq!(messages_in(&client, sqs.queue_url()).await, 25);

    let received = receive_all(&sqs, 25).await;
    let got = sorted(received.iter().map(|m| m.body.clone()).collect());
    assert_eq!(got, sorted(bodies), "every body comes back exactly once");
    assert!(
        received
            .iter()
            .all(|m| !m.message_id.is_empty() && !m.receipt_handle.is_empty())
    );

    let handles: Vec<String> = received.into_iter().map(|m| m.receipt_handle).collect();
    sqs.delete(&handles).await.expect("delete all 25");
    assert_eq!(
        messages_in(&client, sqs.queue_url()).await,
        0,
        "the queue is empty"
    );
    assert!(sqs.receive(10, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn large_messages_are_split_by_size() {
    let (client, sqs) = fresh_queue("bysize").await;
    // 100 KiB each: two fit in one 256 KiB batch, so six calls; the last is exactly the
    // per-message limit and goes alone.
    let mut bodies: Vec<String> = (0..11)
        .map(|i| format!("{i:02}{}", "x".repeat(100 * 1024 - 2)))
        .collect();
    bodies.push(format!("big{}", "y".repeat(MAX_MESSAGE_BYTES - 3)));
    sqs.send_all(&bodies).await.expect("SQS accepts every message");

    let received = receive_all(&sqs, bodies.len()).await;
    assert_eq!(
        sorted(received.into_iter().map(|m| m.body).collect()),
        sorted(bodies)
    );
    assert_eq!(messages_in(&client, sqs.queue_url()).await, 12);
}

#[tokio::test]
async fn an_oversized_message_fails_the_whole_send() {
    let (client, sqs) = fresh_queue("oversized").await;
    // Decided: one message over 256 KiB fails the whole `send_all` before anything is sent,
    // so the webhook answers 5xx with nothing half-queued.
    let mut bodies: Vec<String> = (0..15).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    bodies[12] = "z".repeat(MAX_MESSAGE_BYTES + 1);
    let err = sqs.send_all(&bodies).await.unwrap_err();
    assert!(
        matches!(err, QueueError::TooLarge { index: 12, bytes, max: MAX_MESSAGE_BYTES } if bytes == MAX_MESSAGE_BYTES + 1),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("message 12") && message.contains("262145 bytes"),
        "{message}"
    );
    assert!(!message.contains("zzz"), "the error never quotes a body");
    assert_eq!(messages_in(&client, sqs.queue_url()).await, 0, "nothing was sent");
}

#[tokio::test]
async fn a_missing_queue_is_an_error() {
    let endpoint = moto::sqs_endpoint().await;
    let client = moto::sqs_client(&endpoint).await;
    let missing = format!(
        "{}/123456789012/no-such-queue-{}",
        endpoint.trim_end_matches('/'),
        std::process::id()
    );
    let sqs = Sqs::new(client, missing);

    let started = Instant::now();
    let err = sqs.send_all(&["{}".to_owned()]).await.unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::Request {
                operation: "SendMessageBatch",
                attempts: 1,
                ..
            }
        ),
        "a missing queue is not worth retrying: {err:?}"
    );
    assert!(err.to_string().contains("SendMessageBatch"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "failed fast");

    assert!(matches!(sqs.receive(1, 0).await, Err(QueueError::Request { .. })));
    assert!(matches!(
        sqs.delete(&["handle".to_owned()]).await,
        Err(QueueError::Request { .. })
    ));
}
