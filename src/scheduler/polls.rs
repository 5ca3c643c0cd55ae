//! The scheduler's decisions about jobs that upstreams run asynchronously: which are due for a
//! status poll, and what a poll's finding means for the item (done, failed, still running,
//! past `release_after`, or an id that cannot be polled).

use super::batch::{ItemState, JobStatus, Poll, State};
use super::machine::{Effects, Rules};
use crate::events::Event;

impl Rules {
    /// Jobs of `upstream` due for a poll at `now`.
    pub(super) fn polls_due(&self, st: &mut State, upstream: &str, now: i64) -> Vec<Poll> {
        let Some(interval) = self
            .upstreams
            .get(upstream)
            .and_then(|u| u.poll.as_ref())
            .map(|p| p.interval_ms)
        else {
            return Vec::new();
        };
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
    pub(super) fn polled(
        &self,
        st: &mut State,
        p: &Poll,
        status: JobStatus,
        now: i64,
    ) -> Option<(Option<Event<'static>>, Effects)> {
        let &bi = st.index.get(&p.batch)?;
        let org = st.batches[bi].header.org.clone();
        let upstream = st.batches[bi].header.upstream.clone();
        let ii = st.batches[bi]
            .items
            .iter()
            .position(|i| i.index == p.index)?;
        let it = &mut st.batches[bi].items[ii];
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
        let mut fx = Effects {
            items: vec![(bi, ii)],
            orgs: vec![org.clone()],
            wake: true,
            ..Effects::default()
        };
        let b = &mut st.batches[bi];
        b.note_failure(p.index);
        if b.note_finished(now) {
            fx.headers.push(bi);
        }
        if done && let Some(lane) = st.lanes.get_mut(&upstream) {
            lane.polled.remove(&(p.batch.clone(), p.index));
        }
        let event = kind.map(|kind| super::report::job_ended(&org, &p.job_id, kind, now));
        Some((event, fx))
    }
}
