//! A minimal single-threaded TCP relay, written twice over the same structure so that the only difference
//! is the kernel I/O interface: readiness through epoll (`--io epoll`) or completions through io_uring
//! (`--io uring`). It exists to measure io_uring against epoll on `benches/e2e` before either is built
//! into sinew's data path (sinew's `tcp_fastpath: io_uring` engine grew from it, and shares its ring set-up
//! and provided buffer ring).
//!
//! Each accepted client gets a new connection to the next backend (round robin) and bytes are relayed
//! both ways until either side closes: an end of stream is passed on with `shutdown(Write)`, and the
//! pair is closed once both directions have ended. An error on either socket closes its pair only
//! (logged to stderr).
//!
//! usage: relay --io epoll|uring --listen 127.0.0.1:P --backend ADDR [--backend ADDR ...]

#[path = "relay/args.rs"]
mod args;
#[path = "relay/epoll.rs"]
mod epoll;
#[path = "relay/net.rs"]
mod net;
#[path = "relay/uring.rs"]
mod uring;

#[cfg(test)]
#[path = "relay/tests.rs"]
mod tests;

use args::{Args, Io};
use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = net::Setup::new(&args).and_then(|setup| match args.io {
        Io::Epoll => epoll::run(setup),
        Io::Uring => uring::run(setup, &args.uring_options()),
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
