//! KMEs as `qkd serve` processes from configurations in a lab directory: started, SIGKILLed,
//! restarted, and their SAEs' clients.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qkd_server::Config;
use qkd_server::client::Client;

/// KMEs configured in `dir` (its PKI from `qkd pki init`), each written to `<KME>.test.toml`.
pub struct Kmes {
    pub dir: tempfile::TempDir,
    pub cfg: Vec<Config>,
    /// Environment variables every KME process gets.
    pub env: Vec<(String, PathBuf)>,
    paths: Vec<PathBuf>,
    kids: Vec<Option<Child>>,
}

impl Kmes {
    /// Writes every configuration; none is started yet.
    pub fn new(dir: tempfile::TempDir, cfg: Vec<Config>) -> Self {
        let paths = cfg
            .iter()
            .map(|c| dir.path().join(format!("{}.test.toml", c.kme_id)))
            .collect();
        let kids = cfg.iter().map(|_| None).collect();
        let kmes = Self {
            dir,
            cfg,
            env: Vec::new(),
            paths,
            kids,
        };
        for i in 0..kmes.cfg.len() {
            kmes.write(i);
        }
        kmes
    }

    /// Writes KME `i`'s configuration (after a change to `cfg[i]`).
    pub fn write(&self, i: usize) {
        std::fs::write(&self.paths[i], toml::to_string(&self.cfg[i]).unwrap()).unwrap();
    }

    /// Starts KME `i` and waits until its SAE listener accepts connections.
    pub fn start(&mut self, i: usize) {
        let child = Command::new(env!("CARGO_BIN_EXE_qkd"))
            .args(["serve", "--config"])
            .arg(&self.paths[i])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.kids[i] = Some(child);
        let addr = self.cfg[i].listen;
        let t = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "KME {i} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs KME `i` (if it runs).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.kids[i].take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    /// An ETSI client of `sae` (its certificate from the lab) at KME `i`.
    pub fn client(&self, i: usize, sae: &str) -> Client {
        let d = self.dir.path();
        Client::new(
            &format!("https://localhost:{}", self.cfg[i].listen.port()),
            &d.join("ca.pem"),
            &d.join(format!("{sae}.pem")),
            &d.join(format!("{sae}.key")),
        )
        .unwrap()
    }
}

impl Drop for Kmes {
    fn drop(&mut self) {
        for i in 0..self.kids.len() {
            self.kill(i);
        }
    }
}
