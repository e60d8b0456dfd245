//! A development PKI (rcgen): one CA, KME server/peer certificates, SAE client certificates
//! (PEM and PKCS#12) and ready KME configurations. For labs and demos, not for production CAs.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::config::{
    Config, KeyLimits, LimitsConfig, LinkConfig, LinkRole, LocalPoolConfig, NetworkConfig,
    ProcessingConfig, RemoteKmeConfig, SaeConfig, SaeMatch, SourceConfig, TlsConfig,
};

/// Errors of the PKI commands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// PKCS#12 encoding failed.
    #[error("PKCS#12 encoding failed: {0}")]
    P12(String),
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    /// TLS client (an SAE).
    Client,
    /// TLS server only.
    Server,
    /// Server and client (a KME: serves SAEs, calls peer KMEs).
    Both,
}

/// Files written by [`init`].
#[derive(Clone, Debug)]
pub struct PkiSummary {
    /// The CA certificate (the trust anchor of every certificate made).
    pub ca: PathBuf,
    /// One config per KME, in the order given.
    pub kme_configs: Vec<PathBuf>,
    /// Client certificate PEM per SAE, in the order given.
    pub sae_certs: Vec<PathBuf>,
}

/// Parses `SAE_ID@KME_ID`.
pub fn parse_sae_spec(spec: &str) -> Result<(String, String), PkiError> {
    match spec.split_once('@') {
        Some((s, k)) if !s.is_empty() && !k.is_empty() => Ok((s.to_string(), k.to_string())),
        _ => Err(PkiError::Invalid(format!(
            "SAE spec {spec:?}: expected SAE_ID@KME_ID"
        ))),
    }
}

fn check_name(what: &str, id: &str) -> Result<(), PkiError> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        || id.starts_with('.')
    {
        return Err(PkiError::Invalid(format!(
            "{what} {id:?}: expected letters, digits, '_', '-', '.' (it names files)"
        )));
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8], private: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    if private {
        write_private(path, bytes).map_err(io)
    } else {
        fs::write(path, bytes).map_err(io)
    }
}

/// Writes a secret file that has mode 0600 from its first byte: a fresh temporary file created
/// 0600, synced, then renamed over `path` (whose mode may have been wider).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes).and_then(|()| f.sync_all())?;
    fs::rename(&tmp, path)
}

fn serial() -> Result<SerialNumber, PkiError> {
    let mut b = [0u8; 16];
    getrandom_fill(&mut b)?;
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte
    Ok(SerialNumber::from_slice(&b))
}

fn getrandom_fill(b: &mut [u8]) -> Result<(), PkiError> {
    use qkd_core::rng::RandomSource;
    qkd_core::rng::OsRandom
        .fill(b)
        .map_err(|e| PkiError::Invalid(format!("OS random source: {e}")))
}

/// Days a certificate of [`init`] and [`issue`] is valid (also the default of `qkd pki sign`).
pub const DEFAULT_DAYS: u32 = 825;

/// Most days [`sign`] accepts.
const MAX_DAYS: u32 = 36_500;

fn leaf_params(
    cn: &str,
    kind: CertKind,
    sans: &[String],
    days: u32,
) -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "qkd dev PKI");
    p.distinguished_name = dn;
    p.serial_number = Some(serial()?);
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(i64::from(days));
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = match kind {
        CertKind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        CertKind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        CertKind::Both => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    if kind != CertKind::Client {
        for s in sans {
            p.subject_alt_names
                .push(match s.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(s.clone().try_into()?),
                });
        }
    }
    Ok(p)
}

fn p12(
    cert_der: &[u8],
    key_der: &[u8],
    ca_der: &[u8],
    alias: &str,
    password: &str,
) -> Result<Vec<u8>, PkiError> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKeyChain};
    let e = |x: p12_keystore::error::Error| PkiError::P12(x.to_string());
    let leaf = Certificate::from_der(cert_der).map_err(e)?;
    let ca = Certificate::from_der(ca_der).map_err(e)?;
    let mut id = [0u8; 20];
    getrandom_fill(&mut id)?;
    let chain = PrivateKeyChain::new(key_der, id, vec![leaf, ca]);
    let mut ks = KeyStore::new();
    ks.add_entry(alias, KeyStoreEntry::PrivateKeyChain(chain));
    ks.writer(password).write().map_err(e)
}

struct Ca {
    pem: String,
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca() -> Result<(Ca, KeyPair), PkiError> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "qkd dev CA");
    dn.push(DnType::OrganizationName, "qkd dev PKI");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.serial_number = Some(serial()?);
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(3650);
    let cert = p.self_signed(&key)?;
    let key_copy = KeyPair::try_from(key.serialized_der())?;
    Ok((
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(p, key_copy),
        },
        key,
    ))
}

fn load_ca(ca_cert: &Path, ca_key: &Path) -> Result<Ca, PkiError> {
    let read = |p: &Path| {
        fs::read_to_string(p).map_err(|source| PkiError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let pem = read(ca_cert)?;
    let key = KeyPair::from_pem(&read(ca_key)?)?;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::Invalid(format!("{}: {e}", ca_cert.display())))?
        .to_vec();
    let issuer = Issuer::from_ca_cert_pem(&pem, key)?;
    Ok(Ca { pem, der, issuer })
}

use rustls::pki_types::pem::PemObject;

/// Issues one certificate signed by `ca`, written as `out_dir/<cn>.pem`, `.key` and (client
/// certificates) `.p12` with password `p12_password`. Returns the PEM path.
fn issue_with(
    ca: &Ca,
    cn: &str,
    kind: CertKind,
    sans: &[String],
    out_dir: &Path,
    p12_password: &str,
) -> Result<PathBuf, PkiError> {
    check_name("certificate name", cn)?;
    let key = KeyPair::generate()?;
    let cert = leaf_params(cn, kind, sans, DEFAULT_DAYS)?.signed_by(&key, &ca.issuer)?;
    let pem_path = out_dir.join(format!("{cn}.pem"));
    write(&pem_path, cert.pem().as_bytes(), false)?;
    write(
        &out_dir.join(format!("{cn}.key")),
        key.serialize_pem().as_bytes(),
        true,
    )?;
    if kind == CertKind::Client {
        let p = p12(cert.der(), key.serialized_der(), &ca.der, cn, p12_password)?;
        write(&out_dir.join(format!("{cn}.p12")), &p, true)?;
    }
    Ok(pem_path)
}

/// Issues one certificate from an existing CA (`ca.pem` and `ca.key` as written by [`init`]):
/// writes `out_dir/<cn>.pem`, `<cn>.key` and, for client certificates, `<cn>.p12`
/// (password `p12_password`). Server certificates get `sans` (DNS names or IP addresses).
pub fn issue(
    ca_cert: &Path,
    ca_key: &Path,
    cn: &str,
    kind: CertKind,
    sans: &[String],
    out_dir: &Path,
    p12_password: &str,
) -> Result<PathBuf, PkiError> {
    let ca = load_ca(ca_cert, ca_key)?;
    fs::create_dir_all(out_dir).map_err(|source| PkiError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    issue_with(&ca, cn, kind, sans, out_dir, p12_password)
}

/// Writes a fresh key pair `out_dir/<name>.key` (mode 0600) and a PKCS#10 certificate signing
/// request `out_dir/<name>.csr` for subject CN = `name` (O = qkd dev PKI), signed by that key,
/// for a certificate of `kind`. A server certificate's request names `sans` (DNS names or IP
/// addresses), or `localhost` and `127.0.0.1` when there are none. Existing files are refused
/// unless `force`. Returns the paths of the key and the request.
pub fn csr(
    name: &str,
    kind: CertKind,
    sans: &[String],
    out_dir: &Path,
    force: bool,
) -> Result<(PathBuf, PathBuf), PkiError> {
    check_name("name", name)?;
    let key_path = out_dir.join(format!("{name}.key"));
    let csr_path = out_dir.join(format!("{name}.csr"));
    if !force {
        let found: Vec<String> = [&key_path, &csr_path]
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !found.is_empty() {
            return Err(PkiError::Invalid(format!(
                "{} exists already; pass --force to replace it with a new key",
                found.join(" and ")
            )));
        }
    }
    let mut names = sans.to_vec();
    if names.is_empty() {
        names = vec!["localhost".into(), "127.0.0.1".into()];
    }
    let key = KeyPair::generate()?;
    // The CA picks the serial number and the validity: a request carries neither.
    let mut params = leaf_params(name, kind, &names, DEFAULT_DAYS)?;
    params.serial_number = None;
    let request = params.serialize_request(&key)?;
    fs::create_dir_all(out_dir).map_err(|source| PkiError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    write(&key_path, key.serialize_pem().as_bytes(), true)?;
    write(&csr_path, request.pem()?.as_bytes(), false)?;
    Ok((key_path, csr_path))
}

/// A certificate made by [`sign`].
#[derive(Clone, Debug)]
pub struct Signed {
    /// The PEM file written.
    pub cert: PathBuf,
    /// Its subject, as x509-parser prints it (`CN=SAE_9, O=qkd dev PKI`).
    pub subject: String,
}

/// Signs the PKCS#10 request in the PEM file `csr` with the CA in `ca_cert`/`ca_key` into a
/// certificate of `kind` valid for `days`, written to `out` (PEM). The certificate has the
/// request's subject (it must have a CN: the KME identifies SAEs and peers by it) and public
/// key; what it may be used for is this CA's choice, not the request's: the key usages and
/// extended key usages of `kind`, and for server certificates the request's subject
/// alternative names and `sans`. A request whose signature does not verify is refused.
pub fn sign(
    ca_cert: &Path,
    ca_key: &Path,
    csr: &Path,
    kind: CertKind,
    sans: &[String],
    days: u32,
    out: &Path,
) -> Result<Signed, PkiError> {
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(PkiError::Invalid(format!(
            "validity of {days} days: expected 1 to {MAX_DAYS}"
        )));
    }
    let ca = load_ca(ca_cert, ca_key)?;
    let text = fs::read_to_string(csr).map_err(|source| PkiError::Io {
        path: csr.to_path_buf(),
        source,
    })?;
    let bad = |m: &str| PkiError::Invalid(format!("{}: {m}", csr.display()));
    let request = rcgen::CertificateSigningRequestParams::from_pem(&text).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => {
            bad("the request's signature does not verify (altered, or not signed by its own key)")
        }
        rcgen::Error::CouldNotParseCertificationRequest => {
            bad("not a PEM certificate signing request (PKCS#10)")
        }
        rcgen::Error::UnsupportedExtension => {
            bad("the request asks for an extension this CA does not sign")
        }
        other => bad(&other.to_string()),
    })?;
    let cn = match request.params.distinguished_name.get(&DnType::CommonName) {
        Some(rcgen::DnValue::Utf8String(s)) => s.clone(),
        Some(rcgen::DnValue::PrintableString(s)) => s.as_str().to_string(),
        Some(rcgen::DnValue::Ia5String(s)) => s.as_str().to_string(),
        Some(_) => {
            return Err(bad(
                "the subject's CN is not a UTF-8, printable or IA5 string",
            ));
        }
        None => {
            return Err(bad(
                "the subject has no common name (CN): the KME identifies SAEs and peers by it",
            ));
        }
    };
    let mut params = leaf_params(&cn, kind, sans, days)?;
    params.distinguished_name = request.params.distinguished_name.clone();
    if kind != CertKind::Client {
        for san in &request.params.subject_alt_names {
            if !params.subject_alt_names.contains(san) {
                params.subject_alt_names.push(san.clone());
            }
        }
        if params.subject_alt_names.is_empty() {
            return Err(bad(
                "a server certificate needs a subject alternative name (the name clients \
                 connect to): the request has none; pass --san",
            ));
        }
    }
    let cert = params.signed_by(&request.public_key, &ca.issuer)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.der())
        .map_err(|e| PkiError::Invalid(format!("the signed certificate: {e}")))?;
    let subject = parsed.subject().to_string();
    write(out, cert.pem().as_bytes(), false)?;
    Ok(Signed {
        cert: out.to_path_buf(),
        subject,
    })
}

/// The files [`init_with`] would write into its directory, by name.
fn planned_files(
    kmes: &[String],
    saes: &[(String, String)],
    links: &[(String, String)],
    raw: RawSetup,
) -> Vec<String> {
    let mut files = vec!["ca.pem".to_string(), "ca.key".to_string()];
    for k in kmes {
        files.extend(["pem", "key", "toml"].map(|e| format!("{k}.{e}")));
    }
    for (s, _) in saes {
        files.extend(["pem", "key", "p12"].map(|e| format!("{s}.{e}")));
    }
    if raw == RawSetup::Simulated {
        for (a, b) in links {
            let (a, b) = in_order(kmes, a, b);
            files.push(format!("auth-{a}-{b}.psk"));
        }
    }
    files
}

/// The two ends of a link, the one listed first among `kmes` first (Alice in a simulated
/// setup).
fn in_order<'a>(kmes: &[String], a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    let at = |k: &str| kmes.iter().position(|x| x == k).unwrap_or(usize::MAX);
    if at(a) <= at(b) { (a, b) } else { (b, a) }
}

/// Every pair of KMEs linked: the network [`init_with`] writes.
pub fn full_mesh(kmes: &[String]) -> Vec<(String, String)> {
    let mut links = Vec::new();
    for (i, a) in kmes.iter().enumerate() {
        for b in &kmes[i + 1..] {
            links.push((a.clone(), b.clone()));
        }
    }
    links
}

/// A link given as `KME_A-KME_B`: the split at the `-` that leaves two of `kmes` (IDs may
/// hold `-` themselves, as long as one split fits).
pub fn parse_link_spec(spec: &str, kmes: &[String]) -> Result<(String, String), PkiError> {
    let fits: Vec<(String, String)> = spec
        .match_indices('-')
        .map(|(i, _)| (&spec[..i], &spec[i + 1..]))
        .filter(|(a, b)| kmes.iter().any(|k| k == a) && kmes.iter().any(|k| k == b))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    match fits.as_slice() {
        [(a, b)] if a != b => Ok((a.clone(), b.clone())),
        [(a, _)] => Err(PkiError::Invalid(format!(
            "link {spec:?} joins {a} with itself"
        ))),
        [] => Err(PkiError::Invalid(format!(
            "link {spec:?}: expected KME-KME with two of the KMEs given ({})",
            kmes.join(", ")
        ))),
        _ => Err(PkiError::Invalid(format!(
            "link {spec:?} splits into two known KMEs in more than one way"
        ))),
    }
}

/// Checks the links of a setup: between known, different KMEs, each once, joining them all.
fn check_links(kmes: &[String], links: &[(String, String)]) -> Result<(), PkiError> {
    let mut seen = std::collections::HashSet::new();
    let mut cfg_links = Vec::new();
    for (a, b) in links {
        if a == b || !kmes.contains(a) || !kmes.contains(b) {
            return Err(PkiError::Invalid(format!(
                "link {a}-{b} must join two different KMEs of the setup"
            )));
        }
        if !seen.insert(in_order(kmes, a, b)) {
            return Err(PkiError::Invalid(format!("link {a}-{b} given twice")));
        }
        cfg_links.push([a.clone(), b.clone()]);
    }
    let mut reached = std::collections::BTreeSet::from([kmes[0].clone()]);
    loop {
        let before = reached.len();
        for (a, b) in links {
            if reached.contains(a) || reached.contains(b) {
                reached.insert(a.clone());
                reached.insert(b.clone());
            }
        }
        if reached.len() == before {
            break;
        }
    }
    match kmes.iter().find(|k| !reached.contains(*k)) {
        Some(k) => Err(PkiError::Invalid(format!(
            "KME {k} is not joined to {} by the links given",
            kmes[0]
        ))),
        None => Ok(()),
    }
}

/// Refuses a directory that already holds a PKI: any file [`init_with`] would write there
/// with these arguments (the CA, a key, a certificate, a configuration, a pre-shared secret).
/// `qkd pki init` checks this unless `--force`.
pub fn check_fresh(
    dir: &Path,
    kmes: &[String],
    saes: &[(String, String)],
    links: &[(String, String)],
    raw: RawSetup,
) -> Result<(), PkiError> {
    let found: Vec<String> = planned_files(kmes, saes, links, raw)
        .into_iter()
        .filter(|f| dir.join(f).exists())
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    let shown = if found.len() > 4 {
        format!("{} and {} more", found[..4].join(", "), found.len() - 4)
    } else {
        found.join(", ")
    };
    Err(PkiError::Invalid(format!(
        "{} already holds a PKI ({shown}); pass --force to overwrite it",
        dir.display()
    )))
}

/// Writes a certificate revocation list (PEM, signed by the CA in `ca_cert`/`ca_key`, valid for
/// `days`) revoking the PEM certificates `certs`, to `out`. Returns how many it revokes. The
/// CRL number is the current Unix time, so a newer CRL always has a larger number.
pub fn revoke(
    ca_cert: &Path,
    ca_key: &Path,
    certs: &[PathBuf],
    days: u32,
    out: &Path,
) -> Result<usize, PkiError> {
    let ca = load_ca(ca_cert, ca_key)?;
    let now = OffsetDateTime::now_utc();
    let mut revoked = Vec::new();
    for c in certs {
        let der = rustls::pki_types::CertificateDer::from_pem_file(c)
            .map_err(|e| PkiError::Invalid(format!("{}: {e}", c.display())))?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| PkiError::Invalid(format!("{}: {e}", c.display())))?;
        revoked.push(rcgen::RevokedCertParams {
            serial_number: SerialNumber::from_slice(cert.raw_serial()),
            revocation_time: now,
            reason_code: None,
            invalidity_date: None,
        });
    }
    let crl = rcgen::CertificateRevocationListParams {
        this_update: now,
        next_update: now + Duration::days(i64::from(days.max(1))),
        crl_number: SerialNumber::from(now.unix_timestamp() as u64),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&ca.issuer)?;
    let pem = crl.pem()?;
    write(out, pem.as_bytes(), false)?;
    Ok(certs.len())
}

/// Writes a development PKI and one configuration per KME into `dir`:
/// `ca.pem`/`ca.key`, `<KME>.pem`/`.key` (server and peer-client certificate, SANs `localhost`,
/// `127.0.0.1` and `hosts`), `<SAE>.pem`/`.key`/`.p12` (client certificate, CN = SAE ID,
/// PKCS#12 password empty) and `<KME>.toml`. KME number i listens for SAEs on
/// 127.0.0.1:`port_base`+2i and for peers on `port_base`+2i+1; each link watches
/// `dir/<KME>/incoming/<PEER>/` for `.cor` files. `saes` are (SAE ID, KME ID) pairs.
pub fn init(
    dir: &Path,
    kmes: &[String],
    saes: &[(String, String)],
    port_base: u16,
    hosts: &[String],
) -> Result<PkiSummary, PkiError> {
    init_with(dir, kmes, saes, port_base, hosts, RawSetup::Cor)
}

/// Where the links of a development setup get their key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RawSetup {
    /// Final keys made elsewhere, as `.cor` files in `dir/<KME>/incoming/<PEER>/`.
    #[default]
    Cor,
    /// Each pair of KMEs post-processes an INSECURE simulated device (2 % QBER, 2^20-bit
    /// blocks at 1 Mbit/s raw), authenticated with a pre-shared secret written for the pair
    /// (`auth-<A>-<B>.psk`, 32 KiB from the OS CSPRNG); the KME listed first is Alice.
    Simulated,
}

/// Bytes of the development pre-shared authentication secret of each pair.
const DEV_PSK_BYTES: usize = 32 * 1024;

/// The link of `k` to `p` in a simulated setup: role, shared seed and secret by pair.
fn simulated_link(
    dir: &Path,
    kmes: &[String],
    k: &str,
    p: &str,
    seeds: &mut std::collections::HashMap<(String, String), String>,
) -> Result<(SourceConfig, ProcessingConfig), PkiError> {
    let (a, b) = in_order(kmes, k, p);
    let psk = format!("auth-{a}-{b}.psk");
    let key = (a.to_string(), b.to_string());
    if !seeds.contains_key(&key) {
        let mut secret = zeroize::Zeroizing::new(vec![0u8; DEV_PSK_BYTES]);
        getrandom_fill(&mut secret)?;
        write(&dir.join(&psk), &secret, true)?;
        let mut seed = [0u8; 16];
        getrandom_fill(&mut seed)?;
        seeds.insert(key.clone(), crate::tls::hex(&seed));
    }
    let source = SourceConfig::SimulatedDevice {
        seed: seeds[&key].clone(),
        qber: 0.02,
        errors: "iid".into(),
        raw_bits_per_sec: 1 << 20,
    };
    let role = if a == k {
        LinkRole::Alice
    } else {
        LinkRole::Bob
    };
    let processing = ProcessingConfig {
        block_bits: 1 << 20,
        sample_bits: 1 << 14,
        ..ProcessingConfig::new(role, psk.into())
    };
    Ok((source, processing))
}

/// [`init`] with the links' key source chosen.
pub fn init_with(
    dir: &Path,
    kmes: &[String],
    saes: &[(String, String)],
    port_base: u16,
    hosts: &[String],
    raw: RawSetup,
) -> Result<PkiSummary, PkiError> {
    init_network(dir, kmes, saes, &full_mesh(kmes), port_base, hosts, raw)
}

/// [`init_with`] for a network of the given links only (a chain, a ring, a mesh): each KME's
/// configuration has a `[[link]]` per link of its own and a `[network]` with the other links
/// and the SAEs of the KMEs it reaches only through others, so keys are relayed to them.
pub fn init_network(
    dir: &Path,
    kmes: &[String],
    saes: &[(String, String)],
    links: &[(String, String)],
    port_base: u16,
    hosts: &[String],
    raw: RawSetup,
) -> Result<PkiSummary, PkiError> {
    if kmes.is_empty() {
        return Err(PkiError::Invalid("at least one KME is needed".into()));
    }
    let mut all = std::collections::HashSet::new();
    for k in kmes {
        check_name("KME ID", k)?;
        if !all.insert(k.clone()) {
            return Err(PkiError::Invalid(format!("ID {k:?} given twice")));
        }
    }
    for (s, k) in saes {
        check_name("SAE ID", s)?;
        if !all.insert(s.clone()) {
            return Err(PkiError::Invalid(format!("ID {s:?} given twice")));
        }
        if !kmes.contains(k) {
            return Err(PkiError::Invalid(format!(
                "SAE {s} is attached to unknown KME {k:?}"
            )));
        }
    }
    check_links(kmes, links)?;
    let last = u32::from(port_base) + 2 * kmes.len() as u32 - 1;
    if last > u32::from(u16::MAX) {
        return Err(PkiError::Invalid(format!(
            "port base {port_base} leaves no room for {} KMEs",
            kmes.len()
        )));
    }
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let (ca, ca_key) = new_ca()?;
    write(&dir.join("ca.pem"), ca.pem.as_bytes(), false)?;
    write(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes(), true)?;

    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    sans.extend(hosts.iter().cloned());
    let mut kme_configs = Vec::new();
    let mut seeds = std::collections::HashMap::new();
    let port = |i: usize, peer: bool| port_base + 2 * i as u16 + u16::from(peer);
    for (i, k) in kmes.iter().enumerate() {
        issue_with(&ca, k, CertKind::Both, &sans, dir, "")?;
        let linked = |p: &String| {
            links
                .iter()
                .any(|(a, b)| (a == k && b == p) || (a == p && b == k))
        };
        let sae_ids_of = |kme: &String| -> Vec<String> {
            saes.iter()
                .filter(|(_, kk)| kk == kme)
                .map(|(s, _)| s.clone())
                .collect()
        };
        let network = NetworkConfig {
            links: links
                .iter()
                .filter(|(a, b)| a != k && b != k)
                .map(|(a, b)| [a.clone(), b.clone()])
                .collect(),
            kmes: kmes
                .iter()
                .filter(|p| *p != k && !linked(p) && !sae_ids_of(p).is_empty())
                .map(|p| RemoteKmeConfig {
                    id: p.clone(),
                    saes: sae_ids_of(p),
                })
                .collect(),
        };
        let links = kmes
            .iter()
            .enumerate()
            .filter(|(_, p)| linked(p))
            .map(|(j, p)| {
                let (source, processing) = match raw {
                    RawSetup::Cor => {
                        let inc = dir.join(k).join("incoming").join(p);
                        crate::link::ledger::private_dir(&inc).map_err(PkiError::Invalid)?;
                        let dir = PathBuf::from(k).join("incoming").join(p);
                        (SourceConfig::Cor { dir, poll_ms: 200 }, None)
                    }
                    RawSetup::Simulated => {
                        let (s, pp) = simulated_link(dir, kmes, k, p, &mut seeds)?;
                        (s, Some(pp))
                    }
                };
                Ok(LinkConfig {
                    peer: p.clone(),
                    url: format!("https://127.0.0.1:{}", port(j, true)),
                    saes: sae_ids_of(p),
                    source,
                    low_watermark_bytes: 4096,
                    processing,
                    auth_low_watermark_bits: 1 << 16,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let cfg = Config {
            kme_id: k.clone(),
            state_dir: Some(PathBuf::from(k).join("store")),
            listen: format!("127.0.0.1:{}", port(i, false))
                .parse()
                .map_err(|_| PkiError::Invalid("port".into()))?,
            peer_listen: Some(
                format!("127.0.0.1:{}", port(i, true))
                    .parse()
                    .map_err(|_| PkiError::Invalid("port".into()))?,
            ),
            monitor_listen: None,
            tls: TlsConfig {
                ca: "ca.pem".into(),
                cert: format!("{k}.pem").into(),
                key: format!("{k}.key").into(),
                min_version: "1.2".into(),
                crl: Vec::new(),
            },
            keys: KeyLimits::default(),
            saes: saes
                .iter()
                .filter(|(_, kk)| kk == k)
                .map(|(s, _)| SaeConfig {
                    id: s.clone(),
                    matcher: SaeMatch::Cn,
                    allowed_slaves: Some(
                        saes.iter()
                            .map(|(other, _)| other.clone())
                            .filter(|other| other != s)
                            .collect(),
                    ),
                    ..SaeConfig::default()
                })
                .collect(),
            local_pool: Some(LocalPoolConfig {
                source: SourceConfig::Random {
                    target_bytes: 1 << 22,
                },
                low_watermark_bytes: 0,
            }),
            links,
            limits: LimitsConfig::default(),
            store: Default::default(),
            network,
            hsms: Vec::new(),
        };
        let text = toml::to_string_pretty(&cfg)
            .map_err(|e| PkiError::Invalid(format!("config encoding: {e}")))?;
        let header = format!(
            "# KME {k}: written by `qkd pki init`. Every field is documented in docs/server.md.\n\
             # Paths are relative to this file. Monitoring (metrics, dashboard): set monitor_listen = \"127.0.0.1:9{:03}\".\n\n",
            i
        );
        let path = dir.join(format!("{k}.toml"));
        write(&path, format!("{header}{text}").as_bytes(), false)?;
        kme_configs.push(path);
    }
    let mut sae_certs = Vec::new();
    for (s, _) in saes {
        sae_certs.push(issue_with(&ca, s, CertKind::Client, &[], dir, "")?);
    }
    Ok(PkiSummary {
        ca: dir.join("ca.pem"),
        kme_configs,
        sae_certs,
    })
}

/// Moves the configurations of a development setup onto loopback ports, for tests and
/// benchmarks: KME `i` listens for SAEs on `ports[i].0` and for peers on `ports[i].1`, every link
/// points at its peer's listener, and each link's key comes from a seeded simulated source that
/// both ends share (seed: the link's KME IDs in order; `blocks` blocks of `block_bytes`).
pub fn on_loopback(cfgs: &mut [Config], ports: &[(u16, u16)], block_bytes: u32, blocks: u64) {
    let ids: Vec<String> = cfgs.iter().map(|c| c.kme_id.clone()).collect();
    let local = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for (c, (sae, peer)) in cfgs.iter_mut().zip(ports) {
        c.listen = local(*sae);
        c.peer_listen = Some(local(*peer));
        for l in &mut c.links {
            if let Some(j) = ids.iter().position(|k| k == &l.peer) {
                l.url = format!("https://127.0.0.1:{}", ports[j].1);
            }
            let (a, b) = if c.kme_id <= l.peer {
                (&c.kme_id, &l.peer)
            } else {
                (&l.peer, &c.kme_id)
            };
            l.source = SourceConfig::Simulated {
                seed: format!("{a}-{b}"),
                block_bytes,
                initial_blocks: blocks,
                interval_ms: 0,
                max_blocks: blocks,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// [`check_fresh`] knows every file `init_with` writes at the top of its directory.
    #[test]
    fn check_fresh_names_every_file_init_writes() {
        let dir = tempfile::tempdir().unwrap();
        let kmes = ["A".to_string(), "B".to_string(), "C".to_string()];
        let saes = [("S1".to_string(), "A".to_string())];
        let links = full_mesh(&kmes);
        check_fresh(dir.path(), &kmes, &saes, &links, RawSetup::Simulated).unwrap();
        init_with(dir.path(), &kmes, &saes, 9000, &[], RawSetup::Simulated).unwrap();
        let mut written: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        written.sort();
        let mut planned = planned_files(&kmes, &saes, &links, RawSetup::Simulated);
        planned.sort();
        assert_eq!(written, planned);
        let e = check_fresh(dir.path(), &kmes, &saes, &links, RawSetup::Simulated)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("already holds a PKI") && e.contains("--force"),
            "{e}"
        );
    }

    /// Private keys, PKCS#12 files and the incoming directories are owner-only; a key file that
    /// existed with a wider mode is replaced by a fresh owner-only one, never rewritten in place.
    #[test]
    fn secrets_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("SAE_1.key"), b"old").unwrap();
        fs::set_permissions(d.join("SAE_1.key"), fs::Permissions::from_mode(0o644)).unwrap();
        let kmes = ["KME_A".to_string(), "KME_B".to_string()];
        let saes = [("SAE_1".to_string(), "KME_A".to_string())];
        init(d, &kmes, &saes, 9000, &[]).unwrap();
        for f in ["ca.key", "KME_A.key", "KME_B.key", "SAE_1.key", "SAE_1.p12"] {
            assert_eq!(mode(&d.join(f)), 0o600, "{f}");
        }
        assert_eq!(mode(&d.join("KME_A/incoming/KME_B")), 0o700);
        assert_eq!(mode(&d.join("ca.pem")) & 0o600, 0o600);
        let leftovers: Vec<_> = fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind");
    }
}
