//! The output device's measured delay, from the output thread to the network thread: one
//! atomic, no lock. The network thread needs it to know how far ahead of the DAC a resent
//! packet must arrive (see `Receiver::set_output_lead`); the status shows it too.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// The device delay in ns, written by the output thread each cycle and read by the network
/// thread. Clones share the value. 0 until a device was measured.
#[derive(Clone, Debug, Default)]
pub struct DeviceDelay(Arc<AtomicI64>);

impl DeviceDelay {
    /// Stores the latest measured delay, ns (from the output thread).
    pub fn set_ns(&self, ns: i64) {
        self.0.store(ns, Ordering::Relaxed);
    }

    /// The latest measured delay, ns.
    pub fn ns(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_value() {
        let out = DeviceDelay::default();
        let net = out.clone();
        assert_eq!(net.ns(), 0);
        out.set_ns(12_345_678);
        assert_eq!(net.ns(), 12_345_678);
    }
}
