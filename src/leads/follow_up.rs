//! The follow-up reminder: a replied lead that has been quiet for
//! `leads.follow_up_days` is named to the operator once per quiet spell
//! (the `follow_up_leads` schedule, hourly by default).

use crate::domain::Outbound;
use crate::scheduler::{Job, JobContext, JobOutput};
use crate::store::PendingFire;

use super::Leads;

pub struct FollowUpLeads;

#[async_trait::async_trait]
impl Job for FollowUpLeads {
    async fn run(&self, context: &JobContext, _fire: &PendingFire) -> Result<JobOutput, String> {
        let days = i64::from(context.settings.leads.follow_up_days);
        let now = context.now.timestamp_millis();
        let quiet_since = now - days * 24 * 3600 * 1000;
        let quiet = Leads(&context.store)
            .claim_quiet(quiet_since, now)
            .await
            .map_err(|e| e.to_string())?;
        let mut output = JobOutput::default();
        if quiet.is_empty() {
            return Ok(output);
        }
        let lines: Vec<String> = quiet
            .iter()
            .map(|lead| {
                let who = [
                    lead.name.as_str(),
                    lead.company.as_str(),
                    lead.email.as_str(),
                ]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(", ");
                format!("#{} {}", lead.id, crate::policy::neutralize(&who))
            })
            .collect();
        let text = format!(
            "Follow up? No word for {days} days since your reply:\n{}",
            lines.join("\n")
        );
        for chat in crate::digest::owner_chats(&context.settings) {
            output.messages.push((chat, Outbound::text(text.clone())));
        }
        Ok(output)
    }

    fn housekeeping(&self) -> bool {
        true
    }
}
