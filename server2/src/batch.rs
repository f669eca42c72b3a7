//! Signature checks of the handoffs being served at the same moment, done together.
//!
//! The first request to reach its signature check while no batch is gathering leads one: it
//! lets every other task that is ready to run reach its own check first (one turn of the
//! scheduler, no timer: a request that is alone waits for nothing), then checks all of them
//! with one multiscalar multiplication ([`handoff::ed25519::check_batch`]). A batch that does
//! not hold is checked one by one, so a bad signature never refuses a good one; and after one
//! that did not hold, the next checks run alone for a while, so a flood of bad signatures
//! costs what it cost before batching.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use handoff::ed25519::{check_batch, Pending, SignatureChecker};
use prometheus::IntCounter;
use tokio::sync::oneshot;

/// The most signatures checked together; more waiting are checked in further batches.
const MAX_BATCH: usize = 64;
/// How many checks run alone after a batch that did not hold.
const ALONE_AFTER_FAILURE: u32 = 64;

type Waiting = Vec<(Pending, oneshot::Sender<bool>)>;

/// Gathers signature checks into batches (see the module documentation).
#[derive(Debug)]
pub struct Batcher {
    waiting: Mutex<Waiting>,
    /// Checks still to run alone since the last batch that did not hold.
    alone: AtomicU32,
    /// Counts the signatures checked in batches of two or more.
    batched: IntCounter,
}

impl Batcher {
    /// A batcher counting what it checks in batches in `batched`.
    pub fn new(batched: IntCounter) -> Self {
        Self { waiting: Mutex::default(), alone: AtomicU32::new(0), batched }
    }

    fn take(&self) -> Waiting {
        let mut waiting = match self.waiting.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::take(&mut *waiting)
    }

    /// Checks everything waiting and answers each waiter.
    fn run(&self) {
        let waiting = self.take();
        let mut waiting = waiting.into_iter().peekable();
        while waiting.peek().is_some() {
            let chunk: Waiting = waiting.by_ref().take(MAX_BATCH).collect();
            let (items, answers): (Vec<Pending>, Vec<_>) = chunk.into_iter().unzip();
            let results = check_batch(&items);
            if items.len() > 1 {
                self.batched.inc_by(items.len() as u64);
                if results.iter().any(|ok| !ok) {
                    self.alone.store(ALONE_AFTER_FAILURE, Ordering::Relaxed);
                }
            }
            for (answer, genuine) in answers.into_iter().zip(results) {
                // A waiter that went away (its client closed) needs no answer.
                let _ = answer.send(genuine);
            }
        }
    }
}

impl SignatureChecker for Batcher {
    async fn check(&self, pending: Pending) -> bool {
        let alone = self.alone.load(Ordering::Relaxed);
        if alone > 0 {
            self.alone.store(alone - 1, Ordering::Relaxed);
            return pending.check();
        }
        let (answer, answered) = oneshot::channel();
        let leads = {
            let mut waiting = match self.waiting.lock() {
                Ok(w) => w,
                Err(poisoned) => poisoned.into_inner(),
            };
            waiting.push((pending, answer));
            waiting.len() == 1
        };
        if leads {
            // Whatever happens to this request from here (its client may go away while it
            // yields), the batch it leads is checked: the guard runs it when dropped.
            let lead = Lead(self);
            tokio::task::yield_now().await;
            drop(lead);
        }
        // Fails closed: no answer (which the guard rules out) is a bad signature.
        answered.await.unwrap_or(false)
    }
}

/// Runs the batch when dropped.
struct Lead<'a>(&'a Batcher);

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.0.run();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;

    use super::*;
    use handoff::ed25519::{prepare, Check, PublicKey};
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn pending(pair: &Ed25519KeyPair, message: &[u8], tamper: bool) -> Pending {
        let key = PublicKey::new(pair.public_key().as_ref().try_into().expect("32"));
        let mut sig = pair.sign(message).as_ref().to_vec();
        if tamper {
            sig[5] ^= 1;
        }
        match prepare(&key, message, &sig) {
            Check::Pending(p) => p,
            Check::Decided(_) => panic!("pending"),
        }
    }

    fn batcher() -> std::sync::Arc<Batcher> {
        let counter = IntCounter::new("batched", "signatures checked in batches").expect("name");
        std::sync::Arc::new(Batcher::new(counter))
    }

    fn pair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("key");
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tasks_ready_together_are_checked_together_and_each_gets_its_answer() {
        let batcher = batcher();
        let pair = pair();
        let mut tasks = Vec::new();
        for n in 0..10u8 {
            let item = pending(&pair, &[n], n == 4);
            let batcher = std::sync::Arc::clone(&batcher);
            tasks.push(tokio::spawn(async move { batcher.check(item).await }));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.expect("task"));
        }
        let expected: Vec<bool> = (0..10).map(|n| n != 4).collect();
        assert_eq!(answers, expected);
        assert_eq!(batcher.batched.get(), 10, "the ten were one batch");
        // The batch held a bad signature: the next checks run alone.
        assert_eq!(batcher.alone.load(Ordering::Relaxed), ALONE_AFTER_FAILURE);
        assert!(batcher.check(pending(&pair, b"x", false)).await);
        assert!(!batcher.check(pending(&pair, b"x", true)).await);
        assert_eq!(batcher.alone.load(Ordering::Relaxed), ALONE_AFTER_FAILURE - 2);
        assert_eq!(batcher.batched.get(), 10, "checks run alone are not counted as batched");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_leader_that_goes_away_still_answers_the_others() {
        let batcher = batcher();
        let pair = pair();
        // The leader is polled once (it queues itself and yields), then dropped.
        let mut leader = Box::pin(batcher.check(pending(&pair, b"lead", false)));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(leader.as_mut().poll(&mut cx).is_pending());
        let follower = {
            let batcher = std::sync::Arc::clone(&batcher);
            let item = pending(&pair, b"follow", false);
            tokio::spawn(async move { batcher.check(item).await })
        };
        tokio::task::yield_now().await;
        drop(leader);
        assert!(follower.await.expect("task"));
        assert_eq!(batcher.batched.get(), 2, "the leader's batch held both");
    }
}
