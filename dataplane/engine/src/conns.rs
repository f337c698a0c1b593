//! One connection table: finds the endpoint each received datagram belongs to.
//!
//! Owns: the map from connection id to endpoint for every connection one worker carries (the
//! stream carrier's segment transfers on both sides; inbound daemon transfers are meant to
//! use it too), the connections that closed but still answer late frames for a linger (a
//! repeated CLOSE must still be answered), and the counts of datagrams no connection took.
//! It reads each datagram's connection id and frame type with [`dwcp_proto::Header::route`]:
//! the header's layout is known in `dwcp_proto` only.
//!
//! Does not: verify frames (the endpoint parses and verifies the whole frame, CRC or AEAD
//! included), decide whether a new connection is admitted (its owner does, when it is shown
//! the HELLO of an unknown connection), or drive the endpoints' timers.
//!
//! Connections are few per worker (a stream carrier runs up to 16 segment transfers, a daemon
//! a handful of jobs), so the live ones sit in a vector in the order they were added: a
//! lookup is a short scan with no hashing, and iteration order is the order of admission
//! (the stream carrier sends its oldest segment first).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dwcp_proto::{FrameType, Header};

/// Datagrams the table did not hand to any connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Not a DWCP frame this side can route (truncated, bad magic, unknown version or type).
    pub malformed: u64,
    /// A DWCP frame for a connection the table does not hold (late after the linger, a
    /// foreign connection, or a HELLO its owner refused).
    pub unknown: u64,
}

/// Where a received datagram goes.
#[derive(Debug)]
pub enum Dispatch<'a, E> {
    /// To a live connection.
    Live(u32, &'a mut E),
    /// To a connection that closed and is lingering.
    Closing(u32, &'a mut E),
    /// A HELLO for a connection the table does not hold: the owner admits it
    /// ([`ConnTable::insert`]) or refuses it ([`ConnTable::refuse`]).
    Hello(u32),
    /// Nowhere: counted in [`ConnTable::drops`].
    Dropped,
}

/// The connections of one worker, by connection id.
#[derive(Debug)]
pub struct ConnTable<E> {
    live: Vec<(u32, E)>,
    closing: VecDeque<(Instant, u32, E)>,
    linger: Duration,
    drops: Drops,
}

impl<E> ConnTable<E> {
    /// An empty table whose closed connections linger for `linger`.
    pub fn new(linger: Duration) -> Self {
        Self {
            live: Vec::new(),
            closing: VecDeque::new(),
            linger,
            drops: Drops::default(),
        }
    }

    /// Routes one received datagram.
    #[inline]
    pub fn dispatch(&mut self, datagram: &[u8]) -> Dispatch<'_, E> {
        let route = match Header::route(datagram) {
            Ok(r) => r,
            Err(_) => {
                self.drops.malformed += 1;
                return Dispatch::Dropped;
            }
        };
        let conn = route.conn_id;
        if let Some(i) = self.live.iter().position(|(c, _)| *c == conn) {
            return Dispatch::Live(conn, &mut self.live[i].1);
        }
        if let Some(i) = self.closing.iter().position(|(_, c, _)| *c == conn) {
            return Dispatch::Closing(conn, &mut self.closing[i].2);
        }
        if route.frame_type == FrameType::Hello {
            return Dispatch::Hello(conn);
        }
        self.drops.unknown += 1;
        Dispatch::Dropped
    }

    /// The owner refused the HELLO [`ConnTable::dispatch`] showed it.
    pub fn refuse(&mut self) {
        self.drops.unknown += 1;
    }

    /// Adds a live connection (after the others in iteration order) and returns it. A
    /// connection id already live or lingering is replaced.
    pub fn insert(&mut self, conn: u32, endpoint: E) -> &mut E {
        self.live.retain(|(c, _)| *c != conn);
        self.closing.retain(|(_, c, _)| *c != conn);
        self.live.push((conn, endpoint));
        let last = self.live.len() - 1;
        &mut self.live[last].1
    }

    /// Whether `conn` is live or lingering.
    pub fn contains(&self, conn: u32) -> bool {
        self.live.iter().any(|(c, _)| *c == conn) || self.closing.iter().any(|(_, c, _)| *c == conn)
    }

    /// A live connection.
    pub fn get_mut(&mut self, conn: u32) -> Option<&mut E> {
        self.live
            .iter_mut()
            .find(|(c, _)| *c == conn)
            .map(|(_, e)| e)
    }

    /// Removes a live connection for good: late frames for it are dropped.
    pub fn remove(&mut self, conn: u32) -> Option<E> {
        let i = self.live.iter().position(|(c, _)| *c == conn)?;
        Some(self.live.remove(i).1)
    }

    /// Moves a live connection to the lingering ones until `now + linger`; it keeps receiving
    /// its late frames. Returns whether `conn` was live.
    pub fn close(&mut self, now: Instant, conn: u32) -> bool {
        match self.remove(conn) {
            Some(e) => {
                self.closing.push_back((now + self.linger, conn, e));
                true
            }
            None => false,
        }
    }

    /// Forgets the lingering connections whose linger ended by `now`.
    pub fn expire(&mut self, now: Instant) {
        while self.closing.front().is_some_and(|l| l.0 <= now) {
            self.closing.pop_front();
        }
    }

    /// When the next linger ends.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.closing.front().map(|l| l.0)
    }

    /// Live connections.
    pub fn live_len(&self) -> usize {
        self.live.len()
    }

    /// Live connections in the order they were added.
    pub fn live(&self) -> impl Iterator<Item = (u32, &E)> {
        self.live.iter().map(|(c, e)| (*c, e))
    }

    /// Live connections in the order they were added, mutably.
    pub fn live_mut(&mut self) -> impl Iterator<Item = (u32, &mut E)> {
        self.live.iter_mut().map(|(c, e)| (*c, e))
    }

    /// Every connection, live then lingering.
    pub fn all(&self) -> impl Iterator<Item = &E> {
        self.live
            .iter()
            .map(|(_, e)| e)
            .chain(self.closing.iter().map(|l| &l.2))
    }

    /// Every connection, live then lingering, mutably.
    pub fn all_mut(&mut self) -> impl Iterator<Item = &mut E> {
        self.live
            .iter_mut()
            .map(|(_, e)| e)
            .chain(self.closing.iter_mut().map(|l| &mut l.2))
    }

    /// What the table dropped so far.
    pub fn drops(&self) -> Drops {
        self.drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwcp_proto::{Version, build_frame};

    fn frame(ft: FrameType, conn: u32) -> Vec<u8> {
        let mut h = Header::new(Version::V3, ft);
        h.conn_id = conn;
        let mut out = vec![0u8; 256];
        let n = build_frame(&h, b"", &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn routes_by_connection_and_shows_unknown_hellos_to_the_owner() {
        let mut t: ConnTable<&'static str> = ConnTable::new(Duration::from_millis(10));
        assert!(matches!(
            t.dispatch(&frame(FrameType::Hello, 7)),
            Dispatch::Hello(7)
        ));
        t.insert(7, "seven");
        t.insert(3, "three");
        assert!(matches!(
            t.dispatch(&frame(FrameType::Data, 7)),
            Dispatch::Live(7, &mut "seven")
        ));
        // A repeated HELLO of a live connection goes to it, not to the owner.
        assert!(matches!(
            t.dispatch(&frame(FrameType::Hello, 3)),
            Dispatch::Live(3, &mut "three")
        ));
        // Admission order is iteration order.
        assert_eq!(t.live().map(|(c, _)| c).collect::<Vec<_>>(), vec![7, 3]);
        assert!(matches!(
            t.dispatch(&frame(FrameType::Ack, 9)),
            Dispatch::Dropped
        ));
        t.refuse();
        assert_eq!(
            t.drops(),
            Drops {
                malformed: 0,
                unknown: 2
            }
        );
    }

    #[test]
    fn malformed_datagrams_are_counted_and_dropped() {
        let mut t: ConnTable<()> = ConnTable::new(Duration::ZERO);
        t.insert(1, ());
        let good = frame(FrameType::Data, 1);
        let mut bad_magic = good.clone();
        bad_magic[0] ^= 1;
        for d in [&good[..10], &bad_magic[..], b"not dwcp at all"] {
            assert!(matches!(t.dispatch(d), Dispatch::Dropped));
        }
        assert_eq!(t.drops().malformed, 3);
        assert!(matches!(t.dispatch(&good), Dispatch::Live(1, _)));
    }

    #[test]
    fn closed_connections_answer_until_their_linger_ends() {
        let now = Instant::now();
        let mut t: ConnTable<u8> = ConnTable::new(Duration::from_millis(50));
        t.insert(5, 0);
        assert!(t.close(now, 5));
        assert!(!t.close(now, 5), "no longer live");
        assert_eq!(t.live_len(), 0);
        match t.dispatch(&frame(FrameType::Close, 5)) {
            Dispatch::Closing(5, e) => *e += 1,
            _ => panic!("a lingering connection takes its late frames"),
        }
        assert_eq!(t.all().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(t.next_expiry(), Some(now + Duration::from_millis(50)));
        t.expire(now + Duration::from_millis(49));
        assert!(t.contains(5));
        t.expire(now + Duration::from_millis(50));
        assert!(!t.contains(5));
        assert!(matches!(
            t.dispatch(&frame(FrameType::Close, 5)),
            Dispatch::Dropped
        ));
        // A removed connection does not linger.
        t.insert(6, 0);
        assert_eq!(t.remove(6), Some(0));
        assert!(!t.contains(6));
    }
}
