//! `wavesync`: one command for users.
//!
//! - `wavesync status [--json]`: what the receiver on this host is doing;
//! - `wavesync key new PATH [--force]`: a fresh household key;
//! - `wavesync pair` / `wavesync pair CODE HOST`: hand the key to a receiver with a short code;
//! - `wavesync rooms` and `wavesync room NAME ...`: every room the master hears from, and
//!   changing one (through the master's control port);
//! - `wavesync calibrate`: a microphone hears each room and the trims are set so that all
//!   arrive together;
//! - `wavesync web`: the same as a page in a browser, and its JSON API;
//! - `wavesync --rx ...` and `wavesync --tx ...`: the Python tool's command lines, unchanged.

mod calibrate;
mod key;
mod pair;
mod rooms;
mod rx;
mod status;
mod tx;
mod web;

const USAGE: &str = "\
usage: wavesync status [--json|--brief] [--socket PATH] show what this host's receiver is doing
       wavesync key new PATH [--force]            write a fresh household key (mode 0600)
       wavesync pair [--key-file PATH]            on the master: show a code for pairing
       wavesync pair CODE HOST [--key-file PATH]  on a receiver: get the key with the code
       wavesync rooms [--master HOST[:PORT]] [--key-file PATH] [--json] [--watch]
                                                  list the master's rooms
       wavesync room NAME volume 0..100|mute|unmute|trim +-MS|channels all|left|right|mono
                          |off|on|rename NEW [--master HOST[:PORT]]   change one room
       wavesync calibrate [--mic SOURCE] [--rooms a,b] [--level DB] [--dry-run]
                          set the trims so every room arrives together at a microphone
       wavesync web [--listen ADDR:PORT] [--master HOST[:PORT]]   a page for the rooms
       wavesync --rx [options]                    receive and play (the old command line)
       wavesync --tx SOURCE [options]             send (the old command line)

The daemons are wavesync-receiver and wavesync-sender. `wavesync --rx --help` and
`wavesync --tx SOURCE --help` list the old options; `wavesync-receiver --help` and
`wavesync-sender --help` list all the new ones.";

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("status") {
        status::run_status(&args[1..])
    } else if args.first().map(String::as_str) == Some("key") {
        key::run_key(&args[1..])
    } else if args.first().map(String::as_str) == Some("pair") {
        pair::run_pair(&args[1..])
    } else if args.first().map(String::as_str) == Some("rooms") {
        rooms::run_rooms(&args[1..])
    } else if args.first().map(String::as_str) == Some("calibrate") {
        calibrate::run_calibrate(&args[1..])
    } else if args.first().map(String::as_str) == Some("room") {
        rooms::run_room(&args[1..])
    } else if args.first().map(String::as_str) == Some("web") {
        web::run_web(&args[1..])
    } else if args.iter().any(|a| a == "--rx") {
        rx::run_rx(&args)
    } else if args.iter().any(|a| a == "--tx" || a.starts_with("--tx=")) {
        tx::run_tx(&args)
    } else if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("wavesync {}", env!("CARGO_PKG_VERSION"));
        Ok(())
    } else if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        Ok(())
    } else {
        Err(format!(
            "unknown command line {:?}\n\n{USAGE}",
            args.join(" ")
        ))
    };
    if let Err(e) = result {
        eprintln!("wavesync: {e}");
        std::process::exit(1);
    }
}
