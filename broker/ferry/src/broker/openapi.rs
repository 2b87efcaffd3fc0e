//! The OpenAPI 3 document of `GET /api/v1/openapi.json`, built from the route table
//! below, which a test holds against the router (every route listed answers, none falls
//! through to "no such route").

use serde_json::{Map, Value, json};

pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    /// The least role that may call it; `None` for unauthenticated routes.
    pub role: Option<&'static str>,
    pub summary: &'static str,
}

pub const ROUTES: &[RouteDoc] = &[
    RouteDoc {
        method: "get",
        path: "/healthz",
        role: None,
        summary: "Liveness",
    },
    RouteDoc {
        method: "get",
        path: "/readyz",
        role: None,
        summary: "Readiness: 503 with the reason after a change of the resource files was rejected",
    },
    RouteDoc {
        method: "get",
        path: "/metrics",
        role: None,
        summary: "Prometheus metrics",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/clusters",
        role: Some("viewer"),
        summary: "Clusters with provider, labels, health, capacity, usage, pricing and monthly cost",
    },
    RouteDoc {
        method: "post",
        path: "/api/v1/clusters",
        role: Some("admin"),
        summary: "Provisions the cluster of a Cluster document (provider openstack, a heat block); 202 with its provisioning record",
    },
    RouteDoc {
        method: "delete",
        path: "/api/v1/clusters/{name}",
        role: Some("admin"),
        summary: "Takes a provisioned cluster out of the federation and deletes its stack (?force=true while workloads serve there)",
    },
    RouteDoc {
        method: "post",
        path: "/api/v1/clusters/{name}/resize",
        role: Some("admin"),
        summary: "Sets a provisioned cluster's worker count: {\"workers\": N}",
    },
    RouteDoc {
        method: "put",
        path: "/api/v1/clusters/{name}/pricing",
        role: Some("admin"),
        summary: "Sets a member's hourly prices: {\"cpuCoreHour\": N, \"memoryGiBHour\": N[, \"egressGiB\": N]} (or GET /clusters' spelling memoryGibHour, egressGib)",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/controllers",
        role: Some("viewer"),
        summary: "The controllers: mode, settings, each member's health phase, the last pass's decisions and why, and the moves that failed (waiting to be tried again, or for an operator)",
    },
    RouteDoc {
        method: "post",
        path: "/api/v1/controllers/clear",
        role: Some("operator"),
        summary: "Sets aside the failures of the controllers' moves of a workload so that the next pass tries again: {\"workload\": \"ns/name\"[, \"to\": \"cluster\"]}; 404 when none failed",
    },
    RouteDoc {
        method: "put",
        path: "/api/v1/controllers/mode",
        role: Some("admin"),
        summary: "Switches the controllers' mode: {\"mode\": \"auto\" | \"recommend\"}",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/clusters/{name}/provisioning",
        role: Some("viewer"),
        summary: "A provisioned cluster's record: phase, stack, workers, progress, the last failure",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/provisioning",
        role: Some("viewer"),
        summary: "Every cluster Ferry provisioned, with its record",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/workloads",
        role: Some("viewer"),
        summary: "Workloads with their clusters, requests and monthly cost",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/placements",
        role: Some("viewer"),
        summary: "The current placement and the plan the policies want now, with the moves",
    },
    RouteDoc {
        method: "post",
        path: "/api/v1/plan",
        role: Some("viewer"),
        summary: "A what-if plan for a body of YAML resources (the output of `ferry plan -o json`)",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/policies",
        role: Some("viewer"),
        summary: "Placement policies in force, with their source (file or api)",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/policies/{name}",
        role: Some("viewer"),
        summary: "One placement policy",
    },
    RouteDoc {
        method: "put",
        path: "/api/v1/policies/{name}",
        role: Some("admin"),
        summary: "Create or replace a placement policy (one YAML document, validated as files are)",
    },
    RouteDoc {
        method: "delete",
        path: "/api/v1/policies/{name}",
        role: Some("admin"),
        summary: "Delete a policy set through the API",
    },
    RouteDoc {
        method: "post",
        path: "/api/v1/migrations",
        role: Some("operator"),
        summary: "Start a migration: {\"workload\": \"ns/name\", \"to\": \"cluster\", \"dryRun\": false, \"acceptEmptyVolumes\": false, \"force\": false}; 202 with the migration, or 200 with a dry run's findings (nothing stored); 409 uses_claims, claims_exist or breaks_policy when refused",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/migrations",
        role: Some("viewer"),
        summary: "Migrations, newest first, with steps and outcome",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/migrations/{id}",
        role: Some("viewer"),
        summary: "One migration, with waitingFor while its running step waits (the scheduler's reason while pods are Pending; not stored)",
    },
    RouteDoc {
        method: "post",
        path: "/api/v1/migrations/{id}/cancel",
        role: Some("operator"),
        summary: "Stop a migration and roll back what was done; 202",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/events",
        role: Some("viewer"),
        summary: "Server-sent events: migration steps, progress and states, policy and resource changes, cluster health, cost samples",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/audit",
        role: Some("admin"),
        summary: "Who did what, when, from where, with what outcome",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/cost-history",
        role: Some("viewer"),
        summary: "Monthly run-rate per cluster and in total over time, oldest first: {\"items\": [{\"at\", \"clusters\": {name: cost}, \"total\", \"migration\"?}]}; `?limit=N` keeps the newest N",
    },
    RouteDoc {
        method: "get",
        path: "/",
        role: None,
        summary: "The dashboard (HTML; it signs in with a token of its own)",
    },
    RouteDoc {
        method: "get",
        path: "/assets/{file}",
        role: None,
        summary: "The dashboard's scripts, styles and icon, embedded in the binary",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/openapi.json",
        role: Some("viewer"),
        summary: "This document",
    },
];

pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        let mut operation = json!({
            "summary": route.summary,
            "responses": {
                "200": {"description": "OK"},
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Error"},
                "403": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
                "413": {"$ref": "#/components/responses/Error"},
                "414": {"$ref": "#/components/responses/Error"},
                "431": {"$ref": "#/components/responses/Error"},
            },
        });
        // The planner's concurrency limit (`api::Planner`).
        if matches!(route.path, "/api/v1/plan" | "/api/v1/placements") {
            operation["responses"]["429"] = json!({"$ref": "#/components/responses/Error"});
        }
        if let Some(role) = route.role {
            operation["security"] = json!([{"bearer": []}]);
            operation["x-ferry-role"] = json!(role);
        } else {
            operation["security"] = json!([]);
        }
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !parameters.is_empty() {
            operation["parameters"] = json!(parameters);
        }
        entry[route.method] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Ferry broker API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "responses": {"Error": {
                "description": "{\"error\": {\"code\", \"message\"}}",
                "content": {"application/json": {"schema": {"type": "object", "properties": {"error": {
                    "type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}},
            }},
        },
    })
}
