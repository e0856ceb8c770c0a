//! Reading Okta into a [`Snapshot`]: every listing chain at once (users, DEPROVISIONED
//! users, groups → members, apps → app users), a chain's sub-listings starting as soon as
//! its page names them. Each rate-limit bucket has its own slots, so a chain waiting for
//! one bucket's window never holds back another bucket's; the client's own throttle and
//! in-flight limit decide the actual pace.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::{ListingState, Snapshot, Spill};
use crate::okta::{Listing, OktaSource};

/// Pages asked for at once per bucket.
const SLOTS_PER_BUCKET: usize = 8;
/// Once the stop time has come, pages already asked for get this long to arrive (a page
/// dropped half-way is a call spent for nothing); pages still waiting for a rate-limit
/// window are dropped before they call.
pub const DRAIN: Duration = Duration::from_secs(3);

/// One log line as each root listing ends (the Lambda logs phases, not pages).
fn log_listed(snapshot: &Snapshot, listing: &Listing) {
    let done = |l: &Listing| snapshot.listings.get(l) == Some(&ListingState::Done);
    if !done(listing) {
        return;
    }
    match listing {
        Listing::Users | Listing::DeprovisionedUsers if snapshot.users_complete() => {
            tracing::info!(target: crate::progress::TARGET, users = snapshot.users().len(), "listed Okta users");
        }
        Listing::Groups => {
            let groups = snapshot.groups().map_or(0, <[_]>::len);
            tracing::info!(target: crate::progress::TARGET, groups, "listed Okta groups; listing members");
        }
        Listing::Apps => {
            let apps = snapshot.apps().map_or(0, <[_]>::len);
            tracing::info!(target: crate::progress::TARGET, apps, "listed Okta apps; listing assigned users");
        }
        _ => {}
    }
}

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// Every listing is done or failed.
    Complete,
    /// Stopped at the stop time; the snapshot says where each listing goes on.
    Stopped,
}

/// Reads every pending listing of `snapshot` until all are read or `stop_at` comes.
/// A spill-file error (a full disk) stops the read with that error.
pub async fn read_okta<O: OktaSource + ?Sized>(
    okta: &O,
    snapshot: &mut Snapshot,
    spill: &mut Spill,
    stop_at: Option<Instant>,
) -> std::io::Result<ReadEnd> {
    let mut queues: HashMap<&'static str, VecDeque<(Listing, Option<String>)>> = HashMap::new();
    for (listing, next) in snapshot.pending() {
        queues
            .entry(listing.bucket())
            .or_default()
            .push_back((listing, next));
    }
    let mut active: HashMap<&'static str, usize> = HashMap::new();
    let mut running = FuturesUnordered::new();
    let mut stopping = false;
    let mut first = true;
    loop {
        // The first pages are always asked for, so every run moves each chain on.
        stopping |= !first && stop_at.is_some_and(|t| Instant::now() >= t);
        first = false;
        if !stopping {
            for (bucket, queue) in queues.iter_mut() {
                let busy = active.entry(bucket).or_default();
                while *busy < SLOTS_PER_BUCKET
                    && let Some((listing, next)) = queue.pop_front()
                {
                    *busy += 1;
                    running.push(async move {
                        let page = okta.page(&listing, next.as_deref()).await;
                        (listing, page)
                    });
                }
            }
        }
        let answer = match stop_at.map(|t| if stopping { t + DRAIN } else { t }) {
            Some(limit) => match tokio::time::timeout_at(limit, running.next()).await {
                Ok(answer) => answer,
                Err(_) if stopping => break,
                Err(_) => {
                    stopping = true;
                    continue;
                }
            },
            None => running.next().await,
        };
        let Some((listing, page)) = answer else { break };
        let bucket = listing.bucket();
        *active.entry(bucket).or_default() -= 1;
        let started = snapshot.take_page(spill, &listing, page)?;
        log_listed(snapshot, &listing);
        if let Some(ListingState::Next(next)) = snapshot.listings.get(&listing) {
            // Go on with this chain first: fewer listings half-read at any time.
            let next = next.clone();
            queues.entry(bucket).or_default().push_front((listing, next));
        }
        for sub in started {
            queues.entry(sub.bucket()).or_default().push_back((sub, None));
        }
    }
    let (listings, users, pending) = snapshot.counts();
    tracing::info!(
        target: crate::progress::TARGET,
        listings,
        users,
        pending,
        spilled_bytes = spill.len(),
        "read Okta"
    );
    Ok(if snapshot.is_read() {
        ReadEnd::Complete
    } else {
        ReadEnd::Stopped
    })
}
