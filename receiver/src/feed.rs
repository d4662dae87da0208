//! What the network thread hands the output thread, through a lock-free ring (no locks and no
//! allocation on the audio path).

use wavesync_common::clock::ClockEstimate;
use wavesync_common::receiver::StreamInfo;
use wavesync_common::time::LocalNs;

/// Largest datagram carried (a jumbo-free Ethernet payload).
pub const MAX_DATAGRAM: usize = 1500;

/// One message for the output thread. Packets travel inline (no allocation, no pool to
/// share): every slot of the ring is as large as the largest datagram, on purpose.
#[derive(Clone, Copy)]
#[allow(clippy::large_enum_variant)]
pub enum Feed {
    /// An audio packet of the followed stream, as received.
    Packet {
        /// Arrival on the local clock.
        at: LocalNs,
        /// Bytes used in `bytes`.
        len: u16,
        /// The datagram.
        bytes: [u8; MAX_DATAGRAM],
    },
    /// A stream is followed from now on (new, restarted, or with a new format).
    Stream(StreamInfo),
    /// The followed stream fell silent.
    StreamLost,
    /// The followed stream is back after [`Feed::StreamLost`] (same id and format).
    StreamResumed(StreamInfo),
    /// The clock estimate changed (None: no estimate).
    Clock(Option<ClockEstimate>),
}

/// Ring capacity: about two seconds of 5 ms packets.
pub const CAPACITY: usize = 512;

/// Creates the ring between the network and the output thread.
pub fn channel() -> (rtrb::Producer<Feed>, rtrb::Consumer<Feed>) {
    rtrb::RingBuffer::new(CAPACITY)
}
