//! The household key on the receiver: loads it, protects the network thread's sockets with it
//! (they then drop and count every datagram that is not authentic: it is never played and never
//! moves the clock), and shows what was refused in the status.

use std::path::Path;
use std::sync::Arc;

use log::info;
use wavesync_net::protection::{read_keys, KEY_FILE_CHECK};
use wavesync_net::{KeyFileError, Protection};

use crate::status::StatusReport;

/// The protection for the configured key file, or `None` (an open stream, said once).
pub fn load(key_file: Option<&Path>) -> Result<Option<Arc<Protection>>, KeyFileError> {
    let Some(path) = key_file else {
        info!(
            "no key: the stream is open (any host on the network can play here and move this \
             receiver's clock); see docs/security.md"
        );
        return Ok(None);
    };
    let p = Arc::new(Protection::with_keys(read_keys(path)?, true)?);
    info!(
        "key {:08x} from {}: only authenticated datagrams are used",
        p.key_id(),
        path.display()
    );
    // A changed key file is a rotation, applied without a restart.
    if let Err(e) = p.watch(path.to_path_buf(), KEY_FILE_CHECK) {
        log::warn!("cannot watch the key file for rotations: {e}");
    }
    Ok(Some(p))
}

/// Copies the protection's counters and the first mismatch into the status.
pub fn publish(protection: Option<&Protection>, s: &mut StatusReport) {
    let Some(p) = protection else {
        s.keyed = false;
        return;
    };
    let st = p.status();
    s.keyed = true;
    s.key_id = Some(format!("{:08x}", p.key_id()));
    s.unauthenticated = st.stats.refused();
    s.unprotected = st.stats.unprotected;
    s.wrong_key = st.stats.unknown_key;
    s.forged = st.stats.forged;
    s.replayed = st.stats.replayed;
    s.key_problem = st.mismatch;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_key_nothing_is_protected() {
        assert!(load(None).unwrap().is_none());
        let mut s = StatusReport::default();
        publish(None, &mut s);
        assert!(!s.keyed);
    }

    #[test]
    fn a_key_file_protects_and_its_counters_reach_the_status() {
        let path = std::env::temp_dir().join(format!("wavesync-rx-key-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let id = wavesync_net::protection::write_new_key(&path, false).unwrap();
        let p = load(Some(&path)).unwrap().unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut plain = *b"an unprotected datagram";
        assert!(p
            .open(
                wavesync_common::time::LocalNs::from_ns(0),
                "192.0.2.7:45300".parse().unwrap(),
                &mut plain
            )
            .is_err());
        let mut s = StatusReport::default();
        publish(Some(&p), &mut s);
        assert!(s.keyed);
        assert_eq!(s.key_id, Some(format!("{id:08x}")));
        assert_eq!((s.unauthenticated, s.unprotected), (1, 1));
        assert!(s.key_problem.unwrap().contains("without a key"));
        assert!(load(Some(Path::new("/nonexistent/key"))).is_err());
    }
}
