//! `wavesync key new PATH [--force]`: writes a fresh household key (32 random bytes, mode
//! 0600) for `--key-file` (receiver, sender) and `wavesync.key.file` (the PipeWire module).

use std::path::Path;

const USAGE: &str =
    "usage: wavesync key new PATH [--force]   write a fresh household key (mode 0600)";

/// Runs `wavesync key ...` with the arguments after `key`.
pub fn run_key(args: &[String]) -> Result<(), String> {
    let mut force = false;
    let mut rest = Vec::new();
    for a in args {
        match a.as_str() {
            "--force" | "-f" => force = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => rest.push(a.as_str()),
        }
    }
    match rest.as_slice() {
        ["new", path] => {
            let path = Path::new(path);
            let id =
                wavesync_net::protection::write_new_key(path, force).map_err(|e| e.to_string())?;
            println!(
                "wrote key {id:08x} to {}: copy it to every host of the household (mode 0600, \
                 readable by the service user only), then restart the receivers and the sender",
                path.display()
            );
            Ok(())
        }
        _ => Err(format!("unknown key command {:?}\n{USAGE}", args.join(" "))),
    }
}
