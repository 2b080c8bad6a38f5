//! The latest heartbeat of every device (battery, signal), stored by the writer in coalesced
//! batches (bulk lane). Supervision (offline, low battery) reads what the intake tells it; this
//! table is what staff and the console read.

use crate::journal::{format_ts, Lane, OpError, Operation, Tx};
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use sqlx::QueryBuilder;

/// Coalesced heartbeat state of one device.
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    /// Device id.
    pub device_id: String,
    /// Last heartbeat, gateway clock.
    pub last_seen: Timestamp,
    /// Battery voltage.
    pub battery_mv: Option<u16>,
    /// Battery percent.
    pub battery_pct: Option<u8>,
    /// Signal strength.
    pub rssi: Option<i16>,
}

/// Bulk lane: store the latest heartbeats (one row per device, replaced).
#[derive(Debug, Clone)]
pub struct RecordStatus(pub Vec<DeviceStatus>);

impl Operation for RecordStatus {
    type Answer = ();
    const NAME: &'static str = "record_status";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn cost(&self) -> usize {
        self.0.len().max(1)
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), OpError>> {
        Box::pin(async move {
            for chunk in self.0.chunks(1000) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO device_status (device_id, last_seen, battery_mv, battery_pct, rssi) ",
                );
                qb.push_values(chunk, |mut b, s| {
                    b.push_bind(&s.device_id)
                        .push_bind(format_ts(s.last_seen))
                        .push_bind(s.battery_mv.map(i64::from))
                        .push_bind(s.battery_pct.map(i64::from))
                        .push_bind(s.rssi.map(i64::from));
                });
                qb.push(
                    " ON CONFLICT(device_id) DO UPDATE SET last_seen = excluded.last_seen,
                      battery_mv = excluded.battery_mv, battery_pct = excluded.battery_pct, rssi = excluded.rssi",
                );
                qb.build().execute(tx.conn()).await?;
            }
            Ok(())
        })
    }
}
