//! What a test does when its environment lacks something it needs (root, namespaces, a
//! PipeWire, a tool): a developer's machine prints a clear skip and passes; a CI machine
//! (`CI=true`) fails, so a broken runner cannot look green.
//!
//! One file for every test crate of the workspace, included with
//! `#[path = "<relative path to>/test-support/skip.rs"] mod skip;`.

/// Whether this run is under CI (`CI` set to `true` or `1`, as CI services do).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Reports that the test cannot run here because of `why`: panics under CI, prints
/// `SKIPPED: why` otherwise (the caller then returns).
pub fn skip_or_fail(why: &str) {
    if in_ci() {
        panic!("cannot run under CI=true: {why}");
    }
    eprintln!("SKIPPED: {why}");
}
