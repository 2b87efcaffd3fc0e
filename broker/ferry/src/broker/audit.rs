//! The audit log: who did what, when, from where, and how it ended; kept in the store,
//! one record per action and per migration step, readable by admins (`GET /api/v1/audit`).

use ferry_store::{Store, StoreError, Versioned};
use serde::{Deserialize, Serialize};

use super::clock;

pub const PREFIX: &str = "audit/";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub at: String,
    /// The token's subject, or `broker` for what the broker does by itself.
    pub who: String,
    /// e.g. `migration.create`, `migration.step`, `policy.put`.
    pub action: String,
    pub target: String,
    /// The client's address, when a request caused it.
    pub from: Option<String>,
    /// `ok`, `denied`, `failed: ...`, or a step's outcome.
    pub outcome: String,
}

impl Versioned for AuditRecord {
    const KIND: &'static str = "audit";
    const SCHEMA: u32 = 1;
}

pub fn record(
    store: &Store,
    who: &str,
    action: &str,
    target: &str,
    from: Option<&str>,
    outcome: &str,
) -> Result<(), StoreError> {
    store
        .append(
            PREFIX,
            &AuditRecord {
                at: clock::now(),
                who: who.to_owned(),
                action: action.to_owned(),
                target: target.to_owned(),
                from: from.map(str::to_owned),
                outcome: outcome.to_owned(),
            },
        )
        .map(|_| ())
}
