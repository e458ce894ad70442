//! Lends this machine's devices to llama.cpp clients over ggml's RPC protocol, like upstream's
//! `rpc-server` (which the pinned package does not ship).
//!
//! ```text
//! cargo run --release --example rpc_server -- --port 50052 --threads 4 --cache ~/.cache/llama-rpc
//! cargo run --release --example generate -- --rpc 127.0.0.1:50052 "Hello"
//! ```
//!
//! It listens on loopback unless `--host` says otherwise. The protocol has no authentication:
//! whoever reaches the port controls this process. Expose it only inside a private network or
//! a tunnel (e.g. `ssh -L 50052:127.0.0.1:50052 gpu-box` and keep the server on loopback).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use llama::rpc::{Server, DEFAULT_PORT};

const USAGE: &str = "usage: rpc_server [--host IPV4] [--port N] [--threads N] [--cache DIR]";

fn parse_args() -> Result<Server, String> {
    let mut server = Server::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--host" => {
                let v = value("--host")?;
                let ip: Ipv4Addr = v.parse().map_err(|_| {
                    format!("--host: {v:?} is not an IPv4 address (ggml's RPC server listens on IPv4 only)")
                })?;
                server = server.host(ip);
            }
            "--port" | "-p" => {
                let v = value("--port")?;
                server = server.port(v.parse().map_err(|_| format!("--port: cannot parse {v:?}"))?);
            }
            "--threads" | "-t" => {
                let v = value("--threads")?;
                server = server.threads(v.parse().map_err(|_| format!("--threads: cannot parse {v:?}"))?);
            }
            "--cache" | "-c" => server = server.cache_dir(PathBuf::from(value("--cache")?)),
            "-h" | "--help" => {
                return Err(format!("{USAGE}\n(default: 127.0.0.1:{DEFAULT_PORT}, all cores, no cache)"))
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(server)
}

fn main() -> ExitCode {
    let server = match parse_args() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
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
