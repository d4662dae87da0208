//! What a stream is: sample format, rate, channels, and the clock domain of its timeline.

/// Sample format on the wire: signed big-endian PCM (RFC 3551 L16, RFC 3190 L24).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleFormat {
    /// 16-bit signed big-endian.
    L16,
    /// 24-bit signed big-endian, packed in 3 bytes.
    L24,
}

impl SampleFormat {
    /// Bytes of one sample of one channel.
    pub fn bytes(self) -> usize {
        match self {
            SampleFormat::L16 => 2,
            SampleFormat::L24 => 3,
        }
    }

    /// The code used in the status message.
    pub fn code(self) -> u8 {
        match self {
            SampleFormat::L16 => 1,
            SampleFormat::L24 => 2,
        }
    }

    /// Inverse of [`SampleFormat::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(SampleFormat::L16),
            2 => Some(SampleFormat::L24),
            _ => None,
        }
    }

    /// The RTP payload type used for audio packets of this format (dynamic range, RFC 3551).
    pub fn payload_type(self) -> u8 {
        match self {
            SampleFormat::L16 => 96,
            SampleFormat::L24 => 97,
        }
    }

    /// Inverse of [`SampleFormat::payload_type`].
    pub fn from_payload_type(pt: u8) -> Option<Self> {
        match pt {
            96 => Some(SampleFormat::L16),
            97 => Some(SampleFormat::L24),
            _ => None,
        }
    }
}

/// Which clock the timeline (the packets' play times) is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClockDomain {
    /// The master's CLOCK_MONOTONIC; receivers query the master's time service. The default.
    Master,
    /// UTC as measured against an NTP server by master and receivers alike (counted from the
    /// Unix epoch, see [`crate::time`]).
    Ntp,
    /// The hosts' CLOCK_REALTIME, trusted as-is (disciplined by PTP or chrony).
    System,
}

impl ClockDomain {
    /// The domain's name, as options and logs spell it.
    pub fn name(self) -> &'static str {
        match self {
            ClockDomain::Master => "master",
            ClockDomain::Ntp => "ntp",
            ClockDomain::System => "system",
        }
    }

    /// Inverse of [`ClockDomain::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [ClockDomain::Master, ClockDomain::Ntp, ClockDomain::System]
            .into_iter()
            .find(|d| d.name() == name)
    }

    /// The code used in the status message.
    pub fn code(self) -> u8 {
        match self {
            ClockDomain::Master => 0,
            ClockDomain::Ntp => 1,
            ClockDomain::System => 2,
        }
    }

    /// Inverse of [`ClockDomain::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(ClockDomain::Master),
            1 => Some(ClockDomain::Ntp),
            2 => Some(ClockDomain::System),
            _ => None,
        }
    }
}

/// The shape of the audio in a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamFormat {
    /// Frames per second.
    pub rate: u32,
    /// Interleaved channels per frame.
    pub channels: u8,
    /// Wire sample format.
    pub sample: SampleFormat,
}

impl StreamFormat {
    /// CD-quality-like default: 48 kHz, stereo, 16 bit.
    pub const DEFAULT: StreamFormat = StreamFormat {
        rate: 48_000,
        channels: 2,
        sample: SampleFormat::L16,
    };

    /// Bytes of one frame on the wire.
    pub fn bytes_per_frame(self) -> usize {
        self.sample.bytes() * self.channels as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for f in [SampleFormat::L16, SampleFormat::L24] {
            assert_eq!(SampleFormat::from_code(f.code()), Some(f));
            assert_eq!(SampleFormat::from_payload_type(f.payload_type()), Some(f));
        }
        for d in [ClockDomain::Master, ClockDomain::Ntp, ClockDomain::System] {
            assert_eq!(ClockDomain::from_code(d.code()), Some(d));
            assert_eq!(ClockDomain::from_name(d.name()), Some(d));
        }
        assert_eq!(SampleFormat::from_code(0), None);
        assert_eq!(ClockDomain::from_code(9), None);
        assert_eq!(StreamFormat::DEFAULT.bytes_per_frame(), 4);
    }
}
