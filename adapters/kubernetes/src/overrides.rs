//! Per-target overrides: what one target cluster needs changed in every object applied to
//! it — a registry mirror its nodes can reach, its own storage class names, and labels and
//! annotations its policies require. They belong to the target, not to the workload: the
//! same export applied to two clusters gets each cluster's overrides.
//!
//! Pure, so that the rules are unit-tested without a cluster; [`crate::KubeCluster`] runs
//! [`apply_overrides`] on each object of `apply` before it is sent.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

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
    fn empty_overrides_change_nothing() {
        let object = json!({"kind": "StatefulSet", "metadata": {"name": "db"},
                            "spec": {"template": pod_template(&["postgres:17"], &[]),
                                     "volumeClaimTemplates": [{"spec": {"storageClassName": "standard"}}]}});
        let mut applied = object.clone();
        apply_overrides(&TargetOverrides::default(), &mut applied);
        assert_eq!(applied, object);
    }
}
