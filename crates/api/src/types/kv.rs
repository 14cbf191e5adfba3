//! The key-value namespace: `/v1/kv`.
//!
//! Operators keep site configuration here, and tests hammer the store
//! through it. Keys are 1 to 1,024 bytes of UTF-8 without control
//! characters; values are UTF-8 text up to 256 KiB. Every change gets the
//! next store-wide revision, as in etcd: a record carries the revision
//! that created it, the one that last changed it, and how many times it
//! changed. Reads are linearizable: they see every write acknowledged
//! before they started, whichever member answers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Query of `GET /v1/kv/entry` and `DELETE /v1/kv/entry`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvKeyQuery {
    /// The key.
    pub key: String,
    /// Delete only if the key's last change was this revision (`0`: only
    /// if it does not exist, which makes the delete a no-op check).
    /// Ignored by `GET`.
    pub if_revision: Option<u64>,
}

/// `GET /v1/kv/entry`: one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KvRecord {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// The revision of the last change to this key (what `if_revision`
    /// compares with).
    pub revision: u64,
    /// The revision that created it.
    pub create_revision: u64,
    /// How many times it was written since it was created (1 after the
    /// first write).
    pub version: u64,
}

/// `PUT /v1/kv/entry`: write a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvPutRequest {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Compare-and-set: write only if the key's last change was this
    /// revision; `0` writes only if the key does not exist. Refused with
    /// `revision_conflict` otherwise.
    pub if_revision: Option<u64>,
}

/// The answer to a write or delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KvWritten {
    /// The key.
    pub key: String,
    /// The store revision of the change; for a delete of an absent key,
    /// the store revision it was checked at.
    pub revision: u64,
    /// For a delete: whether a record was removed.
    pub deleted: Option<bool>,
}

/// Query of `GET /v1/kv`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvListQuery {
    /// Only keys starting with this (all keys when absent).
    #[serde(default)]
    pub prefix: String,
    /// At most this many records, in key order (default and maximum
    /// 1,000).
    pub limit: Option<u32>,
}

/// `GET /v1/kv`: records in key order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KvList {
    /// The store revision the list was read at; a watch from here misses
    /// nothing.
    pub revision: u64,
    /// The records.
    pub records: Vec<KvRecord>,
    /// Whether more records match than were returned.
    pub more: bool,
}

/// Query of `GET /v1/kv/watch`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvWatchQuery {
    /// Only keys starting with this (all keys when absent).
    #[serde(default)]
    pub prefix: String,
    /// Stream changes after this revision: the `revision` of a list, or the
    /// last event seen, to resume without gaps. When absent, only changes
    /// from now on. Refused with `compacted` when the history no longer
    /// reaches back that far.
    pub after: Option<u64>,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KvEventKind {
    /// Created or changed.
    Put,
    /// Removed.
    Delete,
}

/// One change, a line of `GET /v1/kv/watch`. Events arrive in revision
/// order, each exactly once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KvEvent {
    /// The store revision of the change.
    pub revision: u64,
    /// The key.
    pub key: String,
    /// What happened.
    pub kind: KvEventKind,
    /// The new value, for `put`.
    pub value: Option<String>,
}
