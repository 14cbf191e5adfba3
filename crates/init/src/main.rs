//! `cairn-init`: see the library's documentation.

fn main() {
    if std::process::id() != 1 {
        eprintln!("cairn-init: this is PID 1 of a Cairn node and runs only as PID 1");
        std::process::exit(2);
    }
    init::pid1::run()
}
