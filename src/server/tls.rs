//! TLS for the API's listener, from `tls_server_config` of the web configuration (rustls).
//!
//! This module owns turning the certificate, key and client-CA files into a rustls
//! configuration, and keeping it current: each new connection looks at the files' sizes and
//! modification times and, when one changed, builds the configuration again, so a rotated
//! certificate is served without a restart (the Go toolkit re-reads on every handshake). A
//! rebuild that fails (a half-written file mid-rotation) keeps the last good configuration
//! and logs why. It never decides who may use a route; that is `auth`'s.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use axum::http::{HeaderName, HeaderValue};

use crate::config::{CipherSuite, ClientAuth, Config, Curve, PemSource, TlsSettings, TlsVersion};

/// Why a TLS configuration cannot be built: the key of the web config at fault and a message
/// naming the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// The web config key the problem belongs to (`cert_file`, `key_file`, ...).
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn fail(key: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        key,
        message: message.into(),
    }
}

fn pem_bytes(src: &PemSource, key: &'static str) -> Result<Vec<u8>, TlsError> {
    match src {
        PemSource::Inline(s) => Ok(s.as_bytes().to_vec()),
        PemSource::File(p) => {
            std::fs::read(p).map_err(|e| fail(key, format!("{}: {e}", p.display())))
        }
    }
}

fn shown(src: &PemSource) -> String {
    match src {
        PemSource::File(p) => p.display().to_string(),
        PemSource::Inline(_) => "inline PEM".into(),
    }
}

/// The ring provider narrowed to the configured suites and groups.
fn provider(s: &TlsSettings) -> CryptoProvider {
    use rustls::crypto::ring::{cipher_suite as cs, default_provider, kx_group};
    let mut p = default_provider();
    if !s.cipher_suites.is_empty() {
        let wanted: Vec<_> = s
            .cipher_suites
            .iter()
            .map(|c| match c {
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => {
                    cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                }
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => {
                    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                }
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => {
                    cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                }
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => {
                    cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                }
                CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
                    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                }
                CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => {
                    cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
                }
            })
            .collect();
        // As in Go, the list governs TLS 1.2; TLS 1.3's suites stay as they are.
        p.cipher_suites
            .retain(|suite| suite.tls13().is_some() || wanted.contains(suite));
    }
    if !s.curve_preferences.is_empty() {
        p.kx_groups = s
            .curve_preferences
            .iter()
            .map(|c| match c {
                Curve::X25519 => kx_group::X25519,
                Curve::CurveP256 => kx_group::SECP256R1,
                Curve::CurveP384 => kx_group::SECP384R1,
            })
            .collect();
    }
    p
}

/// Builds the rustls configuration `s` describes, reading its files now.
pub fn build(s: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let cert_key = if matches!(s.cert, PemSource::File(_)) {
        "cert_file"
    } else {
        "cert"
    };
    let key_key = if matches!(s.key, PemSource::File(_)) {
        "key_file"
    } else {
        "key"
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem_bytes(&s.cert, cert_key)?)
            .collect::<Result<_, _>>()
            .map_err(|e| fail(cert_key, format!("{}: {e}", shown(&s.cert))))?;
    if certs.is_empty() {
        return Err(fail(
            cert_key,
            format!("{}: no CERTIFICATE block in it", shown(&s.cert)),
        ));
    }
    let key_pem = pem_bytes(&s.key, key_key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let hint = if key_pem.windows(9).any(|w| w == b"ENCRYPTED") {
            "; it is encrypted: give the key unencrypted (openssl pkey -in KEY -out PLAIN)"
        } else {
            ""
        };
        fail(
            key_key,
            format!("{}: no usable private key ({e}){hint}", shown(&s.key)),
        )
    })?;
    let provider = Arc::new(provider(s));
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if s.min_version <= TlsVersion::TLS12 && s.max_version >= TlsVersion::TLS12 {
        versions.push(&rustls::version::TLS12);
    }
    if s.max_version >= TlsVersion::TLS13 {
        versions.push(&rustls::version::TLS13);
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| fail("cipher_suites", format!("no usable protocol version: {e}")))?;
    let verifier: Arc<dyn ClientCertVerifier> = match s.client_auth {
        ClientAuth::NoClientCert => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            Arc::new(AnyClientCert {
                mandatory: s.client_auth == ClientAuth::RequireAnyClientCert,
                provider: provider.clone(),
            })
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let Some(ca) = &s.client_ca_file else {
                return Err(fail(
                    "client_ca_file",
                    "needed to verify client certificates",
                ));
            };
            let bytes = std::fs::read(ca)
                .map_err(|e| fail("client_ca_file", format!("{}: {e}", ca.display())))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&bytes) {
                let c = c.map_err(|e| fail("client_ca_file", format!("{}: {e}", ca.display())))?;
                roots
                    .add(c)
                    .map_err(|e| fail("client_ca_file", format!("{}: {e}", ca.display())))?;
            }
            if roots.is_empty() {
                return Err(fail(
                    "client_ca_file",
                    format!("{}: no CERTIFICATE block in it", ca.display()),
                ));
            }
            let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let b = if s.client_auth == ClientAuth::VerifyClientCertIfGiven {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build()
                .map_err(|e| fail("client_ca_file", format!("{}: {e}", ca.display())))?
        }
    };
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            fail(
                key_key,
                format!(
                    "{} and {} do not make a usable pair: {e}",
                    shown(&s.cert),
                    shown(&s.key)
                ),
            )
        })?;
    config.ignore_client_order = s.prefer_server_cipher_suites;
    // HTTP/1.1 only (hyper's http1 server); a client that offers h2 falls back to it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `RequestClientCert` / `RequireAnyClientCert`: a certificate is asked for (and, for the
/// second, required) but not verified against any CA, as in Go. The handshake's signatures
/// are still checked, so the client does hold the key of what it presents.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What a file looked like when it was last read: size and modification time.
type Stamp = Option<(u64, SystemTime)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// The listener's TLS configuration, rebuilt when its files change.
pub struct Reloading {
    settings: TlsSettings,
    files: Vec<PathBuf>,
    current: Mutex<(Vec<Stamp>, Arc<ServerConfig>)>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.files)
            .finish()
    }
}

impl Reloading {
    /// Reads the files now; an error here stops the start (nothing good to fall back on).
    pub fn new(settings: TlsSettings) -> Result<Reloading, TlsError> {
        let files: Vec<PathBuf> = [&settings.cert, &settings.key]
            .into_iter()
            .filter_map(|s| match s {
                PemSource::File(p) => Some(p.clone()),
                PemSource::Inline(_) => None,
            })
            .chain(settings.client_ca_file.clone())
            .collect();
        let stamps = files.iter().map(|p| stamp(p)).collect();
        let config = Arc::new(build(&settings)?);
        Ok(Reloading {
            settings,
            files,
            current: Mutex::new((stamps, config)),
        })
    }

    /// The configuration for a new connection: rebuilt first when a file changed since the
    /// last build (or the last failed attempt, so a bad file is not retried per connection).
    pub fn config(&self) -> Arc<ServerConfig> {
        let stamps: Vec<Stamp> = self.files.iter().map(|p| stamp(p)).collect();
        // A panic while rebuilding would poison the lock; the value in it is still sound.
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.0 != stamps {
            cur.0 = stamps;
            match build(&self.settings) {
                Ok(c) => {
                    tracing::info!(files = ?self.files, "TLS certificate files changed; serving the new ones");
                    cur.1 = Arc::new(c);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load; still serving the previous ones");
                }
            }
        }
        cur.1.clone()
    }
}

/// What the web configuration adds to every connection: TLS, and headers on every answer.
#[derive(Debug, Clone, Default)]
pub struct Web {
    /// `tls_server_config`, kept current with its files.
    pub tls: Option<Arc<Reloading>>,
    /// `http_server_config.headers`.
    pub headers: Arc<[(HeaderName, HeaderValue)]>,
}

impl Web {
    /// What `config`'s web config file asks for, its TLS files read now (so `run` and
    /// `check-config` fail on a bad certificate). The error names the web config file, the
    /// line of the key at fault, and why.
    pub fn of(config: &Config) -> Result<Web, String> {
        let Some(w) = &config.server.web else {
            return Ok(Web::default());
        };
        let tls = match &w.tls {
            None => None,
            Some(t) => Some(Arc::new(Reloading::new(t.clone()).map_err(|e| {
                let (line, col) = w.position_of(e.key);
                format!("{}:{line}:{col}: {e}", w.path.display())
            })?)),
        };
        let headers = w
            .headers
            .iter()
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        Ok(Web { tls, headers })
    }
}
