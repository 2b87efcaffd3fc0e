//! Per-target overrides: what one target cluster needs changed in every object applied to
//! it — a registry mirror its nodes can reach, its own storage class names, and labels and
//! annotations its policies require. They belong to the target, not to the workload: the
//! same export applied to two clusters gets each cluster's overrides.
//!
//! Pure, so that the rules are unit-tested without a cluster; [`crate::KubeCluster`] runs
//! [`apply_recorded`] on each object of `apply` before it is sent, and
//! [`undo_recorded`] on each object it exports: what a target's overrides changed is kept
//! in the object itself (annotation [`OVERRIDDEN_ANNOTATION`]: the field, its value before,
//! and the value set), so that a workload leaves a cluster in its own form and the next
//! target's overrides apply to that, never on top of the last cluster's.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The annotation that records what a target's overrides changed in an object: a JSON
/// list of `{"path": <JSON pointer>, "was": <value or null when absent>, "set": <value>}`.
pub const OVERRIDDEN_ANNOTATION: &str = "ferry.dev/overridden";

/// One field an override changed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Change {
    path: String,
    was: Option<Value>,
    set: Value,
}

/// The fields overrides may change in `object`, as JSON pointers.
fn overridable_paths(overrides: &TargetOverrides, object: &Value) -> Vec<String> {
    let mut paths = Vec::new();
    for key in overrides.labels.keys() {
        paths.push(format!("/metadata/labels/{}", escape(key)));
    }
    for key in overrides.annotations.keys() {
        paths.push(format!("/metadata/annotations/{}", escape(key)));
    }
    for field in ["containers", "initContainers"] {
        let count = object
            .pointer(&format!("/spec/template/spec/{field}"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for index in 0..count {
            paths.push(format!("/spec/template/spec/{field}/{index}/image"));
        }
    }
    paths.push("/spec/storageClassName".to_owned());
    let templates = object
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    for index in 0..templates {
        paths.push(format!(
            "/spec/volumeClaimTemplates/{index}/spec/storageClassName"
        ));
    }
    paths
}

/// A JSON pointer's token for a map key (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// [`apply_overrides`], recording in the object what it changed (see the module's
/// comment). An object that already carries a record (one exported without
/// [`undo_recorded`]) is undone first.
pub fn apply_recorded(overrides: &TargetOverrides, object: &mut Value) {
    undo_recorded(object);
    let before = object.clone();
    apply_overrides(overrides, object);
    let changes: Vec<Change> = overridable_paths(overrides, &before)
        .into_iter()
        .filter_map(|path| {
            let was = before.pointer(&path).cloned();
            let set = object.pointer(&path)?.clone();
            (was.as_ref() != Some(&set)).then_some(Change { path, was, set })
        })
        .collect();
    if changes.is_empty() {
        return;
    }
    // Serializing plain strings and values cannot fail; an empty record would only lose
    // the undo, never corrupt the object.
    let record = serde_json::to_string(&changes).unwrap_or_default();
    add_to_metadata(
        object,
        "annotations",
        &BTreeMap::from([(OVERRIDDEN_ANNOTATION.to_owned(), record)]),
    );
}

/// Puts back what a cluster's overrides changed in `object`, from its record, and drops
/// the record. A field changed since (someone edited it there) keeps its new value.
pub fn undo_recorded(object: &mut Value) {
    let record = object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .and_then(|a| a.get(OVERRIDDEN_ANNOTATION))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(record) = record else { return };
    if let Some(annotations) = object
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(OVERRIDDEN_ANNOTATION);
    }
    let changes: Vec<Change> = serde_json::from_str(&record).unwrap_or_default();
    for change in changes.into_iter().rev() {
        if object.pointer(&change.path) != Some(&change.set) {
            continue;
        }
        let Some((parent, token)) = change.path.rsplit_once('/') else {
            continue;
        };
        let token = unescape(token);
        match object.pointer_mut(parent) {
            Some(Value::Object(map)) => match change.was {
                Some(was) => {
                    map.insert(token, was);
                }
                None => {
                    map.remove(&token);
                }
            },
            Some(Value::Array(items)) => {
                if let (Ok(index), Some(was)) = (token.parse::<usize>(), change.was)
                    && let Some(item) = items.get_mut(index)
                {
                    *item = was;
                }
            }
            _ => {}
        }
    }
    // Maps the overrides created and the undo emptied go too, so that the object is as
    // it was.
    for field in ["labels", "annotations"] {
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut)
            && metadata
                .get(field)
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
        {
            metadata.remove(field);
        }
    }
}

/// The registry of an image whose reference names none (`nginx:1.27`, `bitnami/redis`).
const IMPLIED_REGISTRY: &str = "docker.io";
/// Where Docker Hub keeps single-name images: `nginx` is `docker.io/library/nginx`.
const IMPLIED_REPOSITORY: &str = "library";

/// What a target cluster changes in the objects applied to it. Empty maps change nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetOverrides {
    /// Registry host (with its port, as written in the image reference) → the prefix that
    /// replaces it, a host optionally followed by a path. A reference's registry is the
    /// text before its first `/` when that contains a `.` or a `:` or is `localhost`;
    /// otherwise it is the implied `docker.io`, and a single-name image gains Docker Hub's
    /// `library/`. So `{"docker.io": "mirror.dc1.example"}` turns `nginx:1.27` into
    /// `mirror.dc1.example/library/nginx:1.27` and `bitnami/redis:7` into
    /// `mirror.dc1.example/bitnami/redis:7`. Keys match whole hosts only (`index.docker.io`
    /// is not `docker.io`). Applies to the containers and init containers of pod templates
    /// (Deployments, StatefulSets).
    pub image_registries: BTreeMap<String, String>,
    /// Storage class on the source → the one to use here, for a claim's
    /// `spec.storageClassName` and a StatefulSet's `volumeClaimTemplates`. A claim that
    /// names no class (the target's default) is left alone.
    pub storage_classes: BTreeMap<String, String>,
    /// Added to every applied object's `metadata.labels`, replacing a value of the same key;
    /// never to selectors or pod templates, so what selects what does not change.
    pub labels: BTreeMap<String, String>,
    /// Added to every applied object's `metadata.annotations`, replacing a value of the
    /// same key. Ferry's mark is set after them and cannot be overridden.
    pub annotations: BTreeMap<String, String>,
}

/// Rewrites one object for the target, as [`TargetOverrides`] describes.
pub fn apply_overrides(overrides: &TargetOverrides, object: &mut Value) {
    add_to_metadata(object, "labels", &overrides.labels);
    add_to_metadata(object, "annotations", &overrides.annotations);
    if !overrides.image_registries.is_empty()
        && let Some(pod_spec) = object.pointer_mut("/spec/template/spec")
    {
        for field in ["containers", "initContainers"] {
            let containers = pod_spec
                .get_mut(field)
                .and_then(Value::as_array_mut)
                .map(Vec::as_mut_slice)
                .unwrap_or_default();
            for container in containers {
                let rewritten = container
                    .get("image")
                    .and_then(Value::as_str)
                    .and_then(|image| rewrite_image(&overrides.image_registries, image));
                if let (Some(image), Some(container)) = (rewritten, container.as_object_mut()) {
                    container.insert("image".to_owned(), Value::String(image));
                }
            }
        }
    }
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match kind {
        "PersistentVolumeClaim" => map_storage_class(&overrides.storage_classes, object),
        "StatefulSet" => {
            let templates = object
                .pointer_mut("/spec/volumeClaimTemplates")
                .and_then(Value::as_array_mut)
                .map(Vec::as_mut_slice)
                .unwrap_or_default();
            for template in templates {
                map_storage_class(&overrides.storage_classes, template);
            }
        }
        _ => {}
    }
}

/// The image reference with its registry replaced, or `None` when no key names its
/// registry.
pub fn rewrite_image(registries: &BTreeMap<String, String>, image: &str) -> Option<String> {
    let (registry, path) = match image.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => (IMPLIED_REGISTRY, image),
    };
    let prefix = registries.get(registry)?.trim_end_matches('/');
    if registry == IMPLIED_REGISTRY && !path.contains('/') {
        Some(format!("{prefix}/{IMPLIED_REPOSITORY}/{path}"))
    } else {
        Some(format!("{prefix}/{path}"))
    }
}

fn map_storage_class(classes: &BTreeMap<String, String>, claim: &mut Value) {
    let Some(spec) = claim.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mapped = spec
        .get("storageClassName")
        .and_then(Value::as_str)
        .and_then(|class| classes.get(class));
    if let Some(class) = mapped {
        spec.insert("storageClassName".to_owned(), Value::String(class.clone()));
    }
}

/// Inserts `entries` into `metadata.<field>`, creating the maps that are missing.
fn add_to_metadata(object: &mut Value, field: &str, entries: &BTreeMap<String, String>) {
    if entries.is_empty() {
        return;
    }
    let Some(object) = object.as_object_mut() else {
        return;
    };
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    let map = metadata
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    // An explicit `null` is the same as no map.
    if map.is_null() {
        *map = Value::Object(Map::new());
    }
    if let Some(map) = map.as_object_mut() {
        for (key, value) in entries {
            map.insert(key.clone(), Value::String(value.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn images_move_to_the_registry_their_registry_maps_to() {
        let registries = map(&[
            ("docker.io", "mirror.dc1.example"),
            ("ghcr.io", "mirror.dc1.example/ghcr/"),
            ("localhost:5000", "registry.dc1.example:443"),
            ("localhost", "registry.dc1.example"),
        ]);
        // (image as written on the source, as applied on the target; None = unchanged)
        let cases = [
            ("nginx", Some("mirror.dc1.example/library/nginx")),
            ("nginx:1.27", Some("mirror.dc1.example/library/nginx:1.27")),
            (
                "nginx@sha256:0123abcd",
                Some("mirror.dc1.example/library/nginx@sha256:0123abcd"),
            ),
            (
                "bitnami/redis:7",
                Some("mirror.dc1.example/bitnami/redis:7"),
            ),
            (
                "docker.io/nginx:1.27",
                Some("mirror.dc1.example/library/nginx:1.27"),
            ),
            (
                "docker.io/bitnami/redis:7",
                Some("mirror.dc1.example/bitnami/redis:7"),
            ),
            (
                "ghcr.io/org/tool:v1",
                Some("mirror.dc1.example/ghcr/org/tool:v1"),
            ),
            (
                "localhost:5000/app:dev",
                Some("registry.dc1.example:443/app:dev"),
            ),
            ("localhost/app", Some("registry.dc1.example/app")),
            // Other registries, and hosts that only look like a mapped one, stay.
            ("quay.io/prometheus/node-exporter", None),
            ("index.docker.io/library/nginx", None),
            ("registry.invalid/web:1", None),
            ("mirror.dc1.example/library/nginx:1.27", None),
        ];
        for (image, want) in cases {
            assert_eq!(
                rewrite_image(&registries, image).as_deref(),
                want,
                "{image}"
            );
        }
    }

    fn pod_template(images: &[&str], init_images: &[&str]) -> Value {
        let containers = |images: &[&str]| -> Vec<Value> {
            images
                .iter()
                .enumerate()
                .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
                .collect()
        };
        json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": containers(images), "initContainers": containers(init_images)},
        })
    }

    #[test]
    fn overrides_rewrite_what_the_target_needs_and_nothing_else() {
        let overrides = TargetOverrides {
            image_registries: map(&[("docker.io", "mirror.dc1.example")]),
            storage_classes: map(&[("standard", "fast"), ("", "manual")]),
            labels: map(&[("dc", "dc1"), ("team", "platform")]),
            annotations: map(&[("owner", "ferry-dc1")]),
        };
        let claim_spec = |class: Value| {
            json!({"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                   "resources": {"requests": {"storage": "1Gi"}}})
        };
        let overridden_meta = |name: &str| {
            json!({"name": name, "labels": {"dc": "dc1", "team": "platform"},
                   "annotations": {"owner": "ferry-dc1"}})
        };
        // (object as exported, as applied on the target)
        let cases = [
            (
                json!({"kind": "Deployment",
                       "metadata": {"name": "web", "labels": {"team": "shop", "app": "web"},
                                    "annotations": {"ferry.dev/migration": "m1"}},
                       "spec": {"selector": {"matchLabels": {"app": "web"}},
                                "template": pod_template(&["nginx:1.27", "quay.io/x/y"], &["busybox"])}}),
                json!({"kind": "Deployment",
                       "metadata": {"name": "web", "labels": {"team": "platform", "app": "web", "dc": "dc1"},
                                    "annotations": {"ferry.dev/migration": "m1", "owner": "ferry-dc1"}},
                       "spec": {"selector": {"matchLabels": {"app": "web"}},
                                "template": pod_template(
                                    &["mirror.dc1.example/library/nginx:1.27", "quay.io/x/y"],
                                    &["mirror.dc1.example/library/busybox"])}}),
            ),
            (
                json!({"kind": "StatefulSet", "metadata": {"name": "db", "labels": null},
                "spec": {"selector": {"matchLabels": {"app": "web"}},
                         "template": pod_template(&["postgres:17"], &["bitnami/os-shell"]),
                         "volumeClaimTemplates": [
                             {"metadata": {"name": "data"}, "spec": claim_spec(json!("standard"))},
                             {"metadata": {"name": "logs"}, "spec": claim_spec(json!("slow"))},
                         ]}}),
                json!({"kind": "StatefulSet", "metadata": overridden_meta("db"),
                "spec": {"selector": {"matchLabels": {"app": "web"}},
                         "template": pod_template(
                             &["mirror.dc1.example/library/postgres:17"],
                             &["mirror.dc1.example/bitnami/os-shell"]),
                         "volumeClaimTemplates": [
                             {"metadata": {"name": "data"}, "spec": claim_spec(json!("fast"))},
                             {"metadata": {"name": "logs"}, "spec": claim_spec(json!("slow"))},
                         ]}}),
            ),
            (
                json!({"kind": "PersistentVolumeClaim", "metadata": {"name": "uploads"},
                       "spec": claim_spec(json!("standard"))}),
                json!({"kind": "PersistentVolumeClaim", "metadata": overridden_meta("uploads"),
                       "spec": claim_spec(json!("fast"))}),
            ),
            (
                json!({"kind": "PersistentVolumeClaim", "metadata": {"name": "static"},
                       "spec": claim_spec(json!(""))}),
                json!({"kind": "PersistentVolumeClaim", "metadata": overridden_meta("static"),
                       "spec": claim_spec(json!("manual"))}),
            ),
            (
                json!({"kind": "PersistentVolumeClaim", "metadata": {"name": "default-class"},
                       "spec": {"resources": {"requests": {"storage": "1Gi"}}}}),
                json!({"kind": "PersistentVolumeClaim", "metadata": overridden_meta("default-class"),
                       "spec": {"resources": {"requests": {"storage": "1Gi"}}}}),
            ),
            (
                json!({"kind": "Service", "metadata": {"name": "web"},
                       "spec": {"selector": {"app": "web"}}}),
                json!({"kind": "Service", "metadata": overridden_meta("web"),
                       "spec": {"selector": {"app": "web"}}}),
            ),
            (
                json!({"kind": "Namespace", "metadata": {"name": "shop"}}),
                json!({"kind": "Namespace", "metadata": overridden_meta("shop")}),
            ),
        ];
        for (mut object, want) in cases {
            apply_overrides(&overrides, &mut object);
            assert_eq!(object, want);
        }
    }

    #[test]
    fn a_recorded_override_is_undone_exactly_and_a_later_edit_is_kept() {
        let overrides = TargetOverrides {
            image_registries: map(&[("registry.example", "mirror.b.example")]),
            storage_classes: map(&[("fast", "b-ssd")]),
            labels: map(&[("site", "b"), ("team", "b-ops")]),
            annotations: map(&[("example.com/owner", "b")]),
        };
        let original = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "labels": {"team": "data"}},
            "spec": {
                "template": {"spec": {"containers": [
                    {"name": "db", "image": "registry.example/db:1"},
                    {"name": "sidecar", "image": "other.example/s:1"},
                ]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                          "spec": {"storageClassName": "fast"}}],
            },
        });
        let mut object = original.clone();
        apply_recorded(&overrides, &mut object);
        assert_eq!(
            object["spec"]["template"]["spec"]["containers"][0]["image"],
            "mirror.b.example/db:1"
        );
        assert_eq!(object["metadata"]["labels"]["team"], "b-ops");
        assert!(object["metadata"]["annotations"][OVERRIDDEN_ANNOTATION].is_string());
        // Applied twice (a resumed apply): the record still leads back to the original.
        apply_recorded(&overrides, &mut object);
        let mut back = object.clone();
        undo_recorded(&mut back);
        assert_eq!(back, original);

        // Edited on the cluster since: the edit stays, the rest is undone.
        let mut edited = object.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("mine.example/db:2");
        undo_recorded(&mut edited);
        assert_eq!(
            edited["spec"]["template"]["spec"]["containers"][0]["image"],
            "mine.example/db:2"
        );
        assert_eq!(edited["metadata"]["labels"], json!({"team": "data"}));
        assert_eq!(
            edited["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
            "fast"
        );

        // Another target's overrides apply to the original, not on top of these.
        let c = TargetOverrides {
            labels: map(&[("site", "c")]),
            ..TargetOverrides::default()
        };
        let mut on_c = object.clone();
        apply_recorded(&c, &mut on_c);
        undo_recorded(&mut on_c);
        assert_eq!(on_c, original);
    }

    #[test]
    fn empty_overrides_change_nothing() {
        let object = json!({"kind": "StatefulSet", "metadata": {"name": "db"},
                            "spec": {"template": pod_template(&["postgres:17"], &[]),
                                     "volumeClaimTemplates": [{"spec": {"storageClassName": "standard"}}]}});
        let mut applied = object.clone();
        apply_overrides(&TargetOverrides::default(), &mut applied);
        assert_eq!(applied, object);
    }
}
