//! Tokens/s of a model whose layers all sit on an RPC server over loopback, against the same
//! model run locally: the cost of ggml's RPC transport itself (no network latency), prompt and
//! generation, alternated over several rounds; prints the per-round ratios and their median.
//! The server is this executable started again in a child process, serving with the same
//! thread count as the local context.
//!
//! ```text
//! cargo bench --bench rpc [-- --rounds 5 --prompt 128 --tokens 64 --threads 2]
//! ```

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use llama::Model;
use llama_examples::cli::{at_least, BenchFlag};
use llama_examples::greedy::rust_greedy;

const PROMPT: &str = "The history of the printing press begins in";
/// Set in the child: serve on this port with this many threads.
const SERVE_ENV: &str = "LLAMA_RPC_BENCH_SERVE";

/// Loopback RPC against local: tokens/s ratios for the prompt and the generation.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true)]
struct Args {
    /// Rounds, each running both.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = at_least(1))]
    rounds: usize,
    /// Prompt tokens, decoded in one batch.
    #[arg(long = "prompt", value_name = "N", default_value_t = 128)]
    n_prompt: usize,
    /// Tokens generated greedily.
    #[arg(long = "tokens", value_name = "N", default_value_t = 64)]
    n_gen: usize,
    /// CPU threads, on each side.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least(1))]
    threads: usize,
    #[command(flatten)]
    bench: BenchFlag,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(spec) = std::env::var(SERVE_ENV) {
        let (port, threads) = spec.split_once(',').ok_or("PORT,THREADS")?;
        let never = llama::rpc::Server::new().port(port.parse()?).threads(threads.parse()?).serve()?;
        match never {}
    }
    let Args { rounds, n_prompt, n_gen, threads, .. } = Args::parse();
    let path = llama_examples::models::default_model()?;

    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let _server = Killed(
        Command::new(std::env::current_exe()?)
            .env(SERVE_ENV, format!("{port},{threads}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let endpoint = format!("127.0.0.1:{port}");
    let t0 = Instant::now();
    while let Err(e) = llama::rpc::probe(&endpoint) {
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(format!("the server child never answered: {e}").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let local = Model::builder(&path).repack(false).load()?;
    let remote = Model::builder(&path).repack(false).rpc_servers(&[&endpoint]).load()?;
    println!("SmolLM2 Q4_1, {n_prompt}-token prompt, {n_gen} generated, {threads} threads on each side");
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let l = rust_greedy(&local, PROMPT, n_prompt, n_gen, threads)?;
        let r = rust_greedy(&remote, PROMPT, n_prompt, n_gen, threads)?;
        assert_eq!(l.tokens, r.tokens, "greedy tokens differ between local and RPC");
        pp.push(r.pp_tps / l.pp_tps);
        tg.push(r.tg_tps / l.tg_tps);
        println!(
            "round {round}: prompt {:.0} vs {:.0} t/s ({:.2}x), generation {:.1} vs {:.1} t/s ({:.2}x)",
            r.pp_tps,
            l.pp_tps,
            r.pp_tps / l.pp_tps,
            r.tg_tps,
            l.tg_tps,
            r.tg_tps / l.tg_tps
        );
    }
    println!("median RPC / local: prompt {:.2}x, generation {:.2}x", median(pp), median(tg));
    Ok(())
}
