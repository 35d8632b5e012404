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
                        "name": option_name(takes),
                        "description": option_description(takes),
                        // `[FLOW LEVEL]`: the command also works without it.
                        "required": !takes.starts_with('['),
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

/// The option's name: its first word, as Discord allows names (lowercase
/// letters, digits, `-` and `_`, at most 32). Discord refuses the whole
/// bulk overwrite when one name breaks the rule, which would leave the bot
/// with no slash command at all: `ID views=N clicks=N` is named `id`.
fn option_name(takes: &str) -> String {
    let first = takes
        .trim_matches(['[', ']'])
        .split_whitespace()
        .next()
        .unwrap_or_default();
    let name: String = first
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(32)
        .collect();
    if name.is_empty() {
        "text".to_string()
    } else {
        name
    }
}

/// What the option holds; a form of several words is shown whole, since
/// the whole form is typed into the one option.
fn option_description(takes: &str) -> String {
    let form = takes.trim_matches(['[', ']']);
    let text = match form {
        "ID" => "The run's id (its first 4 characters are enough)".to_string(),
        "WHEN" => "The schedule and its new time, e.g. digest 07:30".to_string(),
        "FLOW LEVEL" => {
            "A flow and its level: always, borderline or never (empty: list them)".to_string()
        }
        _ if form.contains(' ') => format!("Type it as: {form}"),
        _ => "What you need, e.g. a LinkedIn post about the new price".to_string(),
    };
    text.chars().take(100).collect()
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
                // Discord's rule for option names (ASCII form).
                assert!(
                    (1..=32).contains(&option_name.len())
                        && option_name.chars().all(|c| c.is_ascii_lowercase()
                            || c.is_ascii_digit()
                            || c == '-'
                            || c == '_'),
                    "/{name}: option name {option_name:?} breaks Discord's rule"
                );
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
        let find = |name: &str| {
            definitions
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap()
                .clone()
        };
        let result = find("result");
        assert_eq!(result["options"][0]["name"], "id");
        assert_eq!(
            result["options"][0]["description"],
            "Type it as: ID views=N clicks=N"
        );
        let autonomy = find("autonomy");
        assert_eq!(autonomy["options"][0]["name"], "flow");
        assert_eq!(autonomy["options"][0]["required"], false);
        assert!(
            draft["description"]
                .as_str()
                .unwrap()
                .starts_with("Draft content")
        );
    }
}
