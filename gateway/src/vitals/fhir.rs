//! FHIR R4 export: the readings of one resident in a date range as a `Bundle` (type
//! `collection`) of `Observation`s — the vital-signs profile where one applies (blood pressure
//! as a panel with systolic and diastolic components; heart rate, SpO2, body temperature, body
//! weight), glucose as a laboratory observation — with LOINC codes, UCUM units, and the resident
//! as subject by a stable identifier system (`urn:eldergate:{site}:resident`).
//!
//! The output is checked in the tests by an independent FHIR R4 implementation (the
//! `fhir.resources` Python models), not only by this code.

use super::query::ReadingView;
use super::units::{parse_measure, show};
use eldergate_protocol::payload::Measure;
use serde_json::{json, Value};

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";

/// The identifier system of residents of `site`.
pub fn resident_system(site: &str) -> String {
    format!("urn:eldergate:{site}:resident")
}

fn number(text: &str) -> Value {
    // The text comes from integers (units::show): an exact decimal.
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn quantity(m: Measure, v: i64, ucum: &str) -> Value {
    json!({ "value": number(&show(m, v)), "unit": ucum, "system": UCUM, "code": ucum })
}

fn coding(code: &str, display: &str) -> Value {
    json!({ "system": LOINC, "code": code, "display": display })
}

fn interpretation(r: &ReadingView) -> Option<Value> {
    let f = r.findings.as_array()?.first()?;
    let kind = f.get("kind")?.as_str()?;
    let critical = f.get("priority")?.as_str()? == "high";
    let low = kind.ends_with("_low") || kind == "weight_loss";
    let code = match (low, critical) {
        (true, true) => "LL",
        (true, false) => "L",
        (false, true) => "HH",
        (false, false) => "H",
    };
    Some(
        json!([{ "coding": [{ "system": INTERPRETATION, "code": code }],
                   "text": f.get("detail").and_then(Value::as_str).unwrap_or_default() }]),
    )
}

fn fhir_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

/// One reading as an Observation; None for a reading without a resident or of an unknown
/// measure (not exported).
pub fn observation(site: &str, gateway: &str, r: &ReadingView) -> Option<Value> {
    let resident = r.resident_id.as_deref()?;
    let m = parse_measure(&r.measure)?;
    let vital = json!([{ "coding": [{ "system": CATEGORY, "code": "vital-signs", "display": "Vital Signs" }] }]);
    let lab = json!([{ "coding": [{ "system": CATEGORY, "code": "laboratory", "display": "Laboratory" }] }]);
    let mut o = json!({
        "resourceType": "Observation",
        "id": fhir_id(&format!("{gateway}-{}", r.id)),
        "identifier": [{ "system": format!("urn:eldergate:{site}:{gateway}:reading"), "value": r.id.to_string() }],
        "status": "final",
        "subject": { "identifier": { "system": resident_system(site), "value": resident } },
        "effectiveDateTime": r.device_time.clone().unwrap_or_else(|| r.received_at.clone()),
        "issued": r.received_at,
        "device": { "display": r.device_id },
    });
    let obj = o.as_object_mut()?;
    match m {
        Measure::BloodPressure => {
            obj.insert("category".into(), vital);
            obj.insert("code".into(), json!({ "coding": [coding("85354-9", "Blood pressure panel with all children optional")], "text": "Blood pressure" }));
            obj.insert("component".into(), json!([
                { "code": { "coding": [coding("8480-6", "Systolic blood pressure")] }, "valueQuantity": quantity(m, r.v1, "mm[Hg]") },
                { "code": { "coding": [coding("8462-4", "Diastolic blood pressure")] }, "valueQuantity": quantity(m, r.v2.unwrap_or_default(), "mm[Hg]") },
            ]));
            if let Some(pos) = r.context.as_deref() {
                obj.insert("note".into(), json!([{ "text": format!("position: {pos}{}", r.arm.as_deref().map(|a| format!(", {a} arm")).unwrap_or_default()) }]));
            }
        }
        Measure::Glucose => {
            obj.insert("category".into(), lab);
            obj.insert("code".into(), json!({ "coding": [coding("14743-9", "Glucose [Moles/volume] in Capillary blood by Glucometer")], "text": "Blood glucose" }));
            obj.insert("valueQuantity".into(), quantity(m, r.v1, "mmol/L"));
            if let Some(c) = r.context.as_deref() {
                obj.insert("note".into(), json!([{ "text": format!("taken: {c}") }]));
            }
        }
        Measure::Spo2 => {
            obj.insert("category".into(), vital);
            obj.insert("code".into(), json!({ "coding": [coding("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"), coding("2708-6", "Oxygen saturation in Arterial blood")], "text": "SpO2" }));
            obj.insert("valueQuantity".into(), quantity(m, r.v1, "%"));
        }
        Measure::Temperature => {
            obj.insert("category".into(), vital);
            obj.insert("code".into(), json!({ "coding": [coding("8310-5", "Body temperature")], "text": "Body temperature" }));
            obj.insert("valueQuantity".into(), quantity(m, r.v1, "Cel"));
        }
        Measure::Weight => {
            obj.insert("category".into(), vital);
            obj.insert(
                "code".into(),
                json!({ "coding": [coding("29463-7", "Body weight")], "text": "Body weight" }),
            );
            obj.insert("valueQuantity".into(), quantity(m, r.v1, "kg"));
        }
        Measure::Pulse => {
            obj.insert("category".into(), vital);
            obj.insert(
                "code".into(),
                json!({ "coding": [coding("8867-4", "Heart rate")], "text": "Pulse" }),
            );
            obj.insert("valueQuantity".into(), quantity(m, r.v1, "/min"));
        }
    }
    if let Some(i) = interpretation(r) {
        obj.insert("interpretation".into(), i);
    }
    Some(o)
}

/// A Bundle (type `collection`) of the readings' Observations.
pub fn bundle(site: &str, gateway: &str, readings: &[ReadingView], now: &str) -> Value {
    let entries: Vec<Value> = readings
        .iter()
        .filter_map(|r| observation(site, gateway, r))
        .map(|o| {
            let id = o
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            json!({ "fullUrl": format!("urn:eldergate:{site}:observation:{id}"), "resource": o })
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": now,
        "entry": entries,
    })
}
