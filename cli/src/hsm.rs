//! `qkd hsm test`: what works with a PKCS#11 token (login, SeedRandom, random bytes, secret-key
//! objects, AES key wrap), each check with its outcome.

use std::path::PathBuf;

use anyhow::Context as _;
use qkd_server::hsm::{Hsm, HsmUser, read_pin};

use crate::ui;

/// `qkd hsm ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Log in to a token and try what the KME needs of it; exit status 1 if anything fails.
    Test(TestArgs),
}

/// Arguments of `qkd hsm test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The PKCS#11 module (a shared library, e.g. /usr/lib/softhsm/libsofthsm2.so or a Luna
    /// client's libCryptoki2_64.so).
    #[arg(long)]
    module: PathBuf,
    /// The token's label.
    #[arg(long)]
    token: String,
    /// A file holding the PIN (its first line; mode 0600 or 0400).
    #[arg(long, conflicts_with = "pin_env", required_unless_present = "pin_env")]
    pin_file: Option<PathBuf>,
    /// An environment variable holding the PIN.
    #[arg(long)]
    pin_env: Option<String>,
    /// Who logs in: user or so (security officer).
    #[arg(long, value_enum, default_value = "user")]
    user: User,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum User {
    User,
    So,
}

/// Runs `qkd hsm ...`.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    let Command::Test(a) = cmd;
    let pin = read_pin(a.pin_file.as_deref(), a.pin_env.as_deref())?;
    let user = match a.user {
        User::User => HsmUser::User,
        User::So => HsmUser::So,
    };
    let hsm = Hsm::open(&a.module, &a.token, user, &pin)?;
    ui::print(format!("ok      login to token {:?}", hsm.label()))?;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    qkd_core::rng::RandomSource::fill(&mut qkd_core::rng::OsRandom, &mut seed[..])
        .context("OS random generator")?;
    let mut failed = 0;
    for (check, outcome) in hsm.self_test(&seed[..]) {
        match outcome {
            Ok(what) => ui::print(format!("ok      {check}: {what}"))?,
            Err(e) => {
                failed += 1;
                ui::print(format!("FAILED  {check}: {e}"))?;
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} check(s) failed");
    Ok(())
}
