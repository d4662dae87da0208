//! `wavesync-receiver`: the receiver daemon.

use clap::Parser;
use wavesync_receiver::config::{Args, Config};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    let cfg = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wavesync-receiver: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = wavesync_receiver::daemon::run(cfg) {
        eprintln!("wavesync-receiver: {e}");
        std::process::exit(1);
    }
}
