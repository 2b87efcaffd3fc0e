use std::error::Error as StdError;

/// Everything that can go wrong in the store, each naming what it was working on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend itself failed (disk, lock, network); `location` is its path or endpoint.
    /// The cause is part of the message and deliberately not a `source()`: printed as an
    /// error chain (anyhow's `{:#}`), it would otherwise appear twice.
    #[error("store backend at {location}: {cause}")]
    Backend {
        location: String,
        cause: Box<dyn StdError + Send + Sync>,
    },
    /// The backend's files are damaged: it cannot read what it wrote. `detail` says where.
    #[error(
        "the store at {store} is damaged and cannot be opened ({detail}). Restore the folder \
         from a backup, or move it away together with {store}.mark to start with an empty \
         store (see \"The store refuses to open\" in docs/operations.md)"
    )]
    Damaged { store: String, detail: String },
    /// The store holds fewer writes than its high-water mark recorded as acknowledged: it
    /// lost writes it had promised to keep (damaged, rolled back, or an older copy).
    #[error(
        "the store at {store} is missing acknowledged writes: it holds {found} writes but its \
         mark {mark} records {marked} as acknowledged, so at least {missing} it promised to \
         keep are gone (the store was damaged, rolled back or replaced by an older copy). \
         The broker refuses to run on it: it would forget migrations and locks it acted on. \
         Restore the folder from a backup taken after the last write, or, to accept the loss \
         and run on what is left, delete {mark} (see \"The store refuses to open\" in \
         docs/operations.md)",
        missing = .marked - .found
    )]
    MissingWrites {
        store: String,
        mark: String,
        marked: u64,
        found: u64,
    },
    /// The high-water mark beside the store cannot be read.
    #[error(
        "the store's mark {mark} is unreadable ({reason}); without it, lost writes cannot be \
         told from none. Restore it from a backup, or delete it to trust the store as it is \
         (see \"The store refuses to open\" in docs/operations.md)"
    )]
    UnreadableMark { mark: String, reason: String },
    /// The bytes under `key` are not an envelope (or the key itself is not UTF-8).
    #[error("corrupt value at key {key:?}: {reason}")]
    CorruptEnvelope { key: String, reason: String },
    /// The envelope under `key` holds another kind of value than the one asked for.
    #[error("key {key:?} holds a {found:?} value, not a {expected:?}")]
    KindMismatch {
        key: String,
        expected: &'static str,
        found: String,
    },
    /// The value was written by a newer broker whose schema this one cannot read.
    #[error(
        "key {key:?} holds a {kind:?} value of schema {found}, written by a newer broker; \
         this broker reads up to schema {supported}"
    )]
    NewerSchema {
        key: String,
        kind: &'static str,
        found: u32,
        supported: u32,
    },
    /// `Versioned::upgrade` does not know how to bring `from` up to `to`.
    #[error("no upgrade path for {kind:?} values from schema {from} to {to}")]
    NoUpgradePath {
        kind: &'static str,
        from: u32,
        to: u32,
    },
    /// Upgrading the value under `key` failed; `source` says why.
    #[error("upgrading the {kind:?} value at key {key:?} from schema {from}: {source}")]
    Upgrade {
        key: String,
        kind: &'static str,
        from: u32,
        #[source]
        source: Box<StoreError>,
    },
    /// A value could not be turned into JSON.
    #[error("serializing the {kind:?} value for key {key:?}: {source}")]
    Serialize {
        key: String,
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A stored (or just upgraded) value does not fit the type's current shape.
    #[error("deserializing the {kind:?} value at key {key:?} as schema {schema}: {source}")]
    Deserialize {
        key: String,
        kind: &'static str,
        schema: u32,
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    /// A [`StoreError::Backend`], for backends outside this crate too.
    pub fn backend(
        location: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> StoreError {
        StoreError::Backend {
            location: location.into(),
            cause: source.into(),
        }
    }
}
