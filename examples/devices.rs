//! Lists what llama.cpp can compute on: backend registries, their devices (kind, memory,
//! capabilities) and the buffer types tensors can be placed in; with `--rpc HOST:PORT`, also the
//! devices of those RPC servers.
//!
//! ```text
//! cargo run --example devices
//! cargo run --features dynamic-backends --example devices   # modules found at run time
//! cargo run --example devices -- --rpc 127.0.0.1:50052
//! ```
//!
//! `--help` lists the flags.

use std::process::ExitCode;

use clap::Parser;
use llama::Device;

/// Lists what llama.cpp can compute on: backends, devices and buffer types.
#[derive(Debug, Parser)]
struct Args {
    /// Also list the devices of these RPC servers (repeatable).
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT]", value_delimiter = ',')]
    rpc: Vec<String>,
}

fn show(dev: &Device) {
    let (free, total) = dev.memory();
    println!(
        "  {} ({:?}): {} — {} MiB free of {} MiB, {:?}",
        dev.name(),
        dev.kind(),
        dev.description(),
        free >> 20,
        total >> 20,
        dev.caps()
    );
    match dev.buffer_type() {
        Ok(b) => println!("    buffer type {} (alignment {}, host: {})", b.name(), b.alignment(), b.is_host()),
        Err(e) => println!("    no buffer type: {e}"),
    }
    for b in dev.host_buffer_type().into_iter().chain(dev.extra_buffer_types()) {
        println!("    also {}", b.name());
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    println!("llama.cpp {}", llama::version());
    for backend in llama::backends() {
        println!("backend {}", backend.name());
        for dev in backend.devices() {
            show(&dev);
        }
    }
    let mut status = ExitCode::SUCCESS;
    for endpoint in &args.rpc {
        match llama::rpc::connect(endpoint.trim()) {
            Ok(server) => {
                println!("RPC server {}", server.endpoint());
                server.devices().iter().for_each(show);
            }
            Err(e) => {
                eprintln!("error: {e}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
