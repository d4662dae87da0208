fn main() {
    eprintln!("wavesync-sender: not yet");
    std::process::exit(1);
}
