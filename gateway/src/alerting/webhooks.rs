//! Delivers the webhook outbox: sends each pending row through its channel (the generic JSON
//! POST, or a WeCom / DingTalk robot message — `channels.rs`), retrying with backoff per row until
//! the channel accepts it. A slow or dead target never holds up another target, the MQTT channel
//! or the alarm path (separate task; bounded time per attempt).

use super::channels::Channels;
use crate::journal::Journal;
use sqlx::Row;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs forever.
pub async fn run(journal: Journal, channels: Result<Channels, String>) {
    let channels = match channels {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "webhooks disabled: cannot build an HTTP client");
            return;
        }
    };
    // Per row: when to try next and the current backoff. In memory only: after a restart every
    // pending row is tried at once, which is what we want.
    let mut next_try: HashMap<i64, (Instant, Duration)> = HashMap::new();
    let mut busy: HashSet<i64> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        tick.tick().await;
        while let Some(done) = in_flight.try_join_next() {
            if let Ok((id, result)) = done {
                busy.remove(&id);
                match result {
                    Ok(()) => {
                        next_try.remove(&id);
                        metrics::counter!("eldergate_webhooks_delivered_total").increment(1);
                        journal.tell(super::WebhookResult { id, error: None }).await;
                    }
                    Err(e) => {
                        let backoff = next_try
                            .get(&id)
                            .map(|(_, b)| (*b * 2).min(Duration::from_secs(60)))
                            .unwrap_or(Duration::from_secs(1));
                        next_try.insert(id, (Instant::now() + backoff, backoff));
                        metrics::counter!("eldergate_webhook_failures_total").increment(1);
                        tracing::warn!(webhook = id, error = %e, retry_in_s = backoff.as_secs(), "webhook delivery failed; will retry");
                        journal
                            .tell(super::WebhookResult { id, error: Some(e) })
                            .await;
                    }
                }
            }
        }
        let rows = match sqlx::query("SELECT id, url, body FROM webhook_outbox WHERE delivered_at IS NULL ORDER BY id LIMIT 200")
            .fetch_all(journal.readers())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the webhook outbox");
                continue;
            }
        };
        for r in rows {
            let (Ok(id), Ok(url), Ok(body)) = (
                r.try_get::<i64, _>(0),
                r.try_get::<String, _>(1),
                r.try_get::<String, _>(2),
            ) else {
                continue;
            };
            if in_flight.len() >= 16 {
                break;
            }
            if busy.contains(&id)
                || next_try
                    .get(&id)
                    .is_some_and(|(at, _)| *at > Instant::now())
            {
                continue;
            }
            busy.insert(id);
            let channels = channels.clone();
            in_flight.spawn(async move {
                // `url` is the channel's name (or a plain URL): never the keyed robot URL.
                let result = channels.deliver(&url, &body).await;
                (id, result)
            });
        }
    }
}
