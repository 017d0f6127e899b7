fn main() {
    let args = match urun::cli::parse_urun(std::env::args_os()) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            // --help and --version are successes; any other parse error is urun's own
            // error, 125 as with docker run.
            std::process::exit(if e.use_stderr() { 125 } else { 0 });
        }
    };
    std::process::exit(urun::client::run(args).into());
}
