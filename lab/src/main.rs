fn main() {
    eprintln!("not yet");
}
