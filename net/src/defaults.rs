//! The project's default addresses, used by every program and documented once here.
//!
//! - The stream goes to [`GROUP`]:[`PORT`], an administratively scoped IPv4 multicast group
//!   (239.0.0.0/8: switches with IGMP snooping forward it only where it is joined, unlike
//!   224.0.0.x, which is flooded to every port and Wi-Fi client).
//! - The master's time service and NACKs are on [`CONTROL_PORT`]; the port actually used is
//!   announced in the stream's status message.
//! - The legacy `wavesync --tx/--rx` command lines keep the Python tool's [`LEGACY_CHANNEL`].

use std::net::{Ipv4Addr, SocketAddrV4};

/// UDP port of the audio stream (the Python tool's).
pub const PORT: u16 = 45300;
/// UDP port of the master's time service (NTPv4 on-wire format) and of NACKs.
pub const CONTROL_PORT: u16 = 45301;
/// The default multicast group.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 77);
/// The default stream address: [`GROUP`]:[`PORT`].
pub const DESTINATION: SocketAddrV4 = SocketAddrV4::new(GROUP, PORT);
/// The Python tool's default channel, kept by the legacy `wavesync --tx/--rx` command lines.
pub const LEGACY_CHANNEL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 57), PORT);
/// The NTP port, for `--ntp HOST` without a port.
pub const NTP_PORT: u16 = 123;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_read_as_documented() {
        assert_eq!(DESTINATION.to_string(), "239.255.77.77:45300");
        assert_eq!(LEGACY_CHANNEL.to_string(), "224.0.0.57:45300");
        assert_eq!(CONTROL_PORT, PORT + 1);
    }
}
