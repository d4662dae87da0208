//! A PipeWire graph driver whose clock runs off CLOCK_MONOTONIC, playing a sine: the test
//! bed's stand-in for a sound card whose crystal is a few hundred ppm fast or slow.
//!
//! `tests/drift.rs` runs it in a process of its own: the test binary started again with
//! `WAVESYNC_SKEWED_DRIVER="--ppm 100 --seconds 30 [--hz 250] [--amp 0.5] [--target
//! wavesync]"` runs only this (see `drift.rs`).
//!
//! A `pw_stream` (output, stereo F32) with the DRIVER flag and `priority.driver = 50000`, so
//! that it drives the graph of whatever it is linked to (`target.object`). Every cycle a timer
//! on the main loop writes the cycle into the graph's position (as a sound card's driver does:
//! `clock.nsec` on CLOCK_MONOTONIC, `clock.position` in its own frames) and triggers the
//! graph; cycle k starts at `t0 + k · quantum / (48000 · (1 + ppm·1e-6))`, so the graph runs
//! exactly `ppm` fast. Frame `n` of the driver carries `amp · sin(2π · hz · n / 48000)` on
//! both channels and is captured at `t0 + n / (48000 · (1 + ppm·1e-6))`.
//!
//! Prints `t0 <ns>` (CLOCK_MONOTONIC of frame 0) once it drives, and `cycles <n>` and
//! `missed <n>` (cycles it could not fill: no free buffer) at the end.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use pipewire as pw;
use pw::properties::properties;
use pw::spa;
use spa::pod::Pod;

const RATE: f64 = 48_000.0;
const QUANTUM: u64 = 1024;

fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

struct Args {
    ppm: f64,
    seconds: f64,
    hz: f64,
    amp: f64,
    target: String,
}

fn args(text: &str) -> Result<Args, String> {
    let mut a = Args {
        ppm: 0.0,
        seconds: 10.0,
        hz: 250.0,
        amp: 0.5,
        target: "wavesync".into(),
    };
    let mut it = text.split_whitespace().map(str::to_string);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = || {
            v.parse::<f64>()
                .map_err(|_| format!("{k}: not a number: {v}"))
        };
        match k.as_str() {
            "--ppm" => a.ppm = num()?,
            "--seconds" => a.seconds = num()?,
            "--hz" => a.hz = num()?,
            "--amp" => a.amp = num()?,
            "--target" => a.target = v,
            _ => return Err(format!("unknown option {k}")),
        }
    }
    Ok(a)
}

/// Whether the graph cycle we triggered last has completed (`trigger_done`), on a raw
/// listener: the crate's builder has no `trigger_done`.
struct Done {
    busy: Cell<bool>,
    hook: pw::spa::sys::spa_hook,
}

static DONE_EVENTS: pw::sys::pw_stream_events = pw::sys::pw_stream_events {
    version: pw::sys::PW_VERSION_STREAM_EVENTS,
    destroy: None,
    state_changed: None,
    control_info: None,
    io_changed: None,
    param_changed: None,
    add_buffer: None,
    remove_buffer: None,
    process: None,
    drained: None,
    command: None,
    trigger_done: Some(on_trigger_done),
};

unsafe extern "C" fn on_trigger_done(data: *mut std::ffi::c_void) {
    // SAFETY: `data` is the boxed Done registered below; it outlives the stream.
    let done = unsafe { &*data.cast::<Done>() };
    done.busy.set(false);
}

struct State {
    position: Cell<*mut spa::sys::spa_io_position>,
    /// Driver frames handed out so far.
    frames: Cell<u64>,
    /// CLOCK_MONOTONIC of frame 0, once driving.
    t0: Cell<Option<i64>>,
    cycles: Cell<u64>,
    /// Frames the last process call wrote (0: it had no buffer).
    filled: Cell<usize>,
    /// Cycles whose process call had no buffer (the previous cycle still held it).
    missed: Cell<u64>,
    /// Wake-ups at which a cycle was due but the graph was still busy with the last one.
    late: Cell<u64>,
}

/// Runs the driver with the options in `text`; exits the process at the end.
pub fn main(text: &str) -> ! {
    let a = match args(text) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("skewed_driver: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(a) {
        eprintln!("skewed_driver: {e}");
        std::process::exit(1);
    }
    std::process::exit(0)
}

fn run(a: Args) -> Result<(), pw::Error> {
    pw::init();
    let mainloop = pw::main_loop::MainLoopRc::new(None)?;
    let context = pw::context::ContextRc::new(&mainloop, None)?;
    let core = context.connect_rc(None)?;
    let stream = pw::stream::StreamRc::new(
        core,
        "skewed-driver",
        properties! {
            *pw::keys::MEDIA_TYPE => "Audio",
            *pw::keys::MEDIA_CATEGORY => "Playback",
            *pw::keys::MEDIA_ROLE => "Music",
            *pw::keys::NODE_NAME => "skewed-driver",
            *pw::keys::NODE_LATENCY => "1024/48000",
            "node.force-quantum" => "1024",
            "priority.driver" => "50000",
            "target.object" => a.target.as_str(),
        },
    )?;
    let st = Rc::new(State {
        position: Cell::new(std::ptr::null_mut()),
        frames: Cell::new(0),
        t0: Cell::new(None),
        cycles: Cell::new(0),
        filled: Cell::new(0),
        missed: Cell::new(0),
        late: Cell::new(0),
    });
    let (hz, amp) = (a.hz, a.amp);
    let st_io = st.clone();
    let st_proc = st.clone();
    let _listener = stream
        .add_local_listener_with_user_data(())
        .io_changed(move |_s, _, id, area, size| {
            if id == spa::sys::SPA_IO_Position
                && size as usize >= std::mem::size_of::<spa::sys::spa_io_position>()
            {
                st_io.position.set(area.cast());
            }
        })
        .process(move |stream, _| {
            st_proc.filled.set(0);
            let Some(mut buffer) = stream.dequeue_buffer() else {
                return;
            };
            let datas = buffer.datas_mut();
            let data = &mut datas[0];
            let stride = 8;
            let first = st_proc.frames.get();
            let n = if let Some(slice) = data.data() {
                let n = (slice.len() / stride).min(QUANTUM as usize);
                for i in 0..n {
                    let k = (first + i as u64) as f64;
                    let v = (amp * (2.0 * std::f64::consts::PI * hz * k / RATE).sin()) as f32;
                    let b = v.to_le_bytes();
                    slice[i * 8..i * 8 + 4].copy_from_slice(&b);
                    slice[i * 8 + 4..i * 8 + 8].copy_from_slice(&b);
                }
                n
            } else {
                0
            };
            st_proc.filled.set(n);
            let chunk = data.chunk_mut();
            *chunk.offset_mut() = 0;
            *chunk.stride_mut() = stride as _;
            *chunk.size_mut() = (stride * n) as _;
        })
        .register()?;

    // SAFETY: an all-zero spa_hook is its unlinked state.
    let mut done = Box::new(Done {
        busy: Cell::new(false),
        hook: unsafe { std::mem::zeroed() },
    });
    let done_ptr: *mut Done = &mut *done;
    // SAFETY: the stream is live; the hook and data live in the Box until after the loop.
    unsafe {
        pw::sys::pw_stream_add_listener(
            stream.as_raw_ptr(),
            std::ptr::addr_of_mut!((*done_ptr).hook),
            &DONE_EVENTS,
            done_ptr.cast(),
        );
    }
    let done_t: *const Done = done_ptr;

    let mut info = spa::param::audio::AudioInfoRaw::new();
    info.set_format(spa::param::audio::AudioFormat::F32LE);
    info.set_rate(RATE as u32);
    info.set_channels(2);
    let mut pos = [0; spa::param::audio::MAX_CHANNELS];
    pos[0] = spa::sys::SPA_AUDIO_CHANNEL_FL;
    pos[1] = spa::sys::SPA_AUDIO_CHANNEL_FR;
    info.set_position(pos);
    let bytes: Vec<u8> = spa::pod::serialize::PodSerializer::serialize(
        std::io::Cursor::new(Vec::new()),
        &spa::pod::Value::Object(spa::pod::Object {
            type_: spa::sys::SPA_TYPE_OBJECT_Format,
            id: spa::sys::SPA_PARAM_EnumFormat,
            properties: info.into(),
        }),
    )
    .map_err(|_| pw::Error::CreationFailed)?
    .0
    .into_inner();
    let mut params = [Pod::from_bytes(&bytes).ok_or(pw::Error::CreationFailed)?];
    stream.connect(
        spa::utils::Direction::Output,
        None,
        pw::stream::StreamFlags::AUTOCONNECT
            | pw::stream::StreamFlags::MAP_BUFFERS
            | pw::stream::StreamFlags::DRIVER,
        &mut params,
    )?;

    let ns_per_frame = 1e9 / (RATE * (1.0 + a.ppm * 1e-6));
    let end = monotonic_ns() + (a.seconds * 1e9) as i64;
    let ml = mainloop.clone();
    let st_t = st.clone();
    let stream_t = stream.clone();
    let due = Cell::new(0i64);
    let timer = mainloop.loop_().add_timer(move |_| {
        let now = monotonic_ns();
        if now >= end {
            println!("cycles {}", st_t.cycles.get());
            println!("missed {}", st_t.missed.get());
            println!("late {}", st_t.late.get());
            ml.quit();
            return;
        }
        if now < due.get() {
            return;
        }
        // SAFETY: `done` lives until after the loop has run.
        let busy = unsafe { &(*done_t).busy };
        if busy.get() {
            // The graph has not finished the last cycle (a slow, contended test machine):
            // wait for it rather than lose a cycle. The clock stamps stay those of the
            // frames, so this delays the audio, it does not bend the clock.
            st_t.late.set(st_t.late.get() + 1);
            return;
        }
        let p = st_t.position.get();
        if stream_t.is_driving() && !p.is_null() {
            let t0 = match st_t.t0.get() {
                Some(t) => t,
                None => {
                    st_t.t0.set(Some(now));
                    println!("t0 {now}");
                    now
                }
            };
            let frames = st_t.frames.get();
            let nsec = t0 + (frames as f64 * ns_per_frame).round() as i64;
            let next_nsec = t0 + ((frames + QUANTUM) as f64 * ns_per_frame).round() as i64;
            // SAFETY: the graph's position area, given to us in io_changed; the graph is idle
            // between our cycles (we trigger each one).
            unsafe {
                let c = &mut (*p).clock;
                c.nsec = nsec as u64;
                c.rate = spa::sys::spa_fraction {
                    num: 1,
                    denom: RATE as u32,
                };
                c.position = frames;
                c.duration = QUANTUM;
                c.delay = 0;
                c.rate_diff = 1.0;
                c.next_nsec = next_nsec as u64;
            }
            busy.set(true);
            let _ = stream_t.trigger_process();
            if st_t.filled.get() == 0 {
                // No buffer free: nothing was handed out, so the clock does not advance
                // either (the next cycle carries these frames at this time).
                st_t.missed.set(st_t.missed.get() + 1);
                due.set(now + 1_000_000);
                return;
            }
            st_t.frames.set(frames + st_t.filled.get() as u64);
            st_t.cycles.set(st_t.cycles.get() + 1);
            due.set(next_nsec);
        } else {
            let _ = stream_t.trigger_process();
            due.set(now + 20_000_000);
        }
    });
    // Woken every 250 µs; a cycle starts at the first wake-up at or after its time (its
    // `clock.nsec` is the exact time, whatever the wake-up's lateness).
    timer.update_timer(
        Some(Duration::from_millis(10)),
        Some(Duration::from_micros(250)),
    );
    mainloop.run();
    drop(timer);
    drop(stream);
    drop(done);
    Ok(())
}
