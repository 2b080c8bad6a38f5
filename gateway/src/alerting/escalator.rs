//! Escalation: for every alert still `raised` (nobody acknowledged), fire the next ladder step
//! when it is due, by wall clock from `raised_at`. Steps past the last repeat every `repeat_s`.
//!
//! Restart safety: the escalator learns each open alert (with its persisted step) from the
//! notifier, which republishes them at start; a step is asked of the writer, which fires it only
//! if it is later than the last fired, so a step is never fired twice. After an outage only the
//! latest due step fires (the widest audience), not every missed one.

use crate::journal::Journal;
use crate::registry::Registry;
use eldergate_protocol::payload::{AlertState, Priority, StaffAlert};
use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

struct Tracked {
    priority: Priority,
    raised_at: Timestamp,
    step: u32,
    asked: u32,
}

/// The highest ladder step due `elapsed_s` after raising, if any.
pub fn due_step(registry: &Registry, p: Priority, elapsed_s: u64) -> Option<u32> {
    let mut due = None;
    let mut step = 0usize;
    while let Some(at) = registry.step_due_s(p, step) {
        if at > elapsed_s {
            break;
        }
        due = Some(step as u32);
        step += 1;
        if step > 100_000 {
            break;
        }
    }
    due
}

/// Runs until `changes` closes.
pub async fn run(
    registry: Arc<Registry>,
    journal: Journal,
    mut changes: mpsc::UnboundedReceiver<StaffAlert>,
) {
    let mut open: HashMap<i64, Tracked> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            change = changes.recv() => {
                let Some(a) = change else { break };
                if a.state == AlertState::Raised {
                    let raised_at = a.raised_at.parse::<Timestamp>().unwrap_or_else(|_| Timestamp::now());
                    let t = open.entry(a.alert_id).or_insert(Tracked { priority: a.priority, raised_at, step: a.step, asked: a.step });
                    t.step = t.step.max(a.step);
                    t.asked = t.asked.max(t.step);
                } else {
                    open.remove(&a.alert_id);
                }
            }
            _ = tick.tick() => {
                let now = Timestamp::now();
                for (id, t) in open.iter_mut() {
                    let elapsed = now.duration_since(t.raised_at).as_secs().max(0) as u64;
                    if let Some(step) = due_step(&registry, t.priority, elapsed) {
                        if step > t.asked {
                            t.asked = step;
                            tracing::info!(alert_id = id, step, "escalating: not acknowledged in time");
                            journal.tell(super::Escalate { alert_id: *id, step }).await;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EscalationConfig, Ladder, LadderStep};

    fn registry() -> Registry {
        let step = |after_s, who: &str| LadderStep {
            after_s,
            notify: vec![who.to_string()],
        };
        let mut r = Registry::empty("s");
        r.escalation = EscalationConfig {
            high: Ladder {
                steps: vec![step(0, "a"), step(60, "b"), step(180, "c")],
                repeat_s: Some(100),
            },
            medium: Ladder {
                steps: vec![step(0, "a")],
                repeat_s: None,
            },
            low: Ladder {
                steps: vec![step(10, "a")],
                repeat_s: None,
            },
        };
        r
    }

    #[test]
    fn steps_fire_in_order_and_repeat_after_the_last() {
        let r = registry();
        assert_eq!(due_step(&r, Priority::High, 0), Some(0));
        assert_eq!(due_step(&r, Priority::High, 59), Some(0));
        assert_eq!(due_step(&r, Priority::High, 60), Some(1));
        assert_eq!(due_step(&r, Priority::High, 180), Some(2));
        assert_eq!(due_step(&r, Priority::High, 279), Some(2));
        assert_eq!(due_step(&r, Priority::High, 280), Some(3));
        assert_eq!(due_step(&r, Priority::High, 480), Some(5));
    }

    #[test]
    fn a_ladder_without_repeat_stops_at_its_last_step() {
        let r = registry();
        assert_eq!(due_step(&r, Priority::Medium, 100_000), Some(0));
        assert_eq!(due_step(&r, Priority::Low, 5), None);
    }
}
