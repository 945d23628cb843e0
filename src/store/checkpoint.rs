//! The store's checkpoint: every fleet, its releases and their judge's
//! evidence as postcard bytes, written a fleet at a time (so ingest waits
//! for one fleet at most) and restored whole, refused when it was made
//! under other judge settings or another format version.

use std::sync::Arc;

use serde::Deserialize;
#[cfg(test)]
use serde::Serialize;

use super::{Fleet, Store};

/// Bumped whenever a checkpointed type changes shape.
pub(super) const CHECKPOINT_VERSION: u32 = 8;

/// A checkpoint as written (in parts: see `checkpoint_of`).
#[cfg(test)]
#[derive(Serialize)]
pub(super) struct SavedRef<'a> {
    pub version: u32,
    pub shape: String,
    pub fleets: Vec<(&'a str, &'a str, &'a Fleet)>,
}

/// The checkpoint of a head and fleets' parts: the bytes of a `SavedRef`
/// (postcard writes a struct as its fields in a row, a sequence as its
/// length and its items).
pub fn checkpoint_of(head: Vec<u8>, parts: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out = head;
    out.extend(postcard::to_stdvec(&parts.len()).unwrap_or_default());
    for part in parts {
        out.extend(part);
    }
    out
}

/// A checkpoint as read back.
#[derive(Deserialize)]
pub(super) struct Saved {
    version: u32,
    shape: String,
    pub fleets: Vec<(Arc<str>, Arc<str>, Fleet)>,
}

/// Why a checkpoint was not restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the checkpoint cannot be decoded: {0}")]
    Decode(postcard::Error),
    #[error(
        "the checkpoint is of format version {0}, this daemon reads version {CHECKPOINT_VERSION}"
    )]
    Version(u32),
    #[error("the checkpoint was made under other [judge] window or [checks] settings")]
    Settings,
    #[error("taking the checkpoint's releases would pass the cap of {0} releases")]
    Full(usize),
}

impl Store {
    /// Every fleet, its releases and their judge's evidence, as bytes for
    /// a checkpoint (see `restore`).
    pub fn checkpoint(&self) -> Vec<u8> {
        let parts = self
            .fleets()
            .filter_map(|(s, e, _)| self.checkpoint_fleet(s, e))
            .collect();
        checkpoint_of(self.checkpoint_head(), parts)
    }

    /// A checkpoint's opening: its version and the settings it needs. With
    /// `checkpoint_fleet` and `checkpoint_of`, a checkpoint can be written a
    /// fleet at a time, the store free for ingest in between.
    pub fn checkpoint_head(&self) -> Vec<u8> {
        // Writing to a Vec cannot fail; our types serialize infallibly.
        postcard::to_stdvec(&(CHECKPOINT_VERSION, self.shape())).unwrap_or_default()
    }

    /// One service and environment's part of a checkpoint; None when it is
    /// no longer tracked.
    pub fn checkpoint_fleet(&self, service: &str, environment: &str) -> Option<Vec<u8>> {
        let fleet = self.fleet(service, environment)?;
        postcard::to_stdvec(&(service, environment, fleet)).ok()
    }

    /// Replaces what is tracked by a checkpoint's content; returns how many
    /// releases it restored. A checkpoint made under other judge settings
    /// (window, checks) is refused: its evidence would not fit.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<usize, RestoreError> {
        let saved = self.decode(bytes)?;
        self.fleets.clear();
        for (service, env, fleet) in saved.fleets {
            self.fleets.entry(service).or_default().insert(env, fleet);
        }
        self.len = self.count();
        self.hold_reds();
        Ok(self.len)
    }

    /// A checkpoint's content, if it fits this daemon's settings.
    pub(super) fn decode(&self, bytes: &[u8]) -> Result<Saved, RestoreError> {
        let saved: Saved = postcard::from_bytes(bytes).map_err(RestoreError::Decode)?;
        if saved.version != CHECKPOINT_VERSION {
            return Err(RestoreError::Version(saved.version));
        }
        if saved.shape != self.shape() {
            return Err(RestoreError::Settings);
        }
        let fleets = saved.fleets.iter().map(|(_, _, f)| f);
        if fleets
            .flat_map(|f| f.releases.values())
            .any(|r| r.judgement.is_none())
        {
            return Err(RestoreError::Settings);
        }
        Ok(saved)
    }

    /// The settings a checkpoint's evidence depends on.
    pub(super) fn shape(&self) -> String {
        format!(
            "{:?} {} {:?}",
            self.judge.config.window, self.judge.config.window_slots, self.judge.checks
        )
    }
}
