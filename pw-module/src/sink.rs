//! The `Audio/Sink` node: a `pw_stream` (input direction) whose real-time process callback
//! hands each block of interleaved `f32` audio, with its capture time, to the sender.
//!
//! Inside the daemon the stream is wrapped by the adapter, whose audioconvert converts from
//! the graph's format and applies the node's volume and mute (`channelVolumes`, `mute`) before
//! the block reaches [`Sink`]'s process callback: what is sent is what a loudspeaker on any
//! other sink would have played.
//!
//! The graph's driver is whichever PipeWire picks (a busy sound card on a desktop), and its
//! clock need not be CLOCK_MONOTONIC. Every cycle the process callback hands the block, with
//! the cycle's time from the graph's position area, to a [`Retimer`]
//! (`wavesync_common::follow`): a rate-match loop comparing the frame count with
//! CLOCK_MONOTONIC, and the windowed-sinc resampler it steers. Once the two part, the
//! frames leave it at exactly the nominal rate on CLOCK_MONOTONIC, so the stamps (which
//! count frames) stay on the capture times. A driver on CLOCK_MONOTONIC never engages it:
//! the audio passes bit for bit. (Why not the adapter's own resampler through
//! `SPA_IO_RateMatch`, as module-pulse-tunnel does: `docs/module.md`, "The graph clock".)

use std::ffi::{c_void, CStr, CString};
use std::io;
use std::ptr;

use pipewire::spa;
use pipewire::spa::pod::serialize::PodSerializer;
use pipewire::spa::pod::{Object, Pod, Value};
use pipewire::spa::sys as spa_sys;
use pipewire::sys as pw_sys;

use wavesync_common::follow::{FollowConfig, Retimer};
use wavesync_common::resample::Quality;
use wavesync_common::time::LocalNs;

use crate::channels::channel_id;
use crate::config::ModuleConfig;
use crate::pw::hook;
use crate::pw::log;
use crate::pw::props::Props;

/// Where the process callback hands each block: the sender engine's real-time input.
pub trait BlockInput: Send + 'static {
    /// Takes `samples` (interleaved, whole frames) whose first frame was captured at
    /// `capture_time` (CLOCK_MONOTONIC; the engine maps it to its clock domain's timeline).
    /// Must not block, allocate or do I/O. Returns false if the block was dropped (the
    /// sender is behind).
    fn push(&mut self, capture_time: LocalNs, samples: &[f32]) -> bool;
}

/// What the process callback owns. Lives in a `Box` at a fixed address: PipeWire holds a
/// pointer to it for the stream's lifetime.
struct RtState {
    stream: *mut pw_sys::pw_stream,
    listener: spa_sys::spa_hook,
    channels: usize,
    rate: u32,
    input: Box<dyn BlockInput>,
    /// The graph's position area (from `io_changed`), or null: its clock gives the cycle time.
    position: *mut spa_sys::spa_io_position,
    retimer: Retimer,
    /// Output of the retimer for one chunk of [`CHUNK_FRAMES`] input frames.
    retimed: Vec<f32>,
}

/// The process callback retimes a block in chunks of at most this many frames.
const CHUNK_FRAMES: usize = 1024;

/// The sink node. Dropping it destroys the stream (if PipeWire has not already done so).
pub struct Sink {
    rt: Box<RtState>,
}

impl Sink {
    /// Creates the stream on `core` with the node properties of `config` and connects it.
    ///
    /// # Safety
    /// `core` must be a live `pw_core`, and this must run on the PipeWire main loop.
    pub unsafe fn new(
        core: *mut pw_sys::pw_core,
        config: &ModuleConfig,
        input: Box<dyn BlockInput>,
    ) -> io::Result<Self> {
        let props = stream_props(config)?;
        let format = format_pod(config)?;

        let mut rt = Box::new(RtState {
            stream: ptr::null_mut(),
            listener: hook::new_hook(),
            channels: config.format.channels as usize,
            rate: config.format.rate,
            input,
            position: ptr::null_mut(),
            retimer: Retimer::new(
                config.format.rate,
                config.format.channels as usize,
                FollowConfig::GRAPH,
                Quality::Sinc32,
            ),
            retimed: Vec::new(),
        });
        let chunk_out = rt.retimer.max_output_frames(CHUNK_FRAMES);
        rt.retimed = vec![0.0; chunk_out * rt.channels.max(1)];
        let name = CString::new("wavesync-sink").unwrap_or_default();
        // SAFETY: `core` is live (caller); pw_stream_new takes ownership of `props`.
        let stream = unsafe { pw_sys::pw_stream_new(core, name.as_ptr(), props.into_raw()) };
        if stream.is_null() {
            return Err(io::Error::last_os_error());
        }
        rt.stream = stream;
        let data: *mut RtState = &mut *rt;
        // SAFETY: the hook and `data` live in the Box, which outlives the stream (Drop destroys
        // the stream first); the events table is 'static.
        unsafe {
            pw_sys::pw_stream_add_listener(
                stream,
                ptr::addr_of_mut!((*data).listener),
                &EVENTS,
                data.cast(),
            );
        }
        let sink = Sink { rt };

        let mut params = [format.as_ptr().cast::<spa_sys::spa_pod>()];
        let flags = pw_sys::pw_stream_flags_PW_STREAM_FLAG_AUTOCONNECT
            | pw_sys::pw_stream_flags_PW_STREAM_FLAG_MAP_BUFFERS
            | pw_sys::pw_stream_flags_PW_STREAM_FLAG_RT_PROCESS;
        // SAFETY: `stream` is live; `params` points to one valid pod that PipeWire copies.
        let rc = unsafe {
            pw_sys::pw_stream_connect(
                stream,
                spa_sys::SPA_DIRECTION_INPUT,
                pw_sys::PW_ID_ANY,
                flags,
                params.as_mut_ptr(),
                params.len() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::from_raw_os_error(-rc));
        }
        Ok(sink)
    }

    /// Forgets the stream without destroying it: PipeWire already did (core disconnected).
    pub fn forget_stream(&mut self) {
        if !self.rt.stream.is_null() {
            // SAFETY: the hook is linked into the live stream's listener list, or zeroed.
            unsafe { hook::remove(&mut self.rt.listener) };
        }
        self.rt.stream = ptr::null_mut();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let stream = self.rt.stream;
        if !stream.is_null() {
            // SAFETY: the stream is live (its destroy event clears the pointer). Destroying it
            // stops the data thread's process calls before it returns, and emits `destroy`,
            // which removes our hook.
            unsafe { pw_sys::pw_stream_destroy(stream) };
        }
    }
}

static EVENTS: pw_sys::pw_stream_events = pw_sys::pw_stream_events {
    version: pw_sys::PW_VERSION_STREAM_EVENTS,
    destroy: Some(on_destroy),
    state_changed: Some(on_state_changed),
    control_info: None,
    io_changed: Some(on_io_changed),
    param_changed: None,
    add_buffer: None,
    remove_buffer: None,
    process: Some(on_process),
    drained: None,
    command: None,
    trigger_done: None,
};

unsafe extern "C" fn on_destroy(data: *mut c_void) {
    // SAFETY: `data` is the RtState registered with this listener, alive while it is linked.
    let rt = unsafe { &mut *data.cast::<RtState>() };
    // SAFETY: the hook is linked into the stream being destroyed.
    unsafe { hook::remove(&mut rt.listener) };
    rt.stream = ptr::null_mut();
}

unsafe extern "C" fn on_io_changed(data: *mut c_void, id: u32, area: *mut c_void, size: u32) {
    // SAFETY: `data` is the RtState registered with this listener. PipeWire sets the io areas
    // while the node is not processing, as module-pulse-tunnel relies on too.
    let rt = unsafe { &mut *data.cast::<RtState>() };
    if id == spa_sys::SPA_IO_Position {
        rt.position = if !area.is_null()
            && size as usize >= std::mem::size_of::<spa_sys::spa_io_position>()
        {
            area.cast()
        } else {
            ptr::null_mut()
        };
    }
}

unsafe extern "C" fn on_state_changed(
    _data: *mut c_void,
    old: pw_sys::pw_stream_state,
    state: pw_sys::pw_stream_state,
    error: *const std::ffi::c_char,
) {
    let name = |s| match s {
        pw_sys::pw_stream_state_PW_STREAM_STATE_ERROR => "error",
        pw_sys::pw_stream_state_PW_STREAM_STATE_UNCONNECTED => "unconnected",
        pw_sys::pw_stream_state_PW_STREAM_STATE_CONNECTING => "connecting",
        pw_sys::pw_stream_state_PW_STREAM_STATE_PAUSED => "paused",
        pw_sys::pw_stream_state_PW_STREAM_STATE_STREAMING => "streaming",
        _ => "unknown",
    };
    if state == pw_sys::pw_stream_state_PW_STREAM_STATE_ERROR {
        let msg = if error.is_null() {
            String::from("(no message)")
        } else {
            // SAFETY: PipeWire passes a NUL-terminated message valid during the callback.
            unsafe { CStr::from_ptr(error) }
                .to_string_lossy()
                .into_owned()
        };
        log::error(&format!("sink stream error: {msg}"));
    } else {
        log::info(&format!("sink stream {} -> {}", name(old), name(state)));
    }
}

/// The real-time process callback: dequeue, stamp, hand over, queue. No allocation, no
/// locks, no system calls except the vDSO clock reads of [`TimelineMap`].
unsafe extern "C" fn on_process(data: *mut c_void) {
    // SAFETY: `data` is the RtState registered with this listener; only this callback touches
    // `input` while the stream exists, and the stream is destroyed before the state is freed.
    let rt = unsafe { &mut *data.cast::<RtState>() };
    let stream = rt.stream;
    if stream.is_null() {
        return;
    }
    // SAFETY: `stream` is live; the buffer (if any) is ours until queued back.
    let buf = unsafe { pw_sys::pw_stream_dequeue_buffer(stream) };
    if buf.is_null() {
        return;
    }
    // SAFETY: a dequeued pw_buffer points to a valid spa_buffer whose `datas` has `n_datas`
    // entries; with MAP_BUFFERS `data` is mapped memory of `maxsize` bytes, and the chunk
    // describes the valid region inside it (clamped below). The format is interleaved F32,
    // so the region holds f32 samples; we check alignment before viewing it as &[f32].
    unsafe {
        let sbuf = (*buf).buffer;
        if !sbuf.is_null() && (*sbuf).n_datas > 0 {
            let d = &*(*sbuf).datas;
            if !d.data.is_null() && !d.chunk.is_null() {
                let chunk = &*d.chunk;
                let offset = chunk.offset.min(d.maxsize);
                let size = chunk.size.min(d.maxsize - offset) as usize;
                let ptr = d.data.cast::<u8>().add(offset as usize);
                let frame_bytes = 4 * rt.channels.max(1);
                let n = size / frame_bytes * rt.channels;
                if n > 0 && ptr.align_offset(std::mem::align_of::<f32>()) == 0 {
                    let samples = std::slice::from_raw_parts(ptr.cast::<f32>(), n);
                    let mut t: pw_sys::pw_time = std::mem::zeroed();
                    let rc =
                        pw_sys::pw_stream_get_time_n(stream, &mut t, std::mem::size_of_val(&t));
                    if rc == 0 && t.now > 0 {
                        let cycle = LocalNs::from_ns(if rt.position.is_null() {
                            t.now
                        } else {
                            (*rt.position).clock.nsec as i64
                        });
                        retime_and_push(rt, cycle, samples);
                    }
                }
            }
        }
        pw_sys::pw_stream_queue_buffer(stream, buf);
    }
}

/// Retimes a block whose first frame was captured at `cycle` (CLOCK_MONOTONIC ns) and hands
/// the result to the sender, in chunks. No allocation, no locks.
fn retime_and_push(rt: &mut RtState, cycle: LocalNs, samples: &[f32]) {
    let ch = rt.channels.max(1);
    let ns_per_frame = 1e9 / rt.rate as f64;
    let mut done = 0;
    while done * ch < samples.len() {
        let end = ((done + CHUNK_FRAMES) * ch).min(samples.len());
        let capture = cycle + (done as f64 * ns_per_frame).round() as i64;
        let r = rt
            .retimer
            .process(capture, &samples[done * ch..end], &mut rt.retimed);
        if r.frames > 0 {
            rt.input.push(r.capture, &rt.retimed[..r.frames * ch]);
        }
        if r.consumed == 0 {
            break;
        }
        done += r.consumed;
    }
}

/// The node's properties: `stream.props` first, then the module's node arguments and
/// defaults where `stream.props` left them unset.
fn stream_props(config: &ModuleConfig) -> io::Result<Props> {
    let mut props = Props::new()?;
    if let Some(text) = &config.stream_props {
        props.update_from_string(text);
    }
    for (k, v) in &config.node_props {
        props.set_default(k, v);
    }
    props.set_default("node.rate", &format!("1/{}", config.format.rate));
    props.set_default("audio.rate", &config.format.rate.to_string());
    props.set_default("audio.channels", &config.format.channels.to_string());
    props.set_default(
        "audio.position",
        &format!("[ {} ]", config.positions.join(" ")),
    );
    // Inside the daemon the stream's node is an adapter; without this it gets no ports
    // until a session manager configures them.
    props.set_default(
        "adapter.auto-port-config",
        "{ mode = dsp monitor = false position = preserve }",
    );
    props.set_default("wavesync.session", &config.session_name);
    let dests: Vec<String> = config.destinations.iter().map(|d| d.to_string()).collect();
    props.set_default("wavesync.destinations", &dests.join(" "));
    props.set_default(
        "wavesync.latency.msec",
        &format!("{}", config.latency_ns as f64 / 1e6),
    );
    Ok(props)
}

/// The EnumFormat param: interleaved native-endian F32 at the configured rate and channels.
fn format_pod(config: &ModuleConfig) -> io::Result<Vec<u64>> {
    let mut info = spa::param::audio::AudioInfoRaw::new();
    info.set_format(spa::param::audio::AudioFormat::F32LE);
    info.set_rate(config.format.rate);
    info.set_channels(config.format.channels as u32);
    let mut position = [0u32; spa_sys::SPA_AUDIO_MAX_CHANNELS as usize];
    for (slot, name) in position.iter_mut().zip(&config.positions) {
        *slot = channel_id(name).unwrap_or(spa_sys::SPA_AUDIO_CHANNEL_UNKNOWN);
    }
    info.set_position(position);
    let obj = Object {
        type_: spa_sys::SPA_TYPE_OBJECT_Format,
        id: spa_sys::SPA_PARAM_EnumFormat,
        properties: info.into(),
    };
    let (cursor, _) = PodSerializer::serialize(io::Cursor::new(Vec::new()), &Value::Object(obj))
        .map_err(|e| io::Error::other(format!("format pod: {e:?}")))?;
    let bytes = cursor.into_inner();
    if Pod::from_bytes(&bytes).is_none() {
        return Err(io::Error::other("format pod does not parse"));
    }
    // Copy into u64 words so the pod is 8-byte aligned, as SPA requires.
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: `words` has at least `bytes.len()` bytes of storage; the regions don't overlap.
    unsafe {
        ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast::<u8>(), bytes.len());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn format_pod_is_a_valid_enum_format() {
        let config = ModuleConfig::from_args(&BTreeMap::new(), "h").unwrap();
        let words = format_pod(&config).unwrap();
        // SAFETY: reinterpreting our own u64 buffer as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) };
        let pod = Pod::from_bytes(bytes).unwrap();
        let mut info = spa::param::audio::AudioInfoRaw::new();
        info.parse(pod).unwrap();
        assert_eq!(info.rate(), 48_000);
        assert_eq!(info.channels(), 2);
        assert_eq!(info.format(), spa::param::audio::AudioFormat::F32LE);
        assert_eq!(info.position()[0], spa_sys::SPA_AUDIO_CHANNEL_FL);
        assert_eq!(info.position()[1], spa_sys::SPA_AUDIO_CHANNEL_FR);
    }
}
