//! How the docnode reaches Postgres securely: libpq's `sslmode` and `sslrootcert` read from
//! DATABASE_URL (tokio-postgres knows only disable/prefer/require and no root file, so they
//! are taken out of the URL here), a CA file setting, and the password from a file.
//!
//! The modes mean what they mean to libpq, so an operator's managed-database instructions
//! apply unchanged: `disable` never encrypts; `prefer` (the default) encrypts when the
//! server offers it, without checking who the server is; `require` insists on TLS and checks
//! the chain only when a CA is given; `verify-ca` checks the chain; `verify-full` checks the
//! chain and that the certificate names the host. Verification uses the CA file when one is
//! given, else the system's roots.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{CertificateDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values this store honours (`allow` is folded into `prefer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, unverified; plain otherwise.
    Prefer,
    /// TLS always; the chain is checked only when a CA is given.
    Require,
    /// TLS always; the chain must lead to a trusted CA.
    VerifyCa,
    /// TLS always; the chain must lead to a trusted CA and name the host.
    VerifyFull,
}

impl SslMode {
    /// Parses a libpq `sslmode` value.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "disable" => Ok(Self::Disable),
            "allow" | "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            )),
        }
    }

    /// The nearest mode tokio-postgres itself understands (it only decides whether TLS is
    /// attempted and whether it is mandatory; verification is ours).
    fn wire_mode(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require | Self::VerifyCa | Self::VerifyFull => "require",
        }
    }
}

/// TLS and credential settings that live beside DATABASE_URL.
#[derive(Debug, Clone, Default)]
pub struct PgSecurity {
    /// CA certificates (PEM) that verify the server (DATABASE_CA_FILE); `sslrootcert` in
    /// the URL takes precedence.
    pub ca_file: Option<PathBuf>,
    /// File whose content is the password (DATABASE_PASSWORD_FILE); overrides a password in
    /// the URL. A trailing newline is ignored.
    pub password_file: Option<PathBuf>,
}

/// A connection config and the TLS connector it needs.
pub struct PgConnect {
    /// The config tokio-postgres parses, with our TLS options taken out.
    pub config: tokio_postgres::Config,
    /// The rustls connector (unused under `disable`).
    pub tls: MakeRustlsConnect,
    /// The effective mode, for the log.
    pub mode: SslMode,
}

/// Reads DATABASE_URL (URL or `key=value` form) and the settings beside it.
pub fn prepare(url: &str, security: &PgSecurity) -> Result<PgConnect, String> {
    let (rest, mode, rootcert) = split_tls_options(url)?;
    let mode = mode.unwrap_or(SslMode::Prefer);
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        format!(
            "DATABASE_URL is not a usable Postgres URL ({e}); expected something like \
             postgres://user@host:5432/database?sslmode=verify-full"
        )
    })?;
    config.ssl_mode(match mode.wire_mode() {
        "disable" => tokio_postgres::config::SslMode::Disable,
        "prefer" => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    if let Some(path) = &security.password_file {
        let password = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "DATABASE_PASSWORD_FILE {} cannot be read: {e}",
                path.display()
            )
        })?;
        config.password(password.trim_end_matches(['\r', '\n']));
    }
    let ca = rootcert.or_else(|| security.ca_file.clone());
    let tls = MakeRustlsConnect::new(client_config(mode, ca.as_deref())?);
    Ok(PgConnect { config, tls, mode })
}

/// The rustls client configuration a mode asks for.
fn client_config(mode: SslMode, ca: Option<&Path>) -> Result<ClientConfig, String> {
    codraft_common::tls::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let check_chain = match mode {
        SslMode::Disable | SslMode::Prefer => false,
        SslMode::Require => ca.is_some(),
        SslMode::VerifyCa | SslMode::VerifyFull => true,
    };
    if !check_chain {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth());
    }
    let roots = codraft_common::tls::root_store(ca)
        .map_err(|e| format!("Postgres CA (sslrootcert or DATABASE_CA_FILE): {e}"))?;
    if mode == SslMode::VerifyFull {
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
        .with_no_client_auth())
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query or a `key=value` string.
fn split_tls_options(url: &str) -> Result<(String, Option<SslMode>, Option<PathBuf>), String> {
    let mut mode = None;
    let mut rootcert = None;
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => mode = Some(SslMode::parse(value)?),
            "sslrootcert" => rootcert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    if url.contains("://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), None, None));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(key, &percent_decode(value))? {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((rest, mode, rootcert))
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            if !take(key.trim(), value.trim_matches('\''))? {
                kept.push(word);
            }
        }
        Ok((kept.join(" "), mode, rootcert))
    }
}

/// Undoes `%XX` escapes (a root file path in a URL query has its `/` and spaces escaped).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `verify-ca`: the chain must verify, the name may be anything (the server is reached
/// through an address its certificate does not list, as with many managed services' IPs).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name, so a name error means the chain passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a CA: encrypted, but any certificate is accepted (libpq's
/// meaning; the handshake signatures are still checked so the session key is the server's).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_leave_the_url_and_keep_the_rest() {
        let (rest, mode, root) = split_tls_options(
            "postgres://u@db:5432/x?application_name=a&sslmode=verify-full&sslrootcert=%2Fca%2Froot.pem",
        )
        .expect("parses");
        assert_eq!(rest, "postgres://u@db:5432/x?application_name=a");
        assert_eq!(mode, Some(SslMode::VerifyFull));
        assert_eq!(root, Some(PathBuf::from("/ca/root.pem")));
        let (rest, mode, _) =
            split_tls_options("host=db user=u sslmode=verify-ca dbname=x").expect("parses");
        assert_eq!(rest, "host=db user=u dbname=x");
        assert_eq!(mode, Some(SslMode::VerifyCa));
        let (rest, mode, root) = split_tls_options("postgres://u@db/x").expect("parses");
        assert_eq!(
            (rest.as_str(), mode, root),
            ("postgres://u@db/x", None, None)
        );
    }

    #[test]
    fn unknown_sslmode_is_refused_with_the_choices() {
        let error = split_tls_options("postgres://u@db/x?sslmode=verify").expect_err("refused");
        assert!(error.contains("verify-full"), "{error}");
    }

    #[test]
    fn password_file_overrides_the_url_and_loses_its_newline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").expect("write");
        let security = PgSecurity {
            ca_file: None,
            password_file: Some(path),
        };
        let connect = prepare("postgres://u:old@db/x?sslmode=disable", &security).expect("ok");
        assert_eq!(connect.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(connect.mode, SslMode::Disable);
        let missing = PgSecurity {
            ca_file: None,
            password_file: Some(dir.path().join("absent")),
        };
        let error = prepare("postgres://u@db/x", &missing)
            .err()
            .expect("refused");
        assert!(error.contains("DATABASE_PASSWORD_FILE"), "{error}");
    }
}
