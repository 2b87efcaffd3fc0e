//! Placement policies changed through the API. They are kept in the store and override a
//! file policy of the same name until deleted through the API, which brings the file's
//! version back: an operator's API change is the later, deliberate act, and the file
//! stays the baseline that a deletion returns to (see docs/operations.md).

use std::collections::BTreeMap;

use ferry_auth::Principal;
use ferry_policies::engine;
use ferry_policies::model::{PlacementPolicy, Workload};
use ferry_policies::resources::{ResourceSet, workload_list};
use ferry_store::Versioned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::{ApiError, AppState};

pub const PREFIX: &str = "policies/";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredPolicy {
    pub name: String,
    /// The document as the client sent it (YAML or JSON), validated.
    pub text: String,
}

impl Versioned for StoredPolicy {
    const KIND: &'static str = "placement-policy";
    const SCHEMA: u32 = 1;
}

/// Parses one PlacementPolicy document; every problem is a 400 naming line and field.
fn parse(name: &str, text: &str) -> Result<ferry_policies::model::PlacementPolicy, ApiError> {
    let mut set = ResourceSet::default();
    let diagnostics = set.add_source("request", text);
    if !diagnostics.is_empty() {
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        return Err(ApiError::BadRequest("invalid_policy", lines.join("\n")));
    }
    if !set.clusters.is_empty() || !set.workloads.is_empty() || set.policies.len() != 1 {
        return Err(ApiError::BadRequest(
            "invalid_policy",
            "the body must be exactly one PlacementPolicy document".to_owned(),
        ));
    }
    let policy = set.policies.remove(0).value;
    if policy.name != name {
        return Err(ApiError::BadRequest(
            "name_mismatch",
            format!("metadata.name is {}, the path says {name}", policy.name),
        ));
    }
    Ok(policy)
}

/// Recomputes the policies in force: files, overridden by the store's.
pub fn refresh(state: &AppState) -> Result<(), ApiError> {
    let stored = state.store.list::<StoredPolicy>(PREFIX)?;
    let mut effective = state.world.file_policies();
    for (_, stored) in stored {
        let policy = parse(&stored.name, &stored.text)?;
        effective.retain(|p| p.name != policy.name);
        effective.push(policy);
    }
    effective.sort_by(|a, b| a.name.cmp(&b.name));
    state.world.set_policies(effective);
    // New rules may allow or require moves: the controllers look now.
    state.controllers.poke();
    Ok(())
}

pub fn list(state: &AppState) -> Result<Vec<Value>, ApiError> {
    let stored: Vec<String> = state
        .store
        .list::<StoredPolicy>(PREFIX)?
        .into_iter()
        .map(|(_, p)| p.name)
        .collect();
    Ok(state
        .world
        .policies()
        .iter()
        .map(|p| {
            json!({
                "name": p.name, "priority": p.priority,
                "source": if stored.contains(&p.name) { "api" } else { "file" },
            })
        })
        .collect())
}

/// A namespace-scoped token may change only policies that govern nothing outside its
/// namespaces: a policy selects by namespace list (empty: every namespace), so it must
/// name namespaces, all of them the token's. The same holds for the policy it replaces or
/// deletes, or a scoped admin could rewrite a federation-wide one.
fn within_scope(
    principal: &Principal,
    policy: &PlacementPolicy,
    what: &str,
) -> Result<(), ApiError> {
    let Some(scope) = &principal.namespaces else {
        return Ok(());
    };
    let selected = &policy.workload_selector.namespaces;
    let outside: Vec<&str> = selected
        .iter()
        .filter(|ns| !scope.contains(*ns))
        .map(String::as_str)
        .collect();
    let limited_to = scope.iter().cloned().collect::<Vec<_>>().join(", ");
    if selected.is_empty() {
        return Err(ApiError::Forbidden(format!(
            "{what} policy {} selects workloads in every namespace; that needs a token without a namespace limit (this one is limited to {limited_to})",
            policy.name
        )));
    }
    if !outside.is_empty() {
        return Err(ApiError::Forbidden(format!(
            "{what} policy {} selects namespace {} outside the token's ({limited_to}); that needs a token without a namespace limit",
            policy.name,
            outside.join(", ")
        )));
    }
    Ok(())
}

pub async fn put(
    state: &AppState,
    name: &str,
    body: &[u8],
    principal: &Principal,
) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("bad_body", "the body must be UTF-8".to_owned()))?;
    let policy = parse(name, text)?;
    within_scope(principal, &policy, "the")?;
    if let Some(current) = state.world.policies().iter().find(|p| p.name == name) {
        within_scope(principal, current, "the current")?;
    }
    // Check it against the others before it takes effect, over every workload there is:
    // those the clusters run (which files may not define) and those of the files. A
    // priority tie with a policy over the same workloads is refused, and nothing changes.
    let census = state.world.census().await;
    let mut workloads = state.world.plan_workloads(&census);
    for definition in state.world.definitions() {
        if !workloads.iter().any(|w| w.key() == definition.key()) {
            workloads.push(definition);
        }
    }
    let mut candidate = state.world.policies();
    candidate.retain(|p| p.name != name);
    candidate.push(policy.clone());
    if let Some(message) = conflicts_with(name, &candidate, &workloads) {
        return Err(ApiError::Conflict(message));
    }
    state.store.put(
        &format!("{PREFIX}{name}"),
        &StoredPolicy {
            name: name.to_owned(),
            text: text.to_owned(),
        },
    )?;
    refresh(state)?;
    state.events.publish(
        "policies.changed",
        None,
        json!({"name": name, "source": "api"}),
    );
    Ok(json!({"name": name, "priority": policy.priority, "source": "api"}))
}

/// The conflicts policy `name` would take part in among `policies`, as one message naming
/// each other policy and the workloads both select. Conflicts between other policies are
/// not this policy's to answer for: the plan holds their workloads and says why.
fn conflicts_with(
    name: &str,
    policies: &[PlacementPolicy],
    workloads: &[Workload],
) -> Option<String> {
    let mut by_other: BTreeMap<&str, (i32, Vec<String>)> = BTreeMap::new();
    let conflicts = engine::conflicts(policies, workloads);
    for conflict in &conflicts {
        let other = if conflict.first == name {
            &conflict.second
        } else if conflict.second == name {
            &conflict.first
        } else {
            continue;
        };
        by_other
            .entry(other.as_str())
            .or_insert((conflict.priority, Vec::new()))
            .1
            .push(conflict.workload.clone());
    }
    let lines: Vec<String> = by_other
        .into_iter()
        .map(|(other, (priority, selected))| {
            format!(
                "policy `{name}` and policy `{other}` both have priority {priority} and both select {}; give one a higher priority or narrow a selector",
                workload_list(&selected)
            )
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

pub fn delete(state: &AppState, name: &str, principal: &Principal) -> Result<(), ApiError> {
    if let Some(current) = state.world.policies().iter().find(|p| p.name == name) {
        within_scope(principal, current, "the")?;
    }
    let key = format!("{PREFIX}{name}");
    if state.store.get::<StoredPolicy>(&key)?.is_none() {
        let from_file = state.world.file_policies().iter().any(|p| p.name == name);
        return Err(if from_file {
            ApiError::Conflict(format!(
                "policy {name} comes from a file; change the file to remove it"
            ))
        } else {
            ApiError::NotFound(format!("no policy {name}"))
        });
    }
    state.store.delete(&key)?;
    refresh(state)?;
    state.events.publish(
        "policies.changed",
        None,
        json!({"name": name, "deleted": true}),
    );
    Ok(())
}
