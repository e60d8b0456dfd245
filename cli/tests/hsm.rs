//! `qkd hsm test` against a SoftHSM2 token initialized in a temporary directory
//! (`scripts/install-softhsm.sh` installs SoftHSM2): every check passes with the right PIN, and a
//! wrong PIN, a missing module, an unknown token and a readable PIN file are refused clearly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 configuration with one token `qkd-test` (user PIN 1234) in its own directory.
struct Token {
    dir: tempfile::TempDir,
}

impl Token {
    fn new() -> Self {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: run scripts/install-softhsm.sh (Debian's softhsm2)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let t = Self { dir };
        let out = t
            .command("softhsm2-util")
            .args(["--init-token", "--free", "--label", "qkd-test"])
            .args(["--pin", "1234", "--so-pin", "5678"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SOFTHSM2_CONF", self.dir.path().join("softhsm2.conf"));
        c
    }

    /// A PIN file holding `pin`, with `mode`.
    fn pin_file(&self, pin: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(format!("pin-{pin}-{mode:o}"));
        std::fs::write(&p, format!("{pin}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn hsm_test(&self, module: &str, token: &str, pin: &Path) -> Output {
        self.command(env!("CARGO_BIN_EXE_qkd"))
            .args([
                "hsm",
                "test",
                "--module",
                module,
                "--token",
                token,
                "--pin-file",
            ])
            .arg(pin)
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn hsm_test_passes_every_check_and_refuses_bad_input_clearly() {
    let t = Token::new();
    let good = t.pin_file("1234", 0o600);
    let out = t.hsm_test(MODULE, "qkd-test", &good);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for check in [
        "login to token \"qkd-test\"",
        "C_SeedRandom: 32 bytes mixed in",
        "C_GenerateRandom",
        "create a secret-key object",
        "wrap and unwrap (AES key wrap)",
    ] {
        assert!(all.contains(&format!("ok      {check}")), "{check}:\n{all}");
    }

    let cases = [
        (
            MODULE,
            "qkd-test",
            t.pin_file("9999", 0o600),
            "PIN is incorrect",
        ),
        (
            "/nonexistent/libpkcs11.so",
            "qkd-test",
            good.clone(),
            "no such file",
        ),
        (
            MODULE,
            "other",
            good.clone(),
            "no token labelled \"other\" (tokens present: qkd-test)",
        ),
        (
            MODULE,
            "qkd-test",
            t.pin_file("1234", 0o644),
            "readable by its owner only",
        ),
        (
            MODULE,
            "qkd-test",
            t.dir.path().to_path_buf(),
            "is a directory",
        ),
    ];
    for (module, token, pin, want) in cases {
        let out = t.hsm_test(module, token, &pin);
        let all = text(&out);
        assert!(
            !out.status.success(),
            "{module} {token} {}: {all}",
            pin.display()
        );
        assert!(all.contains(want), "expected {want:?} in:\n{all}");
        assert!(!all.contains("panicked"), "{all}");
    }
}
