//! Offers being prepared by `/offer` (`offer_drafts`: the key variables
//! the operator reviews before a proposal is made) and stored files
//! (`blobs`: a proposal's PDF, named by its SHA-256, so an outbox row or a
//! journal entry carries an id instead of the bytes).

use sha2::{Digest, Sha256};

use super::{Store, StoreResult, Tx, corrupt, now_ms, parse_id};
use crate::domain::{AttachmentBody, ChatRef, Outbound, RunId};

/// An offer under review, or confirmed into a run. No price is stored: it
/// follows from `[[offers]]` and the discount, every time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferDraft {
    pub id: String,
    pub chat: ChatRef,
    pub requested_by: String,
    pub client: String,
    pub offer_name: String,
    pub email: Option<String>,
    /// `YYYY-MM-DD`.
    pub start_date: String,
    pub discount_percent: u32,
    /// `open` (under review), `confirmed` (a run makes the proposal).
    pub status: String,
    pub run_id: Option<RunId>,
}

type DraftRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    String,
    Option<String>,
);

/// The columns of an [`OfferDraft`], in `DraftRow`'s order (a macro, so
/// the queries stay literal SQL).
macro_rules! columns {
    () => {
        "id, platform, chat_id, requested_by, client, offer_name, email, start_date, discount_percent, status, run_id"
    };
}

fn from_row(row: DraftRow) -> StoreResult<OfferDraft> {
    let (
        id,
        platform,
        chat_id,
        requested_by,
        client,
        offer_name,
        email,
        start,
        discount,
        status,
        run,
    ) = row;
    Ok(OfferDraft {
        id,
        chat: ChatRef::new(platform.parse().map_err(corrupt)?, chat_id),
        requested_by,
        client,
        offer_name,
        email,
        start_date: start,
        discount_percent: u32::try_from(discount).map_err(|_| corrupt("offer discount"))?,
        status,
        run_id: run.as_deref().map(parse_id).transpose()?,
    })
}

impl Store {
    /// Stores `bytes` once; the id is their SHA-256 (hex), so storing the
    /// same file again (a step repeated after a lapsed claim) is a no-op.
    pub async fn put_blob(&self, content_type: &str, bytes: &[u8]) -> StoreResult<String> {
        let id = format!("{:x}", Sha256::digest(bytes));
        sqlx::query(
            "INSERT INTO blobs (id, content_type, bytes, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&id)
        .bind(content_type)
        .bind(bytes.to_vec())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(id)
    }

    pub async fn blob(&self, id: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar("SELECT bytes FROM blobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reads)
            .await?)
    }

    /// Replaces a message's stored attachment by its bytes, for delivery.
    pub async fn load_attachment(&self, message: &mut Outbound) -> StoreResult<()> {
        let Some(attachment) = message.attachment.as_mut() else {
            return Ok(());
        };
        if let AttachmentBody::Blob(id) = &attachment.body {
            let bytes = self
                .blob(id)
                .await?
                .ok_or_else(|| corrupt(format!("blob {id} is missing")))?;
            let file = crate::domain::Attachment::inline(
                &attachment.file_name,
                &attachment.content_type,
                &bytes,
            );
            *attachment = file;
        }
        Ok(())
    }

    pub async fn create_offer_draft(&self, draft: &OfferDraft) -> StoreResult<()> {
        let now = now_ms();
        sqlx::query(concat!(
            "INSERT INTO offer_drafts (",
            columns!(),
            ", created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&draft.id)
        .bind(draft.chat.platform.as_str())
        .bind(&draft.chat.chat_id)
        .bind(&draft.requested_by)
        .bind(&draft.client)
        .bind(&draft.offer_name)
        .bind(draft.email.as_deref())
        .bind(&draft.start_date)
        .bind(i64::from(draft.discount_percent))
        .bind(&draft.status)
        .bind(draft.run_id.map(|r| r.to_string()))
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// The e-mail address of the latest lead whose company or name is
    /// `client` (any case): where a proposal goes when `/offer` names no
    /// address.
    pub async fn lead_email(&self, client: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT email FROM leads WHERE email <> '' AND (LOWER(company) = LOWER($1) OR LOWER(name) = LOWER($1)) ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(client.trim())
        .fetch_optional(&self.reads)
        .await?)
    }

    /// The offer a run makes the proposal for.
    pub async fn offer_draft_for_run(&self, run_id: RunId) -> StoreResult<Option<OfferDraft>> {
        let row: Option<DraftRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM offer_drafts WHERE run_id = $1"
        ))
        .bind(run_id.to_string())
        .fetch_optional(&self.reads)
        .await?;
        row.map(from_row).transpose()
    }
}

impl Tx {
    pub async fn offer_draft(&mut self, id: &str) -> StoreResult<Option<OfferDraft>> {
        let row: Option<DraftRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM offer_drafts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *self.inner)
        .await?;
        row.map(from_row).transpose()
    }

    /// Saves the reviewed variables (discount, start date) and the status;
    /// false when the offer was confirmed meanwhile (a stale button).
    pub async fn update_offer_draft(&mut self, draft: &OfferDraft) -> StoreResult<bool> {
        let changed = sqlx::query(
            "UPDATE offer_drafts SET start_date = $1, discount_percent = $2, status = $3, run_id = $4, updated_at = $5 WHERE id = $6 AND status = 'open'",
        )
        .bind(&draft.start_date)
        .bind(i64::from(draft.discount_percent))
        .bind(&draft.status)
        .bind(draft.run_id.map(|r| r.to_string()))
        .bind(now_ms())
        .bind(&draft.id)
        .execute(&mut *self.inner)
        .await?;
        Ok(changed.rows_affected() == 1)
    }
}
