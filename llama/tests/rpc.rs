//! The RPC client refuses, with an error, every server ggml's client would abort the process on:
//! an unreachable endpoint, a peer speaking another protocol or version, a silent or busy peer,
//! a server without devices. Peers here are fakes on loopback that speak as much of the protocol
//! as each case needs; the process surviving each call is part of the test. Generation over a
//! real server is in the root package's `rpc_loopback` test.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use llama::rpc::{self, RpcError};

/// A listener on a free loopback port that runs `peer` on its first connection.
fn fake(peer: impl FnOnce(TcpStream) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        if let Ok((sock, _)) = listener.accept() {
            peer(sock);
        }
    });
    endpoint
}

/// A peer that answers HELLO with `version` and DEVICE_COUNT with `devices`, as ggml-rpc frames
/// them: u64 size, then the payload.
fn speaking(version: (u8, u8, u8), devices: u32) -> String {
    fake(move |mut s| {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).unwrap();
        assert_eq!(head[0], 14, "HELLO first");
        assert_eq!(u64::from_le_bytes(head[1..].try_into().unwrap()), 24, "HELLO carries 24 bytes of caps");
        s.read_exact(&mut [0u8; 24]).unwrap();
        let mut reply = 28u64.to_le_bytes().to_vec();
        reply.extend([version.0, version.1, version.2, 0]);
        reply.extend([0u8; 24]);
        s.write_all(&reply).unwrap();
        if s.read_exact(&mut head).is_err() {
            return; // the client hung up after the version check
        }
        assert_eq!(head[0], 15, "DEVICE_COUNT second");
        let mut reply = 4u64.to_le_bytes().to_vec();
        reply.extend(devices.to_le_bytes());
        s.write_all(&reply).unwrap();
    })
}

fn unused_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn malformed_endpoints_are_refused_before_any_connection() {
    for bad in [
        "localhost",
        ":50052",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:http",
        "127.0.0.1:70000",
        "[::1]:50052",
        "::1:50052",
    ] {
        let err = rpc::probe(bad).unwrap_err();
        assert!(matches!(err, RpcError::InvalidEndpoint { .. }), "{bad}: {err}");
    }
}

#[test]
fn an_unreachable_endpoint_is_an_error() {
    let endpoint = unused_port();
    let err = rpc::probe(&endpoint).unwrap_err();
    assert!(matches!(err, RpcError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&endpoint), "{err}");
}

#[test]
fn a_peer_speaking_http_is_an_error() {
    let endpoint = fake(|mut s| {
        let _ = s.read(&mut [0u8; 64]);
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let err = rpc::probe(&endpoint).unwrap_err();
    assert!(matches!(err, RpcError::Protocol { .. }), "{err}");
}

#[test]
fn a_peer_that_hangs_up_is_an_error() {
    let endpoint = fake(drop);
    let err = rpc::probe(&endpoint).unwrap_err();
    assert!(matches!(err, RpcError::Protocol { .. }), "{err}");
}

#[test]
fn a_silent_or_busy_peer_times_out() {
    let endpoint = fake(|s| {
        thread::sleep(Duration::from_secs(3));
        drop(s);
    });
    let t0 = Instant::now();
    let err = rpc::probe_with_timeout(&endpoint, Duration::from_millis(300)).unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2), "the timeout bounds the wait: {:?}", t0.elapsed());
}

#[test]
fn other_protocol_versions_are_refused_and_compatible_ones_accepted() {
    let (major, minor, _) = rpc::PROTOCOL;
    for v in [(major - 1, minor, 0), (major + 1, 0, 0), (major, minor + 1, 0)] {
        let err = rpc::probe(&speaking(v, 1)).unwrap_err();
        assert!(matches!(err, RpcError::Version { server, .. } if server == v), "{v:?}: {err}");
    }
    let info = rpc::probe(&speaking((major, minor, 9), 2)).unwrap();
    assert_eq!((info.version, info.devices), ((major, minor, 9), 2));
}

#[test]
fn a_server_without_devices_is_an_error() {
    let err = rpc::probe(&speaking(rpc::PROTOCOL, 0)).unwrap_err();
    assert!(matches!(err, RpcError::NoDevices { .. }), "{err}");
}

/// What `connect` and a model load answer for a peer ggml would abort on: without the `rpc`
/// feature there is no backend to hand it to; with it, the probe refuses it first.
#[test]
fn connect_and_load_refuse_what_ggml_would_abort_on() {
    let http = fake(|mut s| {
        let _ = s.read(&mut [0u8; 64]);
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
    });
    for endpoint in [unused_port(), http] {
        let err = rpc::connect(&endpoint).unwrap_err();
        if cfg!(feature = "rpc") {
            assert!(matches!(err, RpcError::Unreachable { .. } | RpcError::Protocol { .. }), "{err}");
        } else {
            assert!(matches!(err, RpcError::NotBuilt), "{err}");
        }
    }
    let path = common::models::default_model().unwrap();
    let err = llama::Model::builder(&path).rpc_servers(&[unused_port()]).load().unwrap_err();
    assert!(matches!(err, llama::LoadError::Rpc(_)), "{err}");
}
