//! Fixtures shared by the gateway's own integration tests.

use eldergate::config::Resident;
use eldergate::roster::Roster;

/// Residents R0, R1, R2 (born 1940, cards C0000000…C0000002).
pub fn three_residents() -> Roster {
    let mut residents = std::collections::BTreeMap::new();
    for i in 0..3 {
        let id = format!("R{i}");
        residents.insert(
            id.clone(),
            Resident {
                resident_id: id,
                name: format!("张三{i}"),
                birth_date: Some("1940-01-01".into()),
                statuses: None,
                building: None,
                unit: None,
                room: None,
                grid: None,
                card_id: Some(format!("C000000{i}")),
            },
        );
    }
    Roster::new(residents)
}
