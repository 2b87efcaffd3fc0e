//! Who may call the Ferry broker.
//!
//! Every API call carries `Authorization: Bearer <JWT>`. [`Verifier`] turns that header
//! into a [`Principal`] (subject, role, namespace scope) or an [`AuthError`], which the
//! broker answers with 401. [`Minter`] and [`load_or_create_hs256_key`] serve the default
//! setup, in which the broker signs its own HS256 tokens with a key in its data folder;
//! with an OIDC provider the broker holds only public keys (a PEM or a JWKS).
//!
//! What this crate decides, and why:
//!
//! - **The key pins the algorithm.** Each configured key accepts exactly one algorithm
//!   (HS256 for a secret, RS256 for an RSA key, ES256 for a P-256 key; per key in a JWKS),
//!   and the token's `alg` header must name it. The header never chooses how a token is
//!   checked; otherwise `alg: none` would skip the signature, and an HS256 token keyed with
//!   the (public) RSA key would pass as genuine. Keys a token carries in its own header
//!   (`jwk`, `jku`, `x5c`, ...) are ignored for the same reason. Keys are parsed when the
//!   verifier is built, so a bad key stops the broker at startup; HS256 secrets shorter
//!   than 32 bytes and RSA keys under 2048 bits are refused.
//! - **`iss`, `aud` and `exp` are always checked**, so that a token the same identity
//!   provider issued for another service, or one that leaked long ago, opens nothing here.
//!   `exp` (and `nbf`/`iat`, when present) get [`LEEWAY_SECS`] (60 s) of leeway, enough for
//!   the clock drift between an identity provider and the broker and too little to matter
//!   for a stolen token. Time comes from the system clock, or from the caller in
//!   [`Verifier::verify_at`] so that tests are deterministic.
//! - **Roles are ordered** (`viewer < operator < admin`) and a token's role is the highest
//!   it carries. Unknown role names are ignored, because identity providers fill such
//!   claims with every group a user is in; a token with no known role at all is rejected at
//!   the door, since it could do nothing and is almost surely a misconfiguration that a 401
//!   explains better than a 403 on every call.
//! - **Lifetimes are bounded**: a token valid for longer than the verifier's maximum
//!   ([`DEFAULT_MAX_LIFETIME_SECS`] unless set with [`Verifier::with_max_lifetime`]),
//!   counted as `exp - iat` or, without `iat`, `exp - now`, is refused; [`Minter`] refuses
//!   to mint one.
//! - **Namespaces**: without a `namespaces` claim the token sees every namespace; with one
//!   it sees (and moves) only the workloads in the listed namespaces, and an empty list
//!   means none. `namespaces: null` is rejected rather than read as "absent", because absent
//!   is the widest grant and a value that looks like "nothing" must not give it.
//! - **Errors are precise but safe**: each [`AuthError`] says exactly what failed and has a
//!   stable [`AuthError::code`], but never repeats the token, a claim value or key material.
//! - **JWKS**: fetching the document is the broker's job; this crate takes its text and
//!   selects a key by the token's `kid` (a token without `kid` only matches a JWKS with a
//!   single key). An [`AuthError::UnknownKey`] may mean the provider rotated its keys.

mod error;
mod keyfile;
mod mint;
mod role;
mod verify;

pub use error::{AuthError, KeyError};
pub use keyfile::{HS256_KEY_FILE, load_or_create_hs256_key};
pub use mint::{Claims, Minter};
pub use role::{Principal, Role, UnknownRole};
pub use verify::{VerificationKey, Verifier};

/// Clock leeway, in seconds, on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;

/// The longest token lifetime accepted unless configured otherwise: 90 days. Long enough
/// for a service account's token to be rotated by hand each quarter; a token that lives
/// for years (or, with `exp = 2^64-1`, forever) cannot be contained once it leaks.
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 90 * 24 * 3600;

/// The shortest HS256 key accepted: the hash output size, per RFC 7518 §3.2.
pub const MIN_HS256_KEY_LEN: usize = 32;

/// Seconds since the Unix epoch. A clock set before 1970 reads as 0, which makes every
/// token look expired: wrong, but closed.
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
