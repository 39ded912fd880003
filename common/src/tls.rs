//! TLS material both services read: PEM certificates, keys and trust roots from files, the
//! one crypto provider (rustls with ring; no OpenSSL, no aws-lc), and Redis clients that
//! speak `rediss://` with a private CA.
//!
//! Every loader names the file and the setting in its error, because a TLS misconfiguration
//! is otherwise reported far from its cause (a handshake that fails minutes later).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use clap::Args;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use rustls::{
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    RootCertStore, ServerConfig,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// A file holds no PEM certificate.
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A file holds no usable private key.
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A certificate was refused as a trust anchor.
    #[error("{path}: certificate is not a usable trust anchor: {reason}")]
    BadAnchor {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// Neither a CA file nor any system root was found.
    #[error("no trust roots: the system has no CA certificates and no CA file was given")]
    NoRoots,
    /// rustls refused a key or a configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Redis refused the URL or the TLS settings.
    #[error("invalid Redis TLS settings: {0}")]
    Redis(String),
}

/// Makes rustls use ring for every TLS configuration built without an explicit provider
/// (tonic's and the redis crate's among them). Idempotent.
pub fn install_crypto_provider() {
    // An error only says a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The raw bytes of a PEM file, with the file named on failure.
pub fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file (a leaf and its chain, or a bundle of CAs).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

/// The first private key in a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NoKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Trust roots: the certificates of `ca_file` when given (a private CA replaces the system
/// roots rather than adding to them, so a public certificate cannot stand in for the
/// private one), else the operating system's roots.
pub fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for certificate in read_certificates(path)? {
                roots.add(certificate).map_err(|e| TlsError::BadAnchor {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoRoots);
            }
        }
    }
    Ok(roots)
}

/// A Redis client for `url`. With `rediss://` the server's certificate is checked against
/// `ca_file` when given, else against the system roots; a CA file with a plain `redis://`
/// URL is refused, since it would silently go unused.
pub fn redis_client(url: &str, ca_file: Option<&Path>) -> Result<redis::Client, TlsError> {
    install_crypto_provider();
    match ca_file {
        None => redis::Client::open(url).map_err(|e| TlsError::Redis(e.to_string())),
        Some(path) => {
            if !url.starts_with("rediss://") {
                return Err(TlsError::Redis(format!(
                    "REDIS_CA_FILE is set but REDIS_URL does not start with rediss:// \
                     (TLS); use rediss://host:port or unset REDIS_CA_FILE ({})",
                    path.display()
                )));
            }
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(read_pem(path)?),
            };
            redis::Client::build_with_tls(url, certificates)
                .map_err(|e| TlsError::Redis(e.to_string()))
        }
    }
}

/// TLS between gateways and docnodes (gRPC). The same three settings on both sides: a
/// docnode serves with its certificate and, given a CA, requires gateways to present one
/// that CA signed (mutual TLS); a gateway presents its certificate and verifies docnodes
/// against the CA. Docnode URLs become `https://`.
#[derive(Debug, Clone, Default, Args)]
pub struct GrpcTlsConfig {
    /// This process's certificate chain (PEM) for gateway<->docnode gRPC.
    #[arg(long, env = "GRPC_TLS_CERT_FILE", requires = "grpc_tls_key_file")]
    pub grpc_tls_cert_file: Option<PathBuf>,

    /// The private key (PEM) of GRPC_TLS_CERT_FILE.
    #[arg(long, env = "GRPC_TLS_KEY_FILE", requires = "grpc_tls_cert_file")]
    pub grpc_tls_key_file: Option<PathBuf>,

    /// CA (PEM) that signed the other side's certificates: a docnode then requires client
    /// certificates from it; a gateway verifies docnodes with it (else the system roots).
    #[arg(long, env = "GRPC_TLS_CA_FILE")]
    pub grpc_tls_ca_file: Option<PathBuf>,
}

impl GrpcTlsConfig {
    /// Whether this process serves (docnode) with TLS.
    pub fn serves_tls(&self) -> bool {
        self.grpc_tls_cert_file.is_some()
    }

    fn identity(&self) -> Result<Option<Identity>, TlsError> {
        match (&self.grpc_tls_cert_file, &self.grpc_tls_key_file) {
            (Some(cert), Some(key)) => {
                // Parsed here so a bad file is named at start-up, not at the first handshake.
                read_certificates(cert)?;
                read_private_key(key)?;
                Ok(Some(Identity::from_pem(read_pem(cert)?, read_pem(key)?)))
            }
            _ => Ok(None),
        }
    }

    fn ca(&self) -> Result<Option<Certificate>, TlsError> {
        match &self.grpc_tls_ca_file {
            Some(path) => {
                read_certificates(path)?;
                Ok(Some(Certificate::from_pem(read_pem(path)?)))
            }
            None => Ok(None),
        }
    }

    /// The docnode's server TLS as a rustls configuration whose certificate is read again
    /// when its files change ([`ReloadingCertificate`]), or `None` without
    /// GRPC_TLS_CERT_FILE. Speaks HTTP/2 only (ALPN `h2`), as gRPC needs.
    pub fn reloading_server(&self) -> Result<Option<Arc<ServerConfig>>, TlsError> {
        let (Some(cert), Some(key)) = (&self.grpc_tls_cert_file, &self.grpc_tls_key_file) else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.grpc_tls_ca_file {
            Some(ca) => {
                let roots = Arc::new(root_store(Some(ca))?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_cert_resolver(Arc::new(ReloadingCertificate::load(cert, key)?));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(Arc::new(config)))
    }

    /// The gateway's client TLS for `https://` docnodes, or `None` when nothing is set
    /// (then `https://` docnodes are verified against the system roots by default).
    pub fn client(&self) -> Result<ClientTlsConfig, TlsError> {
        install_crypto_provider();
        let mut config = ClientTlsConfig::new();
        config = match self.ca()? {
            Some(ca) => config.ca_certificate(ca),
            None => config.with_native_roots(),
        };
        if let Some(identity) = self.identity()? {
            config = config.identity(identity);
        }
        Ok(config)
    }
}

/// How often a [`ReloadingCertificate`] looks at its files' modification times.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// A server certificate and key that are read again when their files change, so a rotated
/// certificate (cert-manager renewing a Secret, which Kubernetes swaps into the mounted
/// volume) is served to new connections without a restart. The files are looked at, at most
/// every few seconds, during handshakes; a rotation that cannot be read (a key that does not
/// match yet, a half-written file) keeps the previous certificate and is logged.
#[derive(Debug)]
pub struct ReloadingCertificate {
    /// The certificate chain file.
    cert: PathBuf,
    /// The private key file.
    key: PathBuf,
    /// What is served now.
    loaded: Mutex<Loaded>,
}

/// The certificate being served and what its files looked like when it was read.
#[derive(Debug)]
struct Loaded {
    /// The certificate and its signing key.
    certified: Arc<CertifiedKey>,
    /// Modification times of the certificate and key files when they were read.
    stamp: (Option<SystemTime>, Option<SystemTime>),
    /// When the files were last looked at.
    checked: Instant,
}

impl ReloadingCertificate {
    /// Reads the certificate and key now (failing start-up if they are unusable).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let stamp = stamp(cert, key);
        let certified = read_certified(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            loaded: Mutex::new(Loaded {
                certified,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The certificate to serve, re-read first if its files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if loaded.checked.elapsed() >= RELOAD_CHECK {
            loaded.checked = Instant::now();
            let now = stamp(&self.cert, &self.key);
            if now != loaded.stamp {
                match read_certified(&self.cert, &self.key) {
                    Ok(certified) => {
                        loaded.certified = certified;
                        loaded.stamp = now;
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "rotated TLS certificate unusable; serving the previous one");
                    }
                }
            }
        }
        Arc::clone(&loaded.certified)
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Modification times of a certificate and key (following symlinks, as Kubernetes mounts).
fn stamp(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

/// A certificate chain and its key, checked to belong together.
fn read_certified(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certificates(cert)?;
    let private = read_private_key(key)?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
        TlsError::Config(format!(
            "{} and {} do not make a usable certificate: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(Arc::new(certified))
}
