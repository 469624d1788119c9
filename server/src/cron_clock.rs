//! The firing times of cron-scheduled things (replication policies,
//! retention policies): Harbor's six-field cron, UTC. A scheduler loop
//! re-reads its policies, asks [`CronClock::due`] which are due now, starts
//! those, and sleeps until the soonest next time (or until woken).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Each scheduled id's cron and its next firing time.
#[derive(Default)]
pub struct CronClock {
    next: HashMap<u64, (String, DateTime<Utc>)>,
}

impl CronClock {
    /// Of `scheduled` (id, cron), the ids due at `now`; each one's next
    /// time moves past `now`. Ids no longer listed, or with a new cron,
    /// start over from `now`; a cron that does not parse never fires.
    /// Returns the due ids and how long until the soonest next time
    /// (`None` when nothing is scheduled).
    pub fn due<'a>(
        &mut self,
        now: DateTime<Utc>,
        scheduled: impl IntoIterator<Item = (u64, &'a str)>,
    ) -> (Vec<u64>, Option<Duration>) {
        let mut keep = HashMap::new();
        let mut due = Vec::new();
        for (id, cron) in scheduled {
            let Ok(schedule) = cron::Schedule::from_str(cron) else {
                continue;
            };
            let mut at = match self.next.remove(&id) {
                Some((c, at)) if c == cron => at,
                _ => match schedule.after(&now).next() {
                    Some(at) => at,
                    None => continue,
                },
            };
            if at <= now {
                due.push(id);
                match schedule.after(&now).next() {
                    Some(n) => at = n,
                    None => continue,
                }
            }
            keep.insert(id, (cron.to_owned(), at));
        }
        self.next = keep;
        let wait = self
            .next
            .values()
            .map(|(_, at)| (*at - now).to_std().unwrap_or(Duration::ZERO))
            .min();
        (due, wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_when_due_and_starts_over_on_a_new_cron() {
        let mut c = CronClock::default();
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.500Z")
            .unwrap()
            .with_timezone(&Utc);
        let (due, wait) = c.due(t0, [(1, "* * * * * *"), (2, "bad"), (3, "0 0 0 1 1 *")]);
        assert!(due.is_empty());
        assert_eq!(wait, Some(Duration::from_millis(500)));
        let t1 = t0 + chrono::Duration::seconds(1);
        let (due, _) = c.due(t1, [(1, "* * * * * *"), (3, "0 0 0 1 1 *")]);
        assert_eq!(due, vec![1]);
        let (due, wait) = c.due(t1, [(1, "0 0 0 1 1 *")]);
        assert!(due.is_empty(), "a new cron starts over");
        assert!(wait.is_some_and(|w| w > Duration::from_secs(3600)));
    }
}
