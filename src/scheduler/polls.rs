//! The scheduler's decisions about jobs that upstreams run asynchronously: which are due for a
//! status poll, and what a poll's finding means for the item (done, failed, still running,
//! past `release_after`, or an id that cannot be polled).

use super::Scheduler;
use super::batch::{ItemState, JobStatus, Poll};
use super::persist::Changes;

impl Scheduler {
    /// Jobs of `upstream` due for a poll at `now`.
    pub fn polls_due(&self, upstream: &str, now: i64) -> Vec<Poll> {
        let Some(interval) = self
            .upstreams
            .get(upstream)
            .and_then(|u| u.poll.as_ref())
            .map(|p| p.interval_ms)
        else {
            return Vec::new();
        };
        let mut st = self.lock();
        let mut due = Vec::new();
        for b in st.batches.iter().filter(|b| b.header.upstream == upstream) {
            for it in &b.items {
                if let (ItemState::InFlight, Some(job)) = (it.state, &it.job_id) {
                    due.push((b.header.id.clone(), it.index, job.clone()));
                }
            }
        }
        let lane = st.lanes.entry(upstream.to_string()).or_default();
        let mut out = Vec::new();
        for (batch, index, job_id) in due {
            let last = lane
                .polled
                .get(&(batch.clone(), index))
                .copied()
                .unwrap_or(i64::MIN);
            if now.saturating_sub(last) >= interval {
                lane.polled.insert((batch.clone(), index), now);
                out.push(Poll {
                    batch,
                    index,
                    job_id,
                });
            }
        }
        out
    }

    /// Records a poll's finding. Returns the lifecycle event to feed to the tracker.
    pub fn polled(
        &self,
        p: &Poll,
        status: JobStatus,
        now: i64,
    ) -> Option<crate::events::Event<'static>> {
        let mut st = self.lock();
        let &bi = st.index.get(&p.batch)?;
        let org = st.batches[bi].header.org.clone();
        let upstream = st.batches[bi].header.upstream.clone();
        let it = st.batches[bi]
            .items
            .iter_mut()
            .find(|i| i.index == p.index)?;
        if it.state != ItemState::InFlight {
            return None;
        }
        let (kind, done) = match status {
            JobStatus::Running | JobStatus::Unknown(_) => {
                if it
                    .dispatched_ms
                    .is_some_and(|t| now - t >= self.release_after_ms)
                {
                    it.state = ItemState::Failed;
                    it.error = Some(match status {
                        JobStatus::Unknown(why) => format!(
                            "the job did not finish within detect.release_after (last poll: {why})"
                        ),
                        _ => "the job did not finish within detect.release_after".into(),
                    });
                    (None, true)
                } else {
                    return None;
                }
            }
            JobStatus::Unpollable(why) => {
                it.state = ItemState::Failed;
                it.error = Some(why);
                (Some(crate::events::Kind::JobFailed), true)
            }
            JobStatus::Done(body) => {
                it.state = ItemState::Succeeded;
                it.keep_result(&body, self.cfg.max_result_bytes);
                it.error = None;
                (Some(crate::events::Kind::JobCompleted), true)
            }
            JobStatus::Failed(body) => {
                it.state = ItemState::Failed;
                it.keep_result(&body, self.cfg.max_result_bytes);
                it.error = Some("the upstream reports the job failed".into());
                (Some(crate::events::Kind::JobFailed), true)
            }
        };
        let mut changes = Changes::new(&self.metrics);
        changes.item(&p.batch, it);
        let b = &mut st.batches[bi];
        b.note_failure(p.index);
        if b.note_finished(now) {
            changes.batch(&b.header);
        }
        changes.store(&self.live);
        if done && let Some(lane) = st.lanes.get_mut(&upstream) {
            lane.polled.remove(&(p.batch.clone(), p.index));
        }
        self.update_gauges(&st, &org);
        drop(st);
        self.wake.notify_waiters();
        kind.map(|kind| super::report::job_ended(&org, &p.job_id, kind, now))
    }
}
