//! A simulated health kiosk (两测, protocol/MQTT.md "Health kiosks") for the demo: a resident taps
//! their card, measures blood pressure twice, now and then a glucose; every few sessions a high
//! value that raises an alert ("please see the staff"). Prints what its screen shows, after the
//! gateway's commit, as `[kiosk …]` lines.

use eldergate_protocol::payload::{Down, ReadingResult};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::json;
use std::time::Duration;

/// Where and how the kiosk runs.
#[derive(Debug, Clone)]
pub struct KioskOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Site id.
    pub site: String,
    /// The kiosk's registered device id (kind `health_kiosk`, link `mqtt`).
    pub kiosk: String,
    /// Residents' card ids, tapped in turn.
    pub cards: Vec<String>,
    /// Seconds between sessions.
    pub every: Duration,
}

fn shown(result: ReadingResult, name: Option<&str>) -> String {
    let who = name.unwrap_or("—");
    match result {
        ReadingResult::Stored => format!("{who}: saved"),
        ReadingResult::SeeStaff => format!("{who}: saved — PLEASE SEE THE STAFF"),
        ReadingResult::Unassigned => "saved without a name — please tap your card first".into(),
        ReadingResult::SessionOpened => format!("hello {who}, please measure"),
        ReadingResult::UnknownCard => "card not known".into(),
    }
}

/// Runs sessions until `stop` resolves.
pub async fn run(o: KioskOptions, stop: impl std::future::Future<Output = ()>) {
    let mut mo = MqttOptions::new(format!("sim-{}", o.kiosk), o.host.clone(), o.port);
    mo.set_keep_alive(Duration::from_secs(15));
    let (client, mut el) = AsyncClient::new(mo, 64);
    let down = format!("eldergate/v1/{}/down/{}", o.site, o.kiosk);
    let tag = o.kiosk.clone();
    let c = client.clone();
    let listener = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = c.subscribe(down.clone(), QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if let Ok(Down::Reading {
                        seq, result, name, ..
                    }) = serde_json::from_slice::<Down>(&p.payload)
                    {
                        println!("[kiosk {tag}] #{seq} {}", shown(result, name.as_deref()));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    });
    let sessions = async {
        // A kiosk without storage starts at a random seq (SPEC.md §5).
        let mut seq: u32 = rand::random::<u32>() >> 1;
        let up = |kind: &str| format!("eldergate/v1/{}/tele/{}/{kind}", o.site, o.kiosk);
        let mut n: u64 = 0;
        loop {
            tokio::time::sleep(o.every).await;
            let Some(card) = o.cards.get((n as usize) % o.cards.len().max(1)) else {
                return;
            };
            n += 1;
            let mut send = |kind: &str, body: serde_json::Value| {
                seq = seq.wrapping_add(1);
                let mut body = body;
                body["v"] = json!(1);
                body["seq"] = json!(seq);
                (up(kind), body.to_string())
            };
            let mut messages = vec![send("card", json!({"card": card}))];
            // Every fifth session a high blood pressure (grade 3), else a normal one; measured
            // twice, the gateway judges the mean.
            let (sys, dia) = if n % 5 == 0 { (186, 112) } else { (128, 82) };
            for extra in [0, 4] {
                messages.push(send(
                    "reading",
                    json!({"measure": "blood_pressure", "value": (sys + extra).to_string(), "value2": (dia + extra / 2).to_string(), "unit": "mmHg", "context": "sitting", "arm": "left"}),
                ));
            }
            if n % 3 == 0 {
                // Now and then a glucose; every ninth session a low one (hypoglycaemia).
                let value = if n % 9 == 0 { "2.8" } else { "6.1" };
                messages.push(send(
                    "reading",
                    json!({"measure": "glucose", "value": value, "unit": "mmol/L", "context": "fasting"}),
                ));
            }
            for (topic, body) in messages {
                let _ = client
                    .publish(topic, QoS::AtLeastOnce, false, body.into_bytes())
                    .await;
                tokio::time::sleep(Duration::from_millis(800)).await;
            }
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = sessions => {}
    }
    listener.abort();
}
