//! Address lists as written in the config or rendered from a template:
//! `a@example.edu, "Doe, Jane" <jane@example.edu>`.

use lettre::message::Mailbox;

/// Every address of a comma-separated list; empty entries (a template that rendered nothing)
/// are skipped. Stricter than lettre's own parser, which ignores trailing garbage.
pub(super) fn parse_list(text: &str) -> Result<Vec<Mailbox>, String> {
    split(text)
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let bad = || format!("`{item}` is not an email address");
            let mailbox: Mailbox = item.parse().map_err(|_| bad())?;
            let address = mailbox.email.to_string();
            let whole =
                item.eq_ignore_ascii_case(&address) || item.ends_with(&format!("<{address}>"));
            if whole { Ok(mailbox) } else { Err(bad()) }
        })
        .collect()
}

/// Splits at commas outside quotes and angle brackets.
fn split(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_with_names_and_quoted_commas() {
        let list = parse_list(
            r#"a@example.edu, "Doe, Jane" <jane@example.edu>,, Registrar <reg@example.edu>"#,
        )
        .unwrap();
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "a@example.edu",
                "\"Doe, Jane\" <jane@example.edu>",
                "Registrar <reg@example.edu>"
            ]
        );
        assert!(parse_list("").unwrap().is_empty());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse_list("not an address").is_err());
        assert!(parse_list("a@example.edu trailing").is_err());
        assert!(parse_list("a@example.edu, @nope").is_err());
    }
}
