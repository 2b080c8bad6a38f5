//! The community canteen (幸福食堂). So far: tariff and subsidy rules as data ([`rules`]); meal
//! settlement, the ledger and reports build on them (issue 6, in progress).

pub mod rules;
