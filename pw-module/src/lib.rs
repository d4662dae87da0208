//! `libpipewire-module-wavesync`: "WaveSync" as an output device.
//!
//! The module creates an `Audio/Sink` node (`node.name = wavesync`, `node.description =
//! WaveSync`). Whatever plays into it is sent over UDP/RTP to WaveSync receivers, each packet
//! stamped with the instant its first frame must leave the receivers' DACs: the frame's time on
//! the graph clock plus `sess.latency.msec`. Volume and mute work as on any sink (the adapter
//! applies them before the audio reaches the module).
//!
//! ## Module name
//!
//! `libpipewire-module-wavesync` (install `libpipewire-module-wavesync.so` in PipeWire's
//! module directory, or point `PIPEWIRE_MODULE_DIR` at a directory holding it).
//!
//! ## Module options
//!
//! Options follow PipeWire's RTP modules where the meaning is the same.
//!
//! - `destination.ip = <str>`: one destination address, IPv4 or IPv6, unicast or multicast.
//!   Default `239.255.77.77` (the WaveSync group, administratively scoped).
//! - `destination.port = <int>`: its UDP port, and the port of `destinations` entries that
//!   give none. Default `45300`.
//! - `destinations = [ <str> ... ]`: **new** (no PipeWire module has it): several
//!   destinations, each `ADDRESS:PORT` (`"[ADDR]:PORT"` for IPv6), multicast and unicast, IPv4
//!   and IPv6 mixed; every packet goes to each. Use either this or `destination.ip`.
//! - `sess.latency.msec = <num>`: added to the capture time of each frame to get its play
//!   time: the end-to-end latency. Default `100`.
//! - `sess.name = <str>`: the sender's name in the status message (at most 64 bytes).
//!   Default `WaveSync on <hostname>`.
//! - `net.mtu = <int>`: the path MTU; packets are filled up to it. Default `1500` (a 1472-byte
//!   datagram over IPv4).
//! - `wavesync.packet.msec = <num>`: packet duration instead of "as many frames as the MTU
//!   allows"; smaller packets mean lower latency and more packets. Must fit the MTU.
//! - `net.ttl = <int>`: multicast TTL / hop limit. Default `1`.
//! - `net.loop = <bool>`: loop multicast back to this host (a receiver on the master).
//!   Default `false`.
//! - `local.ifname = <str>`: the interface multicast leaves through. Default: the route's.
//! - `audio.rate = <int>`: stream rate. Default `48000`.
//! - `audio.channels = <int>`: channels. Default `2` (or the length of `audio.position`).
//! - `audio.position = [ <str> ... ]`: channel map. Default `[ FL FR ]` for 2 channels.
//! - `audio.format = L16 | L24`: sample format on the wire (big-endian PCM). Default `L16`.
//! - `wavesync.control.port = <int>`: UDP port of the time service (NTPv4 on-wire format)
//!   and of the receivers' NACKs; 0 picks a free port (the status message announces it).
//!   Default `45301`.
//! - `wavesync.clock = master | system | ntp`: the clock domain, the timeline's clock.
//!   `master` (default): this host's CLOCK_MONOTONIC; receivers ask our time service.
//!   `system`: this host's CLOCK_REALTIME, for households whose hosts all keep it with chrony
//!   or PTP; receivers read their own. `ntp`: the clock of the NTP server
//!   `wavesync.clock.server`, read (never set) with the receivers' time client; the status
//!   message names the server and receivers ask it too. See docs/timing.md, "Clock domains".
//! - `wavesync.clock.server = <host[:port]>`: the NTP server of `wavesync.clock = ntp`
//!   (required there, refused otherwise). Port default `123`. A server on this host may be
//!   given as `127.0.0.1:PORT`: receivers reach it at this host's address.
//! - `wavesync.key.file = <path>`: the household key (`wavesync key new PATH`): every datagram
//!   is authenticated (and the audio encrypted), only authentic time requests and NACKs are
//!   answered, packets leave room for the 36-byte protection trailer. Default: none, an open
//!   stream (said once in the log). See docs/security.md.
//! - `wavesync.key.encrypt = <bool>`: with a key, encrypt the audio payload. Default `true`
//!   (`false` keeps it readable, still authenticated).
//! - `stream.props = { ... }`: properties for the node, applied first (e.g. `node.latency`,
//!   `priority.session`, `audio.position`).
//!
//! `node.name`, `node.description`, `node.latency`, `node.group`, `media.name`,
//! `media.class`, `priority.session` and `remote.name` are also accepted at the top level.
//! Unknown `wavesync.*` options are refused (a typo would otherwise go unnoticed).
//!
//! Bad arguments: the module writes one line `wavesync: not loaded: invalid argument ...` to
//! the PipeWire log and refuses to load. With `flags = [ nofail ]` the daemon runs on; without
//! it PipeWire treats the module as mandatory and stops, as for any module.
//!
//! ## Example configuration
//!
//! ```text
//! # ~/.config/pipewire/pipewire.conf.d/50-wavesync.conf
//! context.modules = [
//! {   name = libpipewire-module-wavesync
//!     args = {
//!         #destination.ip = "239.255.77.77"
//!         #destination.port = 45300
//!         #destinations = [ "239.255.77.77:45300" "192.168.1.20:45300" "[ff05::77]:45300" ]
//!         #sess.latency.msec = 100
//!         #sess.name = "Living room PC"
//!         #net.mtu = 1500
//!         #wavesync.packet.msec = 5
//!         #net.ttl = 1
//!         #net.loop = false
//!         #local.ifname = "eth0"
//!         #audio.rate = 48000
//!         #audio.channels = 2
//!         #audio.position = [ FL FR ]
//!         #audio.format = L16
//!         #wavesync.control.port = 45301
//!         #wavesync.clock = master
//!         #wavesync.clock.server = ntp.example.org
//!         #wavesync.key.file = /home/me/.config/wavesync/key
//!         stream.props = {
//!             #node.description = "WaveSync"
//!         }
//!     }
//!     flags = [ nofail ]
//! }
//! ]
//! ```
//!
//! It can also run in its own client process, connected to the user's PipeWire:
//! `pipewire -c wavesync-master.conf` (see `packaging/pipewire/` and `docs/module.md`).

pub mod channels;
pub mod config;
pub mod error;
mod module;
pub mod pw;
mod sender;
pub mod sink;
pub mod spa_json;

/// The module entry point PipeWire looks up when loading `libpipewire-module-wavesync`.
///
/// # Safety
/// Called by PipeWire on its main loop with a live module and NULL or a C string of
/// arguments.
#[no_mangle]
pub unsafe extern "C" fn pipewire__module_init(
    module: *mut pipewire::sys::pw_impl_module,
    args: *const std::ffi::c_char,
) -> std::ffi::c_int {
    if module.is_null() {
        return -libc::EINVAL;
    }
    // A panic must not unwind into C.
    // SAFETY: forwarded caller guarantees.
    std::panic::catch_unwind(|| unsafe { module::init(module, args) }).unwrap_or_else(|_| {
        pw::log::error("not loaded: internal error (panic) during initialisation");
        -libc::EIO
    })
}
