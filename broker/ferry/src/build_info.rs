//! What this binary is: its version, the commit it was built from and the cargo features
//! it was built with, as `ferry --version` and the `ferry_build_info` metric show them.

use std::sync::LazyLock;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Set by build.rs ("unknown" when built outside a git checkout).
pub const COMMIT: &str = env!("FERRY_COMMIT");

/// The optional features compiled in, comma-separated ("none" without any).
pub fn features() -> &'static str {
    const ALL: &[(&str, bool)] = &[("https", cfg!(feature = "https"))];
    static TEXT: LazyLock<String> = LazyLock::new(|| {
        let on: Vec<&str> = ALL.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        if on.is_empty() {
            "none".to_owned()
        } else {
            on.join(",")
        }
    });
    &TEXT
}

/// `0.1.0 (commit 1a2b3c4d5e6f, features: https)`: what `--version` prints after "ferry".
pub fn long_version() -> &'static str {
    static TEXT: LazyLock<String> =
        LazyLock::new(|| format!("{VERSION} (commit {COMMIT}, features: {})", features()));
    &TEXT
}
