//! Per-chat lanes: updates of one chat are handled one at a time, in the
//! order they arrived; different chats proceed at once. A lane is a task
//! that lives while its chat has work queued.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

type Work<J> = Box<dyn Fn(J) -> BoxFuture<'static, ()> + Send + Sync>;

pub struct Lanes<J> {
    queues: Mutex<HashMap<i64, VecDeque<J>>>,
    work: Work<J>,
    shutdown: CancellationToken,
}

impl<J: Send + 'static> Lanes<J> {
    /// Lanes that run `work` on each job until `shutdown` (work in flight
    /// then is dropped; what it recorded stays recorded).
    pub fn new<F, Fut>(work: F, shutdown: CancellationToken) -> Arc<Self>
    where
        F: Fn(J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Arc::new(Lanes {
            queues: Mutex::new(HashMap::new()),
            work: Box::new(move |job| Box::pin(work(job))),
            shutdown,
        })
    }

    /// Queues `job` behind the chat's earlier jobs.
    pub fn push(self: &Arc<Self>, chat: i64, job: J) {
        {
            let mut queues = self.queues();
            if let Some(queue) = queues.get_mut(&chat) {
                queue.push_back(job);
                return;
            }
            // An empty queue marks the lane as running.
            queues.insert(chat, VecDeque::new());
        }
        let lanes = self.clone();
        tokio::spawn(async move { lanes.run(chat, job).await });
    }

    async fn run(self: Arc<Self>, chat: i64, first: J) {
        let mut job = first;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = (self.work)(job) => {}
            }
            // Checked under the lock `push` takes, so no job is left behind
            // by a lane that is ending.
            let mut queues = self.queues();
            match queues.get_mut(&chat).and_then(VecDeque::pop_front) {
                Some(next) => job = next,
                None => {
                    queues.remove(&chat);
                    return;
                }
            }
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<i64, VecDeque<J>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_chat_keeps_its_order_while_another_chat_goes_ahead() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        let lanes = Lanes::new(
            move |(chat, n, pause): (i64, u32, u64)| {
                let seen = seen.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    seen.lock().unwrap().push((chat, n));
                }
            },
            CancellationToken::new(),
        );

        lanes.push(1, (1, 1, 60));
        lanes.push(1, (1, 2, 0));
        lanes.push(2, (2, 1, 0));
        tokio::time::sleep(Duration::from_millis(200)).await;

        assert_eq!(*log.lock().unwrap(), [(2, 1), (1, 1), (1, 2)]);
    }
}
