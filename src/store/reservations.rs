//! Budget reservations as rows. A reservation holds money from the moment
//! the gate grants it until it is settled (the real cost, with the ledger
//! row) or released. Every path out of a call ends in one of the two: the
//! [`HeldReservation`] guard releases on drop (a failed write, a future
//! dropped at shutdown, a batch step whose commit was refused), and the
//! sweeper releases what a crashed process left behind. Each release claims
//! the row first, so money is never returned twice.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::{Any, Transaction};

use super::budget::{Reservation, settle_in};
use super::{LedgerEntry, Store, StoreResult, now_ms};

/// Why a reservation was given back without being settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Its call ended without settling: a write failed, or the call's
    /// future was dropped (shutdown, a step that lost its run).
    Abandoned,
    /// The sweeper found it older than the longest possible call.
    Swept,
}

impl Release {
    fn as_str(self) -> &'static str {
        match self {
            Release::Abandoned => "abandoned",
            Release::Swept => "swept",
        }
    }
}

/// Reservations given back unsettled since some time, for `/cost`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReleasedSummary {
    pub abandoned: i64,
    pub abandoned_usd: f64,
    pub swept: i64,
    pub swept_usd: f64,
}

/// A granted reservation that releases itself when dropped unsettled.
/// Clones share one reservation; the release happens when the last goes.
#[derive(Clone)]
pub struct HeldReservation {
    inner: Arc<Held>,
}

struct Held {
    reservation: Reservation,
    store: Store,
    open: AtomicBool,
}

impl HeldReservation {
    pub(super) fn new(store: Store, reservation: Reservation) -> Self {
        HeldReservation {
            inner: Arc::new(Held {
                reservation,
                store,
                open: AtomicBool::new(true),
            }),
        }
    }

    pub fn reservation(&self) -> &Reservation {
        &self.inner.reservation
    }

    /// A paid call's settlement, tried again while the database is away
    /// for a moment, so the answer is not thrown away and paid for again
    /// when its step retries.
    async fn settle_waiting_out_an_outage(&self, entry: Option<&LedgerEntry>) -> StoreResult<()> {
        let held = &self.inner;
        super::waiting_out_an_outage("settling a call's cost", || {
            held.store.settle_budget(&held.reservation, entry)
        })
        .await
    }

    /// Replaces the reservation by what the call cost and writes its ledger
    /// row, in one transaction. If that fails, the cost is still charged
    /// (without the row) so the budget stays true, and the error is
    /// returned.
    pub async fn settle(&self, entry: Option<&LedgerEntry>) -> StoreResult<()> {
        let held = &self.inner;
        match self.settle_waiting_out_an_outage(entry).await {
            Ok(()) => {
                held.open.store(false, Ordering::SeqCst);
                Ok(())
            }
            Err(error) => {
                let spent = entry.and_then(|e| e.cost_usd).unwrap_or(0.0);
                match held.store.charge_budget(&held.reservation, spent).await {
                    Ok(()) => held.open.store(false, Ordering::SeqCst),
                    // Left open: the drop (or the sweeper) releases it.
                    Err(again) => tracing::error!(error = ?again, "could not charge a call's cost"),
                }
                Err(error)
            }
        }
    }

    /// Gives the reservation back now, unsettled, saying why.
    pub async fn abandon(&self, reason: &str) -> StoreResult<()> {
        let held = &self.inner;
        held.store
            .release_reservation(&held.reservation, Release::Abandoned, reason)
            .await?;
        held.open.store(false, Ordering::SeqCst);
        Ok(())
    }
}

impl Deref for HeldReservation {
    type Target = Reservation;
    fn deref(&self) -> &Reservation {
        &self.inner.reservation
    }
}

impl std::fmt::Debug for HeldReservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.reservation.fmt(f)
    }
}

impl PartialEq for HeldReservation {
    fn eq(&self, other: &Self) -> bool {
        self.inner.reservation == other.inner.reservation
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.open.load(Ordering::SeqCst) {
            return;
        }
        // Drop cannot wait; a task can. Without a runtime (the process is
        // ending) the sweeper releases it after the next start.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let reservation = self.reservation.clone();
        runtime.spawn(async move {
            let reason = "its call ended before it settled";
            if let Err(error) = store
                .release_reservation(&reservation, Release::Abandoned, reason)
                .await
            {
                tracing::warn!(error = ?error, "could not release a reservation; the sweeper will");
            }
        });
    }
}

impl Store {
    /// Gives a call's reservation back unsettled, once: false when it was
    /// settled or released already, or a batch item holds it now.
    pub async fn release_reservation(
        &self,
        reservation: &Reservation,
        how: Release,
        reason: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let released = sqlx::query(
            "UPDATE budget_reservations SET status = $1, reason = $2, released_at = $3
             WHERE id = $4 AND status = 'held' AND holder = 'call'",
        )
        .bind(how.as_str())
        .bind(reason)
        .bind(now_ms())
        .bind(&reservation.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if released {
            give_back(&mut tx, reservation, 0.0).await?;
            tracing::warn!(
                reservation = %reservation.id, amount_usd = reservation.amount_usd,
                how = how.as_str(), reason, "budget reservation released unsettled"
            );
        }
        self.commit_durably(tx).await?;
        Ok(released)
    }

    /// Charges what a call cost without its ledger row (the row could not
    /// be written): the budget must not forget money that was spent.
    pub async fn charge_budget(&self, reservation: &Reservation, spent: f64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        settle_in(&mut tx, reservation, spent).await?;
        self.commit_durably(tx).await?;
        Ok(())
    }

    /// Releases every call reservation older than `max_age_ms` (longer than
    /// any call can take: its process died). Batch items' reservations are
    /// left alone; a batch may take a day. Returns what was swept.
    pub async fn sweep_reservations(&self, max_age_ms: i64) -> StoreResult<Vec<Reservation>> {
        let rows: Vec<(String, String, String, f64)> = sqlx::query_as(
            "SELECT id, budget_day, budget_month, amount_usd FROM budget_reservations
             WHERE status = 'held' AND holder = 'call' AND created_at < $1 ORDER BY created_at",
        )
        .bind(now_ms() - max_age_ms)
        .fetch_all(&self.reads)
        .await?;
        let mut swept = Vec::new();
        for (id, day, month, amount_usd) in rows {
            let reservation = Reservation {
                id,
                day,
                month,
                amount_usd,
            };
            let reason = "older than the longest possible call";
            if self
                .release_reservation(&reservation, Release::Swept, reason)
                .await?
            {
                swept.push(reservation);
            }
        }
        Ok(swept)
    }

    /// Reservations released unsettled since `since_ms`.
    pub async fn released_reservations_since(&self, since_ms: i64) -> StoreResult<ReleasedSummary> {
        let rows: Vec<(String, i64, Option<f64>)> = sqlx::query_as(
            "SELECT status, COUNT(*), SUM(amount_usd) FROM budget_reservations
             WHERE status IN ('abandoned', 'swept') AND released_at >= $1 GROUP BY status",
        )
        .bind(since_ms)
        .fetch_all(&self.reads)
        .await?;
        let mut summary = ReleasedSummary::default();
        for (status, count, amount) in rows {
            let amount = amount.unwrap_or(0.0);
            match status.as_str() {
                "abandoned" => (summary.abandoned, summary.abandoned_usd) = (count, amount),
                _ => (summary.swept, summary.swept_usd) = (count, amount),
            }
        }
        Ok(summary)
    }
}

/// The row for a reservation just granted.
pub(super) async fn insert_reservation(
    tx: &mut Transaction<'_, Any>,
    reservation: &Reservation,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO budget_reservations (id, budget_day, budget_month, amount_usd, holder, status, created_at)
         VALUES ($1, $2, $3, $4, 'call', 'held', $5)",
    )
    .bind(&reservation.id)
    .bind(&reservation.day)
    .bind(&reservation.month)
    .bind(reservation.amount_usd)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A committed batch item holds the reservation from now on.
pub(super) async fn hand_to_batch(
    tx: &mut Transaction<'_, Any>,
    reservation: &Reservation,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE budget_reservations SET holder = 'batch' WHERE id = $1 AND status = 'held'",
    )
    .bind(&reservation.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Claims a held reservation's row for settling: true when this caller is
/// the one to give its amount back. Reservations made before the rows
/// existed (empty id) are always the caller's.
pub(super) async fn claim_held(
    tx: &mut Transaction<'_, Any>,
    reservation: &Reservation,
) -> StoreResult<bool> {
    if reservation.id.is_empty() {
        return Ok(true);
    }
    Ok(
        sqlx::query("DELETE FROM budget_reservations WHERE id = $1 AND status = 'held'")
            .bind(&reservation.id)
            .execute(&mut **tx)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Takes the reservation's amount off both periods' reserved sums and adds
/// what was spent.
pub(super) async fn give_back(
    tx: &mut Transaction<'_, Any>,
    reservation: &Reservation,
    spent: f64,
) -> StoreResult<()> {
    give_back_amount(tx, reservation, reservation.amount_usd, spent).await
}

pub(super) async fn give_back_amount(
    tx: &mut Transaction<'_, Any>,
    reservation: &Reservation,
    reserved: f64,
    spent: f64,
) -> StoreResult<()> {
    for period in [
        format!("day:{}", reservation.day),
        format!("month:{}", reservation.month),
    ] {
        sqlx::query(
            "UPDATE budget_periods
             SET reserved_usd = CASE WHEN reserved_usd > $1 THEN reserved_usd - $1 ELSE 0 END,
                 spent_usd = spent_usd + $2
             WHERE period = $3",
        )
        .bind(reserved)
        .bind(spent)
        .bind(&period)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
