//! Lends this machine's devices to llama.cpp clients over ggml's RPC protocol, like upstream's
//! `rpc-server` (which the pinned package does not ship).
//!
//! ```text
//! cargo run --release --example rpc_server -- --port 50052 --threads 4 --cache ~/.cache/llama-rpc
//! cargo run --release --example generate -- --rpc 127.0.0.1:50052 "Hello"
//! ```
//!
//! `--help` lists the flags. It listens on loopback unless `--host` says otherwise. The protocol
//! has no authentication: whoever reaches the port controls this process. Expose it only inside
//! a private network or a tunnel (e.g. `ssh -L 50052:127.0.0.1:50052 gpu-box` and keep the
//! server on loopback).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use llama::rpc::{Server, DEFAULT_PORT};
use llama_examples::cli::at_least;

/// Lends this machine's devices to llama.cpp clients over ggml's RPC protocol.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true)]
struct Args {
    /// Address to listen on; anything but loopback exposes this process to the network.
    #[arg(long, value_name = "IPV4", default_value_t = Ipv4Addr::LOCALHOST, value_parser = ipv4)]
    host: Ipv4Addr,
    /// Port to listen on.
    #[arg(
        long,
        short = 'p',
        value_name = "N",
        default_value_t = DEFAULT_PORT,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    port: u16,
    /// CPU threads for the CPU device (default: all cores).
    #[arg(long, short = 't', value_name = "N", value_parser = at_least(1))]
    threads: Option<usize>,
    /// Keep received weights here, so a client that loads the same model again sends only
    /// hashes for large tensors (default: no cache).
    #[arg(long, short = 'c', value_name = "DIR")]
    cache: Option<PathBuf>,
}

fn ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.parse().map_err(|_| "not an IPv4 address (ggml's RPC server listens on IPv4 only)".to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut server = Server::new().host(args.host).port(args.port);
    if let Some(n) = args.threads {
        server = server.threads(n);
    }
    if let Some(dir) = &args.cache {
        server = server.cache_dir(dir);
    }
    if server.is_exposed() {
        eprintln!(
            "\n\
             !!! WARNING: serving on {} — NOT loopback.\n\
             !!! ggml's RPC protocol has no authentication and no encryption: anyone who can\n\
             !!! reach this address can run code against this process's memory.\n\
             !!! Use only inside a private network or a tunnel.\n",
            server.endpoint()
        );
    }
    eprintln!("rpc_server: serving on {} (one client at a time)", server.endpoint());
    match server.serve() {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
