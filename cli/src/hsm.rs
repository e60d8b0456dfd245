//! `qkd hsm test`: what works with a PKCS#11 token (login, SeedRandom, random bytes, secret-key
//! objects, AES key wrap), each check with its outcome. `qkd hsm key`: what the token holds
//! under a label (a delivered key), with its check value.

use std::path::PathBuf;

use anyhow::Context as _;
use qkd_server::hsm::{Hsm, HsmUser, read_pin};

use crate::ui;

/// `qkd hsm ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Log in to a token and try what the KME needs of it; exit status 1 if anything fails.
    Test(TokenArgs),
    /// Show the secret key labelled LABEL (a key delivered to a pkcs11 SAE is labelled with
    /// its key ID): type, length, whether it is sensitive and extractable, and for AES its key
    /// check value (the first 3 bytes of AES-ECB of a zero block), to compare with the value
    /// the peer SAE got without taking the key out of the token.
    Key {
        /// The token to log in to.
        #[command(flatten)]
        token: TokenArgs,
        /// The key's label.
        #[arg(long)]
        label: String,
    },
}

/// Which token, and how to log in.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
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

impl TokenArgs {
    fn open(&self) -> anyhow::Result<Hsm> {
        let pin = read_pin(self.pin_file.as_deref(), self.pin_env.as_deref())?;
        let user = match self.user {
            User::User => HsmUser::User,
            User::So => HsmUser::So,
        };
        Ok(Hsm::open(&self.module, &self.token, user, &pin)?)
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum User {
    User,
    So,
}

/// Runs `qkd hsm ...`.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Test(t) => test(&t),
        Command::Key { token, label } => key(&token, &label),
    }
}

fn test(t: &TokenArgs) -> anyhow::Result<()> {
    let hsm = t.open()?;
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

fn key(t: &TokenArgs, label: &str) -> anyhow::Result<()> {
    let facts = t.open()?.describe_key(label)?;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    ui::print(format!(
        "label {label}\ntype {}\nbytes {}\npersistent {}\nsensitive {}\nextractable {}\n\
         encrypts {}",
        if facts.aes { "AES" } else { "generic secret" },
        facts.bytes,
        yes_no(facts.persistent),
        yes_no(facts.sensitive),
        yes_no(facts.extractable),
        yes_no(facts.encrypts),
    ))?;
    if let Some(kcv) = facts.check_value {
        ui::print(format!("kcv {:02x}{:02x}{:02x}", kcv[0], kcv[1], kcv[2]))?;
    }
    Ok(())
}
