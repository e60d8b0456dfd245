//! `qkd`: the command-line front end of the qkd engine.
//!
//! Every subcommand is a thin layer over `qkd-core` / `qkd-server`: it parses arguments, calls the
//! library, and prints. With `--json`, stdout carries JSON only; progress and tables go to stderr
//! and stdout respectively otherwise.
#![forbid(unsafe_code)]

mod amplify;
mod audit;
mod bench;
mod bench_link;
mod client_check;
mod demo;
mod hsm;
mod keyrate;
mod kme;
mod kme_demo;
mod logging;
mod process;
mod report;
mod sim;
mod store;
mod ui;

use clap::{Parser, Subcommand};

/// Post-processing for quantum key distribution: raw sifted key in, final secret keys out.
#[derive(Debug, Parser)]
#[command(name = "qkd", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine end to end on the embedded dataset (or one you name) and print the results.
    Demo(demo::Args),
    /// Simulate a QKD link: write a raw-key pair (Alice, Bob) and a JSON manifest.
    Sim(sim::Args),
    /// Run the post-processing pipeline on a raw key pair: final keys and block reports.
    Process(process::Args),
    /// Toeplitz-hash a key file with a seed file (privacy amplification, DESIGN §4 convention).
    Amplify(amplify::Args),
    /// Import key files into a key store, or show its state.
    #[command(subcommand)]
    Store(store::Command),
    /// The audit trail of a key store: every block and key event, also while a KME runs.
    Audit(audit::Args),
    /// Run a KME: ETSI GS QKD 014 key delivery over mutual TLS.
    Serve(kme::ServeArgs),
    /// Development PKI: a CA, KME and SAE certificates, and KME configs.
    #[command(subcommand)]
    Pki(kme::PkiCommand),
    /// HSMs over PKCS#11: check what works with a token, show a key object in it.
    #[command(subcommand)]
    Hsm(hsm::Command),
    /// An ETSI 014 client, as an encryptor would call the KME.
    #[command(subcommand)]
    Client(kme::ClientCommand),
    /// The finite-key secret length of one block under a model, with every term.
    Keyrate(keyrate::Args),
    /// Measure the throughput of one stage.
    #[command(subcommand)]
    Bench(bench::Command),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Process(args) => process::run(args),
        Command::Amplify(args) => amplify::run(args),
        Command::Keyrate(args) => keyrate::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Store(cmd) => store::run(cmd),
        Command::Audit(args) => audit::run(args),
        Command::Serve(args) => kme::serve(args),
        Command::Pki(cmd) => kme::pki(cmd),
        Command::Client(cmd) => kme::client(cmd),
        Command::Hsm(cmd) => hsm::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if ui::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
