//! The budget of request bodies being read, OTLP/HTTP and OTLP/gRPC alike:
//! `server.max_buffered_bytes` in all, of which one peer (an IP address)
//! holds at most `server.max_buffered_bytes_per_peer`, so a sender that
//! opens many slow or never-finished bodies fills its own share and not
//! the room every other exporter needs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::lock;

/// Why a body's next bytes have no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoom {
    /// Every body together holds `server.max_buffered_bytes`.
    Full,
    /// This peer's bodies hold `server.max_buffered_bytes_per_peer`.
    PeerShare,
}

/// The bytes of bodies being read, in all and per peer.
pub struct Bodies {
    total: Arc<Semaphore>,
    limit: usize,
    per_peer: usize,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Bodies {
    pub fn new(limit: usize, per_peer: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(limit)),
            limit,
            per_peer: per_peer.min(limit),
            peers: Arc::default(),
        }
    }

    /// An empty hold for one body from `peer` (None: a peer not known,
    /// charged to the total only).
    pub fn hold(&self, peer: Option<IpAddr>) -> BodyHold {
        BodyHold {
            total: self.total.clone(),
            peers: self.peers.clone(),
            per_peer: self.per_peer,
            peer,
            bytes: 0,
            permit: None,
        }
    }

    /// Bytes held by every body now.
    pub fn held(&self) -> usize {
        self.limit - self.total.available_permits()
    }

    /// Peers holding bytes now.
    #[cfg(test)]
    fn peers_holding(&self) -> usize {
        lock(&self.peers).len()
    }
}

/// The room one body holds; given back when dropped.
pub struct BodyHold {
    total: Arc<Semaphore>,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_peer: usize,
    peer: Option<IpAddr>,
    bytes: usize,
    permit: Option<OwnedSemaphorePermit>,
}

impl BodyHold {
    /// Takes room for `bytes` more, without waiting: from the total, then
    /// from the peer's share.
    pub fn grow(&mut self, bytes: usize) -> Result<(), NoRoom> {
        if bytes == 0 {
            return Ok(());
        }
        let count = u32::try_from(bytes).map_err(|_| NoRoom::Full)?;
        let permit = self
            .total
            .clone()
            .try_acquire_many_owned(count)
            .map_err(|_| NoRoom::Full)?;
        if let Some(peer) = self.peer {
            let mut peers = lock(&self.peers);
            let held = peers.entry(peer).or_insert(0);
            if *held + bytes > self.per_peer {
                if *held == 0 {
                    peers.remove(&peer);
                }
                return Err(NoRoom::PeerShare); // the permit goes back
            }
            *held += bytes;
        }
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        self.bytes += bytes;
        Ok(())
    }

    fn give_back_peer(&self, bytes: usize) {
        let Some(peer) = self.peer else { return };
        let mut peers = lock(&self.peers);
        if let Some(held) = peers.get_mut(&peer) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                peers.remove(&peer);
            }
        }
    }
}

impl Drop for BodyHold {
    fn drop(&mut self) {
        self.give_back_peer(self.bytes);
        // The permit goes back to the total with it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn one_peer_holds_at_most_its_share_and_others_still_get_room() {
        let bodies = Bodies::new(100, 40);
        let mut hog = bodies.hold(ip(2));
        assert_eq!(hog.grow(30), Ok(()));
        let mut hog2 = bodies.hold(ip(2));
        assert_eq!(hog2.grow(15), Err(NoRoom::PeerShare));
        assert_eq!(hog2.grow(10), Ok(()));
        let mut other = bodies.hold(ip(1));
        assert_eq!(other.grow(40), Ok(()));
        assert_eq!(bodies.held(), 80);
        drop(hog);
        drop(hog2);
        assert_eq!(bodies.held(), 40);
        assert_eq!(bodies.peers_holding(), 1);
        drop(other);
        assert_eq!(bodies.held(), 0);
        assert_eq!(bodies.peers_holding(), 0);
    }

    #[test]
    fn the_total_bounds_every_peer_together() {
        let bodies = Bodies::new(100, 60);
        let mut a = bodies.hold(ip(1));
        let mut b = bodies.hold(ip(2));
        assert_eq!(a.grow(60), Ok(()));
        assert_eq!(b.grow(50), Err(NoRoom::Full));
        // The refused bytes were not left charged to the peer.
        assert_eq!(b.grow(40), Ok(()));
        let mut unknown = bodies.hold(None);
        assert_eq!(unknown.grow(1), Err(NoRoom::Full));
        drop(a);
        assert_eq!(unknown.grow(50), Ok(()));
    }
}
