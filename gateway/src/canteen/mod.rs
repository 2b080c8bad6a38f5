//! The community canteen (幸福食堂): tariff and subsidy rules as data ([`rules`]), settlement of
//! card taps ([`settle`]), staff operations on money and cards ([`admin`]) and reports
//! ([`reports`], [`claim`]), what staff read ([`statement`]), the manager's day close with anti-fraud flags
//! ([`dayclose`]), residents away or in hospital ([`away`]) and card MACs ([`mac`]). Settlement
//! and admin are operations the journal writer runs; money moves only through ledger rows in
//! integer fen. The staff HTTP API is documented in docs/CANTEEN.md.

pub mod admin;
pub mod away;
pub mod claim;
pub mod dayclose;
mod dayclose_flags;
pub mod mac;
pub mod reports;
pub mod rules;
pub mod settle;
pub mod statement;

pub use admin::{CanteenAdmin, CanteenOp, TopUp};
pub use settle::{CardTap, SeedCards};
