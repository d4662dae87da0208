//! What the network thread hands the output thread, through a lock-free ring (no locks and no
//! allocation on the audio path).

use wavesync_common::clock::ClockEstimate;
use wavesync_common::receiver::StreamInfo;
use wavesync_common::time::LocalNs;
use wavesync_common::wire::rtp::{AudioPacket, HEADER_LEN};

/// Largest datagram received (a jumbo-free Ethernet payload).
pub const MAX_DATAGRAM: usize = 1500;
/// Largest audio payload a [`Packet`] carries: what fits in [`MAX_DATAGRAM`] after the header.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - HEADER_LEN;

/// An audio packet of the followed stream, decoded once by the network thread and handed on
/// typed: the decoded header and a copy of the payload in a fixed buffer (no allocation, no
/// pool to share: every slot of the ring is as large as the largest payload, on purpose).
#[derive(Clone, Copy)]
pub struct Packet {
    /// Arrival on the local clock.
    pub at: LocalNs,
    /// The decoded header (its payload is empty: see [`Packet::audio`]).
    pub header: AudioPacket<'static>,
    len: u16,
    payload: [u8; MAX_PAYLOAD],
}

impl Packet {
    /// Copies a decoded packet that arrived at `at`; `None` if its payload is larger than
    /// [`MAX_PAYLOAD`] (it cannot have come in one datagram of [`MAX_DATAGRAM`] bytes).
    pub fn new(at: LocalNs, p: &AudioPacket<'_>) -> Option<Packet> {
        let len = p.payload.len();
        if len > MAX_PAYLOAD {
            return None;
        }
        let mut payload = [0u8; MAX_PAYLOAD];
        payload[..len].copy_from_slice(p.payload);
        Some(Packet {
            at,
            header: p.with_payload(&[]),
            len: len as u16,
            payload,
        })
    }

    /// The payload: interleaved big-endian samples.
    pub fn payload(&self) -> &[u8] {
        &self.payload[..self.len as usize]
    }

    /// The packet as the common core takes it (borrowing the payload).
    pub fn audio(&self) -> AudioPacket<'_> {
        self.header.with_payload(self.payload())
    }
}

/// One message for the output thread.
#[derive(Clone, Copy)]
#[allow(clippy::large_enum_variant)]
pub enum Feed {
    /// An audio packet of the followed stream.
    Packet(Packet),
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

#[cfg(test)]
mod tests {
    use super::*;
    use wavesync_common::format::SampleFormat;
    use wavesync_common::time::TimelineNs;

    #[test]
    fn a_packet_carries_what_was_decoded() {
        let payload: Vec<u8> = (0..MAX_PAYLOAD).map(|i| i as u8).collect();
        let p = AudioPacket {
            marker: true,
            format: SampleFormat::L24,
            seq: 65_535,
            timestamp: 4_000_000_000,
            ssrc: 0xdead_beef,
            play_time: TimelineNs::from_ns(123_456_789),
            payload: &payload,
        };
        let got = Packet::new(LocalNs::from_ns(7), &p).expect("fits");
        assert_eq!(got.at, LocalNs::from_ns(7));
        assert_eq!(got.audio(), p);
        let too_long = vec![0u8; MAX_PAYLOAD + 1];
        assert!(Packet::new(
            LocalNs::from_ns(0),
            &AudioPacket {
                payload: &too_long,
                ..p
            }
        )
        .is_none());
    }
}
