//! Who and what the gateway knows: devices, staff, and who is told about alerts. Built once from
//! the validated config and shared read-only (`Arc`), so every reference in it resolves.

use crate::config::{DeviceConfig, Loaded, StaffConfig};
use std::collections::BTreeMap;

/// The registry of one gateway.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Site id (the `{site}` topic segment).
    pub site_id: String,
    /// Gateway id.
    pub gateway_id: String,
    /// Devices by id.
    pub devices: BTreeMap<String, DeviceConfig>,
    /// Staff by id.
    pub staff: BTreeMap<String, StaffConfig>,
    /// Staff ids told about every alert.
    pub notify: Vec<String>,
}

impl From<&Loaded> for Registry {
    fn from(l: &Loaded) -> Self {
        Registry {
            site_id: l.config.site_id.clone(),
            gateway_id: l.config.gateway_id.clone(),
            devices: l.devices.clone(),
            staff: l.staff.clone(),
            notify: l.notify.clone(),
        }
    }
}
