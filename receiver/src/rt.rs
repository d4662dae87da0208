//! Real-time scheduling for the receiver's threads, where the system grants it (root,
//! `LimitRTPRIO`/`AmbientCapabilities` in the systemd unit, or rtkit-like limits).

/// SCHED_FIFO priority of the output thread.
pub const OUTPUT_PRIORITY: i32 = 20;
/// SCHED_FIFO priority of the network thread (below the output thread).
pub const NETWORK_PRIORITY: i32 = 10;

/// Switches the calling thread to SCHED_FIFO at `priority`; the error says why not.
pub fn make_realtime(priority: i32) -> Result<(), std::io::Error> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pthread_self() is always valid for the calling thread; `param` outlives the call.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}
