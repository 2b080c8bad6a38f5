//! The console's pages, who may see each, and the navigation bar (only the pages the role may
//! see). The same table answers both: a page handler asks `visible_to` before it renders, so a
//! link that is not shown is also refused (403) when typed in.

use super::Lang;
use crate::roles::Role;
use maud::{html, Markup};

/// A page of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The live alert board (`/console`).
    Board,
    /// Visit tasks: missed check-ins (敲门行动).
    Visits,
    /// Alert history, one alert's audit trail, CSV export.
    History,
    /// Residents: search, one resident's page.
    Residents,
    /// Devices: online, last seen, battery.
    Devices,
    /// The canteen counter.
    Canteen,
    /// Today and this month, for managers.
    Overview,
}

impl Page {
    /// Every page, in the navigation bar's order.
    pub const ALL: [Page; 7] = [
        Page::Board,
        Page::Visits,
        Page::History,
        Page::Residents,
        Page::Devices,
        Page::Canteen,
        Page::Overview,
    ];

    /// Its path.
    pub fn path(self) -> &'static str {
        match self {
            Page::Board => "/console",
            Page::Visits => "/console/visits",
            Page::History => "/console/history",
            Page::Residents => "/console/residents",
            Page::Devices => "/console/devices",
            Page::Canteen => "/console/canteen",
            Page::Overview => "/console/overview",
        }
    }

    /// Its name in the bar.
    pub fn label(self, lang: Lang) -> &'static str {
        match self {
            Page::Board => lang.t("告警", "Alerts"),
            Page::Visits => lang.t("敲门任务", "Visits"),
            Page::History => lang.t("历史", "History"),
            Page::Residents => lang.t("老人", "Residents"),
            Page::Devices => lang.t("设备", "Devices"),
            Page::Canteen => lang.t("食堂", "Canteen"),
            Page::Overview => lang.t("概况", "Overview"),
        }
    }

    /// Whether `role` may open the page. Seeing is not acting: the forms on a page are shown
    /// only to roles the API lets act, and the API checks again.
    ///
    /// - the board: every known role (a canteen operator and a manager read it, no buttons);
    /// - visits, history, devices: everyone who works with alerts, and managers;
    /// - residents: every known role (the counter looks people up);
    /// - canteen: who may move canteen money (`Role::may_handle_canteen_money`: admin, canteen
    ///   operator) — the same rule the operations check;
    /// - overview: admin, duty, manager.
    pub fn visible_to(self, role: Role) -> bool {
        use Role::*;
        match self {
            Page::Board => role != Other,
            Page::Visits | Page::History | Page::Devices => {
                matches!(role, Admin | Duty | GridWorker | Manager)
            }
            Page::Residents => role != Other,
            Page::Canteen => moves_money(role),
            Page::Overview => matches!(role, Admin | Duty | Manager),
        }
    }
}

/// Whether the canteen's operations let `role` move money (top up, void, pay out, cards).
pub fn moves_money(role: Role) -> bool {
    role.may_handle_canteen_money()
}

/// The bar: the pages `role` may see; the current one marked.
pub fn bar(lang: Lang, role: Role, here: &str) -> Markup {
    let current = Page::ALL
        .into_iter()
        .rev()
        .find(|p| here == p.path() || here.starts_with(&format!("{}/", p.path())))
        .filter(|p| *p != Page::Board || here == "/console");
    // Pages under another page's path.
    let current = match here {
        h if h.starts_with("/console/alerts/") => Some(Page::History),
        _ => current,
    };
    html! {
        nav.pages aria-label=(lang.t("页面", "Pages")) {
            @for p in Page::ALL {
                @if p.visible_to(role) {
                    a href=(p.path()) class=[(current == Some(p)).then_some("here")] { (p.label(lang)) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canteen_operator_sees_the_counter_but_not_the_alert_pages() {
        let r = Role::CanteenOperator;
        assert!(Page::Canteen.visible_to(r));
        assert!(Page::Residents.visible_to(r));
        assert!(!Page::History.visible_to(r));
        assert!(!Page::Visits.visible_to(r));
        assert!(!Page::Overview.visible_to(r));
    }

    #[test]
    fn an_unknown_role_sees_nothing_and_a_grid_worker_no_counter() {
        for p in Page::ALL {
            assert!(!p.visible_to(Role::Other), "{p:?}");
        }
        assert!(!Page::Canteen.visible_to(Role::GridWorker));
        assert!(!Page::Canteen.visible_to(Role::Duty));
        assert!(!Page::Canteen.visible_to(Role::Manager));
        assert!(Page::Canteen.visible_to(Role::Admin));
        assert!(Page::Visits.visible_to(Role::GridWorker));
    }

    #[test]
    fn the_bar_marks_the_current_page() {
        let m = bar(Lang::En, Role::Admin, "/console/residents/R00001").into_string();
        assert!(
            m.contains(r#"<a href="/console/residents" class="here">"#),
            "{m}"
        );
        let m = bar(Lang::En, Role::Admin, "/console").into_string();
        assert!(m.contains(r#"<a href="/console" class="here">"#), "{m}");
    }
}
