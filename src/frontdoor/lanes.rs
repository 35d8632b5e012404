//! Per-chat lanes: the updates of one chat are handled one at a time, in
//! the order they arrived; different chats proceed at once, at most
//! `running` at a time, with at most `queued` updates waiting in all. A
//! lane is a task that lives while its chat has work queued.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

type Work<J> = Box<dyn Fn(J) -> BoxFuture<'static, ()> + Send + Sync>;

/// A queued job holds its place in the queue until its lane takes it.
type Queued<J> = (J, OwnedSemaphorePermit);

pub struct Lanes<J> {
    queues: Mutex<HashMap<String, VecDeque<Queued<J>>>>,
    work: Work<J>,
    running: Arc<Semaphore>,
    queued: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// How much the lanes hold at once.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Chats handled at the same moment.
    pub running: usize,
    /// Updates waiting for their chat's turn, over all chats; past that,
    /// [`Lanes::push`] waits (the update is recorded already, so the
    /// platform is slowed, nothing is lost).
    pub queued: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            running: 8,
            queued: 256,
        }
    }
}

impl<J: Send + 'static> Lanes<J> {
    /// Lanes that run `work` on each job until `shutdown` (work in flight
    /// then is dropped; what it recorded stays recorded).
    pub fn new<F, Fut>(work: F, bounds: Bounds, shutdown: CancellationToken) -> Arc<Self>
    where
        F: Fn(J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Arc::new(Lanes {
            queues: Mutex::new(HashMap::new()),
            work: Box::new(move |job| Box::pin(work(job))),
            running: Arc::new(Semaphore::new(bounds.running.max(1))),
            queued: Arc::new(Semaphore::new(bounds.queued.max(1))),
            shutdown,
        })
    }

    /// Queues `job` behind the chat's earlier jobs; waits while the queue
    /// is full. False when shut down first.
    pub async fn push(self: &Arc<Self>, chat: &str, job: J) -> bool {
        let place = tokio::select! {
            _ = self.shutdown.cancelled() => return false,
            place = self.queued.clone().acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => return false,
            },
        };
        {
            let mut queues = self.queues();
            if let Some(queue) = queues.get_mut(chat) {
                queue.push_back((job, place));
                return true;
            }
            // An empty queue marks the lane as running.
            queues.insert(chat.to_string(), VecDeque::new());
        }
        let lanes = self.clone();
        let chat = chat.to_string();
        tokio::spawn(async move { lanes.run(chat, (job, place)).await });
        true
    }

    async fn run(self: Arc<Self>, chat: String, first: Queued<J>) {
        let mut next = first;
        loop {
            let (job, place) = next;
            let finished = async {
                let Ok(_slot) = self.running.acquire().await else {
                    return;
                };
                // The place is given up only once the job runs: a burst
                // from many chats waits in `push` (the poller slows down),
                // not as one task per chat holding its update in memory.
                drop(place);
                (self.work)(job).await;
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = finished => {}
            }
            // Checked under the lock `push` takes, so no job is left behind
            // by a lane that is ending.
            let mut queues = self.queues();
            match queues.get_mut(&chat).and_then(VecDeque::pop_front) {
                Some(queued) => next = queued,
                None => {
                    queues.remove(&chat);
                    return;
                }
            }
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Queued<J>>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn one_chat_keeps_its_order_while_another_chat_goes_ahead() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        let lanes = Lanes::new(
            move |(chat, n, pause): (&'static str, u32, u64)| {
                let seen = seen.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    seen.lock().unwrap().push((chat, n));
                }
            },
            Bounds::default(),
            CancellationToken::new(),
        );

        lanes.push("1", ("1", 1, 60)).await;
        lanes.push("1", ("1", 2, 0)).await;
        lanes.push("2", ("2", 1, 0)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;

        assert_eq!(*log.lock().unwrap(), [("2", 1), ("1", 1), ("1", 2)]);
    }

    #[tokio::test]
    async fn no_more_chats_run_at_once_than_the_bound_allows() {
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (n, m) = (now.clone(), most.clone());
        let lanes = Lanes::new(
            move |_: u32| {
                let (now, most) = (n.clone(), m.clone());
                async move {
                    let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(running, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                }
            },
            Bounds {
                running: 2,
                queued: 100,
            },
            CancellationToken::new(),
        );

        for chat in 0..10 {
            lanes.push(&chat.to_string(), chat).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(now.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_next_push_wait_for_room() {
        let lanes = Lanes::new(
            |_: u32| async { tokio::time::sleep(Duration::from_millis(100)).await },
            Bounds {
                running: 1,
                queued: 2,
            },
            CancellationToken::new(),
        );
        // The first job is taken at once (its place freed); two wait.
        lanes.push("a", 1).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        lanes.push("a", 2).await;
        lanes.push("a", 3).await;

        let fourth = tokio::time::timeout(Duration::from_millis(30), lanes.push("a", 4)).await;
        assert!(
            fourth.is_err(),
            "the fourth waited while the queue was full"
        );
        let later = tokio::time::timeout(Duration::from_millis(500), lanes.push("a", 4)).await;
        assert_eq!(later.ok(), Some(true));
    }
}
