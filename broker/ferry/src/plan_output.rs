//! The plan as users and scripts see it: the JSON of `spec/interfaces.md` (stable, for
//! scripts) and a table for people. The wire types live here, apart from the engine's
//! own types, so that the contract cannot change by accident.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ferry_policies::engine::Plan;
use ferry_policies::model::Cluster;
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanJson<'a> {
    mode: &'a str,
    placements: Vec<PlacementJson<'a>>,
    unplaced: Vec<UnplacedJson<'a>>,
    /// Only when there are some, so that plans without conflicts read as they always did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    held: Vec<HeldJson<'a>>,
    moves: Vec<MoveJson<'a>>,
    total_monthly_cost: f64,
}

/// A workload the plan leaves where it is: two policies of equal priority select it.
#[derive(Serialize)]
struct HeldJson<'a> {
    workload: &'a str,
    reason: &'a str,
    policies: [&'a str; 2],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlacementJson<'a> {
    workload: &'a str,
    cluster: &'a str,
    replicas: u32,
    monthly_cost: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    reasons: &'a [String],
}

#[derive(Serialize)]
struct UnplacedJson<'a> {
    workload: &'a str,
    reasons: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MoveJson<'a> {
    workload: &'a str,
    from: &'a str,
    to: &'a str,
    monthly_savings: f64,
    migration_cost: f64,
}

/// The plan as the spec's JSON, pretty-printed, with a final newline.
pub fn json(plan: &Plan) -> serde_json::Result<String> {
    let document = PlanJson {
        mode: plan.mode.as_str(),
        placements: plan
            .placements
            .iter()
            .map(|p| PlacementJson {
                workload: &p.workload,
                cluster: &p.cluster,
                replicas: p.replicas,
                monthly_cost: p.monthly_cost,
                from: p.from.as_deref(),
                reasons: &p.reasons,
            })
            .collect(),
        unplaced: plan
            .unplaced
            .iter()
            .map(|u| UnplacedJson {
                workload: &u.workload,
                reasons: &u.reasons,
            })
            .collect(),
        held: plan
            .held
            .iter()
            .map(|h| HeldJson {
                workload: &h.workload,
                reason: &h.reason,
                policies: [&h.conflict.first, &h.conflict.second],
            })
            .collect(),
        moves: plan
            .moves
            .iter()
            .map(|m| MoveJson {
                workload: &m.workload,
                from: &m.from,
                to: &m.to,
                monthly_savings: m.monthly_savings,
                migration_cost: m.migration_cost,
            })
            .collect(),
        total_monthly_cost: plan.total_monthly_cost,
    };
    let mut text = serde_json::to_string_pretty(&document)?;
    text.push('\n');
    Ok(text)
}

/// Left-aligned columns, two spaces apart.
/// Left-aligned columns two spaces apart, trailing spaces trimmed; rows of equal length.
pub fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The plan for people: placements, moves, unplaced workloads and cost per cluster.
pub fn table(plan: &Plan, clusters: &[Cluster]) -> String {
    let currency = clusters
        .first()
        .map_or("USD", |c| c.pricing.currency.as_str());
    let mut out = String::new();
    let _ = writeln!(out, "Plan ({} mode)\n", plan.mode.as_str());
    let mut rows = vec![
        ["WORKLOAD", "CLUSTER", "REPLICAS", "MONTHLY", "WHY"]
            .map(String::from)
            .to_vec(),
    ];
    for p in &plan.placements {
        // The first reason names the policy; the last says how the cluster was chosen.
        let why = p
            .reasons
            .iter()
            .skip(1)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        let cluster = match &p.from {
            Some(from) => format!("{} (from {from})", p.cluster),
            None => p.cluster.clone(),
        };
        rows.push(vec![
            p.workload.clone(),
            cluster,
            p.replicas.to_string(),
            format!("{:.2}", p.monthly_cost),
            why,
        ]);
    }
    out.push_str(&columns(&rows));

    if !plan.moves.is_empty() {
        let _ = writeln!(out, "\nMoves");
        let mut rows = vec![
            ["WORKLOAD", "FROM", "TO", "SAVES/MONTH", "MIGRATION COST"]
                .map(String::from)
                .to_vec(),
        ];
        for m in &plan.moves {
            rows.push(vec![
                m.workload.clone(),
                m.from.clone(),
                m.to.clone(),
                format!("{:.2}", m.monthly_savings),
                format!("{:.2}", m.migration_cost),
            ]);
        }
        out.push_str(&columns(&rows));
    }

    if !plan.unplaced.is_empty() {
        let _ = writeln!(out, "\nUnplaced");
        for u in &plan.unplaced {
            let _ = writeln!(out, "  {}", u.workload);
            for (cluster, reason) in &u.reasons {
                let _ = writeln!(out, "    {cluster}: {reason}");
            }
        }
    }

    if !plan.held.is_empty() {
        let _ = writeln!(out, "\nHeld (left where they are)");
        for h in &plan.held {
            let _ = writeln!(out, "  {}: {}", h.workload, h.reason);
        }
    }

    let _ = writeln!(out, "\nCost per cluster");
    let mut rows = vec![
        ["CLUSTER", "WORKLOADS", "MONTHLY"]
            .map(String::from)
            .to_vec(),
    ];
    for cluster in clusters {
        let here: Vec<_> = plan
            .placements
            .iter()
            .filter(|p| p.cluster == cluster.name)
            .collect();
        let cost = crate::broker::world::total(here.iter().map(|p| p.monthly_cost));
        rows.push(vec![
            cluster.name.clone(),
            here.len().to_string(),
            format!("{cost:.2}"),
        ]);
    }
    out.push_str(&columns(&rows));
    let _ = writeln!(
        out,
        "\nTotal: {:.2} {currency}/month for {} placement(s); {} move(s); {} unplaced",
        plan.total_monthly_cost,
        plan.placements.len(),
        plan.moves.len(),
        plan.unplaced.len()
    );
    out
}
