//! Staff roles and what each may do (issue 13, ADR 0010).
//!
//! Why here and not in the HTTP layer: the same action arrives over HTTP (a console session or an
//! API token), MQTT (`staff/cmd`) and the CLI; the domain operation that records it checks the
//! acting staff id's role, so no transport can skip the rule. The HTTP layer only decides *who*
//! acts (the session's staff id, never a form or body field).
//!
//! Guarantees: an unknown role string may do nothing but read; a canteen operator never
//! acknowledges or resolves an alert; a manager never changes anything (read-only, reports).

use crate::registry::Registry;

/// A staff member's role, from the `role` column of the staff registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, including accounts and roster imports.
    Admin,
    /// Duty worker at the service centre: all alerts, and the counter when needed.
    Duty,
    /// Grid worker (网格员): their grid first, may act on every alert.
    GridWorker,
    /// Canteen operator: the canteen only; never acknowledges an alarm.
    CanteenOperator,
    /// Manager: read-only, reports.
    Manager,
    /// A role the gateway does not know: read-only.
    Other,
}

impl Role {
    /// The role named in the staff registry (`admin`, `duty`, `grid_worker`, `canteen_operator`,
    /// `manager`); anything else is [`Role::Other`].
    pub fn parse(s: &str) -> Role {
        match s {
            "admin" => Role::Admin,
            "duty" => Role::Duty,
            "grid_worker" => Role::GridWorker,
            "canteen_operator" => Role::CanteenOperator,
            "manager" => Role::Manager,
            _ => Role::Other,
        }
    }

    /// The registry's name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Duty => "duty",
            Role::GridWorker => "grid_worker",
            Role::CanteenOperator => "canteen_operator",
            Role::Manager => "manager",
            Role::Other => "other",
        }
    }

    /// Acknowledge, resolve and note alerts.
    pub fn may_act_on_alerts(self) -> bool {
        matches!(self, Role::Admin | Role::Duty | Role::GridWorker)
    }

    /// Top up, void, pay out, cards lost and bound: the one rule the canteen's operations enforce
    /// and the console's counter follows (docs/CANTEEN.md: money only by the operator or an admin).
    pub fn may_handle_canteen_money(self) -> bool {
        matches!(self, Role::Admin | Role::CanteenOperator)
    }

    /// Import a roster.
    pub fn may_import_roster(self) -> bool {
        matches!(self, Role::Admin | Role::Duty)
    }
}

/// The role of `staff_id` in `registry`, if it is registered.
pub fn role_of(registry: &Registry, staff_id: &str) -> Option<Role> {
    registry.staff.get(staff_id).map(|s| Role::parse(&s.role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canteen_operator_cannot_act_on_alerts_and_manager_changes_nothing() {
        assert!(!Role::CanteenOperator.may_act_on_alerts());
        assert!(Role::CanteenOperator.may_handle_canteen_money());
        assert!(
            !Role::Duty.may_handle_canteen_money(),
            "money: operator or admin only"
        );
        for can in [
            Role::may_act_on_alerts,
            Role::may_handle_canteen_money,
            Role::may_import_roster,
        ] {
            assert!(!can(Role::Manager));
            assert!(!can(Role::Other));
        }
        assert_eq!(Role::parse("Admin"), Role::Other, "roles are exact names");
    }
}
