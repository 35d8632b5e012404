//! The slash commands soloist registers, and a used one turned back into
//! the text command the controller reads (`/draft a post`).

use serde_json::{Value, json};
use serenity::model::application::{CommandData, CommandDataOptionValue};

/// One slash command: its name (the controller's command), what Discord
/// shows for it, and its one text option, if any.
struct SlashCommand {
    name: &'static str,
    description: &'static str,
    option: Option<(&'static str, &'static str)>,
}

const COMMANDS: [SlashCommand; 7] = [
    SlashCommand {
        name: "draft",
        description: "Draft content in your brand voice, then approve, edit or reject it",
        option: Some((
            "request",
            "What to draft, e.g. a LinkedIn post about the new price",
        )),
    },
    SlashCommand {
        name: "runs",
        description: "Recent runs and their status",
        option: None,
    },
    SlashCommand {
        name: "run",
        description: "One run in detail",
        option: Some(("id", "The run's id (its first 4 characters are enough)")),
    },
    SlashCommand {
        name: "approvals",
        description: "Drafts waiting for your decision, with their buttons",
        option: None,
    },
    SlashCommand {
        name: "retry",
        description: "Try a failed run again",
        option: Some(("id", "The failed run's id")),
    },
    SlashCommand {
        name: "cost",
        description: "What the model calls cost, against the budgets",
        option: None,
    },
    SlashCommand {
        name: "help",
        description: "What soloist can do",
        option: None,
    },
];

/// The body of Discord's bulk overwrite: every command, usable in servers
/// and in DMs with the bot.
pub fn definitions() -> Value {
    let commands: Vec<Value> = COMMANDS
        .iter()
        .map(|command| {
            let options: Vec<Value> = command
                .option
                .iter()
                .map(|(name, description)| {
                    json!({"type": 3, "name": name, "description": description, "required": true})
                })
                .collect();
            json!({
                "name": command.name,
                "description": command.description,
                "type": 1,
                "options": options,
                "contexts": [0, 1],
            })
        })
        .collect();
    Value::Array(commands)
}

/// `/name value`: what the operator would have typed.
pub fn as_text(data: &CommandData) -> String {
    let value = data.options.iter().find_map(|option| match &option.value {
        CommandDataOptionValue::String(text) => Some(text.trim()),
        _ => None,
    });
    match value {
        Some(value) => format!("/{} {value}", data.name),
        None => format!("/{}", data.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Command;

    #[test]
    fn every_registered_command_is_one_the_controller_knows() {
        for command in &COMMANDS {
            let text = format!("/{} x", command.name);
            assert!(text.parse::<Command>().is_ok(), "{text}");
        }
    }

    #[test]
    fn definitions_fit_discord_limits() {
        for command in definitions().as_array().unwrap() {
            assert!(command["description"].as_str().unwrap().len() <= 100);
            for option in command["options"].as_array().unwrap() {
                assert!(option["description"].as_str().unwrap().len() <= 100);
            }
        }
    }
}
