//! Who and what the gateway knows: devices, residents, staff, escalation ladders and webhooks.
//! Built once from the validated config and shared read-only (`Arc`), so every reference in it
//! resolves. The one part that changes while the gateway runs is the roster ([`Roster`]), which a
//! roster import replaces as a whole (the import checks that devices still resolve).

pub use crate::community::Roster;
use crate::config::{
    CheckinConfig, DeviceConfig, EscalationConfig, Ladder, Loaded, StaffConfig, SupervisionConfig,
    WebhookConfig,
};
use eldergate_protocol::payload::Priority;
use std::collections::BTreeMap;

/// The registry of one gateway.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Site id (the `{site}` topic segment).
    pub site_id: String,
    /// Gateway id.
    pub gateway_id: String,
    /// IANA time zone of the site.
    pub time_zone: String,
    /// Devices by id.
    pub devices: BTreeMap<String, DeviceConfig>,
    /// Residents by id: the live roster (replaced by a roster import; every clone sees it).
    pub residents: Roster,
    /// Where the roster is kept (`residents_csv`, resolved); an import is saved there.
    pub roster_path: Option<std::path::PathBuf>,
    /// Staff by id.
    pub staff: BTreeMap<String, StaffConfig>,
    /// Ladders per priority.
    pub escalation: EscalationConfig,
    /// Webhooks.
    pub webhooks: Vec<WebhookConfig>,
    /// Supervision settings.
    pub supervision: SupervisionConfig,
    /// Check-in settings.
    pub checkin: CheckinConfig,
    /// The check-in deadline, local time.
    pub checkin_deadline: jiff::civil::Time,
    /// Canteen rules and the double-tap window (seconds), when a canteen is configured.
    pub canteen: Option<(crate::canteen::rules::RuleSet, u64)>,
    /// The site secret card MACs are checked with, when configured.
    pub card_mac: Option<crate::canteen::mac::SiteSecret>,
}

impl From<&Loaded> for Registry {
    fn from(l: &Loaded) -> Self {
        Registry {
            site_id: l.config.site_id.clone(),
            gateway_id: l.config.gateway_id.clone(),
            time_zone: l.config.time_zone.clone(),
            devices: l.devices.clone(),
            residents: Roster::new(l.residents.clone()),
            roster_path: l.roster_path.clone(),
            staff: l.staff.clone(),
            escalation: l.config.escalation.clone(),
            webhooks: l.config.webhooks.clone(),
            supervision: l.config.supervision.clone(),
            checkin: l.config.checkin.clone(),
            checkin_deadline: l.checkin_deadline,
            canteen: l
                .canteen_rules
                .clone()
                .zip(l.config.canteen.as_ref().map(|c| c.double_tap_s)),
            card_mac: l.card_mac_secret.clone(),
        }
    }
}

impl Registry {
    /// A registry with nothing registered and default ladders (for tests and tools).
    pub fn empty(site_id: &str) -> Registry {
        Registry {
            site_id: site_id.into(),
            gateway_id: "gw".into(),
            time_zone: "Asia/Shanghai".into(),
            devices: BTreeMap::new(),
            residents: Roster::default(),
            roster_path: None,
            staff: BTreeMap::new(),
            escalation: EscalationConfig::default(),
            webhooks: Vec::new(),
            supervision: SupervisionConfig::default(),
            checkin: CheckinConfig::default(),
            checkin_deadline: jiff::civil::Time::midnight(),
            canteen: None,
            card_mac: None,
        }
    }

    /// The ladder for a priority.
    pub fn ladder(&self, p: Priority) -> &Ladder {
        match p {
            Priority::High => &self.escalation.high,
            Priority::Medium => &self.escalation.medium,
            Priority::Low => &self.escalation.low,
        }
    }

    /// Staff ids to tell at ladder step `step` (steps past the last repeat the last one).
    /// `grid_worker` is the resident's grid worker; with no resident or no grid worker it falls
    /// back to the duty staff, so nobody is ever told "no one".
    pub fn recipients(&self, p: Priority, step: usize, resident: Option<&str>) -> Vec<String> {
        let ladder = self.ladder(p);
        let Some(st) = ladder
            .steps
            .get(step.min(ladder.steps.len().saturating_sub(1)))
        else {
            return Vec::new();
        };
        let grid = resident
            .and_then(|r| self.residents.get(r))
            .and_then(|r| r.grid);
        let grid = grid.as_deref();
        let mut out: Vec<String> = Vec::new();
        let mut push = |id: &str| {
            if !out.iter().any(|o| o == id) {
                out.push(id.to_string());
            }
        };
        for entry in &st.notify {
            if entry == "grid_worker" {
                let workers: Vec<&StaffConfig> = self
                    .staff
                    .values()
                    .filter(|s| {
                        s.role == "grid_worker" && grid.is_some() && s.grid.as_deref() == grid
                    })
                    .collect();
                if workers.is_empty() {
                    self.staff
                        .values()
                        .filter(|s| s.role == "duty")
                        .for_each(|s| push(&s.id));
                } else {
                    workers.iter().for_each(|s| push(&s.id));
                }
            } else if let Some(role) = entry.strip_prefix("role:") {
                self.staff
                    .values()
                    .filter(|s| s.role == role)
                    .for_each(|s| push(&s.id));
            } else if self.staff.contains_key(entry) {
                push(entry);
            }
        }
        out
    }

    /// When (seconds after raising) step `step` is due, or None if the ladder ends before it.
    pub fn step_due_s(&self, p: Priority, step: usize) -> Option<u64> {
        let ladder = self.ladder(p);
        let n = ladder.steps.len();
        if step < n {
            return Some(ladder.steps[step].after_s);
        }
        let last = ladder.steps.last()?.after_s;
        ladder.repeat_s.map(|r| last + r * (step - n + 1) as u64)
    }

    /// The webhook channels for a staff member (by id or by role), as outbox rows refer to them
    /// ([`crate::config::WebhookConfig::channel_ref`]: the name, else the URL).
    pub fn webhooks_for(&self, staff_id: &str) -> Vec<&str> {
        let role = self.staff.get(staff_id).map(|s| s.role.as_str());
        self.webhooks
            .iter()
            .filter(|w| {
                w.target == staff_id
                    || w.target
                        .strip_prefix("role:")
                        .is_some_and(|r| Some(r) == role)
            })
            .map(|w| w.channel_ref())
            .collect()
    }

    /// The resident a device belongs to.
    pub fn resident_of(&self, device: &str) -> Option<&str> {
        self.devices
            .get(device)
            .and_then(|d| d.resident_id.as_deref())
    }
}

/// A name as it may be shown on a reader display or in a notification: first and last character
/// kept, the rest masked (张*华, 张*, A***e).
pub fn mask_name(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    match chars.len() {
        0 => String::new(),
        1 => "*".into(),
        2 => format!("{}*", chars[0]),
        n => format!("{}{}{}", chars[0], "*".repeat(n - 2), chars[n - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_masked_in_the_middle() {
        assert_eq!(mask_name("张三华"), "张*华");
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("欧阳小明"), "欧**明");
        assert_eq!(mask_name(""), "");
    }
}
