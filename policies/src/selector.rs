//! Kubernetes label selectors: `matchLabels` and `matchExpressions`.

use std::fmt;

use crate::model::Labels;

/// A label selector; an empty one matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    pub match_labels: Labels,
    /// Expressions that must all hold.
    pub match_expressions: Vec<LabelExpression>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelExpression {
    /// The label key.
    pub key: String,
    /// The test.
    pub operator: SelectorOperator,
}

/// The operators of Kubernetes set-based selectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorOperator {
    /// The value is one of these.
    In(Vec<String>),
    /// The label is absent or its value is none of these.
    NotIn(Vec<String>),
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.first_mismatch(labels).is_none()
    }

    /// The first term that `labels` fail, for reasons such as "required affinity residency=eu".
    pub fn first_mismatch(&self, labels: &Labels) -> Option<String> {
        for (key, value) in &self.match_labels {
            if labels.get(key) != Some(value) {
                return Some(format!("{key}={value}"));
            }
        }
        self.match_expressions
            .iter()
            .find(|expression| !expression.matches(labels))
            .map(ToString::to_string)
    }

    /// Whether the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

impl LabelExpression {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            SelectorOperator::In(values) => value.is_some_and(|v| values.contains(v)),
            SelectorOperator::NotIn(values) => !value.is_some_and(|v| values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for LabelExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        match &self.operator {
            SelectorOperator::In(values) => write!(f, "{key} in ({})", values.join(",")),
            SelectorOperator::NotIn(values) => write!(f, "{key} notin ({})", values.join(",")),
            SelectorOperator::Exists => write!(f, "{key} exists"),
            SelectorOperator::DoesNotExist => write!(f, "!{key}"),
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(self.match_expressions.iter().map(ToString::to_string))
            .collect();
        f.write_str(&terms.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators_follow_kubernetes() {
        let set = |values: &[&str]| values.iter().map(ToString::to_string).collect::<Vec<_>>();
        let cluster = labels(&[("provider", "gke"), ("residency", "eu")]);
        let cases = [
            (
                SelectorOperator::In(set(&["gke", "openstack"])),
                "provider",
                true,
            ),
            (SelectorOperator::In(set(&["openstack"])), "provider", false),
            (
                SelectorOperator::NotIn(set(&["openstack"])),
                "provider",
                true,
            ),
            (SelectorOperator::NotIn(set(&["x"])), "missing", true),
            (SelectorOperator::Exists, "residency", true),
            (SelectorOperator::Exists, "missing", false),
            (SelectorOperator::DoesNotExist, "missing", true),
            (SelectorOperator::DoesNotExist, "provider", false),
        ];
        for (operator, key, expected) in cases {
            let selector = LabelSelector {
                match_labels: Labels::new(),
                match_expressions: vec![LabelExpression {
                    key: key.into(),
                    operator: operator.clone(),
                }],
            };
            assert_eq!(selector.matches(&cluster), expected, "{key} {operator:?}");
        }
    }

    #[test]
    fn mismatch_names_the_failing_term() {
        let selector = LabelSelector {
            match_labels: labels(&[("residency", "eu")]),
            match_expressions: vec![],
        };
        assert_eq!(
            selector
                .first_mismatch(&labels(&[("residency", "us")]))
                .as_deref(),
            Some("residency=eu")
        );
        assert!(LabelSelector::default().matches(&Labels::new()));
    }
}
