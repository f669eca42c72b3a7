//! The outbox: mail and back-channel logouts queued in the database by requests and delivered
//! by a worker in the background, with retries.
//!
//! A job names what to send and to whom, never a link: links are made when the mail is sent
//! (and only their hash stored), so no working link ever sits in the database. A job is
//! claimed with a lease — another replica takes it only when the lease ran out, so a replica
//! that dies mid-send loses nothing — and is removed once sent. Failures are retried after 5 s,
//! 10 s, 20 s … at most an hour apart, for a day; a mail server that refuses a recipient for
//! good (5xx) ends the job at once.

use std::sync::Arc;
use std::time::Duration;

use handoff::Clock;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::Notify;

use super::messages::{self, Details, Kind};
use super::{MailError, Mailer};
use crate::db::{ClaimedJob, Db, DbError, Job, LinkPurpose};
use crate::handoffs::Handoffs;
use crate::links::LinkToken;
use crate::names::Email;

/// The job kind of a back-channel logout (its `address` is the target's id).
pub const LOGOUT_KIND: &str = "backchannel_logout";
/// How long one logout delivery may take.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Jobs taken per pass.
const BATCH: u32 = 20;
/// How long a claimed job is held before another replica may take it.
const LEASE_SECS: u64 = 120;
/// The first retry's delay; each further one doubles, up to [`MAX_BACKOFF_SECS`].
const FIRST_BACKOFF_SECS: u64 = 5;
/// The longest wait between attempts.
const MAX_BACKOFF_SECS: u64 = 3600;
/// A job still failing this long after it was queued is given up.
const GIVE_UP_SECS: u64 = 86_400;
/// How often the worker looks for due jobs when nothing woke it.
const POLL: Duration = Duration::from_secs(1);

/// How long links work and where they point.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// SERVER1's public URL (links and the portal's address are built from it alone).
    pub public_url: url::Url,
    /// Lifetime of an address verification link (and of a new address's confirmation).
    pub verify_ttl_secs: u64,
    /// Lifetime of a password reset link.
    pub reset_ttl_secs: u64,
}

/// The outbox's counters.
#[derive(Debug, Clone)]
pub struct MailMetrics {
    outcomes: IntCounterVec,
    logouts: IntCounterVec,
    pending: IntGauge,
}

impl MailMetrics {
    /// Registers the mail metrics in `registry`.
    ///
    /// # Errors
    ///
    /// Only on a programming error (a metric registered twice).
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "mail_jobs_total",
                "Outbox jobs handled, by outcome: sent, skipped (nothing to send), retried, dropped",
            ),
            &["outcome"],
        )?;
        let logouts = IntCounterVec::new(
            Opts::new(
                "backchannel_logout_total",
                "Back-channel logouts to partners, by outcome: sent, skipped (no such target or URL any more), retried, dropped",
            ),
            &["outcome"],
        )?;
        for outcome in ["sent", "skipped", "retried", "dropped"] {
            outcomes.with_label_values(&[outcome]);
            logouts.with_label_values(&[outcome]);
        }
        let pending =
            IntGauge::new("mail_outbox_pending", "Jobs (mail and logouts) waiting in the outbox")?;
        registry.register(Box::new(outcomes.clone()))?;
        registry.register(Box::new(logouts.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        Ok(Self { outcomes, logouts, pending })
    }
}

/// The outbox and its worker.
#[derive(Debug)]
pub struct Outbox {
    db: Arc<Db>,
    mailer: Mailer,
    links: LinkSettings,
    site: &'static str,
    clock: Arc<dyn Clock>,
    wake: Notify,
    metrics: MailMetrics,
    partners: Option<Partners>,
}

/// What back-channel logouts need: the targets, the keys to sign with, an HTTP client.
#[derive(Debug)]
struct Partners {
    handoffs: Arc<Handoffs>,
    http: reqwest::Client,
}

/// What became of a job.
enum Done {
    Sent,
    Skipped,
}

impl Outbox {
    /// An outbox over `db`, sending with `mailer` in the name of `site`.
    pub fn new(
        db: Arc<Db>,
        mailer: Mailer,
        links: LinkSettings,
        site: &'static str,
        clock: Arc<dyn Clock>,
        metrics: MailMetrics,
    ) -> Self {
        Self { db, mailer, links, site, clock, wake: Notify::new(), metrics, partners: None }
    }

    /// The same, also delivering back-channel logouts to the targets of `handoffs` that take
    /// them.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be set up.
    pub fn with_partners(mut self, handoffs: Arc<Handoffs>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(LOGOUT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("handoff-server1 back-channel logout")
            .build()
            .map_err(|e| e.to_string())?;
        self.partners = Some(Partners { handoffs, http });
        Ok(self)
    }

    /// Queues a logout of `sid` (or, without one, of every session of `user` up to now) to
    /// each target that takes back-channel logouts.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn enqueue_logouts(
        &self,
        user: &handoff::Subject,
        sid: Option<&handoff::SessionRef>,
    ) -> Result<(), DbError> {
        let Some(partners) = &self.partners else { return Ok(()) };
        let now = self.clock.now();
        for target in partners.handoffs.targets().iter() {
            if target.backchannel_logout_url.is_some() {
                let job = Job {
                    kind: LOGOUT_KIND.to_owned(),
                    user: Some(user.clone()),
                    address: target.id.as_str().to_owned(),
                    sid: sid.map(|s| s.as_str().to_owned()),
                };
                self.db.enqueue(&job, now).await?;
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Posts one logout token to the target the job names. The token is minted now, so a
    /// retry sends a fresh one.
    async fn deliver_logout(&self, job: &Job) -> Result<Done, MailError> {
        let Some(partners) = &self.partners else { return Ok(Done::Skipped) };
        let Some(target) = partners.handoffs.targets().get(&job.address) else {
            return Ok(Done::Skipped);
        };
        let Some(url) = &target.backchannel_logout_url else { return Ok(Done::Skipped) };
        let sid = job.sid.as_deref().and_then(|s| handoff::SessionRef::parse(s).ok());
        let now = self.clock.now();
        let (token, jti) = partners
            .handoffs
            .mint_logout(target, job.user.as_ref(), sid.as_ref(), now)
            .map_err(|e| MailError::Permanent(e.to_string()))?;
        let sent = partners
            .http
            .post(url.clone())
            .form(&[("logout_token", token.as_str())])
            .send()
            .await
            .map_err(|e| MailError::Transient(format!("{}: {}", target.id, without_url(&e))))?;
        let status = sent.status();
        if status.is_success() {
            tracing::info!(
                event = "logout.sent",
                target = %target.id,
                jti = %jti,
                sub = ?job.user.as_ref().map(handoff::Subject::as_str),
                session = sid.is_some(),
                "back-channel logout delivered"
            );
            Ok(Done::Sent)
        } else {
            // Even a refusal is retried (for a day, with the backoff): a partner that cannot
            // check the token yet, or is misconfigured for a while, must not lose the logout.
            Err(MailError::Transient(format!("{} answered {status}", target.id)))
        }
    }

    /// How long links of `purpose` work.
    pub fn link_ttl_secs(&self, purpose: LinkPurpose) -> u64 {
        match purpose {
            LinkPurpose::ResetPassword => self.links.reset_ttl_secs,
            LinkPurpose::VerifyEmail | LinkPurpose::ChangeEmail => self.links.verify_ttl_secs,
        }
    }

    /// Queues `kind` to `address` (about `user`), and wakes this replica's worker.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn enqueue(
        &self,
        kind: Kind,
        user: Option<&handoff::Subject>,
        address: &str,
    ) -> Result<(), DbError> {
        let job = Job {
            kind: kind.as_str().to_owned(),
            user: user.cloned(),
            address: address.to_owned(),
            sid: None,
        };
        self.db.enqueue(&job, self.clock.now()).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// The worker: sends due jobs until the process ends.
    pub async fn run(self: Arc<Self>) {
        tracing::info!(transport = %self.mailer.shown(), "mail outbox worker started");
        loop {
            let handled = self.work_once().await;
            if handled < BATCH as usize {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }

    /// One pass: claims due jobs and works through them; how many it claimed.
    pub async fn work_once(&self) -> usize {
        let now = self.clock.now();
        let jobs = match self.db.claim_jobs(now, now.plus(LEASE_SECS), BATCH).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "mail outbox: cannot claim jobs");
                return 0;
            }
        };
        for job in &jobs {
            self.handle(job).await;
        }
        if let Ok(n) = self.db.outbox_len().await {
            self.metrics.pending.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        jobs.len()
    }

    async fn handle(&self, claimed: &ClaimedJob) {
        let kind = claimed.job.kind.as_str();
        let outcome = match Kind::parse(kind) {
            Some(kind) => self.deliver(kind, &claimed.job).await,
            None if kind == LOGOUT_KIND => self.deliver_logout(&claimed.job).await,
            None => Err(MailError::Permanent(format!("unknown job kind {kind:?}"))),
        };
        let now = self.clock.now();
        let (label, finished) = match &outcome {
            Ok(Done::Sent) => ("sent", true),
            Ok(Done::Skipped) => ("skipped", true),
            Err(MailError::Permanent(why)) => {
                tracing::error!(job = claimed.id, kind, error = %why, "mail dropped");
                ("dropped", true)
            }
            Err(MailError::Transient(why))
                if now.as_secs().saturating_sub(claimed.created.as_secs()) >= GIVE_UP_SECS =>
            {
                tracing::error!(job = claimed.id, kind, error = %why, attempts = claimed.attempts, "mail dropped after a day of retries");
                ("dropped", true)
            }
            Err(MailError::Transient(why)) => {
                let wait = backoff_secs(claimed.attempts);
                tracing::warn!(job = claimed.id, kind, error = %why, attempts = claimed.attempts, retry_in_secs = wait, "mail not sent, will retry");
                if let Err(e) = self.db.retry_job(claimed.id, now.plus(wait)).await {
                    // The lease runs out and the job is tried again then.
                    tracing::warn!(error = %e, "mail outbox: cannot schedule a retry");
                }
                ("retried", false)
            }
        };
        let counter =
            if kind == LOGOUT_KIND { &self.metrics.logouts } else { &self.metrics.outcomes };
        counter.with_label_values(&[label]).inc();
        if finished {
            if let Err(e) = self.db.finish_job(claimed.id).await {
                tracing::warn!(error = %e, "mail outbox: cannot remove a finished job");
            }
        }
    }

    /// Sends one job's mail; `Skipped` when there is nothing to send any more (the user is
    /// gone or disabled, the address changed, there is no account with it).
    async fn deliver(&self, kind: Kind, job: &Job) -> Result<Done, MailError> {
        let db_err = |e: DbError| MailError::Transient(e.to_string());
        let user = match kind {
            Kind::PasswordReset => match Email::parse(&job.address) {
                Ok(email) => self.db.user_by_email(&email).await.map_err(db_err)?,
                Err(_) => None,
            },
            Kind::SignupExists => None,
            _ => match &job.user {
                Some(id) => self.db.user_by_id(id).await.map_err(db_err)?,
                None => None,
            },
        }
        .map(|(user, _)| user);
        let purpose = match kind {
            Kind::VerifyEmail => Some(LinkPurpose::VerifyEmail),
            Kind::PasswordReset => Some(LinkPurpose::ResetPassword),
            Kind::ConfirmNewEmail => Some(LinkPurpose::ChangeEmail),
            Kind::EmailChanged | Kind::PasswordChanged | Kind::SignupExists => None,
        };
        let current = user.as_ref().and_then(|u| u.email.as_ref()).map(Email::as_str);
        let skip = match kind {
            Kind::SignupExists => false,
            Kind::VerifyEmail => {
                user.as_ref().is_none_or(|u| u.disabled || u.email_verified)
                    || current != Some(job.address.as_str())
            }
            Kind::PasswordReset => user.as_ref().is_none_or(|u| u.disabled),
            Kind::ConfirmNewEmail | Kind::EmailChanged | Kind::PasswordChanged => {
                user.as_ref().is_none_or(|u| u.disabled)
            }
        };
        if skip {
            return Ok(Done::Skipped);
        }
        let now = self.clock.now();
        let mut link = None;
        if let (Some(purpose), Some(user)) = (purpose, &user) {
            let token =
                LinkToken::new().ok_or_else(|| MailError::Transient("randomness failed".into()))?;
            // The address the link confirms: a verification is good only for the address it
            // went to, a change only for the new address.
            let address = match purpose {
                LinkPurpose::ChangeEmail | LinkPurpose::VerifyEmail => {
                    Email::parse(&job.address).ok()
                }
                LinkPurpose::ResetPassword => None,
            };
            let ttl = self.link_ttl_secs(purpose);
            self.db
                .issue_link(&user.id, purpose, &token.hash, address.as_ref(), now, now.plus(ttl))
                .await
                .map_err(db_err)?;
            link = Some(self.link_url(purpose, &token.token));
        }
        let portal = self.links.public_url.as_str().to_owned();
        let details = Details {
            site: self.site,
            user: user.as_ref().map_or("", |u| u.name.as_str()),
            link: link.as_deref(),
            link_minutes: purpose.map_or(0, |p| self.link_ttl_secs(p) / 60),
            portal: &portal,
        };
        let message = messages::render(kind, &job.address, &details);
        self.mailer.send(&message).await?;
        tracing::info!(event = "mail.sent", kind = kind.as_str(), "mail sent");
        Ok(Done::Sent)
    }

    /// The page a link of `purpose` opens, with `token`.
    fn link_url(&self, purpose: LinkPurpose, token: &str) -> String {
        let path = match purpose {
            LinkPurpose::VerifyEmail => "verify-email",
            LinkPurpose::ResetPassword => "reset-password",
            LinkPurpose::ChangeEmail => "confirm-email",
        };
        let mut url = self.links.public_url.clone();
        url.set_path(&format!("{}{path}", url.path().trim_end_matches('/').to_owned() + "/"));
        url.set_query(None);
        url.query_pairs_mut().append_pair("token", token);
        url.into()
    }
}

/// A reqwest error's text without its URL (which is the partner's, not secret, but long).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    kind.to_owned()
}

/// Seconds before the next attempt after `attempts` failed ones: 5, 10, 20 … up to an hour.
fn backoff_secs(attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(20);
    (FIRST_BACKOFF_SECS << doublings).min(MAX_BACKOFF_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let waits: Vec<u64> = (1..=12).map(backoff_secs).collect();
        assert_eq!(&waits[..5], &[5, 10, 20, 40, 80]);
        assert_eq!(waits[11], MAX_BACKOFF_SECS);
        assert_eq!(backoff_secs(u32::MAX), MAX_BACKOFF_SECS);
        assert_eq!(backoff_secs(0), 5);
    }
}
