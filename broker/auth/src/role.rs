//! Roles and the authenticated caller.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// What a caller may do. The order is the privilege order (`viewer < operator < admin`),
/// so "at least operator" is a comparison.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads workloads, placements and plans.
    Viewer,
    /// Also migrates workloads.
    Operator,
    /// Also changes policies and reads the audit log.
    Admin,
}

impl Role {
    /// All roles, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The name used in tokens, the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of viewer, operator, admin.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}` (expected viewer, operator or admin)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    /// Exact, lowercase names only: a token's `Admin` or `ADMIN` is some other system's
    /// role, and guessing that it means ours would widen access by accident.
    fn from_str(name: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == name)
            .ok_or_else(|| UnknownRole(name.to_owned()))
    }
}

/// Who is calling, once the token checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub subject: String,
    /// The highest known role the token carries.
    pub role: Role,
    /// The namespaces the caller may see and move workloads in; `None` means all of them.
    /// `Some` of an empty set means none.
    pub namespaces: Option<BTreeSet<String>>,
}

impl Principal {
    /// Whether the caller's role is `role` or a higher one.
    pub fn has(&self, role: Role) -> bool {
        self.role >= role
    }

    /// Whether the caller may see (and, with the role for it, move) workloads in `namespace`.
    pub fn sees_namespace(&self, namespace: &str) -> bool {
        match &self.namespaces {
            None => true,
            Some(allowed) => allowed.contains(namespace),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test reports failure by panicking")]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_fromstr_display_and_serde() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{role}\""));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), role);
        }
    }

    #[test]
    fn other_spellings_are_not_roles() {
        for name in ["Admin", "ADMIN", " admin", "admin ", "root", ""] {
            assert_eq!(
                name.parse::<Role>(),
                Err(UnknownRole(name.to_owned())),
                "{name:?}"
            );
        }
    }

    #[test]
    fn has_follows_the_privilege_order() {
        for held in Role::ALL {
            let principal = Principal {
                subject: "x".into(),
                role: held,
                namespaces: None,
            };
            for needed in Role::ALL {
                let expected = Role::ALL.iter().position(|r| *r == held)
                    >= Role::ALL.iter().position(|r| *r == needed);
                assert_eq!(principal.has(needed), expected, "{held} has {needed}?");
            }
        }
    }

    #[test]
    fn namespaces_none_is_all_and_empty_is_none() {
        let all = Principal {
            subject: "x".into(),
            role: Role::Viewer,
            namespaces: None,
        };
        assert!(all.sees_namespace("anything"));
        let scoped = Principal {
            namespaces: Some(BTreeSet::from(["team-a".to_owned()])),
            ..all.clone()
        };
        assert!(scoped.sees_namespace("team-a"));
        assert!(!scoped.sees_namespace("team-b"));
        assert!(!scoped.sees_namespace("team-a-prod"));
        let nothing = Principal {
            namespaces: Some(BTreeSet::new()),
            ..all
        };
        assert!(!nothing.sees_namespace("team-a"));
    }
}
