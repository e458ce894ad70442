//! Lists what llama.cpp can compute on: backend registries, their devices (kind, memory,
//! capabilities) and the buffer types tensors can be placed in; with `--rpc HOST:PORT`, also the
//! devices of those RPC servers.
//!
//! ```text
//! cargo run --example devices
//! cargo run --features dynamic-backends --example devices   # modules found at run time
//! cargo run --example devices -- --rpc 127.0.0.1:50052
//! ```

use std::process::ExitCode;

use llama::Device;

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
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("llama.cpp {}", llama::version());
    for backend in llama::backends() {
        println!("backend {}", backend.name());
        for dev in backend.devices() {
            show(&dev);
        }
    }
    let mut status = ExitCode::SUCCESS;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match (arg.as_str(), it.next()) {
            ("--rpc", Some(list)) => {
                for endpoint in list.split(',') {
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
            }
            _ => {
                eprintln!("usage: devices [--rpc HOST:PORT[,HOST:PORT]]");
                return ExitCode::FAILURE;
            }
        }
    }
    status
}
