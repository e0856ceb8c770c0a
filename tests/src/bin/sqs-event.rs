//! Takes messages off the events queue and prints them as the SQS event Lambda would hand
//! the consumer (`{"Records":[…]}`), for `cargo lambda invoke consumer --data-file`.
//!
//! The messages are **deleted** from the queue once written, as Lambda's event source
//! mapping deletes a batch the function handled; `--keep` leaves them, and they come back
//! after the queue's visibility timeout (30 s).
//!
//! The queue and endpoint come from `EVENTS_QUEUE_URL` and `AWS_ENDPOINT_URL`, or from the
//! env file the simulators wrote (`--env-file`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use okta_port::queue::Sqs;
use okta_port_tests::harness;

#[derive(Parser)]
#[command(about = "Receive queued events as an SQS Lambda event for `cargo lambda invoke consumer`")]
struct Args {
    /// The env file the simulators wrote (`--env-file`); the environment wins over it.
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Write the event here instead of stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// At most this many messages (Lambda's default batch size is 10).
    #[arg(long, default_value_t = 10)]
    max: usize,
    /// Seconds to wait for the first message.
    #[arg(long, default_value_t = 2)]
    wait: i32,
    /// Leave the messages on the queue (they reappear after the visibility timeout).
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let file = match &args.env_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => harness::parse_env_file(&text),
            Err(e) => {
                eprintln!("sqs-event: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => Default::default(),
    };
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| file.get(name).cloned())
    };
    let (Some(queue_url), Some(endpoint)) = (var("EVENTS_QUEUE_URL"), var("AWS_ENDPOINT_URL")) else {
        eprintln!("sqs-event: set EVENTS_QUEUE_URL and AWS_ENDPOINT_URL, or pass --env-file");
        return ExitCode::from(2);
    };
    let client = okta_port_tests::moto::sqs_client(&endpoint).await;
    let sqs = Sqs::new(client, queue_url.clone());

    let mut messages = Vec::new();
    let mut wait = args.wait;
    while messages.len() < args.max {
        let want = (args.max - messages.len()).min(10) as i32;
        match sqs.receive(want, wait).await {
            Ok(got) if got.is_empty() => break,
            Ok(got) => messages.extend(got),
            Err(e) => {
                eprintln!("sqs-event: {e}");
                return ExitCode::FAILURE;
            }
        }
        wait = 0;
    }
    let event = harness::sqs_lambda_event(&queue_url, &messages);
    let text = serde_json::to_string_pretty(&event).expect("JSON");
    match &args.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, text + "\n") {
                eprintln!("sqs-event: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        None => println!("{text}"),
    }
    if !args.keep && !messages.is_empty() {
        let receipts: Vec<String> = messages.iter().map(|m| m.receipt_handle.clone()).collect();
        if let Err(e) = sqs.delete(&receipts).await {
            eprintln!("sqs-event: written, but not deleted from the queue: {e}");
            return ExitCode::FAILURE;
        }
    }
    eprintln!(
        "sqs-event: {} message{}{}",
        messages.len(),
        if messages.len() == 1 { "" } else { "s" },
        if args.keep {
            ", left on the queue"
        } else {
            ", deleted from the queue"
        }
    );
    ExitCode::SUCCESS
}
