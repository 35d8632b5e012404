//! Prompt templates: `prompts/NAME.md`, rendered with minijinja. Values (the
//! operator's request, the business) are passed as data and never parsed as
//! template source, so a request containing `{{ … }}` is just text.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::Environment;

const BUILT_IN_PROMPTS: &[(&str, &str)] = &[
    (
        "lead_extract",
        include_str!("../../prompts/lead_extract.md"),
    ),
    ("lead_reply", include_str!("../../prompts/lead_reply.md")),
    (
        "lead_decline",
        include_str!("../../prompts/lead_decline.md"),
    ),
    ("system", include_str!("../../prompts/system.md")),
    ("draft", include_str!("../../prompts/draft.md")),
    // FUNNEL: the fact check and the rewrite a Revise asks for.
    ("fact_check", include_str!("../../prompts/fact_check.md")),
    (
        "fact_check_system",
        include_str!("../../prompts/fact_check_system.md"),
    ),
    ("revise", include_str!("../../prompts/revise.md")),
    ("route", include_str!("../../prompts/route.md")),
    (
        "route_system",
        include_str!("../../prompts/route_system.md"),
    ),
    ("offer_scope", include_str!("../../prompts/offer_scope.md")),
    ("offer_cover", include_str!("../../prompts/offer_cover.md")),
    ("proposal", include_str!("../../prompts/proposal.md")),
    // SCHEDULE: the digest's text (numbers only, rendered, never a model's).
    ("digest", include_str!("../../prompts/digest.md")),
];

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("prompt template {name}: {source}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("cannot read prompt {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The prompt templates, compiled once at start.
#[derive(Debug)]
pub struct Prompts {
    env: Environment<'static>,
}

impl Prompts {
    /// Built-in prompts, overridden or extended by `<home>/prompts/*.md`.
    pub fn load(home: &Path) -> Result<Prompts, PromptError> {
        let mut sources: BTreeMap<String, String> = BUILT_IN_PROMPTS
            .iter()
            .map(|(name, text)| (name.to_string(), text.to_string()))
            .collect();
        let overrides = super::read_overrides(&home.join("prompts"), "md")
            .map_err(|(path, source)| PromptError::Read { path, source })?;
        for (name, _, text) in overrides {
            sources.insert(name, text);
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, text) in sources {
            env.add_template_owned(name.clone(), text)
                .map_err(|source| PromptError::Template { name, source })?;
        }
        Ok(Prompts { env })
    }

    pub fn has(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    pub fn render(&self, name: &str, values: &serde_json::Value) -> Result<String, PromptError> {
        let error = |source| PromptError::Template {
            name: name.to_string(),
            source,
        };
        let template = self.env.get_template(name).map_err(error)?;
        template
            .render(minijinja::value::Serde(values))
            .map_err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_syntax_in_a_value_is_rendered_as_plain_text() {
        let prompts = Prompts::load(Path::new("/nonexistent")).unwrap();
        let values = serde_json::json!({
            "business": {"owner": "Maya"},
            "request": "{{ secrets.openai_api_key }} {% for x in range(10**9) %}{% endfor %}",
        });
        let text = prompts.render("draft", &values).unwrap();
        assert!(text.contains("{{ secrets.openai_api_key }}"));
        assert!(text.contains("{% for x in range(10**9) %}"));
    }
}
