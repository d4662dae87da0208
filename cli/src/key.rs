//! `wavesync key new PATH [--force]`: writes a fresh household key (32 random bytes, mode
//! 0600) for `--key-file` (receiver, sender) and `wavesync.key.file` (the PipeWire module).

use std::path::{Path, PathBuf};

const USAGE: &str =
    "usage: wavesync key new PATH [--force]   write a fresh household key (mode 0600)";

/// The options `wavesync key` and `wavesync pair` share, and the words left.
pub struct KeyArgs<'a> {
    /// `--force`: replace an existing key file.
    pub force: bool,
    /// `--key-file PATH`.
    pub key_file: Option<PathBuf>,
    /// The other words, in order.
    pub rest: Vec<&'a str>,
}

impl<'a> KeyArgs<'a> {
    /// Parses `args`; `None` when `--help` was asked (and `usage` printed).
    pub fn parse(args: &'a [String], usage: &str) -> Result<Option<KeyArgs<'a>>, String> {
        let mut k = KeyArgs {
            force: false,
            key_file: None,
            rest: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--key-file" => {
                    let path = it
                        .next()
                        .ok_or_else(|| format!("--key-file needs a path\n{usage}"))?;
                    k.key_file = Some(PathBuf::from(path));
                }
                "--force" | "-f" => k.force = true,
                "--help" | "-h" => {
                    println!("{usage}");
                    return Ok(None);
                }
                _ => k.rest.push(a.as_str()),
            }
        }
        Ok(Some(k))
    }
}

/// Runs `wavesync key ...` with the arguments after `key`.
pub fn run_key(args: &[String]) -> Result<(), String> {
    let Some(KeyArgs { force, rest, .. }) = KeyArgs::parse(args, USAGE)? else {
        return Ok(());
    };
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
