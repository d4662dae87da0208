//! The module's arguments, parsed and checked before anything is created.
//!
//! Pure Rust (no PipeWire calls): the module entry point flattens its `pw_properties` into a
//! map and hands it to [`ModuleConfig::from_args`]. Every option, its default and its meaning
//! is documented at the top of `lib.rs`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use wavesync_common::format::{SampleFormat, StreamFormat};
use wavesync_common::protect::OVERHEAD;
use wavesync_common::wire::rtp::HEADER_LEN;
use wavesync_engine::EngineClock;
use wavesync_net::defaults;

use crate::error::ConfigError;
use crate::spa_json::parse_string_array;

/// Default latency added to the capture time of each frame, in milliseconds.
pub const DEFAULT_LATENCY_MSEC: u32 = 100;
/// Default MTU: Ethernet's, so a datagram carries at most 1472 bytes over IPv4.
pub const DEFAULT_MTU: u32 = 1500;
/// Default multicast TTL (`net.ttl`): the local network only.
pub const DEFAULT_TTL: u32 = 1;
/// Default of `net.loop`: multicast not looped back to this host.
pub const DEFAULT_LOOP: bool = false;
/// Default `node.name`.
pub const DEFAULT_NODE_NAME: &str = "wavesync";
/// Default `node.description`.
pub const DEFAULT_NODE_DESCRIPTION: &str = "WaveSync";
/// Longest `sess.name` the status message carries, in bytes.
pub const MAX_SESSION_NAME: usize = 64;

const IPV4_UDP_OVERHEAD: u32 = 20 + 8;
const IPV6_UDP_OVERHEAD: u32 = 40 + 8;

/// Everything the module needs to know, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleConfig {
    /// Where the audio goes (unicast and multicast, IPv4 and IPv6 mixed).
    pub destinations: Vec<SocketAddr>,
    /// Added to the capture time of a frame to get its play time.
    pub latency_ns: i64,
    /// The sender's name in the status message.
    pub session_name: String,
    /// Frames in one audio packet.
    pub frames_per_packet: u16,
    /// Largest datagram payload the MTU allows for all destinations.
    pub max_payload: usize,
    /// Multicast TTL / hop limit.
    pub ttl: u32,
    /// Whether multicast is looped back to this host.
    pub multicast_loop: bool,
    /// The interface multicast leaves through, if not the default route's.
    pub ifname: Option<String>,
    /// Rate, channels and wire sample format.
    pub format: StreamFormat,
    /// Channel positions (`FL`, `FR`, ...), one per channel.
    pub positions: Vec<String>,
    /// UDP port of the time service; 0 picks a free port (announced in the status message).
    pub control_port: u16,
    /// Which clock the timeline is on (the clock domain, and the NTP server of `ntp`).
    pub clock: EngineClock,
    /// `stream.props` as given (SPA JSON object text), applied to the node first.
    pub stream_props: Option<String>,
    /// Properties for the node: the `node.*`, `media.*` arguments and the defaults.
    pub node_props: Vec<(String, String)>,
    /// `remote.name`: the daemon to connect to when running in a client process.
    pub remote_name: Option<String>,
    /// `wavesync.key.file`: the household key; `None` sends an open stream.
    pub key_file: Option<std::path::PathBuf>,
    /// `wavesync.key.encrypt`: with a key, encrypt the audio (default true).
    pub encrypt: bool,
}

/// Arguments copied to the node's properties unless `stream.props` already sets them.
const NODE_KEYS: &[&str] = &[
    "node.name",
    "node.description",
    "node.group",
    "node.latency",
    "node.virtual",
    "node.network",
    "media.name",
    "media.class",
    "priority.session",
];

impl ModuleConfig {
    /// Parses and checks the flattened module arguments.
    ///
    /// `hostname` fills the default session name. Unknown keys are ignored (as PipeWire's own
    /// modules do), except unknown `wavesync.*` keys, which are refused as likely typos.
    pub fn from_args(
        args: &BTreeMap<String, String>,
        hostname: &str,
    ) -> Result<ModuleConfig, ConfigError> {
        for key in args.keys() {
            if key.starts_with("wavesync.")
                && !matches!(
                    key.as_str(),
                    "wavesync.packet.msec"
                        | "wavesync.control.port"
                        | "wavesync.clock"
                        | "wavesync.clock.server"
                        | "wavesync.key.file"
                        | "wavesync.key.encrypt"
                )
            {
                return Err(ConfigError::invalid(
                    "wavesync.*",
                    key,
                    "unknown option (known: wavesync.packet.msec, wavesync.control.port, \
                     wavesync.clock, wavesync.clock.server, wavesync.key.file, \
                     wavesync.key.encrypt)",
                ));
            }
        }
        let get = |k: &str| args.get(k).map(|s| s.as_str());

        let destinations = parse_destinations(
            get("destination.ip"),
            get("destination.port"),
            get("destinations"),
        )?;

        let latency_msec = match get("sess.latency.msec") {
            Some(v) => parse_f64("sess.latency.msec", v, 0.0, 10_000.0)?,
            None => DEFAULT_LATENCY_MSEC as f64,
        };
        let latency_ns = (latency_msec * 1e6).round() as i64;

        let session_name = match get("sess.name") {
            Some(v) if v.len() > MAX_SESSION_NAME => {
                return Err(ConfigError::invalid(
                    "sess.name",
                    v,
                    format!("longer than {MAX_SESSION_NAME} bytes"),
                ))
            }
            Some(v) => v.to_string(),
            None => {
                let mut name = format!("WaveSync on {hostname}");
                truncate_utf8(&mut name, MAX_SESSION_NAME);
                name
            }
        };

        let sample = match get("audio.format") {
            None => SampleFormat::L16,
            Some(v) => match v.to_ascii_uppercase().as_str() {
                "L16" | "S16BE" | "S16_BE" => SampleFormat::L16,
                "L24" | "S24BE" | "S24_BE" => SampleFormat::L24,
                _ => {
                    return Err(ConfigError::invalid(
                        "audio.format",
                        v,
                        "expected L16 or L24 (the wire format)",
                    ))
                }
            },
        };
        let rate = match get("audio.rate") {
            Some(v) => parse_u32("audio.rate", v, 8_000, 384_000)?,
            None => 48_000,
        };
        let positions = match get("audio.position") {
            Some(v) => {
                let p = parse_string_array("audio.position", v)?;
                if p.is_empty() {
                    return Err(ConfigError::invalid(
                        "audio.position",
                        v,
                        "empty channel map",
                    ));
                }
                for name in &p {
                    if crate::channels::channel_id(name).is_none() {
                        return Err(ConfigError::invalid(
                            "audio.position",
                            v,
                            format!("unknown channel name {name:?} (FL, FR, FC, LFE, RL, RR, SL, SR, MONO, AUX0..AUX63, ...)"),
                        ));
                    }
                }
                Some(p)
            }
            None => None,
        };
        let channels = match (get("audio.channels"), &positions) {
            (Some(v), Some(p)) => {
                let c = parse_u32("audio.channels", v, 1, 64)?;
                if c as usize != p.len() {
                    return Err(ConfigError::Conflict(format!(
                        "audio.channels = {c} but audio.position lists {} channels",
                        p.len()
                    )));
                }
                c
            }
            (Some(v), None) => parse_u32("audio.channels", v, 1, 64)?,
            (None, Some(p)) => p.len() as u32,
            (None, None) => 2,
        };
        let positions =
            positions.unwrap_or_else(|| crate::channels::default_positions(channels as usize));
        let format = StreamFormat {
            rate,
            channels: channels as u8,
            sample,
        };

        let key_file = match get("wavesync.key.file") {
            Some("") => {
                return Err(ConfigError::invalid(
                    "wavesync.key.file",
                    "",
                    "expected the path of a key file (wavesync key new PATH)",
                ))
            }
            v => v.map(std::path::PathBuf::from),
        };
        let encrypt = match get("wavesync.key.encrypt") {
            Some(v) => parse_bool("wavesync.key.encrypt", v)?,
            None => true,
        };

        let mtu = match get("net.mtu") {
            Some(v) => parse_u32("net.mtu", v, 576, 65_535)?,
            None => DEFAULT_MTU,
        };
        let overhead = if destinations.iter().any(|d| d.is_ipv6()) {
            IPV6_UDP_OVERHEAD
        } else {
            IPV4_UDP_OVERHEAD
        };
        let max_payload = (mtu - overhead) as usize;
        let frame_bytes = format.bytes_per_frame();
        // With a key every datagram carries the protection trailer too.
        let trailer = if key_file.is_some() { OVERHEAD } else { 0 };
        let max_frames = (max_payload - HEADER_LEN - trailer) / frame_bytes;
        if max_frames == 0 {
            return Err(ConfigError::Conflict(format!(
                "net.mtu = {mtu} leaves no room for one frame of {channels} channels"
            )));
        }
        let frames_per_packet = match get("wavesync.packet.msec") {
            Some(v) => {
                let ms = parse_f64("wavesync.packet.msec", v, 0.1, 100.0)?;
                let frames = (ms * rate as f64 / 1000.0).round() as usize;
                if frames == 0 {
                    return Err(ConfigError::invalid(
                        "wavesync.packet.msec",
                        v,
                        "shorter than one frame",
                    ));
                }
                if frames > max_frames {
                    return Err(ConfigError::Conflict(format!(
                        "wavesync.packet.msec = {v} needs {frames} frames per packet, \
                         but net.mtu = {mtu} fits at most {max_frames}"
                    )));
                }
                frames
            }
            None => max_frames,
        };

        let ttl = match get("net.ttl") {
            Some(v) => parse_u32("net.ttl", v, 1, 255)?,
            None => DEFAULT_TTL,
        };
        let multicast_loop = match get("net.loop") {
            Some(v) => parse_bool("net.loop", v)?,
            None => DEFAULT_LOOP,
        };
        let ifname = match get("local.ifname") {
            Some(v) if v.is_empty() || v.len() >= 16 || v.contains(['/', ' ']) => {
                return Err(ConfigError::invalid(
                    "local.ifname",
                    v,
                    "not an interface name",
                ))
            }
            Some(v) => Some(v.to_string()),
            None => None,
        };
        let control_port = match get("wavesync.control.port") {
            Some(v) => parse_u32("wavesync.control.port", v, 0, 65_535)? as u16,
            None => defaults::CONTROL_PORT,
        };
        let server = get("wavesync.clock.server");
        let clock = match (get("wavesync.clock"), server) {
            (None | Some("master"), None) => EngineClock::Master,
            (Some("system"), None) => EngineClock::System,
            (Some("ntp"), Some(s)) => EngineClock::Ntp(
                wavesync_net::resolve::resolve(s, defaults::NTP_PORT)
                    .map_err(|e| ConfigError::invalid("wavesync.clock.server", s, e.to_string()))?,
            ),
            (Some("ntp"), None) => {
                return Err(ConfigError::invalid(
                    "wavesync.clock",
                    "ntp",
                    "needs the NTP server: wavesync.clock.server = <host[:port]>",
                ))
            }
            (v @ (Some("master" | "system") | None), Some(s)) => {
                return Err(ConfigError::invalid(
                    "wavesync.clock.server",
                    s,
                    format!(
                        "an NTP server only makes sense with wavesync.clock = ntp, not {}",
                        v.unwrap_or("master (the default)")
                    ),
                ))
            }
            (Some(v), _) => {
                return Err(ConfigError::invalid(
                    "wavesync.clock",
                    v,
                    "expected master, ntp or system",
                ))
            }
        };

        let mut node_props = vec![
            ("node.name".to_string(), DEFAULT_NODE_NAME.to_string()),
            (
                "node.description".to_string(),
                DEFAULT_NODE_DESCRIPTION.to_string(),
            ),
            ("media.class".to_string(), "Audio/Sink".to_string()),
            ("media.name".to_string(), session_name.clone()),
        ];
        for key in NODE_KEYS {
            if let Some(v) = get(key) {
                match node_props.iter_mut().find(|(k, _)| k == key) {
                    Some(slot) => slot.1 = v.to_string(),
                    None => node_props.push((key.to_string(), v.to_string())),
                }
            }
        }

        Ok(ModuleConfig {
            destinations,
            latency_ns,
            session_name,
            frames_per_packet: frames_per_packet as u16,
            max_payload,
            ttl,
            multicast_loop,
            ifname,
            format,
            positions,
            control_port,
            clock,
            stream_props: get("stream.props").map(str::to_string),
            node_props,
            remote_name: get("remote.name").map(str::to_string),
            key_file,
            encrypt,
        })
    }
}

fn parse_destinations(
    ip: Option<&str>,
    port: Option<&str>,
    list: Option<&str>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let port = match port {
        Some(v) => parse_port("destination.port", v)?,
        None => defaults::PORT,
    };
    let mut out = Vec::new();
    match (ip, list) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Conflict(
                "give either destination.ip or destinations, not both".to_string(),
            ))
        }
        (Some(ip), None) => {
            let addr: IpAddr = ip
                .trim_matches(|c| c == '[' || c == ']')
                .parse()
                .map_err(|_| {
                    ConfigError::invalid("destination.ip", ip, "not an IPv4 or IPv6 address")
                })?;
            out.push(SocketAddr::new(addr, port));
        }
        (None, Some(list)) => {
            for item in parse_string_array("destinations", list)? {
                let addr = if let Ok(sa) = item.parse::<SocketAddr>() {
                    sa
                } else if let Ok(ip) = item
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                {
                    SocketAddr::new(ip, port)
                } else {
                    return Err(ConfigError::invalid(
                        "destinations",
                        &item,
                        "expected ADDRESS:PORT, e.g. \"239.255.77.77:45300\" or \"[ff05::77]:45300\"",
                    ));
                };
                if addr.port() == 0 {
                    return Err(ConfigError::invalid("destinations", &item, "port 0"));
                }
                if !out.contains(&addr) {
                    out.push(addr);
                }
            }
            if out.is_empty() {
                return Err(ConfigError::invalid(
                    "destinations",
                    list,
                    "no destination listed",
                ));
            }
        }
        (None, None) => out.push(SocketAddr::new(IpAddr::V4(defaults::GROUP), port)),
    }
    for d in &out {
        if d.ip().is_unspecified() {
            return Err(ConfigError::invalid(
                "destinations",
                &d.to_string(),
                "the unspecified address cannot be a destination",
            ));
        }
    }
    Ok(out)
}

fn parse_port(key: &'static str, v: &str) -> Result<u16, ConfigError> {
    match v.trim().parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ConfigError::invalid(
            key,
            v,
            "expected a port number 1..65535",
        )),
    }
}

fn parse_u32(key: &'static str, v: &str, min: u32, max: u32) -> Result<u32, ConfigError> {
    match v.trim().parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::invalid(
            key,
            v,
            format!("expected an integer {min}..{max}"),
        )),
    }
}

fn parse_f64(key: &'static str, v: &str, min: f64, max: f64) -> Result<f64, ConfigError> {
    match v.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::invalid(
            key,
            v,
            format!("expected a number {min}..{max}"),
        )),
    }
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ConfigError::invalid(key, v, "expected true or false")),
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// The module's `module.usage` text, built from the defaults above so it cannot drift from
/// what [`ModuleConfig::from_args`] does.
pub fn usage() -> String {
    let fmt = StreamFormat::DEFAULT;
    format!(
        "( destination.ip=<address, default {group}> ) ( destination.port=<port, default {port}> ) \
         ( destinations=[ <address:port> ... ] ) \
         ( sess.latency.msec=<ms, default {latency}> ) ( sess.name=<name, default the host name> ) \
         ( net.mtu=<bytes, default {mtu}> ) ( wavesync.packet.msec=<ms> ) \
         ( net.ttl=<ttl, default {ttl}> ) ( net.loop=<bool, default {lp}> ) \
         ( local.ifname=<interface> ) ( audio.rate=<rate, default {rate}> ) \
         ( audio.channels=<channels, default {ch}> ) \
         ( audio.position=<channel map, default [ {pos} ]> ) ( audio.format=<L16|L24> ) \
         ( wavesync.control.port=<port, default {ctl}> ) ( wavesync.clock=<master|system|ntp, default master> ) \
         ( wavesync.clock.server=<NTP host[:port], with wavesync.clock=ntp> ) \
         ( stream.props={{ ... }} )",
        group = defaults::GROUP,
        port = defaults::PORT,
        latency = DEFAULT_LATENCY_MSEC,
        mtu = DEFAULT_MTU,
        ttl = DEFAULT_TTL,
        lp = DEFAULT_LOOP,
        rate = fmt.rate,
        ch = fmt.channels,
        pos = crate::channels::default_positions(usize::from(fmt.channels)).join(" "),
        ctl = defaults::CONTROL_PORT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<ModuleConfig, ConfigError> {
        ModuleConfig::from_args(&args(pairs), "host")
    }

    #[test]
    fn the_usage_text_states_the_defaults_the_parser_applies() {
        let u = usage();
        let c = parse(&[]).unwrap();
        assert!(
            u.contains(&format!("net.mtu=<bytes, default {DEFAULT_MTU}>")),
            "{u}"
        );
        assert!(
            u.contains(&format!("net.ttl=<ttl, default {}>", c.ttl)),
            "{u}"
        );
        assert!(
            u.contains(&format!("audio.rate=<rate, default {}>", c.format.rate)),
            "{u}"
        );
        assert!(
            u.contains("default 45300") && u.contains("default 45301"),
            "{u}"
        );
        assert!(u.contains("default [ FL FR ]"), "{u}");
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.destinations, vec!["239.255.77.77:45300".parse().unwrap()]);
        assert_eq!(c.latency_ns, 100_000_000);
        assert_eq!(c.session_name, "WaveSync on host");
        assert_eq!(c.format, StreamFormat::DEFAULT);
        assert_eq!(c.positions, vec!["FL", "FR"]);
        assert_eq!(c.max_payload, 1472);
        // (1472 - 28) / 4 bytes per stereo L16 frame.
        assert_eq!(c.frames_per_packet, 361);
        assert_eq!(c.control_port, 45301);
        assert_eq!(c.clock, EngineClock::Master);
        assert_eq!(c.ttl, 1);
        assert!(!c.multicast_loop);
        assert!(c
            .node_props
            .contains(&("node.name".into(), "wavesync".into())));
        assert!(c
            .node_props
            .contains(&("node.description".into(), "WaveSync".into())));
        assert!(c
            .node_props
            .contains(&("media.class".into(), "Audio/Sink".into())));
    }

    #[test]
    fn one_destination_and_a_list() {
        let c = parse(&[
            ("destination.ip", "127.0.0.1"),
            ("destination.port", "5000"),
        ])
        .unwrap();
        assert_eq!(c.destinations, vec!["127.0.0.1:5000".parse().unwrap()]);
        let c = parse(&[(
            "destinations",
            r#"[ "239.255.77.77:45300" "192.168.1.20:45300" "[ff05::77]:45300" ::1 ]"#,
        )])
        .unwrap();
        let want: Vec<SocketAddr> = [
            "239.255.77.77:45300",
            "192.168.1.20:45300",
            "[ff05::77]:45300",
            "[::1]:45300",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(c.destinations, want);
        // An IPv6 destination shrinks the payload by the larger header.
        assert_eq!(c.max_payload, 1452);
    }

    #[test]
    fn packet_duration_and_format() {
        let c = parse(&[
            ("wavesync.packet.msec", "5"),
            ("audio.format", "L24"),
            ("audio.rate", "44100"),
        ])
        .unwrap();
        assert_eq!(c.frames_per_packet, 221);
        assert_eq!(c.format.sample, SampleFormat::L24);
        let e = parse(&[("wavesync.packet.msec", "20")]).unwrap_err();
        assert!(matches!(e, ConfigError::Conflict(_)), "{e}");
    }

    #[test]
    fn positions_set_channels() {
        let c = parse(&[("audio.position", "[ FL FR FC LFE RL RR ]")]).unwrap();
        assert_eq!(c.format.channels, 6);
        let c = parse(&[("audio.channels", "1")]).unwrap();
        assert_eq!(c.positions, vec!["MONO"]);
        assert!(parse(&[("audio.channels", "3"), ("audio.position", "[ FL FR ]")]).is_err());
        assert!(parse(&[("audio.position", "[ FL XX ]")]).is_err());
    }

    #[test]
    fn node_arguments_override_defaults() {
        let c = parse(&[
            ("node.description", "Living room"),
            ("node.latency", "256/48000"),
        ])
        .unwrap();
        assert!(c
            .node_props
            .contains(&("node.description".into(), "Living room".into())));
        assert!(c
            .node_props
            .contains(&("node.latency".into(), "256/48000".into())));
        assert!(c
            .node_props
            .contains(&("node.name".into(), "wavesync".into())));
    }

    #[test]
    fn the_clock_domain_and_its_ntp_server() {
        assert_eq!(
            parse(&[("wavesync.clock", "system")]).unwrap().clock,
            EngineClock::System
        );
        let c = parse(&[
            ("wavesync.clock", "ntp"),
            ("wavesync.clock.server", "127.0.0.1:11123"),
        ])
        .unwrap();
        assert_eq!(
            c.clock,
            EngineClock::Ntp("127.0.0.1:11123".parse().unwrap())
        );
        let c = parse(&[
            ("wavesync.clock", "ntp"),
            ("wavesync.clock.server", "192.0.2.1"),
        ])
        .unwrap();
        assert_eq!(c.clock, EngineClock::Ntp("192.0.2.1:123".parse().unwrap()));
        assert_eq!(
            crate::sender::engine_config(&c).clock,
            c.clock,
            "handed to the engine"
        );
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("destination.port", "99999")], "destination.port"),
            (&[("destination.ip", "not-an-ip")], "destination.ip"),
            (&[("destinations", "[ 1.2.3.4:x ]")], "destinations"),
            (&[("destinations", "[ 0.0.0.0:45300 ]")], "destinations"),
            (&[("destinations", "[ ]")], "destinations"),
            (&[("sess.latency.msec", "-1")], "sess.latency.msec"),
            (&[("audio.format", "F32")], "audio.format"),
            (&[("audio.rate", "0")], "audio.rate"),
            (&[("net.ttl", "0")], "net.ttl"),
            (&[("net.loop", "maybe")], "net.loop"),
            (&[("wavesync.clock", "gps")], "wavesync.clock"),
            (&[("wavesync.clock", "ntp")], "wavesync.clock.server"),
            (
                &[("wavesync.clock.server", "127.0.0.1")],
                "only makes sense with wavesync.clock = ntp",
            ),
            (
                &[
                    ("wavesync.clock", "ntp"),
                    ("wavesync.clock.server", "not a host"),
                ],
                "wavesync.clock.server",
            ),
            (&[("wavesync.control.prot", "1")], "wavesync"),
            (&[("sess.name", &"x".repeat(65))], "sess.name"),
            (
                &[
                    ("destination.ip", "127.0.0.1"),
                    ("destinations", "[ 127.0.0.1:1 ]"),
                ],
                "destination.ip",
            ),
        ];
        for (pairs, key) in cases {
            let e = parse(pairs).unwrap_err();
            let line = e.to_string();
            assert!(line.contains(key), "{line} should name {key}");
            assert!(!line.contains('\n'), "one line: {line}");
        }
    }

    #[test]
    fn a_key_file_leaves_room_for_the_protection_trailer() {
        let open = parse(&[]).unwrap();
        assert_eq!(
            (open.key_file.as_ref(), open.frames_per_packet),
            (None, 361)
        );
        let c = parse(&[("wavesync.key.file", "/etc/wavesync/key")]).unwrap();
        assert_eq!(
            c.key_file.as_deref(),
            Some(std::path::Path::new("/etc/wavesync/key"))
        );
        assert!(c.encrypt);
        assert_eq!(c.frames_per_packet, 352); // (1472 - 28 - 36) / 4
        let c = parse(&[
            ("wavesync.key.file", "k"),
            ("wavesync.key.encrypt", "false"),
        ])
        .unwrap();
        assert!(!c.encrypt);
        assert!(parse(&[("wavesync.key.file", "")]).is_err());
    }
}
