//! urund, the helper daemon: its CLI, socket activation and runtime, then the library.
#![forbid(unsafe_code)]

use clap::Parser;
use urun::daemon::cli::UrundCommand;

fn main() {
    let args = urun::daemon::cli::Urund::parse();
    // Before any thread exists: this reads and clears LISTEN_PID/LISTEN_FDS.
    let activated = match urun::system::socket_from_systemd() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("urund: {e}");
            std::process::exit(1);
        }
    };
    // One thread: urund's work per byte is a read and a write, and what costs is
    // waking up (bench/RESULTS.md). A single-threaded runtime saves the hand-offs
    // between the I/O driver and worker threads; nothing in urund blocks for long.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(UrundCommand::Check {
        policy,
        docker_host,
    }) = args.command
    {
        std::process::exit(rt.block_on(urun::daemon::check::run(&policy, &docker_host)));
    }
    let opts = urun::daemon::Options {
        socket: args.socket,
        policy: args.policy,
        docker_host: args.docker_host,
        state_dir: args.state_dir,
        activated,
    };
    if let Err(e) = rt.block_on(urun::daemon::run(opts)) {
        eprintln!("urund: {e:#}");
        std::process::exit(1);
    }
}
