//! Black-box: alert delivery of the real binary to real peers over TCP: an SMTP server
//! (aiosmtpd, STARTTLS + AUTH), HTTP receivers that verify the signature and misbehave, and a
//! real Alertmanager. `scripts/test` installs aiosmtpd and prometheus-alertmanager.

mod common;

use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, eventually, http, metric};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;

// ------------------------------------------------------------------ an HTTP receiver

#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    answered: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Records every POST; answers 503 (Retry-After: 1) to the first `fail_first`, then 200.
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().unwrap(), fail_first)
    }

    fn start_on(addr: SocketAddr, fail_first: usize) -> Receiver {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let seen = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let record = hits.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().fallback(
                    move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                        let (record, seen) = (record.clone(), seen.clone());
                        async move {
                            let n = seen.fetch_add(1, Ordering::SeqCst);
                            let answered = if n < fail_first { 503 } else { 200 };
                            record.lock().unwrap().push(Hit {
                                at: Instant::now(),
                                headers: headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (
                                            k.as_str().to_string(),
                                            v.to_str().unwrap_or("").to_string(),
                                        )
                                    })
                                    .collect(),
                                body: body.to_vec(),
                                answered,
                            });
                            let status = axum::http::StatusCode::from_u16(answered).unwrap();
                            (status, [("retry-after", "1")], "receiver says hello")
                        }
                    },
                );
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Receiver {
            addr,
            hits,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn verify(secret: &str, hit: &Hit) -> bool {
    let (Some(ts), Some(sig)) = (
        hit.headers.get("x-ratewarden-timestamp"),
        hit.headers.get("x-ratewarden-signature"),
    ) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&hit.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sig == &format!("sha256={want}")
}

// ------------------------------------------------------------------ the daemon side

const BASE: &str = r#"
[server]
listen = "127.0.0.1:0"

[tiers.c10]
concurrency = 10

[tiers.c20]
concurrency = 20

[[orgs]]
id = "beta"
tier = "c10"

[[orgs]]
id = "gamma"
tier = "c20"
"#;

fn post(d: &Daemon, lines: &[String]) {
    let (status, answer) = d.post_events(&(lines.join("\n") + "\n"));
    assert_eq!(status, 202, "{answer}");
}

fn start_jobs(org: &str, ids: std::ops::Range<u32>) -> Vec<String> {
    let now = chrono::Utc::now().timestamp_millis();
    ids.map(|i| format!(r#"{{"org":"{org}","ts":{now},"status":202,"job_id":"j{i}"}}"#))
        .collect()
}

fn finish_jobs(org: &str, ids: std::ops::Range<u32>) -> Vec<String> {
    let now = chrono::Utc::now().timestamp_millis();
    ids.map(|i| format!(r#"{{"org":"{org}","ts":{now},"kind":"job_completed","job_id":"j{i}"}}"#))
        .collect()
}

fn with_webhook(url: &str, extra: &str) -> String {
    format!(
        "{BASE}\n[alerts]\nretry_base = \"100ms\"\nretry_cap = \"2s\"\n\n[[alerts.webhook]]\nname = \"hook\"\nurl = \"{url}\"\nformat = \"json\"\nsecret_env = \"T_HOOK_SECRET\"\n{extra}"
    )
}

// ------------------------------------------------------------------ tests

#[test]
fn signed_webhook_survives_a_receiver_that_answers_503_three_times() {
    let receiver = Receiver::start(3);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &with_webhook(&receiver.url(), ""),
        &[("T_HOOK_SECRET", "s3cret")],
    );
    post(&d, &start_jobs("beta", 0..7));
    let delivered = eventually(20, || {
        let hits = receiver.hits();
        hits.iter().any(|h| h.answered == 200).then_some(hits)
    })
    .unwrap_or_else(|| {
        panic!(
            "not delivered: {:?}\n{}",
            receiver.hits().len(),
            d.log_text()
        )
    });
    assert_eq!(delivered.len(), 4, "three 503s, then the 200");
    for hit in &delivered {
        assert!(
            verify("s3cret", hit),
            "signature verifies: {:?}",
            hit.headers
        );
        assert_eq!(hit.json()["alert"], "UsageHigh");
        assert_eq!(hit.json()["severity"], "warning");
        assert_eq!(hit.json()["dimension"], "concurrency");
        assert_eq!(hit.json()["usage"], 7);
    }
    let ids: std::collections::HashSet<_> = delivered
        .iter()
        .map(|h| h.headers["x-ratewarden-delivery"].clone())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "one notification, one stable delivery id across retries"
    );
    for pair in delivered.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(950),
            "Retry-After: 1 honoured (gap {gap:?})"
        );
    }
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_notifications_total{channel="hook",outcome="retried"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_notifications_total{channel="hook",outcome="sent"}"#
        ),
        Some(1.0)
    );
    let (_, alerts) = http("GET", &format!("{}/v1/alerts", d.base), &[], b"").unwrap();
    let v: Value = serde_json::from_str(&alerts).unwrap();
    let hook = &v["channels"][0];
    assert_eq!(hook["name"], "hook");
    assert_eq!(hook["delivered"], 1);
    assert!(
        hook["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{hook}"
    );
    common::observe(
        Duration::from_secs(1),
        "nothing is sent twice after success",
    );
    assert_eq!(receiver.hits().len(), 4, "nothing sent twice after success");
}

#[test]
fn a_permanent_4xx_is_not_retried() {
    // A receiver that always answers 400: the notification fails once, for good.
    let hits: Arc<Mutex<u32>> = Arc::default();
    let counter = hits.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            *counter.lock().unwrap() += 1;
            let msg = "{\"error\":\"unknown channel\"}";
            let _ = std::io::Write::write_all(
                &mut &stream,
                format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}", msg.len()).as_bytes(),
            );
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &with_webhook(&format!("http://{addr}/hook"), ""),
        &[("T_HOOK_SECRET", "x")],
    );
    post(&d, &start_jobs("beta", 0..7));
    let failed = eventually(10, || {
        metric(
            &d.base,
            r#"ratewarden_notifications_total{channel="hook",outcome="failed"}"#,
        )
        .filter(|v| *v == 1.0)
    });
    assert!(failed.is_some(), "{}", d.log_text());
    common::observe(Duration::from_secs(1), "a failed delivery is not retried");
    assert_eq!(*hits.lock().unwrap(), 1);
    assert!(
        d.log_text().contains("unknown channel"),
        "the receiver's answer is logged"
    );
}

#[test]
fn delivered_after_both_the_receiver_and_the_daemon_come_back() {
    // A port with nothing listening on it (yet).
    let port = std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let dir = tempfile::tempdir().unwrap();
    let config = with_webhook(&format!("http://{port}/hook"), "");
    let mut d = Daemon::start(dir.path(), &config, &[("T_HOOK_SECRET", "s")]);
    post(&d, &start_jobs("beta", 0..7));
    let retried = eventually(10, || {
        metric(
            &d.base,
            r#"ratewarden_notifications_total{channel="hook",outcome="retried"}"#,
        )
        .filter(|v| *v >= 1.0)
    });
    assert!(
        retried.is_some(),
        "an attempt failed while the receiver was down"
    );
    d.kill9();
    let receiver = Receiver::start_on(port, 0);
    let d = Daemon::start(dir.path(), &config, &[("T_HOOK_SECRET", "s")]);
    let got = eventually(20, || {
        let hits = receiver.hits();
        (!hits.is_empty()).then_some(hits)
    })
    .unwrap_or_else(|| panic!("not delivered after restart\n{}", d.log_text()));
    assert_eq!(got[0].json()["status"], "firing");
    assert!(verify("s", &got[0]));
    common::observe(Duration::from_secs(2), "the firing is not delivered again");
    let firing = receiver
        .hits()
        .iter()
        .filter(|h| h.json()["status"] == "firing")
        .count();
    assert_eq!(firing, 1, "recovery does not fire the alert a second time");
    // The alert state survived too: finishing the jobs resolves it.
    post(&d, &finish_jobs("beta", 0..7));
    assert!(
        eventually(10, || receiver
            .hits()
            .iter()
            .any(|h| h.json()["status"] == "resolved")
            .then_some(()))
        .is_some()
    );
}

#[test]
fn no_flapping_inside_the_hysteresis_band() {
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &with_webhook(&receiver.url(), ""),
        &[("T_HOOK_SECRET", "s")],
    );
    // gamma: 20 concurrent. 14 jobs = 70 % fires; 13 = 65 % holds; back and forth ten times.
    post(&d, &start_jobs("gamma", 0..14));
    assert!(eventually(10, || (receiver.hits().len() == 1).then_some(())).is_some());
    for _ in 0..10 {
        post(&d, &finish_jobs("gamma", 13..14));
        post(&d, &start_jobs("gamma", 13..14));
    }
    common::observe(Duration::from_secs(2), "no further notification");
    assert_eq!(
        receiver.hits().len(),
        1,
        "oscillating between 65 % and 70 % sends nothing new"
    );
    post(&d, &finish_jobs("gamma", 12..14));
    assert!(
        eventually(10, || (receiver.hits().len() == 2).then_some(())).is_some(),
        "below 65 %: resolved"
    );
    assert_eq!(receiver.hits()[1].json()["status"], "resolved");
}

fn make_certs(dir: &Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    (
        write("ca.pem", ca.pem()),
        write("server.pem", cert.pem()),
        write("server.key", key.serialize_pem()),
    )
}

struct Smtp {
    _process: common::Reaped,
    port: u16,
}

fn start_smtp(dir: &Path, cert: &str, key: &str, out: &Path) -> Smtp {
    let port = common::free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args([
            &port.to_string(),
            cert,
            key,
            &out.display().to_string(),
            "alerts",
            "pa55",
        ])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "ready",
        "aiosmtpd started (scripts/test installs it: pip install aiosmtpd)"
    );
    Smtp {
        _process: common::Reaped(child),
        port,
    }
}

#[test]
fn email_over_starttls_with_auth_reaches_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path());
    let out = dir.path().join("mail");
    std::fs::create_dir(&out).unwrap();
    let smtp = start_smtp(dir.path(), &cert, &key, &out);
    let config = format!(
        "{BASE}\n[[alerts.email]]\nname = \"mail\"\nsmtp_host = \"localhost\"\nsmtp_port = {}\ntls = \"starttls\"\n\
         username = \"alerts\"\npassword_env = \"T_SMTP_PASSWORD\"\nca_file = \"{ca}\"\n\
         from = \"ratewarden@example.test\"\nto = [\"oncall@example.test\", \"Team Lead <lead@example.test>\"]\n",
        smtp.port
    );
    let env = [("T_SMTP_PASSWORD", "pa55")];
    let d = Daemon::start(dir.path(), &config, &env);
    post(&d, &start_jobs("beta", 0..9));
    let mails = eventually(20, || {
        let n = std::fs::read_dir(&out)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "eml")
            })
            .count();
        (n >= 2).then_some(n)
    });
    assert!(mails.is_some(), "{}", d.log_text());
    let read = |n: u32| {
        let eml = std::fs::read_to_string(out.join(format!("{n}.eml"))).unwrap();
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(format!("{n}.json"))).unwrap())
                .unwrap();
        (eml, meta)
    };
    let (first, meta) = read(1);
    assert_eq!(meta["tls"], true, "STARTTLS was used");
    assert_eq!(meta["user"], "alerts", "authenticated");
    assert_eq!(meta["mail_from"], "ratewarden@example.test");
    assert_eq!(
        meta["rcpt_tos"],
        serde_json::json!(["oncall@example.test", "lead@example.test"])
    );
    assert!(
        first.contains("Subject: [ratewarden] WARNING UsageHigh beta concurrency 70% (7/10)"),
        "{first}"
    );
    assert!(
        first.contains("multipart/alternative")
            && first.contains("text/plain")
            && first.contains("text/html"),
        "{first}"
    );
    let (second, _) = read(2);
    assert!(
        second.contains("Subject: [ratewarden] CRITICAL UsageHigh beta concurrency 90% (9/10)"),
        "{second}"
    );

    // `alerts test` reaches the same server.
    let path = dir.path().join("ratewarden.toml");
    let test = Command::new(common::bin())
        .args(["alerts", "test", "--config"])
        .arg(&path)
        .env("T_SMTP_PASSWORD", "pa55")
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(String::from_utf8_lossy(&test.stdout).contains("mail: sent"));
    // A wrong password is reported, and `run` refuses to start without one.
    let bad = Command::new(common::bin())
        .args(["alerts", "test", "--config"])
        .arg(&path)
        .env("T_SMTP_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("mail: FAILED"),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );
    let refused = Daemon::try_start(&dir.path().join("mail"), &config, &[])
        .err()
        .expect("refused");
    assert!(refused.contains("SMTP password is missing"), "{refused}");
}

// ------------------------------------------------------------------ a real Alertmanager

struct Alertmanager {
    _process: common::Reaped,
    base: String,
}

fn alertmanager_binary() -> &'static str {
    for b in [
        "/usr/bin/prometheus-alertmanager",
        "/usr/local/bin/alertmanager",
    ] {
        if Path::new(b).exists() {
            return b;
        }
    }
    panic!(
        "Alertmanager is not installed; scripts/test installs the Debian package prometheus-alertmanager"
    );
}

fn start_alertmanager(dir: &Path) -> Alertmanager {
    let port = common::free_port();
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
    )
    .unwrap();
    let child = Command::new(alertmanager_binary())
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("alertmanager starts");
    let base = format!("http://127.0.0.1:{port}");
    let up = eventually(20, || {
        (common::http_status(&format!("{base}/-/ready")) == Some(200)).then_some(())
    });
    assert!(up.is_some(), "alertmanager became ready");
    Alertmanager {
        _process: common::Reaped(child),
        base,
    }
}

fn am_alerts(am: &Alertmanager) -> Vec<Value> {
    let (_, body) = http("GET", &format!("{}/api/v2/alerts", am.base), &[], b"").unwrap();
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn am_has(am: &Alertmanager, severity: &str) -> bool {
    am_alerts(am).iter().any(|a| {
        a["labels"]["alertname"] == "UsageHigh"
            && a["labels"]["org"] == "beta"
            && a["labels"]["dimension"] == "concurrency"
            && a["labels"]["severity"] == severity
            && a["labels"]["source"] == "ratewarden"
            && a["status"]["state"] == "active"
    })
}

#[test]
fn alertmanager_shows_the_alert_then_resolves_it() {
    let dir = tempfile::tempdir().unwrap();
    let am = start_alertmanager(dir.path());
    let config = format!(
        "{BASE}\n[[alerts.webhook]]\nname = \"am\"\nurl = \"{}/api/v2/alerts\"\nformat = \"alertmanager\"\n",
        am.base
    );
    let d = Daemon::start(dir.path(), &config, &[]);
    post(&d, &start_jobs("beta", 0..7));
    assert!(
        eventually(15, || am_has(&am, "warning").then_some(())).is_some(),
        "{:?}\n{}",
        am_alerts(&am),
        d.log_text()
    );
    post(&d, &start_jobs("beta", 7..9));
    assert!(
        eventually(15, || (am_has(&am, "critical") && !am_has(&am, "warning"))
            .then_some(()))
        .is_some(),
        "{:?}",
        am_alerts(&am)
    );
    post(&d, &finish_jobs("beta", 0..9));
    assert!(
        eventually(15, || (!am_has(&am, "critical") && !am_has(&am, "warning"))
            .then_some(()))
        .is_some(),
        "resolved in Alertmanager: {:?}",
        am_alerts(&am)
    );
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_notifications_total{channel="am",outcome="failed"}"#
        ),
        Some(0.0)
    );
}

#[test]
fn clock_driven_alerts_are_not_sent_again_after_a_crash() {
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let config = with_webhook(&receiver.url(), "").replace(
        "[alerts]",
        "[detect]\nstuck_after = \"1s\"\nrelease_after = \"1h\"\n\n[alerts]",
    );
    let env = [("T_HOOK_SECRET", "s")];
    let mut d = Daemon::start(dir.path(), &config, &env);
    post(&d, &start_jobs("gamma", 0..1));
    let stuck = |r: &Receiver| {
        r.hits()
            .iter()
            .filter(|h| h.json()["alert"] == "JobsStuck" && h.json()["status"] == "firing")
            .count()
    };
    assert!(
        eventually(10, || (stuck(&receiver) == 1).then_some(())).is_some(),
        "{}",
        d.log_text()
    );
    // Once the delivery is recorded (the outbox is empty), crash.
    assert!(
        eventually(10, || {
            (common::store_value(dir.path(), "SELECT COUNT(*) FROM outbox") == Some(0))
                .then_some(())
        })
        .is_some(),
        "the delivery is recorded"
    );
    d.kill9();
    let d = Daemon::start(dir.path(), &config, &env);
    common::observe(
        Duration::from_secs(3),
        "the restart does not notify JobsStuck again",
    );
    assert_eq!(
        stuck(&receiver),
        1,
        "the restored state already knows the job is stuck\n{}",
        d.log_text()
    );
    assert_eq!(
        metric(&d.base, r#"ratewarden_jobs_stuck{org="gamma"}"#),
        Some(1.0)
    );
}

#[test]
fn a_notification_is_given_up_after_max_age() {
    let receiver = Receiver::start(usize::MAX);
    let dir = tempfile::tempdir().unwrap();
    let config = with_webhook(&receiver.url(), "").replace(
        "retry_base = \"100ms\"",
        "retry_base = \"100ms\"\nmax_age = \"2s\"",
    );
    let d = Daemon::start(dir.path(), &config, &[("T_HOOK_SECRET", "s")]);
    post(&d, &start_jobs("beta", 0..7));
    let failed = eventually(15, || {
        metric(
            &d.base,
            r#"ratewarden_notifications_total{channel="hook",outcome="failed"}"#,
        )
        .filter(|v| *v == 1.0)
    });
    assert!(failed.is_some(), "{}", d.log_text());
    let attempts = receiver.hits().len();
    assert!(attempts >= 2, "retried before giving up: {attempts}");
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_notifications_pending{channel="hook"}"#
        ),
        Some(0.0)
    );
    common::observe(Duration::from_secs(2), "no attempt after giving up");
    assert_eq!(
        receiver.hits().len(),
        attempts,
        "no attempts after giving up"
    );
    assert!(d.log_text().contains("gave up after max_age"));
}

#[test]
fn one_request_creating_1000_orgs_is_at_most_max_per_minute_deliveries() {
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &with_webhook(&receiver.url(), ""),
        &[("T_HOOK_SECRET", "s")],
    );
    // 1 000 orgs never seen, each starting a job: every one fills its single concurrency
    // slot (default tier) and fires UsageHigh critical.
    let now = chrono::Utc::now().timestamp_millis();
    let lines: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"org":"new-{i}","ts":{now},"status":202,"job_id":"j{i}"}}"#))
        .collect();
    post(&d, &lines);
    let total = |d: &Daemon| {
        let n = |o: &str| {
            metric(
                &d.base,
                &format!(r#"ratewarden_notifications_total{{channel="hook",outcome="{o}"}}"#),
            )
            .unwrap_or(0.0)
        };
        n("sent") + n("grouped")
    };
    assert!(
        eventually(20, || (total(&d) == 1000.0).then_some(())).is_some(),
        "{} of 1000 notifications accounted for\n{}",
        total(&d),
        d.log_text()
    );
    common::observe(
        Duration::from_millis(500),
        "no delivery beyond the minute's cap",
    );
    let hits = receiver.hits();
    eprintln!("deliveries for one 1000-new-org request: {}", hits.len());
    assert!(hits.len() <= 60, "{} deliveries", hits.len());
    assert!(hits.iter().all(|h| verify("s", h)), "every delivery signed");
    let (grouped, single): (Vec<&Hit>, Vec<&Hit>) = hits
        .iter()
        .partition(|h| h.json()["alert"] == "NotificationsGrouped");
    assert_eq!(grouped.len(), 1, "the overflow is one summary");
    let summary = grouped[0].json();
    assert_eq!(
        summary["grouped"].as_u64().unwrap() as usize + single.len(),
        1000,
        "{summary}"
    );
    assert_eq!(summary["severity"], "critical");
    assert_eq!(summary["notifications"].as_array().unwrap().len(), 100);
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_series_overflow_total{kind="org_rate"}"#
        ),
        Some(0.0)
    );

    // With max_new_orgs_per_second, the same request creates that many orgs; the rest of
    // its events count in __overflow__, which raises no alerts.
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let config = with_webhook(&receiver.url(), "").replace(
        "[alerts]",
        "[limits]\nmax_new_orgs_per_second = 100\n\n[alerts]",
    );
    let d = Daemon::start(dir.path(), &config, &[("T_HOOK_SECRET", "s")]);
    post(&d, &lines);
    assert_eq!(
        metric(
            &d.base,
            r#"ratewarden_series_overflow_total{kind="org_rate"}"#
        ),
        Some(900.0)
    );
    let (_, usage) = http("GET", &format!("{}/v1/usage", d.base), &[], b"").unwrap();
    let usage: Value = serde_json::from_str(&usage).unwrap();
    let orgs = usage["orgs"].as_array().unwrap();
    let new = orgs
        .iter()
        .filter(|o| o["org"].as_str().unwrap().starts_with("new-"))
        .count();
    assert_eq!(new, 100);
    let overflow = orgs.iter().find(|o| o["org"] == "__overflow__").unwrap();
    assert_eq!(overflow["usage"]["concurrency"], 900, "{overflow}");
    assert!(
        eventually(20, || (total(&d) == 100.0).then_some(())).is_some(),
        "{}",
        d.log_text()
    );
}
