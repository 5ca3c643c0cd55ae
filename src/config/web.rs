//! `[server] web_config_file`: the Prometheus exporter-toolkit web configuration, read
//! unchanged (YAML; <https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md>).
//!
//! This module owns reading and checking the file: every value is checked while it is read,
//! so a mistake is reported at its line and column. It never opens the certificate files or
//! builds TLS state; the server does that (and re-reads them when they change).
//!
//! Differences from the Go toolkit, each refused or stated rather than silently ignored:
//! TLS 1.0 and 1.1 do not exist in rustls, so `min_version: TLS10`/`TLS11` mean TLS 1.2 and
//! `max_version` below `TLS12` is an error; `curve_preferences` has no `CurveP521`;
//! `client_allowed_sans` is not supported; `http2: true` is accepted and served as HTTP/1.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why the web config cannot be used; [`super::Config::load`] turns it into a `ConfigError`.
#[derive(Debug)]
pub enum WebConfigError {
    /// The file could not be read.
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid web config.
    Invalid {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What is wrong.
        message: String,
    },
}

impl std::fmt::Display for WebConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebConfigError::Io { path, source } => write!(f, "{path}: {source}"),
            WebConfigError::Invalid {
                path,
                line,
                col,
                message,
            } => write!(f, "{path}:{line}:{col}: {message}"),
        }
    }
}

/// The web configuration, checked.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// The file, as the TOML names it (for messages).
    pub path: PathBuf,
    /// `tls_server_config`, when TLS is on.
    pub tls: Option<TlsSettings>,
    /// `basic_auth_users`: user name → bcrypt hash.
    pub basic_auth_users: BTreeMap<String, BcryptHash>,
    /// `http_server_config.headers`, added to every answer.
    pub headers: Vec<(String, String)>,
}

/// `tls_server_config`.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM), a file or inline text.
    pub cert: PemSource,
    /// Its private key (PEM), a file or inline text.
    pub key: PemSource,
    /// Whether and how clients present certificates.
    pub client_auth: ClientAuth,
    /// CA certificates (PEM) client certificates are verified against.
    pub client_ca_file: Option<PathBuf>,
    /// Lowest protocol version offered.
    pub min_version: TlsVersion,
    /// Highest protocol version offered.
    pub max_version: TlsVersion,
    /// TLS 1.2 cipher suites allowed (empty: rustls's defaults). Go names.
    pub cipher_suites: Vec<CipherSuite>,
    /// Key-exchange groups, in preference order (empty: rustls's defaults).
    pub curve_preferences: Vec<Curve>,
    /// The server's cipher-suite order wins over the client's.
    pub prefer_server_cipher_suites: bool,
}

/// Where PEM text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file, re-read when it changes (relative paths resolved against the web config's
    /// directory, as the Go toolkit does).
    File(PathBuf),
    /// Inline text (`cert:` / `key:`).
    Inline(String),
}

/// `client_auth_type`, Go's `tls.ClientAuthType` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate asked for.
    #[default]
    NoClientCert,
    /// Asked for, not required, not verified.
    RequestClientCert,
    /// Required, not verified.
    RequireAnyClientCert,
    /// Verified against `client_ca_file` when given.
    VerifyClientCertIfGiven,
    /// Required and verified against `client_ca_file`.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    /// Whether a certificate is verified against `client_ca_file`.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

/// A TLS protocol version, as `min_version`/`max_version` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.0 (served as 1.2: rustls has no older version).
    TLS10,
    /// TLS 1.1 (likewise).
    TLS11,
    /// TLS 1.2.
    TLS12,
    /// TLS 1.3.
    TLS13,
}

/// A TLS 1.2 cipher suite by its Go (IANA) name; only those rustls implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum CipherSuite {
    /// ECDHE-ECDSA with AES-128-GCM.
    TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    /// ECDHE-ECDSA with AES-256-GCM.
    TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    /// ECDHE-RSA with AES-128-GCM.
    TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    /// ECDHE-RSA with AES-256-GCM.
    TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    /// ECDHE-ECDSA with ChaCha20-Poly1305 (Go also accepts the name without `_SHA256`).
    #[serde(alias = "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305")]
    TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    /// ECDHE-RSA with ChaCha20-Poly1305.
    #[serde(alias = "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305")]
    TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

/// A key-exchange group by its Go name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Curve {
    /// X25519.
    X25519,
    /// NIST P-256.
    CurveP256,
    /// NIST P-384.
    CurveP384,
}

/// A bcrypt hash, checked to be one (`$2a$`/`$2b$`/`$2y$`, cost and 53 characters) when read.
#[derive(Clone, PartialEq, Eq)]
pub struct BcryptHash(pub String);

impl std::fmt::Debug for BcryptHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BcryptHash(..)")
    }
}

impl BcryptHash {
    fn parse(s: String) -> Result<BcryptHash, String> {
        match s.parse::<bcrypt::HashParts>() {
            Ok(_) => Ok(BcryptHash(s)),
            Err(e) => Err(format!(
                "not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 USER` and keep the part after the colon"
            )),
        }
    }
}

/// An answer header `http_server_config.headers` may set: the Go toolkit's list.
const ALLOWED_HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// Checks one `http_server_config.headers` entry: its canonical name, or why not.
fn header(name: &str, value: &str) -> Result<String, String> {
    let Some(canonical) = ALLOWED_HEADERS
        .iter()
        .find(|h| h.eq_ignore_ascii_case(name))
    else {
        return Err(format!(
            "header {name:?} may not be set here; allowed: {}",
            ALLOWED_HEADERS.join(", ")
        ));
    };
    if axum::http::HeaderValue::from_str(value).is_err() {
        return Err(format!(
            "header {name}: {value:?} is not a valid header value"
        ));
    }
    Ok((*canonical).to_string())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    /// Accepted for compatibility; ratewarden serves HTTP/1.1.
    #[serde(default)]
    #[allow(dead_code)]
    http2: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    cert_file: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<String>,
    #[serde(default)]
    min_version: Option<TlsVersion>,
    #[serde(default)]
    max_version: Option<TlsVersion>,
    #[serde(default)]
    cipher_suites: Option<Vec<CipherSuite>>,
    #[serde(default)]
    curve_preferences: Option<Vec<Curve>>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
}

/// `client_auth_type` by Go's names (`""` is the default, as in Go).
fn client_auth(name: &str) -> Result<ClientAuth, String> {
    Ok(match name {
        "" | "NoClientCert" => ClientAuth::NoClientCert,
        "RequestClientCert" => ClientAuth::RequestClientCert,
        "RequireAnyClientCert" => ClientAuth::RequireAnyClientCert,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
        other => {
            return Err(format!(
                "unknown variant `{other}`, expected one of `NoClientCert`, `RequestClientCert`, `RequireAnyClientCert`, `VerifyClientCertIfGiven`, `RequireAndVerifyClientCert`"
            ));
        }
    })
}

impl WebConfig {
    /// Reads and checks the file at `path`. Errors name the file, and the line and column
    /// where the YAML says so.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Io {
            path: shown.clone(),
            source,
        })?;
        WebConfig::parse(&text, path)
    }

    /// Checks `text`, the contents of `path` (relative file names inside are resolved
    /// against `path`'s directory).
    pub fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
        let shown = path.display().to_string();
        let invalid = |line: usize, col: usize, message: String| WebConfigError::Invalid {
            path: shown.clone(),
            line,
            col,
            message,
        };
        // An empty file (or one of comments) is a valid web config: plain HTTP, no auth.
        let raw: RawWeb = if text.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t == "---"
        }) {
            RawWeb::default()
        } else {
            serde_norway::from_str(text).map_err(|e| {
                let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
                // The location is in the message already; keep the message short.
                let msg = e.to_string();
                let msg = msg
                    .split(" at line ")
                    .next()
                    .unwrap_or(&msg)
                    .trim()
                    .to_string();
                invalid(line, col, msg)
            })?
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };
        let at_key = |key: &str, message: String| {
            let (line, col) = key_position(text, key);
            invalid(line, col, message)
        };
        // As in Go, a tls_server_config naming no certificate and no key means plain HTTP.
        let tls = match raw.tls_server_config.filter(|t| {
            [&t.cert_file, &t.key_file, &t.cert, &t.key]
                .iter()
                .any(|v| v.as_deref().is_some_and(|v| !v.trim().is_empty()))
        }) {
            None => None,
            Some(t) => {
                let source =
                    |file: Option<String>, inline: Option<String>, what: &str| match (file, inline)
                    {
                        (Some(_), Some(_)) => Err(at_key(
                            what,
                            format!("give {what}_file or {what}, not both"),
                        )),
                        (Some(f), None) if !f.trim().is_empty() => Ok(PemSource::File(resolve(&f))),
                        (None, Some(s)) if !s.trim().is_empty() => Ok(PemSource::Inline(s)),
                        _ => Err(at_key(
                            "tls_server_config",
                            format!("tls_server_config needs {what}_file (or inline {what})"),
                        )),
                    };
                let cert = source(t.cert_file, t.cert, "cert")?;
                let key = source(t.key_file, t.key, "key")?;
                let client_auth = client_auth(t.client_auth_type.as_deref().unwrap_or(""))
                    .map_err(|m| at_key("client_auth_type", m))?;
                let client_ca_file = t.client_ca_file.filter(|s| !s.trim().is_empty());
                if client_auth.verifies() && client_ca_file.is_none() {
                    return Err(at_key(
                        "client_auth_type",
                        format!(
                            "client_auth_type {client_auth:?} verifies client certificates: it needs client_ca_file"
                        ),
                    ));
                }
                // As in Go, a CA file beside a mode that does not verify is accepted (and
                // only read by the modes that do).
                let min_version = t.min_version.unwrap_or(TlsVersion::TLS12);
                let max_version = t.max_version.unwrap_or(TlsVersion::TLS13);
                if max_version < TlsVersion::TLS12 {
                    return Err(at_key(
                        "max_version",
                        "max_version must be TLS12 or TLS13: older versions are not offered".into(),
                    ));
                }
                if max_version < min_version {
                    return Err(at_key(
                        "max_version",
                        "max_version is below min_version".into(),
                    ));
                }
                Some(TlsSettings {
                    cert,
                    key,
                    client_auth,
                    client_ca_file: client_ca_file.map(|f| resolve(&f)),
                    min_version,
                    max_version,
                    cipher_suites: t.cipher_suites.unwrap_or_default(),
                    curve_preferences: t.curve_preferences.unwrap_or_default(),
                    prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
                })
            }
        };
        let mut basic_auth_users = BTreeMap::new();
        for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
            if user.contains(':') {
                return Err(at_key(
                    &user,
                    format!("user name {user:?} contains ':', which basic auth cannot carry"),
                ));
            }
            // serde_norway places errors inside a map at the map's start: check here, and
            // point at the user's own line.
            let hash =
                BcryptHash::parse(hash).map_err(|m| at_key(&user, format!("{user}: {m}")))?;
            basic_auth_users.insert(user, hash);
        }
        let mut headers = Vec::new();
        for (name, value) in raw
            .http_server_config
            .and_then(|h| h.headers)
            .unwrap_or_default()
        {
            let canonical = header(&name, &value).map_err(|m| at_key(&name, m))?;
            headers.push((canonical, value));
        }
        Ok(WebConfig {
            path: path.to_path_buf(),
            tls,
            basic_auth_users,
            headers,
        })
    }

    /// The line and column of `key` in the file's text, for problems found after reading
    /// (a certificate that does not load); (1, 1) when it cannot be found.
    pub fn position_of(&self, key: &str) -> (usize, usize) {
        std::fs::read_to_string(&self.path).map_or((1, 1), |t| key_position(&t, key))
    }
}

/// Where `key:` is first written in `text` (1-based line and column).
fn key_position(text: &str, key: &str) -> (usize, usize) {
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let bare = trimmed.trim_start_matches(['"', '\'']);
        if bare.starts_with(key)
            && bare[key.len()..]
                .trim_start_matches(['"', '\''])
                .starts_with(':')
        {
            return (n + 1, line.len() - trimmed.len() + 1);
        }
    }
    (1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(text, Path::new("/etc/rw/web.yml")).map_err(|e| e.to_string())
    }

    const HASH: &str = "$2y$10$CZsP8QSiFqngQ836XiitO.bpUxqL0SgPl0tGcxhl0dvekKMWgAM.O";

    #[test]
    fn the_toolkit_example_is_read() {
        let w = parse(&format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [X25519]\nhttp_server_config:\n  http2: true\n  headers:\n    x-frame-options: deny\nbasic_auth_users:\n  prometheus: {HASH}\n"
        ))
        .unwrap();
        let tls = w.tls.unwrap();
        assert_eq!(tls.cert, PemSource::File("/etc/rw/server.crt".into()));
        assert_eq!(tls.key, PemSource::File("/abs/server.key".into()));
        assert_eq!(tls.client_ca_file, Some("/etc/rw/ca.crt".into()));
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(tls.min_version, TlsVersion::TLS13);
        assert_eq!(w.headers, vec![("X-Frame-Options".into(), "deny".into())]);
        assert_eq!(w.basic_auth_users["prometheus"].0, HASH);
    }

    #[test]
    fn an_empty_file_is_plain_http_without_auth() {
        let w = parse("# nothing yet\n").unwrap();
        assert!(w.tls.is_none() && w.basic_auth_users.is_empty());
        // As in Go: TLS settings without a certificate or key mean plain HTTP.
        let w = parse("tls_server_config:\n  cert_file: \"\"\n  min_version: TLS13\n").unwrap();
        assert!(w.tls.is_none());
        assert!(parse("tls_server_config: {}\n").unwrap().tls.is_none());
    }

    #[test]
    fn go_spellings_are_accepted() {
        let w =
            parse("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: \"\"\n")
                .unwrap();
        assert_eq!(w.tls.unwrap().client_auth, ClientAuth::NoClientCert);
        let w = parse("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n  client_ca_file: ca.pem\n").unwrap();
        assert_eq!(w.tls.unwrap().client_auth, ClientAuth::RequireAnyClientCert);
    }

    #[test]
    fn mistakes_are_reported_at_their_line() {
        for (text, line, needle) in [
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Sometimes\n",
                4,
                "unknown variant `Sometimes`",
            ),
            (
                &format!("basic_auth_users:\n  ok: {HASH}\n  bad: hunter2\n") as &str,
                3,
                "not a bcrypt hash",
            ),
            ("tls_server_config:\n  cert_file: a\n", 1, "needs key_file"),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
                4,
                "needs client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  max_version: TLS11\n",
                4,
                "max_version must be TLS12 or TLS13",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [CurveP521]\n",
                4,
                "unknown variant `CurveP521`",
            ),
            (
                "http_server_config:\n  headers:\n    Server: nginx\n",
                3,
                "may not be set here",
            ),
            (
                "tls_srver_config: {}\n",
                1,
                "unknown field `tls_srver_config`",
            ),
            ("basic_auth_users: [a, b]\n", 1, "invalid type"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(
                err.starts_with(&format!("/etc/rw/web.yml:{line}:")),
                "{text:?}: {err}"
            );
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
