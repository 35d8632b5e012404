//! The slash commands soloist registers (the controller's command list),
//! and a used one turned back into the text command the controller reads
//! (`/draft a post`).

use serde_json::{Value, json};
use serenity::model::application::{CommandData, CommandDataOptionValue};

use crate::controller::COMMANDS;

/// The body of Discord's bulk overwrite: every command, usable in DMs with
/// the bot, and in servers only when `in_servers` (some guild channel is
/// listed in `discord.allowed_channel_ids`); a command that takes something
/// has one required text option named after it (`text`, `id`).
pub fn definitions(in_servers: bool) -> Value {
    // Discord's interaction contexts: 0 a guild, 1 the bot's DM.
    let contexts = if in_servers {
        json!([0, 1])
    } else {
        json!([1])
    };
    let commands: Vec<Value> = COMMANDS
        .iter()
        .map(|(name, takes, description)| {
            let options: Vec<Value> = Some(takes)
                .filter(|takes| !takes.is_empty())
                .map(|takes| {
                    json!({
                        "type": 3,
                        "name": takes.to_lowercase(),
                        "description": option_description(takes),
                        "required": true,
                    })
                })
                .into_iter()
                .collect();
            json!({
                "name": name,
                "description": sentence_case(description),
                "type": 1,
                "options": options,
                "contexts": contexts,
            })
        })
        .collect();
    Value::Array(commands)
}

fn option_description(takes: &str) -> &'static str {
    match takes {
        "ID" => "The run's id (its first 4 characters are enough)",
        _ => "What you need, e.g. a LinkedIn post about the new price",
    }
}

fn sentence_case(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
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

    #[test]
    fn commands_are_offered_in_servers_only_when_a_channel_is_listed() {
        let dm_only = definitions(false);
        let everywhere = definitions(true);
        assert!(
            dm_only
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["contexts"] == json!([1]))
        );
        assert_eq!(everywhere[0]["contexts"], json!([0, 1]));
    }

    #[test]
    fn definitions_fit_discord_limits() {
        for command in definitions(true).as_array().unwrap() {
            let name = command["name"].as_str().unwrap();
            assert!(name.len() <= 32 && name == name.to_lowercase());
            assert!(command["description"].as_str().unwrap().len() <= 100);
            for option in command["options"].as_array().unwrap() {
                let option_name = option["name"].as_str().unwrap();
                assert!(option_name == option_name.to_lowercase());
                assert!(option["description"].as_str().unwrap().len() <= 100);
            }
        }
    }

    #[test]
    fn commands_that_take_something_have_one_required_option() {
        let definitions = definitions(true);
        let draft = definitions
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "draft")
            .unwrap();
        assert_eq!(draft["options"][0]["name"], "text");
        assert_eq!(draft["options"][0]["required"], true);
        assert!(
            draft["description"]
                .as_str()
                .unwrap()
                .starts_with("Draft content")
        );
    }
}
