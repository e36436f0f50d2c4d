//! routes.yaml as the console's Config page shows it: the file as written, with the values of
//! secret keys masked the way `herald check` masks them (docs/architecture.md §12, the
//! invariant "Secrets are never logged"): tokens, passwords, secrets, keys and
//! `Authorization` headers become `***`, URLs `scheme://host/***`, a plugin's `config` `***`.
//! A bare `${VAR}` stays (it names a variable, not a secret); a literal default in
//! `${VAR:-default}` is masked. Comments are masked too: they may hold an old value.

use regex::Regex;
use std::sync::LazyLock;

/// `key: value` where `key` is secret (or a URL): the value up to `,` `}` or a comment.
static SECRET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(?P<key>[\w.-]*(?:token|secret|passw|authorization|api[_-]?key|private[_-]?key|cookie|signature|url)[\w.-]*|config)(?P<sep>"?\s*:\s*)(?P<value>"[^"]*"|'[^']*'|\[[^\]]*\]|\{[^}]*\}|(?:\$\{[^}]*\}|[^\s,}\#])(?:\$\{[^}]*\}|[^,}\#])*)"#,
    )
    .expect("a valid regex")
});

static ONLY_VAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^["']?\$\{[A-Za-z_][A-Za-z0-9_]*\}["']?$"#).expect("a valid regex")
});

static URL_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^["']?(?P<scheme>[a-z][a-z0-9+.-]*)://(?:[^@/"']*@)?(?P<host>[^/:"'?#]+)"#)
        .expect("a valid regex")
});

/// The YAML text with secret values masked.
pub fn mask_yaml(text: &str) -> String {
    let mut out = Vec::new();
    // The indentation of a secret key whose value is the block below it.
    let mut block: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let content = line.trim_start().trim_start_matches('#');
        let content_indent = line.len() - content.trim_start().len();
        if let Some(depth) = block {
            if content.trim().is_empty() || content_indent > depth {
                out.push(mask_block_line(line));
                continue;
            }
            block = None;
        }
        let masked = mask_line(line);
        // `channel_tokens:` (nothing after it): its list or mapping follows, indented.
        if let Some(c) = SECRET_KEY_ONLY.captures(line)
            && c.name("key").is_some()
        {
            block = Some(content_indent.max(indent));
        }
        out.push(masked);
    }
    let mut joined = out.join("\n");
    if text.ends_with('\n') {
        joined.push('\n');
    }
    joined
}

static SECRET_KEY_ONLY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)^[\s#]*(?:-\s+)?(?P<key>[\w.-]*(?:token|secret|passw|authorization|api[_-]?key|private[_-]?key|cookie|signature|url)[\w.-]*|config)\s*:\s*(?:\#.*)?$"#,
    )
    .expect("a valid regex")
});

static COMMENTED_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"^\s*#+\s*(?:-\s+)?[\w.-]+\s*:"#).expect("a valid regex"));

fn mask_line(line: &str) -> String {
    // Prose in a comment stays; a commented-out `key: value` is masked like a live one.
    if line.trim_start().starts_with('#') && !COMMENTED_KEY.is_match(line) {
        return line.to_owned();
    }
    SECRET
        .replace_all(line, |c: &regex::Captures| {
            let key = &c["key"];
            let value = c["value"].trim_end();
            let rest = &c["value"][value.len()..];
            format!("{key}{}{}{rest}", &c["sep"], mask_value(value))
        })
        .into_owned()
}

fn mask_value(value: &str) -> String {
    if ONLY_VAR.is_match(value) {
        return value.to_owned();
    }
    if let Some(c) = URL_VALUE.captures(value) {
        return format!("{}://{}/***", &c["scheme"], &c["host"]);
    }
    "***".to_owned()
}

/// A line inside a secret block: `- value` or `key: value` keeps its shape, the value masked.
fn mask_block_line(line: &str) -> String {
    let indent = &line[..line.len() - line.trim_start().len()];
    let content = line.trim_start();
    if let Some(item) = content.strip_prefix("- ") {
        return format!("{indent}- {}", mask_value(item.trim()));
    }
    if let Some((key, value)) = content.split_once(':')
        && !value.trim().is_empty()
    {
        return format!("{indent}{key}: {}", mask_value(value.trim()));
    }
    line.to_owned()
}

#[cfg(test)]
mod tests {
    use super::mask_yaml;

    #[test]
    fn secrets_are_masked_and_variables_stay() {
        let yaml = "\
# Herald's default config: runs with no outside service.
server:
  admin_token: s3cr3t-s3cr3t-s3cr3t
  listen: 127.0.0.1:8080
sources:
  directory:
    channel_tokens: [\"${TOKEN:-local-test-token}\"]
    other_tokens:
      - abc123
      - ${ONLY}
sinks:
  chat: { type: slack, webhook_url: \"https://hooks.slack.com/services/T/B/xyz\", text: \"{{ type }}\" }
  mail: { type: email, url: \"smtp://user:pw@mail.example.edu:587\" }
  hook:
    type: webhook
    url: ${HOOK_URL}
    headers: { Authorization: \"Bearer abc\" }
  teams: { type: plugin, library: x.so, config: { url: \"https://t.example/x\" } }
  # it-chat: { type: slack, webhook_url: \"https://hooks.slack.com/services/OLD\" }
  bus: { type: kafka, properties: { sasl.password: hunter2 }, key: \"{{ subject }}\" }
";
        let masked = mask_yaml(yaml);
        for secret in [
            "s3cr3t",
            "local-test-token",
            "abc123",
            "xyz",
            "user:pw",
            "Bearer abc",
            "t.example/x",
            "OLD",
            "hunter2",
        ] {
            assert!(!masked.contains(secret), "{secret} shows:\n{masked}");
        }
        for kept in [
            "# Herald's default config: runs with no outside service.",
            "admin_token: ***",
            "listen: 127.0.0.1:8080",
            "- ${ONLY}",
            "webhook_url: https://hooks.slack.com/***",
            "url: smtp://mail.example.edu/***",
            "url: ${HOOK_URL}",
            "text: \"{{ type }}\"",
            "key: \"{{ subject }}\"",
        ] {
            assert!(masked.contains(kept), "{kept} missing:\n{masked}");
        }
    }
}
