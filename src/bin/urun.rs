//! urun, the client: one call into the library.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(urun::client::main(std::env::args_os()).into());
}
