fn main() {
    std::process::exit(urun::client::main(std::env::args_os()).into());
}
