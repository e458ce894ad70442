//! ggml's RPC backend: a model split across machines.
//!
//! A [`Server`] lends this machine's devices (and their memory) to one client at a time; a
//! client places a model's layers on one or more servers with
//! [`ModelBuilder::rpc_servers`](crate::ModelBuilder::rpc_servers) (or the devices of
//! [`connect`]). Build with the `rpc` feature on both sides; without it every call here answers
//! [`RpcError::NotBuilt`].
//!
//! ```no_run
//! // On the machine lending its memory (or `cargo run --example rpc_server`):
//! //     llama::rpc::Server::new().port(50052).serve()?;
//! // On the client:
//! let model = llama::Model::builder("model.gguf").rpc_servers(&["127.0.0.1:50052"]).load()?;
//! # Ok::<(), llama::LoadError>(())
//! ```
//!
//! # What aborts, and what this module turns into errors
//! ggml's RPC client ends the process (`GGML_ABORT`) on any socket failure. Before ggml opens a
//! connection, this module opens one itself and speaks just enough of the protocol to check
//! that the server is there, speaks protocol [`PROTOCOL`], is free to serve and has devices, so
//! an unreachable endpoint, a peer speaking something else, another protocol version or a busy
//! server is an [`RpcError`]. What still aborts: a server lost *after* that check, above all in
//! the middle of loading or inference, and a model freed after its server died (freeing remote
//! buffers talks to the server). To survive that, run the client in a child process you
//! supervise and restart, as [`vet`](crate::vet) does for untrusted models.
//!
//! # Security
//! The server has no authentication and no encryption, and it executes whatever graph a client
//! sends against its memory: anyone who reaches the port owns the process. Serve on loopback
//! (the default) or inside a private network or tunnel, never on an open one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::backend::{devices, ensure_init, Backend, Device, DeviceKind};

/// The RPC protocol version this build speaks (`major`, `minor`, `patch`). A server is usable when
/// its major version is equal and its minor version not newer.
pub const PROTOCOL: (u8, u8, u8) = (
    llama_sys::RPC_PROTO_MAJOR_VERSION as u8,
    llama_sys::RPC_PROTO_MINOR_VERSION as u8,
    llama_sys::RPC_PROTO_PATCH_VERSION as u8,
);

/// The port upstream's `rpc-server` listens on by default.
pub const DEFAULT_PORT: u16 = 50052;

/// How long [`probe`] and [`connect`] wait for a server to connect and answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

// The few wire facts the probe needs (ggml-rpc.cpp, protocol 7): a request is one command byte,
// a little-endian u64 payload size and the payload; a reply is a u64 size and the payload.
const CMD_HELLO: u8 = 14;
const CMD_DEVICE_COUNT: u8 = 15;
/// Transport capabilities sent with HELLO; all zeros asks for plain TCP.
const CONN_CAPS: usize = 24;
/// HELLO reply: major, minor, patch, one byte of padding, the server's capabilities.
const HELLO_REPLY: usize = 4 + CONN_CAPS;

/// Why an RPC server cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// This build has no RPC backend.
    #[error("this build has no RPC backend: build with the `rpc` feature")]
    NotBuilt,
    /// The endpoint is not `HOST:PORT` with an IPv4 host (ggml's RPC transport has no IPv6).
    #[error("invalid RPC endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The host name did not resolve to an IPv4 address.
    #[error("cannot resolve RPC endpoint {endpoint:?}: {source}")]
    Resolve {
        /// The endpoint given.
        endpoint: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// No connection could be made (nothing listens there, a firewall, a timeout).
    #[error("RPC server {endpoint} is unreachable: {source}")]
    Unreachable {
        /// The endpoint, resolved to `IP:PORT`.
        endpoint: String,
        /// The socket error.
        source: io::Error,
    },
    /// The peer accepted the connection but did not answer in time: not an RPC server, or one
    /// busy with another client (a server serves one client at a time).
    #[error(
        "RPC server {endpoint} did not answer within {timeout:?} (busy with another client, or not an RPC server)"
    )]
    Timeout {
        /// The endpoint, resolved to `IP:PORT`.
        endpoint: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The peer answered something that is not ggml's RPC protocol, or closed the connection
    /// during the handshake (which servers of another protocol version do).
    #[error("{endpoint} does not speak ggml's RPC protocol {}.{}.{}: {detail}", PROTOCOL.0, PROTOCOL.1, PROTOCOL.2)]
    Protocol {
        /// The endpoint, resolved to `IP:PORT`.
        endpoint: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// The server speaks another version of the protocol.
    #[error("RPC server {endpoint} speaks protocol {}.{}.{}, this build {}.{}.{} (the major versions must match and the server's minor must not be newer)", server.0, server.1, server.2, PROTOCOL.0, PROTOCOL.1, PROTOCOL.2)]
    Version {
        /// The endpoint, resolved to `IP:PORT`.
        endpoint: String,
        /// The server's version.
        server: (u8, u8, u8),
    },
    /// The server has no device to lend.
    #[error("RPC server {endpoint} has no devices")]
    NoDevices {
        /// The endpoint, resolved to `IP:PORT`.
        endpoint: String,
    },
    /// ggml refused to register the server; `reason` is what it reported.
    #[error("ggml could not register RPC server {endpoint}: {reason}")]
    Rejected {
        /// The endpoint, resolved to `IP:PORT`.
        endpoint: String,
        /// ggml's message, if any.
        reason: String,
    },
    /// The device has no buffer type (a backend that cannot hold tensors).
    #[error("device {0} has no buffer type")]
    NoBufferType(String),
}

/// What a server said about itself during [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerInfo {
    /// The endpoint, resolved to `IP:PORT` (what ggml is given).
    pub endpoint: String,
    /// The server's protocol version.
    pub version: (u8, u8, u8),
    /// How many devices it lends.
    pub devices: u32,
}

/// Checks a server the way ggml's client would use it, without letting ggml near it: connects,
/// says HELLO, checks the protocol version and asks for the device count, each step bounded by
/// [`DEFAULT_TIMEOUT`]. Works without the `rpc` feature (it is plain TCP).
///
/// ```
/// // Nothing listens on port 1 of this machine.
/// let err = llama::rpc::probe("127.0.0.1:1").unwrap_err();
/// assert!(matches!(err, llama::rpc::RpcError::Unreachable { .. }));
/// ```
pub fn probe(endpoint: &str) -> Result<ServerInfo, RpcError> {
    probe_with_timeout(endpoint, DEFAULT_TIMEOUT)
}

/// [`probe`] with another bound on each step.
pub fn probe_with_timeout(endpoint: &str, timeout: Duration) -> Result<ServerInfo, RpcError> {
    let addr = resolve(endpoint)?;
    handshake(addr, timeout)
}

/// Parses `HOST:PORT` the way ggml does (split at the first `:`) and resolves the host to the
/// IPv4 address ggml's transport would use.
fn resolve(endpoint: &str) -> Result<SocketAddrV4, RpcError> {
    let invalid = |reason| RpcError::InvalidEndpoint { endpoint: endpoint.to_string(), reason };
    let (host, port) = endpoint.split_once(':').ok_or_else(|| invalid("expected HOST:PORT"))?;
    if host.is_empty() {
        return Err(invalid("empty host"));
    }
    if port.contains(':') || host.starts_with('[') {
        return Err(invalid("IPv6 is not supported by ggml's RPC transport"));
    }
    let port: u16 = port.parse().map_err(|_| invalid("the port is not a number in 1..=65535"))?;
    if port == 0 {
        return Err(invalid("port 0"));
    }
    if host.contains('\0') {
        return Err(invalid("NUL byte in host"));
    }
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|source| RpcError::Resolve { endpoint: endpoint.to_string(), source })?;
    addrs
        .filter_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .next()
        .ok_or_else(|| RpcError::Resolve {
            endpoint: endpoint.to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no IPv4 address"),
        })
}

fn handshake(addr: SocketAddrV4, timeout: Duration) -> Result<ServerInfo, RpcError> {
    let endpoint = addr.to_string();
    let mut sock = TcpStream::connect_timeout(&addr.into(), timeout)
        .map_err(|source| RpcError::Unreachable { endpoint: endpoint.clone(), source })?;
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            RpcError::Timeout { endpoint: endpoint.clone(), timeout }
        }
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
            RpcError::Protocol {
                endpoint: endpoint.clone(),
                detail: "the peer closed the connection during the handshake (another protocol, or another version)"
                    .into(),
            }
        }
        _ => RpcError::Unreachable { endpoint: endpoint.clone(), source: e },
    };
    sock.set_read_timeout(Some(timeout)).and_then(|()| sock.set_write_timeout(Some(timeout))).map_err(io_err)?;
    let _ = sock.set_nodelay(true);

    let reply = request(&mut sock, CMD_HELLO, &[0u8; CONN_CAPS]).map_err(io_err)?;
    let hello = expect_reply::<HELLO_REPLY>(&mut sock, reply, &endpoint, "HELLO").map_err(|e| e.or_io(&io_err))?;
    let version = (hello[0], hello[1], hello[2]);
    if version.0 != PROTOCOL.0 || version.1 > PROTOCOL.1 {
        return Err(RpcError::Version { endpoint, server: version });
    }
    let reply = request(&mut sock, CMD_DEVICE_COUNT, &[]).map_err(io_err)?;
    let count = expect_reply::<4>(&mut sock, reply, &endpoint, "DEVICE_COUNT").map_err(|e| e.or_io(&io_err))?;
    let devices = u32::from_le_bytes(count);
    if devices == 0 {
        return Err(RpcError::NoDevices { endpoint });
    }
    Ok(ServerInfo { endpoint, version, devices })
}

/// Sends one command and reads the size of its reply.
fn request(sock: &mut TcpStream, cmd: u8, payload: &[u8]) -> io::Result<u64> {
    let mut msg = Vec::with_capacity(9 + payload.len());
    msg.push(cmd);
    msg.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    msg.extend_from_slice(payload);
    sock.write_all(&msg)?;
    let mut size = [0u8; 8];
    sock.read_exact(&mut size)?;
    Ok(u64::from_le_bytes(size))
}

/// A reply failure: a socket error, or a well-delivered reply of the wrong shape.
enum ReplyError {
    Io(io::Error),
    Shape(RpcError),
}

impl ReplyError {
    fn or_io(self, io_err: &impl Fn(io::Error) -> RpcError) -> RpcError {
        match self {
            ReplyError::Io(e) => io_err(e),
            ReplyError::Shape(e) => e,
        }
    }
}

/// Reads a reply payload of exactly `N` bytes announced as `size`.
fn expect_reply<const N: usize>(
    sock: &mut TcpStream,
    size: u64,
    endpoint: &str,
    what: &str,
) -> Result<[u8; N], ReplyError> {
    if size != N as u64 {
        return Err(ReplyError::Shape(RpcError::Protocol {
            endpoint: endpoint.to_string(),
            detail: format!("the {what} reply announced {size} bytes, not {N}"),
        }));
    }
    let mut buf = [0u8; N];
    sock.read_exact(&mut buf).map_err(ReplyError::Io)?;
    Ok(buf)
}

// --- servers in use by this process ----------------------------------------------------------

/// Endpoints with a model of this process on them, counted. While one is, ggml keeps its
/// connection open and the server (one client at a time) leaves a new connection waiting
/// unanswered, so a full [`probe`] would time out: reachability is all that is checked then.
static IN_USE: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

/// Marks endpoints in use for as long as it lives; held by a model placed on them and dropped
/// after the model is freed.
#[derive(Debug, Default)]
pub(crate) struct Lease(Vec<String>);

impl Lease {
    pub(crate) fn new(endpoints: Vec<String>) -> Lease {
        if !endpoints.is_empty() {
            let mut map = IN_USE.lock().unwrap_or_else(|e| e.into_inner());
            let map = map.get_or_insert_with(HashMap::new);
            for e in &endpoints {
                *map.entry(e.clone()).or_default() += 1;
            }
        }
        Lease(endpoints)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let mut map = IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = map.as_mut() {
            for e in &self.0 {
                if let Some(n) = map.get_mut(e) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(e);
                    }
                }
            }
        }
    }
}

fn in_use(endpoint: &str) -> bool {
    IN_USE.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|m| m.contains_key(endpoint))
}

/// Before ggml talks to `endpoint` (`IP:PORT`, as registered): a full [`probe`], or, while a
/// model of this process holds the server, a plain connect.
pub(crate) fn ensure_reachable(endpoint: &str) -> Result<(), RpcError> {
    let addr = resolve(endpoint)?;
    if in_use(endpoint) {
        TcpStream::connect_timeout(&addr.into(), DEFAULT_TIMEOUT)
            .map(drop)
            .map_err(|source| RpcError::Unreachable { endpoint: endpoint.to_string(), source })
    } else {
        handshake(addr, DEFAULT_TIMEOUT).map(drop)
    }
}

// --- client ----------------------------------------------------------------------------------

/// A registered RPC server and the devices it lends.
#[derive(Debug, Clone)]
pub struct RemoteServer {
    endpoint: String,
    devices: Vec<Device>,
}

impl RemoteServer {
    /// The endpoint as ggml knows it (`IP:PORT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The server's devices, usable in [`ModelBuilder::devices`](crate::ModelBuilder::devices)
    /// and [`ModelBuilder::override_tensor`](crate::ModelBuilder::override_tensor).
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }
}

fn rpc_backend() -> Result<Backend, RpcError> {
    Backend::by_name(c"RPC").ok_or(RpcError::NotBuilt)
}

/// Probes `endpoint` ([`probe`]) and registers it with ggml, returning its devices. The server
/// is not added to [`crate::devices`]: a model uses it only when asked to
/// ([`ModelBuilder::rpc_servers`](crate::ModelBuilder::rpc_servers) or its devices in
/// [`ModelBuilder::devices`](crate::ModelBuilder::devices)).
///
/// ```no_run
/// let server = llama::rpc::connect("192.168.1.20:50052")?;
/// for dev in server.devices() {
///     println!("{} on {}", dev.name(), server.endpoint());
/// }
/// # Ok::<(), llama::rpc::RpcError>(())
/// ```
pub fn connect(endpoint: &str) -> Result<RemoteServer, RpcError> {
    let backend = rpc_backend()?;
    let addr = resolve(endpoint)?;
    // ggml is handed the address just checked, not the name, so a second lookup cannot lead
    // it somewhere else.
    let resolved = addr.to_string();
    ensure_reachable(&resolved)?;
    let add = backend.proc_address(c"ggml_backend_rpc_add_server");
    if add.is_null() {
        return Err(RpcError::NotBuilt);
    }
    // SAFETY: the RPC registry exports this name with the signature of
    // `ggml_backend_rpc_add_server` (ggml-rpc.h), which `llama_rs_rpc_add_server_t` spells.
    let add: llama_sys::llama_rs_rpc_add_server_t = unsafe { std::mem::transmute(add) };
    let c_endpoint = CString::new(resolved.as_str())
        .map_err(|_| RpcError::InvalidEndpoint { endpoint: endpoint.to_string(), reason: "NUL byte" })?;
    // SAFETY: `add` is ggml's function; the endpoint is NUL-terminated and was just probed, so
    // ggml's connection (and its aborts on failure) meets a live server of our protocol.
    let reg = crate::barrier::guarded(|| unsafe { llama_sys::llama_rs_rpc_add_server(add, c_endpoint.as_ptr()) })
        .map_err(|reason| RpcError::Rejected { endpoint: resolved.clone(), reason })?;
    if reg.is_null() {
        return Err(RpcError::Rejected { endpoint: resolved, reason: "no devices".into() });
    }
    let devices = Backend::from_raw(reg).devices();
    if devices.is_empty() {
        return Err(RpcError::NoDevices { endpoint: resolved });
    }
    Ok(RemoteServer { endpoint: resolved, devices })
}

// --- server ----------------------------------------------------------------------------------

/// Why [`Server::serve`] could not serve, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// This build has no RPC backend.
    #[error("this build has no RPC backend: build with the `rpc` feature")]
    NotBuilt,
    /// A setting is out of range.
    #[error("invalid RPC server setting: {0}")]
    Invalid(&'static str),
    /// The address cannot be listened on (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddrV4,
        /// The socket error.
        source: io::Error,
    },
    /// The cache directory cannot be created.
    #[error("cannot create the RPC cache directory {}: {source}", path.display())]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// ggml stopped serving (it prints why on stderr).
    #[error("the RPC server stopped: {0}")]
    Stopped(String),
}

/// Serves this machine's devices to RPC clients.
///
/// One client at a time, no authentication: see the [module docs](self#security). The default
/// is `127.0.0.1:50052`, every GPU of this machine (else its CPU) and as many CPU threads as
/// there are cores.
///
/// ```no_run
/// use llama::rpc::Server;
/// // Blocks for as long as it serves.
/// let stopped = Server::new().port(50052).threads(4).cache_dir("/var/cache/llama-rpc").serve();
/// eprintln!("{}", stopped.unwrap_err());
/// ```
#[derive(Debug, Clone)]
#[must_use = "a server does nothing until `.serve()`"]
pub struct Server {
    host: Ipv4Addr,
    port: u16,
    threads: usize,
    cache_dir: Option<PathBuf>,
    devices: Option<Vec<Device>>,
}

impl Default for Server {
    fn default() -> Self {
        Server::new()
    }
}

impl Server {
    /// Loopback, [`DEFAULT_PORT`], all cores, the default devices, no cache.
    pub fn new() -> Server {
        Server {
            host: Ipv4Addr::LOCALHOST,
            port: DEFAULT_PORT,
            threads: std::thread::available_parallelism().map_or(4, |n| n.get()),
            cache_dir: None,
            devices: None,
        }
    }

    /// The address to listen on. Anything but loopback exposes the devices, unauthenticated,
    /// to whoever reaches it.
    pub fn host(mut self, host: Ipv4Addr) -> Self {
        self.host = host;
        self
    }

    /// The port to listen on (not 0: clients must know it).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// CPU threads for the CPU device.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Keep received weights here (by hash), so a client that loads the same model again sends
    /// only hashes for large tensors.
    pub fn cache_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cache_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Lend these devices instead of the default (every GPU, else the CPU).
    pub fn devices(mut self, devices: &[Device]) -> Self {
        self.devices = Some(devices.to_vec());
        self
    }

    /// The `IP:PORT` clients connect to.
    pub fn endpoint(&self) -> String {
        SocketAddrV4::new(self.host, self.port).to_string()
    }

    /// Whether the address is reachable from other machines.
    pub fn is_exposed(&self) -> bool {
        !self.host.is_loopback()
    }

    /// Serves until ggml stops (it only does on a socket failure), on this thread. Every
    /// setting is checked first, and the address is bound once here so that a port in use is a
    /// [`ServeError::Bind`] rather than a message on stderr.
    pub fn serve(self) -> Result<Infallible, ServeError> {
        ensure_init();
        let backend = Backend::by_name(c"RPC").ok_or(ServeError::NotBuilt)?;
        let start = backend.proc_address(c"ggml_backend_rpc_start_server");
        if start.is_null() {
            return Err(ServeError::NotBuilt);
        }
        if self.port == 0 {
            return Err(ServeError::Invalid("port 0: clients could not know the port"));
        }
        if self.host.is_broadcast() {
            // ggml parses the host with inet_addr, for which this address means "invalid".
            return Err(ServeError::Invalid("255.255.255.255 cannot be listened on"));
        }
        if self.threads == 0 {
            return Err(ServeError::Invalid("threads must be at least 1"));
        }
        let mut devs: Vec<llama_sys::ggml_backend_dev_t> =
            self.devices.clone().unwrap_or_else(default_server_devices).iter().map(Device::raw).collect();
        if devs.is_empty() {
            return Err(ServeError::Invalid("no device to serve"));
        }
        if self.devices.as_deref().is_some_and(|d| d.iter().any(Device::is_remote)) {
            return Err(ServeError::Invalid("a device of another RPC server cannot be served again"));
        }
        let cache = match &self.cache_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| ServeError::CacheDir { path: dir.clone(), source })?;
                Some(
                    CString::new(dir.as_os_str().as_encoded_bytes())
                        .map_err(|_| ServeError::Invalid("NUL byte in the cache directory"))?,
                )
            }
            None => None,
        };
        let addr = SocketAddrV4::new(self.host, self.port);
        drop(TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?);
        if self.is_exposed() {
            log::warn!(
                target: "llama",
                "RPC server on {addr}: no authentication, anyone who reaches this address controls this process"
            );
        }
        let endpoint = CString::new(addr.to_string()).map_err(|_| ServeError::Invalid("endpoint"))?;
        // SAFETY: the RPC registry exports this name with the signature of
        // `ggml_backend_rpc_start_server` (ggml-rpc.h), which `llama_rs_rpc_start_server_t` spells.
        let start: llama_sys::llama_rs_rpc_start_server_t = unsafe { std::mem::transmute(start) };
        // SAFETY: NUL-terminated strings and a device array that outlive the call (which only
        // returns when serving stops); the devices are registry devices, alive for the program.
        let rc = unsafe {
            llama_sys::llama_rs_rpc_start_server(
                start,
                endpoint.as_ptr(),
                cache.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                self.threads,
                devs.len(),
                devs.as_mut_ptr(),
            )
        };
        let why = crate::barrier::take_exception()
            .filter(|_| rc != 0)
            .unwrap_or_else(|| "a socket or backend failure (ggml printed it on stderr)".into());
        Err(ServeError::Stopped(why))
    }
}

/// Every GPU (discrete, else integrated) of this machine, else its CPU.
fn default_server_devices() -> Vec<Device> {
    let all: Vec<Device> = devices().into_iter().filter(|d| !d.is_remote()).collect();
    for kind in [DeviceKind::Gpu, DeviceKind::IntegratedGpu, DeviceKind::Cpu] {
        let picked: Vec<Device> = all.iter().copied().filter(|d| d.kind() == kind).collect();
        if !picked.is_empty() {
            return picked;
        }
    }
    Vec::new()
}
