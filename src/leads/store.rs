//! The `leads` table.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::store::{Store, StoreError, StoreResult, Tx, now_ms};

/// A lead to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLead {
    /// The sender's id (`id:…`) or a hash of the body (`sha256:…`).
    pub external_id: String,
    pub source: String,
    pub name: String,
    pub company: String,
    pub email: String,
    pub website: String,
    pub message: String,
    /// Every field as received.
    pub fields: serde_json::Value,
}

/// A stored lead.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadRow {
    pub id: i64,
    pub external_id: String,
    pub source: String,
    pub name: String,
    pub company: String,
    pub email: String,
    pub message: String,
    pub tier: Option<String>,
    pub score: Option<i64>,
    pub status: String,
    pub created_at: i64,
    pub last_contact: Option<i64>,
}

const COLUMNS: &str = "id, external_id, source, name, company, email, message, tier, score, \
                       status, created_at, last_contact";

/// A row of [`COLUMNS`], read by name (every query of leads reads rows
/// through here).
fn lead_from_row(row: &AnyRow) -> StoreResult<LeadRow> {
    Ok(LeadRow {
        id: row.try_get("id")?,
        external_id: row.try_get("external_id")?,
        source: row.try_get("source")?,
        name: row.try_get("name")?,
        company: row.try_get("company")?,
        email: row.try_get("email")?,
        message: row.try_get("message")?,
        tier: row.try_get("tier")?,
        score: row.try_get("score")?,
        status: row.try_get("status")?,
        created_at: row.try_get("created_at")?,
        last_contact: row.try_get("last_contact")?,
    })
}

impl NewLead {
    /// Stores the lead inside `tx`; None when a lead with its external id
    /// exists already (nothing is changed then).
    pub async fn insert_in(&self, tx: &mut Tx) -> StoreResult<Option<i64>> {
        let now = now_ms();
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leads (external_id, source, name, company, email, website, message, fields,
                                status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'new', $9, $9)
             ON CONFLICT (external_id) DO NOTHING
             RETURNING id",
        )
        .bind(&self.external_id)
        .bind(&self.source)
        .bind(&self.name)
        .bind(&self.company)
        .bind(&self.email)
        .bind(&self.website)
        .bind(&self.message)
        .bind(self.fields.to_string())
        .bind(now)
        .fetch_optional(&mut *tx.conn())
        .await?;
        Ok(id)
    }
}

/// Reads and updates of stored leads.
pub struct Leads<'a>(pub &'a Store);

impl Leads<'_> {
    /// The most recent leads first.
    pub async fn recent(&self, limit: i64) -> StoreResult<Vec<LeadRow>> {
        self.select("ORDER BY created_at DESC, id DESC LIMIT $1", limit)
            .await
    }

    pub async fn get(&self, id: i64) -> StoreResult<Option<LeadRow>> {
        Ok(self.select("WHERE id = $1", id).await?.pop())
    }

    /// The leads `tail` (a WHERE or ORDER BY clause with one parameter,
    /// `$1` = `value`) picks.
    async fn select(&self, tail: &str, value: i64) -> StoreResult<Vec<LeadRow>> {
        let sql = format!("SELECT {COLUMNS} FROM leads {tail}");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .fetch_all(self.0.pool())
            .await?;
        rows.iter().map(lead_from_row).collect()
    }

    /// Records the tier, score and reasons of a qualification.
    pub async fn set_score(&self, id: i64, scored: &super::Scored) -> StoreResult<()> {
        sqlx::query(
            "UPDATE leads SET tier = $1, score = $2, reasons = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(scored.tier.as_str())
        .bind(scored.score)
        .bind(scored.reasons.join("; "))
        .bind(now_ms())
        .bind(id)
        .execute(self.0.pool())
        .await?;
        self.0.durable().await?;
        Ok(())
    }

    /// Sets a lead's status; a reply counts as contact.
    pub async fn set_status(&self, id: i64, status: super::LeadStatus) -> StoreResult<bool> {
        let now = now_ms();
        let contact = matches!(status, super::LeadStatus::Replied).then_some(now);
        let found = sqlx::query(
            "UPDATE leads SET status = $1, updated_at = $2, last_contact = COALESCE($3, last_contact)
             WHERE id = $4",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(contact)
        .bind(id)
        .execute(self.0.pool())
        .await?
        .rows_affected()
            == 1;
        self.0.flushed(found).await
    }

    /// Replied leads with no contact since `quiet_since` (Unix ms) and no
    /// reminder since then: each is claimed for its reminder (marked
    /// reminded at `now`, the scheduler's clock) and returned, so one
    /// reminder goes per quiet spell.
    pub async fn claim_quiet(&self, quiet_since: i64, now: i64) -> StoreResult<Vec<LeadRow>> {
        let mut tx = self.0.begin().await?;
        let sql = format!(
            "UPDATE leads SET reminded_at = $1
             WHERE status = 'replied' AND last_contact < $2
               AND (reminded_at IS NULL OR reminded_at < last_contact)
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(quiet_since)
            .fetch_all(&mut *tx.conn())
            .await?;
        // Read before the commit: a row that cannot be read must not be
        // marked reminded without its reminder.
        let leads = rows
            .iter()
            .map(lead_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await?;
        Ok(leads)
    }
}

/// Stores `lead` and emits `lead.received` in one transaction: true when it
/// is new, false when the same lead was stored before.
pub async fn store_lead(store: &Store, lead: &NewLead) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    let Some(id) = lead.insert_in(&mut tx).await? else {
        return Ok(false);
    };
    let payload = serde_json::json!({
        "lead_id": id,
        "source": lead.source,
        "name": lead.name,
        "company": lead.company,
        "email": lead.email,
        "website": lead.website,
        "message": lead.message,
        "fields": lead.fields,
    });
    super::emit_received(&mut tx, payload, &format!("lead:{}", lead.external_id)).await?;
    tx.commit().await?;
    Ok(true)
}
