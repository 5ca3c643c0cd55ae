//! TLS and basic auth the Prometheus way: the daemon reads an exporter-toolkit web config, a
//! real Prometheus scrapes it over TLS with a private CA and basic auth, a wrong password gets
//! 401, plain HTTP on the TLS port gets a clean 400, and a rotated certificate is served
//! without a restart.
//!
//! `scripts/test` installs Debian's prometheus when missing.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::{Daemon, Prometheus, eventually};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A private CA; `leaf` signs a server certificate for 127.0.0.1 and localhost.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// (certificate PEM, key PEM).
    fn leaf(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A TLS client that trusts only `ca_pem`; a new one per call, so no connection is reused
/// and each call makes a handshake with the certificate served now.
fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `GET url` over TLS trusting `ca_pem`, with optional basic auth: the status, or the error.
fn get(ca_pem: &str, url: &str, auth: Option<(&str, &str)>) -> Result<u16, String> {
    runtime().block_on(async {
        let mut req = client(ca_pem).get(url);
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        req.send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("{e:?}"))
    })
}

fn post(ca_pem: &str, url: &str, auth: (&str, &str), body: String) -> u16 {
    runtime().block_on(async {
        client(ca_pem)
            .post(url)
            .basic_auth(auth.0, Some(auth.1))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

fn write(dir: &Path, name: &str, text: &str) {
    // Written aside and renamed over, as certificate managers do: a reader never sees half.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn start_prometheus(dir: &Path, target: &str, ca_file: &Path) -> Prometheus {
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prometheus\n      password: {password}\n    static_configs:\n      - targets: ['{target}']\n",
            ca_file.display()
        )
    };
    common::start_prometheus(
        dir,
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
            job("ratewarden", "s3cret"),
            job("wrong-password", "guess")
        ),
    )
}

/// The targets' health and last error, by job.
fn targets(p: &Prometheus) -> Vec<(String, String, String)> {
    let Some((_, body)) = common::http("GET", &format!("{}/api/v1/targets", p.base), &[], b"")
    else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["labels"]["job"].as_str().unwrap_or("").to_string(),
                t["health"].as_str().unwrap_or("").to_string(),
                t["lastError"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn query(p: &Prometheus, q: &str) -> Option<f64> {
    let url = format!(
        "{}/api/v1/query?query={}",
        p.base,
        q.bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            })
            .collect::<String>()
    );
    let (_, body) = common::http("GET", &url, &[], b"")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_a_rotated_certificate_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("ratewarden test CA");
    let (cert, key) = ca.leaf();
    write(d, "ca.pem", &ca.pem());
    write(d, "server.crt", &cert);
    write(d, "server.key", &key);
    // Cost 4, the least bcrypt allows: the test is about the wiring, not the hashing time.
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(
        d.join("web.yml"),
        format!(
            "# exporter-toolkit web configuration\ntls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\nhttp_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\nbasic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .unwrap();
    let port = common::free_port();
    let ca_pem = ca.pem();
    let daemon = Daemon::try_start_probed(
        d,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nweb_config_file = \"web.yml\"\nadmin_token_env = \"WEB_TEST_ADMIN\"\n[storage]\npath = \"store\"\n"
        ),
        &[("WEB_TEST_ADMIN", "adm1n")],
        &[],
        &|base| {
            let url = base.replace("http://", "https://") + "/readyz";
            get(&ca_pem, &url, None) == Ok(200)
        },
    )
    .unwrap_or_else(|log| panic!("daemon did not start:\n{log}"));
    let https = format!("https://127.0.0.1:{port}");

    // Basic auth or the route's token grants it; nothing else does. Health stays open.
    assert_eq!(get(&ca_pem, &format!("{https}/healthz"), None), Ok(200));
    assert_eq!(get(&ca_pem, &format!("{https}/metrics"), None), Ok(401));
    assert_eq!(
        get(
            &ca_pem,
            &format!("{https}/metrics"),
            Some(("prometheus", "guess"))
        ),
        Ok(401)
    );
    assert_eq!(
        get(
            &ca_pem,
            &format!("{https}/metrics"),
            Some(("nobody", "s3cret"))
        ),
        Ok(401)
    );
    assert_eq!(
        get(
            &ca_pem,
            &format!("{https}/v1/usage"),
            Some(("prometheus", "s3cret"))
        ),
        Ok(200)
    );
    let bearer = runtime().block_on(async {
        client(&ca_pem)
            .get(format!("{https}/v1/usage"))
            .bearer_auth("adm1n")
            .send()
            .await
            .map(|r| {
                (
                    r.status().as_u16(),
                    r.headers()
                        .get("strict-transport-security")
                        .map(|v| v.to_str().unwrap_or("").to_string()),
                )
            })
            .unwrap()
    });
    assert_eq!(
        bearer,
        (200, Some("max-age=31536000".to_string())),
        "the admin token still grants its routes; the configured header is on the answer"
    );

    // Traffic, so the scrape has an org to show.
    let now = chrono::Utc::now();
    let events: String = (0..3)
        .map(|i| {
            format!(
                "{{\"ts\":\"{}\",\"org\":\"acme\",\"app\":\"bot\",\"kind\":\"request\",\"status\":200,\"request_id\":\"r{i}\"}}\n",
                (now - chrono::Duration::seconds(i)).to_rfc3339()
            )
        })
        .collect();
    assert_eq!(
        post(
            &ca_pem,
            &format!("{https}/v1/events"),
            ("prometheus", "s3cret"),
            events
        ),
        202
    );

    // A plain HTTP request on the TLS port: Go's readable 400, and the connection closed.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 400 Bad Request\r\n")
            && answer.ends_with("Client sent an HTTP request to an HTTPS server.\n"),
        "{answer:?}"
    );

    // A real Prometheus, trusting the private CA: the right password scrapes data, the wrong
    // one is refused with 401.
    let prom = start_prometheus(d, &format!("127.0.0.1:{port}"), &d.join("ca.pem"));
    let scraped = eventually(30, || {
        query(
            &prom,
            "sum(ratewarden_requests_total{job=\"ratewarden\",org=\"acme\"})",
        )
        .filter(|&v| v == 3.0)
    });
    assert_eq!(scraped, Some(3.0), "targets: {:?}", targets(&prom));
    let refused = eventually(30, || {
        targets(&prom)
            .into_iter()
            .find(|(job, health, _)| job == "wrong-password" && health == "down")
    });
    let (_, _, error) = refused.expect("the wrong-password target is down");
    assert!(error.contains("401"), "{error}");
    assert_eq!(query(&prom, "up{job=\"ratewarden\"}"), Some(1.0));

    // Rotation: a certificate from another CA replaces the files; the next connection gets
    // it, with no restart (the same process still answers).
    let pid = daemon.pid();
    let next = Ca::new("ratewarden next CA");
    let (cert2, key2) = next.leaf();
    assert!(
        get(&next.pem(), &format!("{https}/healthz"), None).is_err(),
        "before rotation the new CA is not trusted"
    );
    write(d, "server.key", &key2);
    write(d, "server.crt", &cert2);
    assert_eq!(
        eventually(10, || get(&next.pem(), &format!("{https}/healthz"), None)
            .ok()),
        Some(200),
        "the rotated certificate is served"
    );
    assert!(
        get(&ca_pem, &format!("{https}/healthz"), None).is_err(),
        "the old certificate is no longer served"
    );
    assert_eq!(daemon.pid(), pid);
    assert!(
        daemon.log_text().contains("serving the new ones"),
        "the rotation is logged"
    );

    // A half-written key mid-rotation keeps the last good pair in service.
    write(d, "server.key", "-----BEGIN PRIVATE KEY-----\ntruncated");
    assert_eq!(get(&next.pem(), &format!("{https}/healthz"), None), Ok(200));
    assert!(
        daemon
            .log_text()
            .contains("still serving the previous ones")
    );
}

#[test]
fn check_config_reports_web_config_mistakes_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("rw.toml"),
        "[server]\nweb_config_file = \"web.yml\"\n",
    )
    .unwrap();
    let check = |web: &str| {
        std::fs::write(d.join("web.yml"), web).unwrap();
        let out = common::run(&["check-config", "rw.toml"], d);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check(
        "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_auth_type: Always\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("web.yml:4:") && err.contains("unknown variant `Always`"),
        "{err}"
    );
    let (code, err) =
        check("# tls\ntls_server_config:\n  cert_file: missing.crt\n  key_file: a.key\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("web.yml:3:") && err.contains("missing.crt"),
        "{err}"
    );
    let (code, err) = check("basic_auth_users:\n  alice: plaintext\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("web.yml:2:") && err.contains("bcrypt"),
        "{err}"
    );
}
