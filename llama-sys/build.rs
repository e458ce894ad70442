//! Build script: source resolution → feature → cmake defines → link directives → bindings.
//!
//! llama.cpp is never committed to this repository. The pinned tree arrives through cargo as the
//! `llama.cpp/` folder of a registry package named in `vendor/llama-cpp/Cargo.toml` (whose lock
//! file carries the checksum); `LLAMA_CPP_SRC` points at any other checkout instead.

use std::collections::BTreeSet;
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

#[cfg(feature = "bindgen")]
#[path = "bindgen_config.rs"]
mod bindgen_config;

/// Package that carries the pinned llama.cpp sources (used as source only, never built).
const CARRIER: &str = "llama-cpp-sys-2";

fn main() {
    for var in [
        "LLAMA_CPP_SRC",
        "LLAMA_SYS_AMX",
        "RDMA_LIB_DIR",
        "CUDA_PATH",
        "CUDAToolkit_ROOT",
        "LLAMA_CUDA_ARCHITECTURES",
        "CMAKE_CUDA_ARCHITECTURES",
        "CUDAFLAGS",
        "LLAMA_SYS_CONFIGURE_ONLY",
        "VULKAN_SDK",
        "ROCM_PATH",
        "HIP_PATH",
        "CARGO_NET_OFFLINE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=bindgen_config.rs");

    println!("cargo:rerun-if-env-changed=DOCS_RS");
    if env::var_os("DOCS_RS").is_some() {
        // docs.rs only documents, offline: no sources to resolve, nothing to build or link.
        println!("cargo:rustc-env=LLAMA_CPP_SRC_DIR=(not built: documentation only)");
        println!("cargo:rustc-env=LLAMA_SYS_BACKEND_DIR=(not built: documentation only)");
        return;
    }
    let src = llama_cpp_source().unwrap_or_else(|e| fail(&e));
    let features = Features::from_env();
    if let Err(e) = preflight(&features) {
        fail(&e);
    }

    println!("cargo:rustc-env=LLAMA_CPP_SRC_DIR={}", src.display());
    println!("cargo:include={}", src.join("include").display());
    println!("cargo:ggml_include={}", src.join("ggml").join("include").display());
    println!("cargo:mtmd_include={}", src.join("tools").join("mtmd").display());
    // trybuild's compile-fail checks (`--cfg trybuild`) only type-check and never link: building
    // llama.cpp for them would repeat the real build in trybuild's own target directory. Miri
    // (`cargo miri test`, which sets `CARGO_CFG_MIRI`) interprets Rust and cannot call C at all:
    // its runs cover the pure-Rust modules only.
    if env::var_os("CARGO_CFG_TRYBUILD").is_some() || env::var_os("CARGO_CFG_MIRI").is_some() {
        return;
    }

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cuda = features.cuda.then(|| cuda_toolkit(&out).unwrap_or_else(|e| fail(&e)));
    let install = build(&src, &features, cuda.as_ref());
    if env::var_os("LLAMA_SYS_CONFIGURE_ONLY").is_some() {
        // A toolchain check in seconds (`.ci/cuda --check`): cmake has found the compilers and
        // libraries; nothing is compiled, so nothing can be linked either.
        println!(
            "cargo:warning=llama-sys: LLAMA_SYS_CONFIGURE_ONLY: llama.cpp configured in {}, not built",
            install.join("build").display()
        );
        return;
    }
    // The shim uses llama.cpp (and common), so its archive must precede theirs on the link line.
    build_shim(&src, &features);
    let lib_dir = install.join("lib");
    if features.mtmd {
        link_mtmd(&install, &features);
    }
    if features.common {
        link_common(&install, &features);
    }
    link(&lib_dir, &features, cuda.as_ref());
    if let Some(cuda) = &cuda {
        // The toolkit's runtime libraries are rarely on the loader's path (never for pip wheels):
        // this crate's tests get an rpath, dependents read `DEP_LLAMA_CUDA_LIB_DIR` for theirs.
        for dir in &cuda.lib_dirs {
            println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", dir.display());
        }
        let dirs = env::join_paths(&cuda.lib_dirs).unwrap_or_else(|e| fail(&format!("CUDA library path: {e}")));
        println!("cargo:cuda_lib_dir={}", dirs.to_string_lossy());
    }
    if features.dynamic_backends {
        prune_backend_modules(&backend_dir(&install));
        // The safe crate loads the modules from here at run time (`LLAMA_BACKEND_DIR` overrides).
        println!("cargo:rustc-env=LLAMA_SYS_BACKEND_DIR={}", backend_dir(&install).display());
        println!("cargo:backend_dir={}", backend_dir(&install).display());
    }

    // More metadata for dependents (`DEP_LLAMA_*`; the include paths are above).
    println!("cargo:lib_dir={}", lib_dir.display());
    println!("cargo:shared={}", u8::from(features.shared));

    #[cfg(feature = "bindgen")]
    {
        let bindings =
            bindgen_config::builder(&src).generate().unwrap_or_else(|e| fail(&format!("bindgen failed: {e}")));
        bindings
            .write_to_file(out.join("bindings.rs"))
            .unwrap_or_else(|e| fail(&format!("cannot write bindings: {e}")));
    }
    #[cfg(not(feature = "bindgen"))]
    let _ = out;
}

/// Stops the build with one readable message instead of a panic backtrace.
fn fail(msg: &str) -> ! {
    eprintln!("\nllama-sys: {msg}\n");
    println!("cargo:warning=llama-sys: {}", msg.lines().next().unwrap_or(msg));
    std::process::exit(1);
}

/// Finds the llama.cpp tree: `LLAMA_CPP_SRC`, else the pinned carrier package resolved by cargo.
fn llama_cpp_source() -> Result<PathBuf, String> {
    if let Some(dir) = env::var_os("LLAMA_CPP_SRC") {
        let dir = PathBuf::from(dir);
        return check_tree(dir, "LLAMA_CPP_SRC");
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let pin = manifest_dir.join("../vendor/llama-cpp/Cargo.toml");
    println!("cargo:rerun-if-changed={}", pin.display());
    println!("cargo:rerun-if-changed={}", pin.with_file_name("Cargo.lock").display());

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["metadata", "--format-version", "1", "--locked", "--manifest-path"])
        .arg(&pin)
        // The outer cargo's target dir and flags are not meant for this nested call.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS");
    if env::var("CARGO_NET_OFFLINE").is_ok_and(|v| v == "true" || v == "1") {
        cmd.arg("--offline");
    }
    let output = cmd.output().map_err(|e| format!("cannot run cargo metadata for the llama.cpp pin: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo could not resolve the pinned llama.cpp ({}): {}\n\
             Set LLAMA_CPP_SRC=/path/to/llama.cpp to build from another tree.",
            pin.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let json = String::from_utf8_lossy(&output.stdout);
    let manifest = carrier_manifest_path(&json).ok_or_else(|| format!("cargo metadata did not list {CARRIER}"))?;
    let dir =
        Path::new(&manifest).parent().map(|p| p.join("llama.cpp")).ok_or("carrier manifest path has no parent")?;
    check_tree(dir, CARRIER)
}

/// Picks the carrier's `manifest_path` out of `cargo metadata` JSON without a JSON dependency:
/// registry packages are unpacked into `<name>-<version>/`, which no other package matches.
fn carrier_manifest_path(json: &str) -> Option<String> {
    let key = "\"manifest_path\":\"";
    json.match_indices(key)
        .filter_map(|(at, _)| {
            let rest = &json[at + key.len()..];
            rest.find('"').map(|end| rest[..end].replace("\\\\", "\\"))
        })
        .find(|path| {
            Path::new(path)
                .parent()
                .and_then(Path::file_name)
                .and_then(|d| d.to_str())
                .and_then(|d| d.strip_prefix(CARRIER))
                .is_some_and(|v| v.starts_with('-') && v[1..].starts_with(|c: char| c.is_ascii_digit()))
        })
}

fn check_tree(dir: PathBuf, origin: &str) -> Result<PathBuf, String> {
    if dir.join("include/llama.h").is_file() && dir.join("ggml/CMakeLists.txt").is_file() {
        println!("cargo:rerun-if-changed={}", dir.join("include/llama.h").display());
        Ok(dir)
    } else {
        Err(format!(
            "{} (from {origin}) is not a llama.cpp tree: include/llama.h or ggml/CMakeLists.txt missing",
            dir.display()
        ))
    }
}

/// The Cargo features that change the C++ build.
struct Features {
    native: bool,
    openmp: bool,
    cuda: bool,
    metal: bool,
    vulkan: bool,
    hip: bool,
    rpc: bool,
    rpc_rdma: bool,
    shared: bool,
    dynamic_backends: bool,
    asan: bool,
    /// Upstream's `common/` library: chat templates with tools, tool-call parsers.
    common: bool,
    /// Upstream's `tools/mtmd`: vision and audio projectors.
    mtmd: bool,
    apple: bool,
}

impl Features {
    fn from_env() -> Self {
        let on = |name: &str| env::var_os(format!("CARGO_FEATURE_{name}")).is_some();
        let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
        let apple = os == "macos" || os == "ios";
        Features {
            native: on("NATIVE"),
            openmp: on("OPENMP"),
            cuda: on("CUDA"),
            // llama.cpp turns Metal on by default on Apple targets; so do we.
            metal: on("METAL") || apple,
            vulkan: on("VULKAN"),
            hip: on("HIP"),
            rpc: on("RPC") || on("RPC_RDMA"),
            rpc_rdma: on("RPC_RDMA"),
            shared: on("SHARED") || on("DYNAMIC_BACKENDS"),
            dynamic_backends: on("DYNAMIC_BACKENDS"),
            asan: on("ASAN"),
            common: on("COMMON"),
            mtmd: on("MTMD"),
            apple,
        }
    }
}

/// The one place where Cargo features become cmake defines.
fn cmake_defines(f: &Features) -> Vec<(&'static str, &'static str)> {
    let flag = |b: bool| if b { "ON" } else { "OFF" };
    // Backend modules pick their CPU variant at run time by probing the CPU; a native build
    // cannot (ggml refuses GGML_NATIVE with GGML_BACKEND_DL), so `native` yields to them.
    let native = f.native && !f.dynamic_backends;
    vec![
        // Only the libraries we link: no tools, tests, examples or server; `common` (chat
        // templates with tools, tool-call parsers) only with the feature, and without
        // subprocess spawning, HTTPS or llguidance, which only its downloader and server use.
        ("LLAMA_BUILD_COMMON", flag(f.common)),
        // The library alone (tools stay off); no video, which would spawn ffmpeg per request.
        ("LLAMA_BUILD_MTMD", flag(f.mtmd)),
        ("MTMD_VIDEO", "OFF"),
        ("LLAMA_SUBPROCESS", "OFF"),
        ("LLAMA_LLGUIDANCE", "OFF"),
        ("LLAMA_BUILD_TESTS", "OFF"),
        ("LLAMA_BUILD_TOOLS", "OFF"),
        ("LLAMA_BUILD_EXAMPLES", "OFF"),
        ("LLAMA_BUILD_SERVER", "OFF"),
        ("LLAMA_BUILD_APP", "OFF"),
        ("LLAMA_OPENSSL", "OFF"),
        ("LLAMA_ALL_WARNINGS", "OFF"),
        ("GGML_ALL_WARNINGS", "OFF"),
        ("CMAKE_INSTALL_LIBDIR", "lib"),
        ("GGML_NATIVE", flag(native)),
        ("GGML_CPU_ALL_VARIANTS", flag(f.dynamic_backends)),
        ("GGML_OPENMP", flag(f.openmp)),
        ("GGML_CUDA", flag(f.cuda)),
        ("GGML_METAL", flag(f.metal)),
        ("GGML_METAL_EMBED_LIBRARY", flag(f.metal)),
        ("GGML_VULKAN", flag(f.vulkan)),
        ("GGML_HIP", flag(f.hip)),
        ("GGML_RPC", flag(f.rpc)),
        // ggml turns RDMA on by itself whenever libibverbs is installed, and a static link then
        // misses its symbols: RDMA is opt-in (`rpc-rdma`), which also links the library.
        ("GGML_RPC_RDMA", flag(f.rpc_rdma)),
        ("BUILD_SHARED_LIBS", flag(f.shared)),
        ("GGML_BACKEND_DL", flag(f.dynamic_backends)),
        ("LLAMA_SANITIZE_ADDRESS", flag(f.asan)),
        ("GGML_SANITIZE_ADDRESS", flag(f.asan)),
    ]
}

/// Fails early, in one sentence, when a GPU feature's toolkit is absent; cmake's own failure
/// would be a page of configure output.
fn preflight(f: &Features) -> Result<(), String> {
    if f.cuda && find_nvcc().is_none() {
        return Err("feature `cuda` needs the CUDA toolkit, but `nvcc` was not found \
             (looked in $CUDA_PATH/bin, $CUDAToolkit_ROOT/bin, /usr/local/cuda/bin and PATH). \
             Install the CUDA toolkit, or NVIDIA's pip packages nvidia-cuda-nvcc, nvidia-cublas and \
             nvidia-cuda-cccl with CUDA_PATH set to their `nvidia/cu13` folder, \
             or build without `--features cuda`."
            .into());
    }
    // Upstream compiles a native build for the GPUs it sees, and cmake stops with a page of
    // errors when it sees none.
    let native = f.native && !f.dynamic_backends;
    if f.cuda && native && cuda_architectures().is_none() && !nvidia_gpu_visible() {
        return Err("feature `cuda` with `native` compiles for this machine's GPUs, and none is visible: \
             set LLAMA_CUDA_ARCHITECTURES (e.g. \"80;90\" for A100 and H100/H200) \
             or build without `native`."
            .into());
    }
    if f.vulkan {
        vulkan_preflight()?;
    }
    if f.rpc_rdma && env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return Err("feature `rpc-rdma` needs Linux (libibverbs); build with `rpc` alone elsewhere.".into());
    }
    if f.rpc_rdma && find_rdma_lib().is_none() {
        return Err("feature `rpc-rdma` needs libibverbs, but libibverbs.so was not found \
             (looked in $RDMA_LIB_DIR and the system library directories). \
             On Debian install `libibverbs-dev`, or build with `rpc` alone (plain TCP)."
            .into());
    }
    if f.hip && find_tool("hipcc", &["ROCM_PATH", "HIP_PATH"], "/opt/rocm").is_none() {
        return Err("feature `hip` needs ROCm, but `hipcc` was not found \
             (looked in $ROCM_PATH/bin, $HIP_PATH/bin, /opt/rocm/bin and PATH). \
             Install ROCm or build without `--features hip`."
            .into());
    }
    if f.metal && !f.apple {
        return Err("feature `metal` needs an Apple target (macOS or iOS).".into());
    }
    Ok(())
}

/// Looks for `tool` under `$VAR/bin` for each var, under `default/bin`, then on PATH.
fn find_tool(tool: &str, vars: &[&str], default: &str) -> Option<PathBuf> {
    let roots =
        vars.iter().filter_map(|v| env::var_os(v).map(PathBuf::from)).chain(std::iter::once(PathBuf::from(default)));
    let path_dirs = env::var_os("PATH").map(|p| env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    roots.map(|r| r.join("bin")).chain(path_dirs).map(|d| d.join(tool)).find(|p| p.is_file())
}

/// Where `CUDA_PATH` and the other usual places put nvcc.
fn find_nvcc() -> Option<PathBuf> {
    find_tool("nvcc", &["CUDA_PATH", "CUDAToolkit_ROOT"], "/usr/local/cuda")
}

/// The CUDA architectures to compile for, as cmake spells them ("80;90", "90a", "native"):
/// `LLAMA_CUDA_ARCHITECTURES`, else cmake's own `CMAKE_CUDA_ARCHITECTURES` from the environment.
/// Unset: upstream's choice (this machine's GPUs for `native`, else a portable list of about
/// seven, which takes many times longer to compile).
fn cuda_architectures() -> Option<String> {
    ["LLAMA_CUDA_ARCHITECTURES", "CMAKE_CUDA_ARCHITECTURES"]
        .iter()
        .filter_map(|v| env::var(v).ok())
        .map(|a| a.trim().to_string())
        .find(|a| !a.is_empty())
}

/// Whether the NVIDIA driver exposes a GPU here (`/dev/nvidia0`, ...). Elsewhere than Linux
/// this is not known, and cmake decides.
fn nvidia_gpu_visible() -> bool {
    if env::consts::OS != "linux" {
        return true;
    }
    std::fs::read_dir("/dev").is_ok_and(|rd| {
        rd.filter_map(|e| e.ok()).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("nvidia").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}

/// The CUDA toolkit of a `cuda` build, resolved once so that cmake and the final link use the
/// same files.
struct Cuda {
    nvcc: PathBuf,
    /// The toolkit root (nvcc's `bin/..`).
    root: PathBuf,
    /// Where the runtime libraries are (`lib64`; `lib` in NVIDIA's pip wheels): what a program
    /// needs on its rpath or `LD_LIBRARY_PATH` at run time.
    lib_dirs: Vec<PathBuf>,
    /// `OUT_DIR/cuda`: `libcudart.so`, `libcublas.so`, `libcublasLt.so` and `libcuda.so` under
    /// the names the linker looks for, as links to the toolkit's files (or to a generated stub).
    link_dir: PathBuf,
}

/// Libraries ggml-cuda links besides the driver, by link name.
const CUDA_LIBS: [&str; 3] = ["cudart", "cublas", "cublasLt"];

/// Finds nvcc and the libraries of a system toolkit (`/usr/local/cuda`, Debian's `/usr`) or of
/// NVIDIA's pip wheels (`site-packages/nvidia/cu13`: `bin/nvcc`, `lib/libcudart.so.13`, ...).
/// Wheels ship the libraries under versioned names only, and no driver stub: the link names are
/// made in `OUT_DIR/cuda`, the stub is generated (see [`cuda_driver_stub`]); the toolkit itself
/// is never written to.
fn cuda_toolkit(out: &Path) -> Result<Cuda, String> {
    let nvcc = find_nvcc().ok_or("feature `cuda`: nvcc not found")?;
    let root = nvcc.parent().and_then(Path::parent).ok_or("feature `cuda`: nvcc has no toolkit root")?.to_path_buf();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let dirs: Vec<PathBuf> =
        ["lib64".into(), "lib".into(), format!("lib/{arch}-linux-gnu"), format!("targets/{arch}-linux/lib")]
            .iter()
            .map(|d| root.join(d))
            .filter(|d| d.is_dir())
            .collect();
    let link_dir = out.join("cuda");
    std::fs::create_dir_all(&link_dir).map_err(|e| format!("cannot create {}: {e}", link_dir.display()))?;
    forget_other_toolkit(out, &nvcc);
    let mut lib_dirs: Vec<PathBuf> = Vec::new();
    for name in CUDA_LIBS {
        let lib = dirs.iter().find_map(|d| shared_library(d, name)).ok_or_else(|| {
            format!(
                "feature `cuda`: lib{name}.so not found in the toolkit of {} (looked in lib64 and lib under {}); \
                 with pip, install {}",
                nvcc.display(),
                root.display(),
                if name == "cudart" { "nvidia-cuda-runtime" } else { "nvidia-cublas" }
            )
        })?;
        let dir = lib.parent().map(Path::to_path_buf).unwrap_or_default();
        if !lib_dirs.contains(&dir) {
            lib_dirs.push(dir);
        }
        link_as(&lib, &link_dir.join(format!("lib{name}.so")))?;
    }
    let driver = match driver_library(&root, &arch) {
        Some(lib) => lib,
        None => cuda_driver_stub(&root, &out.join("cuda-stub"))?,
    };
    link_as(&driver, &link_dir.join("libcuda.so"))?;
    Ok(Cuda { nvcc, root, lib_dirs, link_dir })
}

/// cmake keeps the toolkit it first found in its cache (FindCUDAToolkit's nvcc, include and bin
/// folders), whatever `CUDAToolkit_ROOT` and `CMAKE_CUDA_COMPILER` say later: when that cache
/// names another nvcc (a toolkit moved, or a new version installed beside), the build folder is
/// started afresh.
fn forget_other_toolkit(out: &Path, nvcc: &Path) {
    let build = out.join("build");
    let Ok(cache) = std::fs::read_to_string(build.join("CMakeCache.txt")) else { return };
    let cached =
        cache.lines().find_map(|l| l.strip_prefix("CUDAToolkit_NVCC_EXECUTABLE:").and_then(|l| l.split_once('=')));
    // Compared as files, not spellings: a spurious mismatch would recompile all of ggml-cuda.
    let same = |path: &str| std::fs::canonicalize(path).ok() == std::fs::canonicalize(nvcc).ok();
    if cached.is_some_and(|(_, path)| !same(path)) {
        let _ = std::fs::remove_dir_all(build);
    }
}

/// `lib<name>.so` in `dir`, else its versioned file with the shortest name (`libcudart.so.13`
/// before `libcudart.so.13.0.96`), as pip wheels have it.
fn shared_library(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = format!("lib{name}.so");
    if dir.join(&plain).exists() {
        return Some(dir.join(plain));
    }
    let versioned = format!("{plain}.");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.strip_prefix(&versioned).is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())))
        .min_by_key(|n| (n.len(), n.clone()))
        .map(|n| dir.join(n))
}

/// The driver library to link against: the toolkit's stub, else an installed driver's.
/// Linking only records `libcuda.so.1`; the driver of the machine that runs the program
/// provides it.
fn driver_library(root: &Path, arch: &str) -> Option<PathBuf> {
    let stubs = ["lib64/stubs".to_string(), "lib/stubs".into(), format!("targets/{arch}-linux/lib/stubs")]
        .map(|d| root.join(d));
    let system = [format!("/usr/lib/{arch}-linux-gnu"), "/usr/lib64".into(), "/usr/lib".into()].map(PathBuf::from);
    stubs
        .iter()
        .chain(&system)
        .find_map(|d| ["libcuda.so", "libcuda.so.1"].iter().map(|n| d.join(n)).find(|p| p.exists()))
}

/// What NVIDIA's own stub answers to every call: `CUDA_ERROR_STUB_LIBRARY`.
const CUDA_ERROR_STUB_LIBRARY: u32 = 34;

/// Builds a link-time stand-in for the driver library where neither the toolkit nor the system
/// has one (NVIDIA's pip wheels ship none, and a build machine often has no driver): every
/// function the toolkit's `cuda.h` declares, each returning `CUDA_ERROR_STUB_LIBRARY`, as
/// `libcuda.so` with the driver's soname `libcuda.so.1`. Programs linked against it load the
/// real driver at run time; the stub itself is never on any run-time path (and is not named
/// `libcuda.so.1`, the file the loader looks for). Generated from the header at hand, so it
/// follows the toolkit's version.
fn cuda_driver_stub(root: &Path, dir: &Path) -> Result<PathBuf, String> {
    let header = root.join("include").join("cuda.h");
    let compiler = cc::Build::new().cargo_metadata(false).get_compiler();
    let preprocessed = compiler
        .to_command()
        .arg("-E")
        .arg(&header)
        .output()
        .map_err(|e| format!("cannot run the C compiler on {}: {e}", header.display()))?;
    let names = driver_api_names(&String::from_utf8_lossy(&preprocessed.stdout));
    if !preprocessed.status.success() || names.is_empty() {
        return Err(format!(
            "feature `cuda`: no libcuda.so to link (no driver installed, none in the toolkit's lib64/stubs), \
             and no stub could be made from {}: {}",
            header.display(),
            String::from_utf8_lossy(&preprocessed.stderr).lines().next().unwrap_or("no functions found")
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut source = String::from("/* Generated by llama-sys's build script from cuda.h: link-time stub. */\n");
    for name in &names {
        source.push_str(&format!("int {name}(void) {{ return {CUDA_ERROR_STUB_LIBRARY}; }}\n"));
    }
    let (c_file, lib) = (dir.join("libcuda_stub.c"), dir.join("libcuda.so"));
    std::fs::write(&c_file, source).map_err(|e| format!("cannot write {}: {e}", c_file.display()))?;
    let status = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(&lib)
        .arg(&c_file)
        .status()
        .map_err(|e| format!("cannot run the C compiler for the libcuda stub: {e}"))?;
    if !status.success() {
        return Err(format!("feature `cuda`: building the libcuda stub {} failed", lib.display()));
    }
    Ok(lib)
}

/// The functions a preprocessed `cuda.h` declares: identifiers `cu` + upper-case letter that a
/// `(` follows. Preprocessed, because cuda.h renames many calls by macro (`cuMemGetInfo` →
/// `cuMemGetInfo_v2`) and compiled code refers to the new names.
fn driver_api_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        let word = &text[start..i];
        let api = word.len() > 2 && word.starts_with("cu") && word.as_bytes()[2].is_ascii_uppercase();
        if api && text[i..].trim_start().starts_with('(') {
            names.insert(word.to_string());
        }
    }
    names
}

/// Makes `link` point at `target` (a symlink; a copy where there are none), replacing what was
/// there: a later build may resolve another toolkit.
fn link_as(target: &Path, link: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(link);
    #[cfg(unix)]
    let made = std::os::unix::fs::symlink(target, link);
    #[cfg(not(unix))]
    let made = std::fs::copy(target, link).map(drop);
    made.map_err(|e| format!("cannot link {} to {}: {e}", link.display(), target.display()))
}

/// First Vulkan header release that declares `VK_EXT_layer_settings`, which the pinned
/// ggml-vulkan uses unconditionally (`vk::LayerSettingsCreateInfoEXT`).
const VULKAN_MIN_HEADER: u32 = 272;

/// The Vulkan backend needs `glslc`, the Vulkan headers at [`VULKAN_MIN_HEADER`] or newer, and
/// the SPIR-V headers; each missing piece is named in one sentence instead of a compile error
/// deep inside ggml-vulkan.cpp.
fn vulkan_preflight() -> Result<(), String> {
    let include_roots: Vec<PathBuf> = env::var_os("VULKAN_SDK")
        .map(|d| PathBuf::from(d).join("include"))
        .into_iter()
        .chain(["/usr/local/include", "/usr/include"].map(PathBuf::from))
        .collect();
    let advice = "install the Vulkan SDK and set VULKAN_SDK, or build without `--features vulkan`";
    if find_tool("glslc", &["VULKAN_SDK"], "/usr").is_none() {
        return Err(format!("feature `vulkan` needs the shader compiler `glslc`, which was not found ({advice})."));
    }
    let Some(core) = include_roots.iter().map(|r| r.join("vulkan/vulkan_core.h")).find(|p| p.is_file()) else {
        return Err(format!("feature `vulkan` needs the Vulkan headers (vulkan/vulkan_core.h not found; {advice})."));
    };
    let text = std::fs::read_to_string(&core).map_err(|e| format!("cannot read {}: {e}", core.display()))?;
    match vulkan_header_version(&text) {
        // The patch number keeps counting across minor versions (1.3.296 was followed by 1.4.303).
        Some((_, _, patch)) if patch >= VULKAN_MIN_HEADER => {}
        found => {
            return Err(format!(
                "feature `vulkan` needs Vulkan headers 1.3.{VULKAN_MIN_HEADER} or newer (VK_EXT_layer_settings), \
                 but {} is {}; {advice}.",
                core.display(),
                found.map_or("of an unknown version".into(), |(a, b, c)| format!("version {a}.{b}.{c}"))
            ));
        }
    }
    let spirv = ["spirv/unified1/spirv.hpp", "spirv-headers/spirv.hpp", "spirv.hpp"];
    if !include_roots.iter().any(|r| spirv.iter().any(|h| r.join(h).is_file())) {
        return Err(format!(
            "feature `vulkan` needs the SPIR-V headers (spirv/unified1/spirv.hpp not found; on Debian \
             `spirv-headers`; or {advice})."
        ));
    }
    Ok(())
}

/// The header version `vulkan_core.h` declares: `VK_HEADER_VERSION` is the patch number, and
/// `VK_HEADER_VERSION_COMPLETE` (`VK_MAKE_API_VERSION(0, major, minor, VK_HEADER_VERSION)`) holds
/// the rest.
fn vulkan_header_version(header: &str) -> Option<(u32, u32, u32)> {
    let define = |name: &str| header.lines().find_map(|l| l.trim().strip_prefix(name).map(str::trim));
    let patch = define("#define VK_HEADER_VERSION ")?.parse().ok()?;
    let complete = define("#define VK_HEADER_VERSION_COMPLETE ")?;
    let args = complete.split_once('(')?.1.split(',').map(str::trim).collect::<Vec<_>>();
    match args.as_slice() {
        [_, major, minor, _] => Some((major.parse().ok()?, minor.parse().ok()?, patch)),
        _ => None,
    }
}

/// libibverbs, for the RPC backend's RDMA transport.
fn find_rdma_lib() -> Option<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    env::var_os("RDMA_LIB_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [format!("/usr/lib/{arch}-linux-gnu"), "/usr/lib64".into(), "/usr/lib".into(), "/usr/local/lib".into()]
                .map(PathBuf::from),
        )
        .find(|d| d.join("libibverbs.so").exists())
}

/// Where the backend modules of a `dynamic-backends` build are installed (and looked up).
fn backend_dir(install: &Path) -> PathBuf {
    install.join("lib").join("ggml-backends")
}

/// Removes the CPU variant whose AMX kernels trap where a hypervisor advertises AMX without
/// enabling it (see `build`), unless `LLAMA_SYS_AMX=1`: the loader then picks the next best.
fn prune_backend_modules(dir: &Path) {
    if env::var_os("LLAMA_SYS_AMX").is_some() {
        return;
    }
    let _ = std::fs::remove_file(dir.join("libggml-cpu-sapphirerapids.so"));
}

/// Configures, builds and installs llama.cpp into `OUT_DIR`; returns the install prefix.
fn build(src: &Path, f: &Features, cuda: Option<&Cuda>) -> PathBuf {
    let mut cfg = cmake::Config::new(src);
    // Release even under cargo's debug profile: a Debug ggml is many times slower.
    cfg.profile("Release");
    for (key, value) in cmake_defines(f) {
        cfg.define(key, value);
    }
    // A native build compiles ggml's AMX kernels whenever the build machine's CPU advertises
    // AMX, and they trap (SIGILL on `tilezero`, seen on this project's 2-core VMs) where the
    // hypervisor advertises AMX without enabling it: every multi-token decode of a Q4_1 model
    // killed the process. AVX-512 kernels are used instead; `LLAMA_SYS_AMX=1` keeps AMX.
    let x86 = env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64");
    if f.native && x86 && env::var_os("LLAMA_SYS_AMX").is_none() {
        for flag in ["-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"] {
            cfg.cflag(flag);
            cfg.cxxflag(flag);
        }
    }
    if let Some(cuda) = cuda {
        cuda_defines(&mut cfg, cuda);
    }
    if f.shared {
        // Let the installed libraries find each other next to themselves (the backend modules
        // one directory down), and libggml-cuda the toolkit's runtime libraries.
        let mut rpath = vec![PathBuf::from("$ORIGIN"), PathBuf::from("$ORIGIN/..")];
        rpath.extend(cuda.iter().flat_map(|c| c.lib_dirs.iter().cloned()));
        cfg.define("CMAKE_INSTALL_RPATH", env::join_paths(rpath).unwrap_or_default());
    }
    if env::var_os("LLAMA_SYS_CONFIGURE_ONLY").is_some() {
        // cmake-rs always runs a build after configuring: `help` (Makefiles) compiles nothing.
        cfg.build_target("help");
    }
    if f.dynamic_backends {
        // Installs the modules there (instead of `bin/`, where nothing looks) and bakes the
        // directory into libggml for C callers of `ggml_backend_load_all`.
        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        cfg.define("GGML_BACKEND_DIR", backend_dir(&out));
    }
    cfg.build()
}

/// Points cmake at the toolkit [`cuda_toolkit`] resolved: its nvcc (not whichever is first on
/// PATH), the architectures asked for, and FindCUDAToolkit's library variables set to the files
/// the final link uses.
fn cuda_defines(cfg: &mut cmake::Config, cuda: &Cuda) {
    cfg.define("CMAKE_CUDA_COMPILER", &cuda.nvcc);
    cfg.define("CUDAToolkit_ROOT", &cuda.root);
    for (var, lib) in [
        ("CUDA_CUDART", "cudart"),
        ("CUDA_cublas_LIBRARY", "cublas"),
        ("CUDA_cublasLt_LIBRARY", "cublasLt"),
        ("CUDA_cuda_driver_LIBRARY", "cuda"),
    ] {
        cfg.define(var, cuda.link_dir.join(format!("lib{lib}.so")));
    }
    if let Some(archs) = cuda_architectures() {
        cfg.define("CMAKE_CUDA_ARCHITECTURES", archs);
    }
    // nvcc links with `-L<root>/lib64` only (its nvcc.profile), and cmake's compiler check links
    // a test program through it: a wheel toolkit has no lib64, so name its `lib`.
    if !cuda.root.join("lib64").is_dir() {
        let mut flags = env::var("CUDAFLAGS").unwrap_or_default();
        for dir in &cuda.lib_dirs {
            flags.push_str(&format!(" -L{}", dir.display()));
        }
        cfg.define("CMAKE_CUDA_FLAGS", flags.trim());
    }
}

/// Compiles the exception barrier (`shim/shim.cpp`) that wraps throwing llama.cpp calls, with
/// `common` the chat shim (`shim/chat.cpp`) over common's chat pipeline, and with `mtmd` the
/// barrier for the multimodal library (`shim/mtmd.cpp`).
fn build_shim(src: &Path, f: &Features) {
    for file in ["shim/shim.cpp", "shim/barrier.h", "shim/chat.cpp", "shim/mtmd.cpp"] {
        println!("cargo:rerun-if-changed={file}");
    }
    let mut build = cc::Build::new();
    if f.asan {
        build.flag("-fsanitize=address").flag("-fno-omit-frame-pointer");
    }
    build.cpp(true).std("c++17").file("shim/shim.cpp").include(src.join("include")).include(src.join("ggml/include"));
    if f.common {
        // common's headers define static helpers that not every includer uses.
        build.file("shim/chat.cpp").include(src.join("common")).include(src.join("vendor"));
        build.flag_if_supported("-Wno-unused-function");
    }
    if f.mtmd {
        build.file("shim/mtmd.cpp").include(src.join("tools/mtmd")).include(src.join("vendor"));
    }
    build.opt_level(2).compile("llama_rs_shim");
}

/// Link directives for mtmd and its one static helper that upstream does not install
/// (`vendor-hash`: the SHA-256 that names decoded media). Read from the build tree, as for
/// common: upstream installs mtmd's shared library and headers only.
fn link_mtmd(install: &Path, f: &Features) {
    let build = install.join("build");
    for dir in ["tools/mtmd", "vendor/hash"] {
        println!("cargo:rustc-link-search=native={}", build.join(dir).display());
    }
    let kind = if f.shared { "dylib" } else { "static" };
    println!("cargo:rustc-link-lib={kind}=mtmd");
    println!("cargo:rustc-link-lib=static=vendor-hash");
}

/// Link directives for common and the two static helpers it needs that upstream does not
/// install (`llama-common-base`: build info; `cpp-httplib`: its downloader, never called here
/// but referenced by objects the linker may pull in).
fn link_common(install: &Path, f: &Features) {
    let build = install.join("build");
    for dir in ["common", "vendor/cpp-httplib"] {
        println!("cargo:rustc-link-search=native={}", build.join(dir).display());
    }
    let kind = if f.shared { "dylib" } else { "static" };
    println!("cargo:rustc-link-lib={kind}=llama-common");
    println!("cargo:rustc-link-lib=static=llama-common-base");
    println!("cargo:rustc-link-lib=static=cpp-httplib");
}

/// Emits link directives for every library the install produced.
fn link(lib_dir: &Path, f: &Features, cuda: Option<&Cuda>) {
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    let kind = if f.shared { "dylib" } else { "static" };
    // Order matters for static archives: users before their dependencies.
    let mut libs = vec!["llama".to_string(), "ggml".to_string()];
    if !f.dynamic_backends {
        let mut backends: Vec<String> = std::fs::read_dir(lib_dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter_map(|n| backend_name(&n))
                    .collect()
            })
            .unwrap_or_default();
        backends.sort();
        backends.dedup();
        libs.extend(backends);
    }
    libs.push("ggml-base".into());
    for lib in libs {
        println!("cargo:rustc-link-lib={kind}={lib}");
    }
    if f.shared {
        return;
    }

    let target = env::var("TARGET").unwrap_or_default();
    let cxx = if target.contains("apple") || target.contains("freebsd") { "c++" } else { "stdc++" };
    println!("cargo:rustc-link-lib=dylib={cxx}");
    if f.openmp {
        let omp = if target.contains("apple") { "omp" } else { "gomp" };
        println!("cargo:rustc-link-lib=dylib={omp}");
    }
    if f.metal {
        for fw in ["Foundation", "Metal", "MetalKit", "Accelerate"] {
            println!("cargo:rustc-link-lib=framework={fw}");
        }
    }
    if let Some(cuda) = cuda {
        // One directory with every CUDA library under its link name (see `Cuda::link_dir`).
        println!("cargo:rustc-link-search=native={}", cuda.link_dir.display());
        for lib in CUDA_LIBS.iter().chain(&["cuda"]) {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
    if f.vulkan {
        println!("cargo:rustc-link-lib=dylib=vulkan");
    }
    if f.rpc_rdma {
        if let Some(dir) = find_rdma_lib() {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
        println!("cargo:rustc-link-lib=dylib=ibverbs");
    }
    if f.hip {
        for lib in ["hipblas", "rocblas", "amdhip64"] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
    if f.asan {
        println!("cargo:rustc-link-lib=dylib=asan");
    }
}

/// `libggml-cpu.a` → `ggml-cpu`; ignores `libggml.a` and `libggml-base.a`, handled explicitly.
fn backend_name(file: &str) -> Option<String> {
    let stem = file
        .strip_prefix("lib")
        .and_then(|s| s.strip_suffix(".a").or_else(|| s.strip_suffix(".so")).or_else(|| s.strip_suffix(".dylib")))?;
    (stem.starts_with("ggml-") && stem != "ggml-base").then(|| stem.to_string())
}
