//! `${VAR}` and `${VAR:-default}` in config strings, read from the environment at load.
//!
//! Interpolation happens on the parsed tree, string by string, so an error points at the
//! string that named the missing variable. `$${` writes a literal `${`.

use super::error::Diagnostics;
use super::node::{Node, NodeKind};

/// Replaces variables in every string of `node`, reporting each missing one to `diags`.
pub fn interpolate(
    node: &mut Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
) {
    match &mut node.kind {
        NodeKind::Str(text) if text.contains('$') => match expand(text, lookup) {
            Ok(expanded) => *text = expanded,
            Err(message) => diags.error(node.loc, message),
        },
        NodeKind::Seq(items) => {
            for item in items {
                interpolate(item, lookup, diags);
            }
        }
        NodeKind::Map(entries) => {
            for (_, value) in entries {
                interpolate(value, lookup, diags);
            }
        }
        _ => {}
    }
}

/// Expands one string.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{text}`; write `${{NAME}}`"))?;
            let expr = &tail[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{expr}}}` is not a variable name; use letters, digits and `_`"
                ));
            }
            // As in the shell: `:-` takes the default when the variable is unset or empty.
            match (lookup(name), default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set; set it or write `${{{name}:-default}}`"
                    ));
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_and_defaults() {
        assert_eq!(expand("a ${TOKEN} b", &env).unwrap(), "a s3cret b");
        assert_eq!(expand("${MISSING:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${TOKEN:-fallback}", &env).unwrap(), "s3cret");
        assert_eq!(
            expand("${EMPTY:-x}", &env).unwrap(),
            "x",
            "an empty variable takes the default, as in the shell"
        );
        assert_eq!(expand("a${EMPTY}b", &env).unwrap(), "ab");
        assert_eq!(
            expand("$${TOKEN} costs $5", &env).unwrap(),
            "${TOKEN} costs $5"
        );
    }

    #[test]
    fn missing_variables_and_bad_syntax_are_errors() {
        assert!(
            expand("${MISSING}", &env)
                .unwrap_err()
                .contains("`MISSING` is not set")
        );
        assert!(expand("${TOKEN", &env).unwrap_err().contains("unclosed"));
        assert!(
            expand("${A B}", &env)
                .unwrap_err()
                .contains("not a variable name")
        );
    }

    #[test]
    fn errors_point_at_the_string() {
        let mut node: Node = serde_saphyr::from_str("a: ok\nb: [\"${NOPE}\"]\n").unwrap();
        let mut diags = Diagnostics::default();
        interpolate(&mut node, &env, &mut diags);
        let errors = diags.into_errors();
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].loc.line, errors[0].loc.col), (2, 5));
    }
}
