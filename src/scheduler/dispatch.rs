//! Drives the scheduler: one task per upstream that sends what [`Scheduler::next`] says when it
//! says so, polls asynchronous jobs, and feeds every answer back to the tracker as an event
//! (source `scheduler`). Waits are short and re-read the clock, so an injected clock (tests)
//! or a window opening is noticed within `STEP`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::{Attempt, Dispatch, JobStatus, Next, Poll, Scheduler, field};
use crate::cluster::Leadership;
use crate::config::{PollConfig, UpstreamConfig};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::outbound::{self, Base, error_text, segment};
use crate::tracker::{Ask, Verdict};

/// Longest wait before the lane looks at the clock again.
const STEP: Duration = Duration::from_millis(200);
/// How long a dispatch waits for its in-flight record to be committed before sending.
const DURABLE_WAIT: Duration = Duration::from_secs(30);
/// Most bytes of an answer read.
const MAX_ANSWER: usize = 1 << 20;
/// How often finished batches past their retention are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// HTTP to one upstream.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    /// Every request goes to this scheme, host and port, or is not sent.
    base: Base,
    key: Option<String>,
    /// The key, scrubbed from every answer kept or logged.
    secrets: outbound::Secrets,
    poll: Option<PollConfig>,
}

impl Client {
    fn new(up: &UpstreamConfig) -> Result<Client, String> {
        let key = up
            .api_key
            .as_ref()
            .map(|k| k.read())
            .transpose()
            .map_err(|e| format!("upstream {}: API key: {e}", up.name))?;
        // A redirect would take the body and the idempotency key to wherever the answer
        // says; a 3xx is an answer like any other (the item fails with it).
        let http = outbound::client(up.timeout_ms, 10_000)
            .map_err(|e| format!("upstream {}: {e}", up.name))?;
        let base = Base::parse(&up.base_url).map_err(|e| format!("upstream {}: {e}", up.name))?;
        let secrets = key.as_deref().map_or_else(outbound::Secrets::default, |k| {
            outbound::Secrets::default().with(k)
        });
        Ok(Client {
            http,
            base,
            key,
            secrets,
            poll: up.poll.clone(),
        })
    }

    /// A request to `path` under the base URL, carrying the key; `Err` (nothing sent) when
    /// the path would take it elsewhere.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        let url = self.base.url(path)?;
        let mut req = self.http.request(method, url);
        if let Some(k) = &self.key {
            req = req.header(AUTHORIZATION, format!("Bearer {k}"));
        }
        Ok(req)
    }

    async fn send(&self, d: &Dispatch, now_ms: i64) -> Attempt {
        let method =
            reqwest::Method::from_bytes(d.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let mut req = match self.request(method, &d.path) {
            Ok(r) => r.header("Idempotency-Key", &d.key),
            Err(why) => return Attempt::Failed(why),
        };
        if let Some(body) = &d.body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            // Never include the request itself: its headers hold the API key.
            Err(e) => return Attempt::Failed(format!("no answer: {}", error_text(&e))),
        };
        let status = resp.status().as_u16();
        let retry_after = outbound::retry_after(resp.headers(), now_ms);
        let body = outbound::read_body(resp, MAX_ANSWER, &self.secrets).await;
        let job_id = match (&self.poll, (200..300).contains(&status)) {
            (Some(p), true) => serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| field(&v, &p.id_field)),
            _ => None,
        };
        Attempt::Answer {
            status,
            body,
            retry_after,
            job_id,
        }
    }

    async fn poll(&self, job_id: &str) -> Result<JobStatus, String> {
        let Some(p) = &self.poll else {
            return Ok(JobStatus::Running);
        };
        // The id comes from the upstream's answer: one percent-encoded segment, so it cannot
        // change the path's shape or the host the key goes to.
        let id = match segment(job_id) {
            Ok(id) => id,
            Err(e) => {
                return Ok(JobStatus::Unpollable(format!(
                    "the upstream's job id {e}: it cannot be polled"
                )));
            }
        };
        let path = p.status_path.replace("{id}", &id);
        let resp = self
            .request(reqwest::Method::GET, &path)?
            .send()
            .await
            .map_err(|e| format!("poll failed: {}", error_text(&e)))?;
        let status = resp.status();
        let body = outbound::read_body(resp, MAX_ANSWER, &self.secrets).await;
        if !status.is_success() {
            return Err(format!("poll answered HTTP {status}"));
        }
        let v: Value =
            serde_json::from_str(&body).map_err(|e| format!("poll answer is not JSON: {e}"))?;
        let state = field(&v, &p.status_field).unwrap_or_default();
        Ok(if p.done.contains(&state) {
            JobStatus::Done(body)
        } else if p.failed.contains(&state) {
            JobStatus::Failed(body)
        } else {
            JobStatus::Running
        })
    }
}

/// Feeds what the upstream counted to the tracker.
fn feed(live: &Live, metrics: &Metrics, event: Option<crate::events::Event<'static>>) {
    if let Some(ev) = event {
        let now = live.now_ms();
        live.apply(&mut [ev], now, None);
        metrics.ingested("scheduler", 1);
    }
}

/// The dispatcher, built and not started: a lane per configured upstream, its HTTP client
/// ready. [`Dispatcher::start`] starts it.
pub struct Dispatcher {
    sched: Arc<Scheduler>,
    live: Live,
    metrics: Arc<Metrics>,
    lanes: Vec<(String, Client)>,
    lead: Option<Leadership>,
}

/// The running dispatcher lanes, stopped by [`Dispatching::stop`].
pub struct Dispatching {
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Dispatcher {
    /// A lane per configured upstream. Fails, starting nothing, when an upstream's client
    /// cannot be built.
    pub fn new(
        sched: Arc<Scheduler>,
        live: Live,
        metrics: Arc<Metrics>,
    ) -> Result<Dispatcher, String> {
        let mut lanes = Vec::new();
        for name in sched.upstream_names() {
            let Some(up) = sched.upstream(&name) else {
                continue;
            };
            lanes.push((name, Client::new(up)?));
        }
        metrics.declare_source("scheduler");
        Ok(Dispatcher {
            sched,
            live,
            metrics,
            lanes,
            lead: None,
        })
    }

    /// A replica's dispatcher (`[cluster]`): it sends, polls and prunes only while
    /// `lead` says this replica leads and has caught up with the log, taking over what is
    /// in flight once per lead term ([`Scheduler::take_over`]).
    pub fn led_by(mut self, lead: Leadership) -> Dispatcher {
        self.lead = Some(lead);
        self
    }

    /// Starts the lanes and the pruning of finished batches. Starting cannot fail.
    pub fn start(self) -> Dispatching {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for (name, client) in self.lanes {
            tasks.push(tokio::spawn(lane(
                self.sched.clone(),
                client,
                name,
                (self.live.clone(), self.lead.clone()),
                self.metrics.clone(),
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(prune(
            self.sched, self.live, self.lead, stop_rx,
        )));
        Dispatching { tasks, stop }
    }
}

impl Dispatching {
    /// Stops the lanes. Requests in progress are abandoned: their items stay in flight in the
    /// store and are sent again, with the same key, after the next start.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Forgets finished batches past `[scheduler] retention`, at start and then every
/// [`PRUNE_EVERY`] (also those of upstreams no longer configured).
async fn prune(
    sched: Arc<Scheduler>,
    live: Live,
    lead: Option<Leadership>,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                if lead.as_ref().is_none_or(|l| l.dispatching().is_some()) {
                    sched.prune(live.now_ms());
                }
            }
            _ = stop.changed() => break,
        }
    }
}

async fn lane(
    sched: Arc<Scheduler>,
    client: Client,
    name: String,
    (live, lead): (Live, Option<Leadership>),
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut running: JoinSet<()> = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        let now = live.now_ms();
        if let Some(lead) = &lead {
            match lead.dispatching() {
                Some(term) => sched.take_over(term, now),
                None => {
                    // Another replica dispatches; this one waits for the lead.
                    tokio::select! {
                        _ = tokio::time::sleep(STEP) => {}
                        _ = stop.changed() => break,
                    }
                    continue;
                }
            }
        }
        for p in sched.polls_due(&name, now) {
            let (sched, client, live, metrics) =
                (sched.clone(), client.clone(), live.clone(), metrics.clone());
            running.spawn(async move { poll_one(&sched, &client, &live, &metrics, p).await });
        }
        let wait = match sched.next(&name, now) {
            Next::Send(mut d) => {
                // One place decides for batches and interactive callers alike: the arbiter,
                // under the scheduler's share. Without room the item waits for it.
                match arbiter((&sched, &live, &metrics), &name, &d).await {
                    Ok(lease) => d.lease = lease,
                    Err(until) => {
                        sched.defer(&d, until);
                        continue;
                    }
                }
                // Stored as in flight (with its key) before anything leaves: after a crash it
                // is sent again with the same key rather than lost or sent under a new one.
                // Waited for here, not in the request's task, so the next request is paced
                // from when this one really leaves.
                let stored = tokio::select! {
                    r = live.durable_at(d.seq, DURABLE_WAIT) => r,
                    _ = stop.changed() => break,
                };
                if let Err(e) = stored {
                    tracing::warn!(batch = %d.batch, index = d.index, error = %e, "not sent: the store did not confirm");
                    give_back(&live, &d);
                    let event =
                        sched.settle(&d, Attempt::Failed(format!("not sent: {e}")), live.now_ms());
                    feed(&live, &metrics, event);
                    continue;
                }
                sched.sent(&name, live.now_ms());
                let (sched, client, live, metrics) =
                    (sched.clone(), client.clone(), live.clone(), metrics.clone());
                running.spawn(async move { send_one(&sched, &client, &live, &metrics, d).await });
                continue;
            }
            Next::Wait(until) => {
                Duration::from_millis((until - now).clamp(1, STEP.as_millis() as i64) as u64)
            }
            Next::Idle => STEP,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = sched.wake.notified() => {}
            _ = stop.changed() => break,
        }
    }
    running.abort_all();
    while running.join_next().await.is_some() {}
}

/// Asks the arbiter for the slot of dispatch `d` of `upstream`'s org (one request, a job slot
/// when the upstream's jobs are polled, at most `[scheduler] share` of each limit); the lease
/// granted, or when to try again (Unix ms).
async fn arbiter(
    (sched, live, metrics): (&Scheduler, &Live, &Metrics),
    upstream: &str,
    d: &Dispatch,
) -> Result<Option<String>, i64> {
    let Some(org) = sched.org_of(upstream) else {
        return Ok(None);
    };
    // Behind interactive callers: none of the org's asks may be waiting for room.
    if live.waiting(org) {
        return Err(live.now_ms() + 250);
    }
    let lease = crate::live::admit::new_lease();
    let ask = Ask {
        org,
        app: "batch",
        requests: 1,
        tokens: 0,
        job: sched.polls(upstream),
        request_id: None,
        share_bp: Some(sched.share_bp()),
    };
    let now = live.now_ms();
    let decided = live.admit(&ask, &lease).await;
    if let Ok((v, org)) = &decided {
        let outcome = match v {
            Verdict::Granted { .. } => "granted",
            _ => "refused",
        };
        metrics.admission_decided(org, outcome);
    }
    match decided {
        Ok((Verdict::Granted { .. }, _)) => Ok(Some(lease)),
        Ok((
            Verdict::Refused {
                retry_after_ms,
                dimension,
            },
            _,
        )) => {
            tracing::debug!(batch = %d.batch, index = d.index, dimension = dimension.as_str(), retry_after_ms, "no room for a batch request yet");
            Err(now.saturating_add(i64::try_from(retry_after_ms).unwrap_or(i64::MAX)))
        }
        Ok((Verdict::Untracked | Verdict::Reused, _)) => {
            // Past max_orgs the org has no known limits: the dispatcher's own checks decide.
            tracing::debug!(batch = %d.batch, org, "the org is not tracked (max_orgs): sent without a grant");
            Ok(None)
        }
        Ok((Verdict::Never { dimension, cap }, _)) => {
            tracing::warn!(batch = %d.batch, dimension = dimension.as_str(), cap, "the scheduler's share of a limit is below one request");
            Err(now + 60_000)
        }
        Err(e) => {
            tracing::warn!(batch = %d.batch, error = %e, "the arbiter did not answer; the batch request waits");
            Err(now + 1_000)
        }
    }
}

/// Gives back the arbiter's grant of a dispatch that got no answer.
fn give_back(live: &Live, d: &Dispatch) {
    if let Some(lease) = &d.lease {
        // Not waited for: a release that is not stored leaves the slot to its lease's ttl.
        let _ = live.release(lease);
    }
}

/// Sends a request whose in-flight record is durable and feeds the answer back.
async fn send_one(sched: &Scheduler, client: &Client, live: &Live, metrics: &Metrics, d: Dispatch) {
    let attempt = client.send(&d, live.now_ms()).await;
    match &attempt {
        Attempt::Answer { status, .. } => {
            tracing::debug!(batch = %d.batch, index = d.index, status, "upstream answered");
        }
        // No answer, so no event completes the grant: its job slot is given back here (the
        // request itself stays counted: it may have reached the upstream).
        Attempt::Failed(_) => give_back(live, &d),
    }
    let event = sched.settle(&d, attempt, live.now_ms());
    feed(live, metrics, event);
}

async fn poll_one(sched: &Scheduler, client: &Client, live: &Live, metrics: &Metrics, p: Poll) {
    match client.poll(&p.job_id).await {
        Ok(status) => {
            let event = sched.polled(&p, status, live.now_ms());
            feed(live, metrics, event);
        }
        Err(e) => {
            tracing::debug!(batch = %p.batch, index = p.index, job = %p.job_id, "poll failed: {e}");
            let event = sched.polled(&p, JobStatus::Unknown(e), live.now_ms());
            feed(live, metrics, event);
        }
    }
}
