//! The community canteen (幸福食堂): tariff and subsidy rules as data ([`rules`]), settlement of
//! card taps ([`settle`]), staff operations on money and cards ([`admin`]) and reports
//! ([`reports`]). Settlement and admin are operations the journal writer runs; money moves only
//! through ledger rows in integer fen.

pub mod admin;
pub mod reports;
pub mod rules;
pub mod settle;

pub use admin::{CanteenAdmin, CanteenOp, TopUp};
pub use settle::{CardTap, SeedCards};
