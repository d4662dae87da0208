//! From the rooms' arrivals at the microphone to the trims that make them arrive together.
//!
//! Each room's short windows give `tau` (when the probe reached the microphone, in recording
//! samples) along the recording. A microphone's clock is not the master's: `tau` moves by its
//! rate error along the recording (50 ppm is 50 us in a second, far more than the target), so
//! one line with a common slope (the microphone's rate error) and one intercept per room is
//! fitted to all windows by least squares; the intercepts are the arrivals at one instant. Only
//! their differences are used: the microphone's capture delay is in every one of them and
//! cancels.
//!
//! Trims move a room's playback earlier (positive) or later (negative). The latest room keeps
//! its trim and every other room is delayed to meet it, relative to its current trim: no room
//! is asked to play earlier than it already does (which could take more than the stream's
//! latency leaves), and calibrating again right after changes nothing.

use super::measure::Arrival;
use crate::wire::report::MAX_TRIM_US;

/// The microphone's clock may differ from the master's by at most this, ppm (more is a wrong
/// sample rate, not a crystal).
pub const MAX_DRIFT_PPM: f64 = 1000.0;
/// Rooms whose levels at the microphone differ by more than this (dB) are refused.
pub const MAX_LEVEL_SPREAD_DB: f64 = 30.0;

/// Two measurements of one room, at the start and the end, may differ by at most this, us: two
/// samples at 48 kHz lost or inserted are caught; the rooms' own sync wander over the run (a
/// few to 20 us on a loaded machine) is not mistaken for a slip.
pub const MAX_SLIP_US: f64 = 40.0;

/// Why no trims can be given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SolveError {
    /// No rooms, or the numbers of arrivals and trims differ.
    #[error("nothing to solve: {arrivals} arrivals for {trims} rooms")]
    Mismatch {
        /// Arrivals given.
        arrivals: usize,
        /// Current trims given.
        trims: usize,
    },
    /// The microphone's clock is implausibly far from the master's.
    #[error("the microphone's clock is {ppm:+.0} ppm off the master's: wrong sample rate?")]
    MicRate {
        /// Rate error, ppm.
        ppm: f64,
    },
    /// One room is far louder at the microphone than another.
    #[error("room {loud} is {db:.0} dB louder at the microphone than room {quiet}: is the mic beside one loudspeaker, or one room's volume far off?")]
    LevelSpread {
        /// Index of the loudest room.
        loud: usize,
        /// Index of the quietest room.
        quiet: usize,
        /// Difference, dB.
        db: f64,
    },
    /// The room measured first, measured again at the end, arrived elsewhere: the stream or
    /// the recording lost samples in between.
    #[error("the first room, measured again at the end, moved by {slip_us:.0} us: the stream or the recording slipped (an underrun?); try again")]
    Slipped {
        /// How far it moved, us.
        slip_us: f64,
    },
    /// A new trim would be out of range.
    #[error("room {room} would need a trim of {trim_us} us, beyond +-{MAX_TRIM_US} us")]
    TrimRange {
        /// Index of the room.
        room: usize,
        /// The trim it would need, us.
        trim_us: i64,
    },
}

/// One room's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoomPlan {
    /// Arrival at the microphone before calibration, us after the earliest room.
    pub arrival_us: f64,
    /// Trim before, us.
    pub old_trim_us: i32,
    /// Trim that makes it arrive with the latest room, us.
    pub new_trim_us: i32,
}

/// The solution.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The microphone's rate error against the master, ppm.
    pub drift_ppm: f64,
    /// Per room, in the order given.
    pub rooms: Vec<RoomPlan>,
}

impl Plan {
    /// Largest difference between the rooms' arrivals before calibration, us.
    pub fn spread_us(&self) -> f64 {
        let a = self.rooms.iter().map(|r| r.arrival_us);
        a.clone().fold(f64::MIN, f64::max) - a.fold(f64::MAX, f64::min)
    }
}

/// Least-squares line through `(x, y)` points: (intercept, slope). One point or none: slope 0.
pub fn line(p: &[(f64, f64)]) -> (f64, f64) {
    if p.is_empty() {
        return (0.0, 0.0);
    }
    let n = p.len() as f64;
    let mx = p.iter().map(|q| q.0).sum::<f64>() / n;
    let my = p.iter().map(|q| q.1).sum::<f64>() / n;
    let sxx: f64 = p.iter().map(|q| (q.0 - mx).powi(2)).sum();
    let sxy: f64 = p.iter().map(|q| (q.0 - mx) * (q.1 - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - slope * mx, slope)
}

/// The trims for rooms whose arrivals are `arrivals` (recorded at `rate`) and whose trims are
/// `trims_us` now.
pub fn solve(rate: u32, arrivals: &[Arrival], trims_us: &[i32]) -> Result<Plan, SolveError> {
    if arrivals.is_empty() || arrivals.len() != trims_us.len() {
        return Err(SolveError::Mismatch {
            arrivals: arrivals.len(),
            trims: trims_us.len(),
        });
    }
    let levels: Vec<f64> = arrivals.iter().map(|a| a.level_db).collect();
    let (loud, quiet) = (argmax(&levels, 1.0), argmax(&levels, -1.0));
    let db = levels[loud] - levels[quiet];
    if db > MAX_LEVEL_SPREAD_DB {
        return Err(SolveError::LevelSpread { loud, quiet, db });
    }
    // One slope for all: sum over rooms of the centred products.
    let (mut sxx, mut sxy) = (0.0, 0.0);
    let mut means = Vec::with_capacity(arrivals.len());
    for a in arrivals {
        let n = a.windows.len().max(1) as f64;
        let mx = a.windows.iter().map(|w| w.0).sum::<f64>() / n;
        let my = a.windows.iter().map(|w| w.1).sum::<f64>() / n;
        for (x, y) in &a.windows {
            sxx += (x - mx).powi(2);
            sxy += (x - mx) * (y - my);
        }
        means.push((mx, my));
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let drift_ppm = slope * 1e6;
    if drift_ppm.abs() > MAX_DRIFT_PPM {
        return Err(SolveError::MicRate { ppm: drift_ppm });
    }
    // Arrivals at recording sample 0, relative to the first room, within half a period.
    let period = f64::from(rate);
    let at0: Vec<f64> = means.iter().map(|(mx, my)| my - slope * mx).collect();
    let rel: Vec<f64> = at0
        .iter()
        .map(|t| {
            let d = t - at0[0];
            d - period * (d / period).round()
        })
        .collect();
    let earliest = rel.iter().copied().fold(f64::MAX, f64::min);
    let latest = rel.iter().copied().fold(f64::MIN, f64::max);
    let mut rooms = Vec::with_capacity(rel.len());
    for (i, (r, &old)) in rel.iter().zip(trims_us).enumerate() {
        let change = (r - latest) / period * 1e6;
        let new = i64::from(old) + change.round() as i64;
        if new.unsigned_abs() > MAX_TRIM_US as u64 {
            return Err(SolveError::TrimRange {
                room: i,
                trim_us: new,
            });
        }
        rooms.push(RoomPlan {
            arrival_us: (r - earliest) / period * 1e6,
            old_trim_us: old,
            new_trim_us: new as i32,
        });
    }
    Ok(Plan { drift_ppm, rooms })
}

/// Checks that `again`, a second measurement of the room measured as `first`, agrees with it
/// at the microphone's drift `drift_ppm` (from [`solve`]); how far apart they are, us.
pub fn check_repeat(
    rate: u32,
    drift_ppm: f64,
    first: &Arrival,
    again: &Arrival,
) -> Result<f64, SolveError> {
    let slope = drift_ppm / 1e6;
    let at0 = |a: &Arrival| {
        let n = a.windows.len().max(1) as f64;
        a.windows.iter().map(|(m, t)| t - slope * m).sum::<f64>() / n
    };
    let period = f64::from(rate);
    let d = at0(again) - at0(first);
    let slip_us = (d - period * (d / period).round()) / period * 1e6;
    if slip_us.abs() > MAX_SLIP_US {
        return Err(SolveError::Slipped { slip_us });
    }
    Ok(slip_us)
}

/// Index of the largest (`sign` 1) or smallest (`sign` -1) value.
fn argmax(v: &[f64], sign: f64) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if sign * x > sign * v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::super::measure::tests::{heard, RATE};
    use super::super::measure::{measure, Arrival};
    use super::super::probe::Probe;
    use super::*;

    /// An arrival at `delay` samples, seen through a microphone running `ppm` fast, in windows
    /// around recording sample `at`.
    fn arrival(delay: f64, ppm: f64, at: f64, level_db: f64) -> Arrival {
        Arrival {
            windows: (0..6)
                .map(|k| {
                    let m = at + 8192.0 * k as f64;
                    (m, delay + ppm * 1e-6 * m)
                })
                .collect(),
            level_db,
            snr_db: 40.0,
            peak: 0.8,
        }
    }

    #[test]
    fn trims_delay_every_room_to_the_latest_relative_to_its_trim() {
        // 0, 3.4, 40 and 180 ms late; the microphone 35 ppm fast, rooms measured 3 s apart.
        let ms = [0.0, 3.4, 40.0, 180.0];
        let a: Vec<Arrival> = ms
            .iter()
            .enumerate()
            .map(|(i, d)| arrival(d * 48.0, 35.0, 144_000.0 * i as f64, -30.0))
            .collect();
        let p = solve(RATE, &a, &[0, 1000, -2000, 500]).unwrap();
        assert!((p.drift_ppm - 35.0).abs() < 1e-6, "{p:?}");
        for (r, d) in p.rooms.iter().zip(ms) {
            assert!((r.arrival_us - d * 1e3).abs() < 0.01, "{r:?}");
        }
        let new: Vec<i32> = p.rooms.iter().map(|r| r.new_trim_us).collect();
        assert_eq!(new, vec![-180_000, -175_600, -142_000, 500]);
        assert!((p.spread_us() - 180_000.0).abs() < 0.01);
        // Without the drift fit the last room would be off by 35 ppm x 9 s = 315 us; check that
        // a drifting mic with rooms at equal delays gives no changes.
        let same: Vec<Arrival> = (0..4)
            .map(|i| arrival(100.0, -80.0, 300_000.0 * i as f64, -30.0))
            .collect();
        let p = solve(RATE, &same, &[7, 8, 9, 10]).unwrap();
        let new: Vec<i32> = p.rooms.iter().map(|r| r.new_trim_us).collect();
        assert_eq!(new, vec![7, 8, 9, 10]);
    }

    #[test]
    fn a_repeat_that_moved_is_a_slip() {
        let first = arrival(500.0, 20.0, 0.0, -30.0);
        let same = arrival(500.0, 20.0, 500_000.0, -30.0);
        let slipped = arrival(500.0 + 4.8, 20.0, 500_000.0, -30.0);
        assert!(check_repeat(RATE, 20.0, &first, &same).unwrap().abs() < 0.01);
        assert!(matches!(
            check_repeat(RATE, 20.0, &first, &slipped),
            Err(SolveError::Slipped { slip_us }) if (slip_us - 100.0).abs() < 0.01
        ));
    }

    #[test]
    fn arrivals_across_the_period_wrap_to_the_nearest() {
        // Room 1 is 10 ms earlier than room 0, found as 0.99 s late modulo the period.
        let a = vec![
            arrival(1000.0, 0.0, 0.0, -30.0),
            arrival(1000.0 - 480.0 + 48_000.0, 0.0, 100_000.0, -30.0),
        ];
        let p = solve(RATE, &a, &[0, 0]).unwrap();
        assert_eq!(p.rooms[0].new_trim_us, 0);
        assert_eq!(p.rooms[1].new_trim_us, -10_000);
    }

    #[test]
    fn implausible_inputs_are_refused() {
        let a = vec![arrival(0.0, 0.0, 0.0, -30.0)];
        assert!(matches!(
            solve(RATE, &a, &[]),
            Err(SolveError::Mismatch { .. })
        ));
        assert!(matches!(
            solve(RATE, &[], &[]),
            Err(SolveError::Mismatch { .. })
        ));
        let fast = vec![arrival(0.0, 2000.0, 0.0, -30.0)];
        assert!(matches!(
            solve(RATE, &fast, &[0]),
            Err(SolveError::MicRate { .. })
        ));
        let loud = vec![arrival(0.0, 0.0, 0.0, -10.0), arrival(0.0, 0.0, 1e5, -45.0)];
        assert_eq!(
            solve(RATE, &loud, &[0, 0]).unwrap_err(),
            SolveError::LevelSpread {
                loud: 0,
                quiet: 1,
                db: 35.0
            }
        );
        let far = vec![
            arrival(0.0, 0.0, 0.0, -30.0),
            arrival(4800.0, 0.0, 1e5, -30.0),
        ];
        assert!(matches!(
            solve(RATE, &far, &[-4_950_000, 0]),
            Err(SolveError::TrimRange { room: 0, .. })
        ));
    }

    #[test]
    fn measured_rooms_end_up_together() {
        // The whole chain on synthetic recordings: four rooms at fractional delays, with
        // reverb and noise, each heard in its own stretch of one recording.
        let p = Probe::new(RATE, -20.0).unwrap();
        let delays = [0.0, 163.2, 1920.0, 8640.0];
        let mut arrivals = Vec::new();
        for (i, d) in delays.iter().enumerate() {
            let start = 150_000 * i as i64;
            let x = heard(&p, start, 96_000, *d, 0.3, 0.2, -65.0, 10 + i as u64);
            arrivals.push(measure(&p, &x, start as u64, -65.0).unwrap());
        }
        let plan = solve(RATE, &arrivals, &[0; 4]).unwrap();
        for (r, d) in plan.rooms.iter().zip(delays) {
            // What each room's arrival becomes with its new trim (positive trims play earlier).
            let after = d / 48.0 * 1e3 - f64::from(r.new_trim_us);
            let want = delays[3] / 48.0 * 1e3;
            assert!((after - want).abs() < 2.0, "{r:?}: {after} us, want {want}");
        }
    }
}
