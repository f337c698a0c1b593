//! Persistent state in redb: flags, rollout state, rollout decisions, migration jobs, the
//! audit log and a few counters, stored as JSON values.
//!
//! Owns the table layout and atomic multi-record commits (one write transaction per API
//! change, so a change and its audit line land together or not at all). Does not validate
//! or decide anything.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;

const FLAGS: TableDefinition<&str, &str> = TableDefinition::new("flags");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const DECISIONS: TableDefinition<u64, &str> = TableDefinition::new("decisions");
const JOBS: TableDefinition<u64, &str> = TableDefinition::new("jobs");
const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");

/// One change in a commit.
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or replace a flag.
    PutFlag(String, String),
    /// Delete a flag.
    DelFlag(String),
    /// Set a meta value (rollout state, counters).
    PutMeta(&'static str, String),
    /// Append or replace a decision.
    PutDecision(u64, String),
    /// Insert or replace a job.
    PutJob(u64, String),
    /// Append an audit line.
    PutAudit(u64, String),
}

/// JSON-encodes a value for an [`Op`].
pub fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"unserialisable\":\"{e}\"}}"))
}

fn dbe<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Db {
        op,
        source: Box::new(e.into()),
    }
}

fn decode<T: DeserializeOwned>(table: &'static str, key: String, v: &str) -> Result<T, StoreError> {
    serde_json::from_str(v).map_err(|source| StoreError::Decode { table, key, source })
}

/// The state database.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens or creates the database file and its tables.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(dbe("open database"))?;
        let tx = db.begin_write().map_err(dbe("begin"))?;
        {
            tx.open_table(FLAGS).map_err(dbe("open flags"))?;
            tx.open_table(META).map_err(dbe("open meta"))?;
            tx.open_table(DECISIONS).map_err(dbe("open decisions"))?;
            tx.open_table(JOBS).map_err(dbe("open jobs"))?;
            tx.open_table(AUDIT).map_err(dbe("open audit"))?;
        }
        tx.commit().map_err(dbe("commit"))?;
        Ok(Self { db })
    }

    /// Applies every op in one durable transaction.
    pub fn commit(&self, ops: &[Op]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(dbe("begin"))?;
        {
            let mut flags = tx.open_table(FLAGS).map_err(dbe("open flags"))?;
            let mut meta = tx.open_table(META).map_err(dbe("open meta"))?;
            let mut decisions = tx.open_table(DECISIONS).map_err(dbe("open decisions"))?;
            let mut jobs = tx.open_table(JOBS).map_err(dbe("open jobs"))?;
            let mut audit = tx.open_table(AUDIT).map_err(dbe("open audit"))?;
            for op in ops {
                match op {
                    Op::PutFlag(k, v) => flags.insert(k.as_str(), v.as_str()).map(drop),
                    Op::DelFlag(k) => flags.remove(k.as_str()).map(drop),
                    Op::PutMeta(k, v) => meta.insert(*k, v.as_str()).map(drop),
                    Op::PutDecision(k, v) => decisions.insert(*k, v.as_str()).map(drop),
                    Op::PutJob(k, v) => jobs.insert(*k, v.as_str()).map(drop),
                    Op::PutAudit(k, v) => audit.insert(*k, v.as_str()).map(drop),
                }
                .map_err(dbe("write"))?;
            }
        }
        tx.commit().map_err(dbe("commit"))
    }

    /// All flags.
    pub fn flags<T: DeserializeOwned>(&self) -> Result<BTreeMap<String, T>, StoreError> {
        let tx = self.db.begin_read().map_err(dbe("begin read"))?;
        let t = tx.open_table(FLAGS).map_err(dbe("open flags"))?;
        let mut out = BTreeMap::new();
        for item in t.iter().map_err(dbe("iter flags"))? {
            let (k, v) = item.map_err(dbe("read flag"))?;
            let key = k.value().to_owned();
            out.insert(key.clone(), decode("flags", key, v.value())?);
        }
        Ok(out)
    }

    /// A meta value.
    pub fn meta<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read().map_err(dbe("begin read"))?;
        let t = tx.open_table(META).map_err(dbe("open meta"))?;
        match t.get(key).map_err(dbe("read meta"))? {
            Some(v) => Ok(Some(decode("meta", key.to_owned(), v.value())?)),
            None => Ok(None),
        }
    }

    /// All jobs.
    pub fn jobs<T: DeserializeOwned>(&self) -> Result<BTreeMap<u64, T>, StoreError> {
        self.all_u64(JOBS, "jobs", usize::MAX)
            .map(|v| v.into_iter().collect())
    }

    /// Newest `limit` decisions, newest first.
    pub fn decisions<T: DeserializeOwned>(&self, limit: usize) -> Result<Vec<T>, StoreError> {
        Ok(self
            .all_u64(DECISIONS, "decisions", limit)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Newest `limit` audit lines, newest first.
    pub fn audit<T: DeserializeOwned>(&self, limit: usize) -> Result<Vec<T>, StoreError> {
        Ok(self
            .all_u64(AUDIT, "audit", limit)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Highest key of a u64 table (for id counters).
    pub fn last_id(&self, table: &'static str) -> Result<u64, StoreError> {
        let def = match table {
            "decisions" => DECISIONS,
            "jobs" => JOBS,
            _ => AUDIT,
        };
        let tx = self.db.begin_read().map_err(dbe("begin read"))?;
        let t = tx.open_table(def).map_err(dbe("open table"))?;
        Ok(t.last()
            .map_err(dbe("read last"))?
            .map(|(k, _)| k.value())
            .unwrap_or(0))
    }

    fn all_u64<T: DeserializeOwned>(
        &self,
        def: TableDefinition<u64, &str>,
        name: &'static str,
        limit: usize,
    ) -> Result<Vec<(u64, T)>, StoreError> {
        let tx = self.db.begin_read().map_err(dbe("begin read"))?;
        let t = tx.open_table(def).map_err(dbe("open table"))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(dbe("iter"))?.rev().take(limit) {
            let (k, v) = item.map_err(dbe("read"))?;
            out.push((k.value(), decode(name, k.value().to_string(), v.value())?));
        }
        Ok(out)
    }
}
