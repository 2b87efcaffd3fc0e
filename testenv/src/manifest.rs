//! Kubernetes manifests (YAML, as `kubectl apply -f` takes them) as JSON values, for tests
//! that create what the repository ships, e.g. `deploy/ferry-clusterrole.yaml`.

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use crate::Error;

/// Every document of a manifest, as JSON.
pub fn manifest_documents(text: &str) -> Result<Vec<Value>, Error> {
    let documents = YamlLoader::load_from_str(text)
        .map_err(|e| Error::Build(format!("manifest is not YAML: {e}")))?;
    Ok(documents.iter().map(to_json).collect())
}

/// Manifests are maps, lists and scalars; anything else (aliases, bad values) is null.
fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), to_json(v))))
                .collect(),
        ),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Real(s) => s.parse::<f64>().map_or(Value::Null, Value::from),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Boolean(b) => Value::Bool(*b),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_shapes() {
        let text = "a: 1\nb: [x, \"2\"]\nc: {d: true, e: 1.5}\n---\nkind: Role\n";
        let documents = manifest_documents(text).expect("valid YAML");
        assert_eq!(
            documents,
            vec![
                serde_json::json!({"a": 1, "b": ["x", "2"], "c": {"d": true, "e": 1.5}}),
                serde_json::json!({"kind": "Role"}),
            ]
        );
        assert!(manifest_documents("a: [").is_err());
    }
}
