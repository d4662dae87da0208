//! `wavesync-sender`: see `wavesync-sender --help`.

use clap::Parser;
use wavesync_sender::args::Args;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    let result = args
        .to_config()
        .map_err(|e| e.to_string())
        .and_then(|cfg| wavesync_sender::run::run_until_signal(&cfg).map_err(|e| e.to_string()));
    if let Err(e) = result {
        eprintln!("wavesync-sender: {e}");
        std::process::exit(1);
    }
}
