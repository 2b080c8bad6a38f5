//! The community canteen (幸福食堂): tariff and subsidy rules as data ([`rules`]) and reports
//! ([`reports`]). Settlement and the ledger live in the journal writer (`journal/writer/canteen.rs`).

pub mod reports;
pub mod rules;
