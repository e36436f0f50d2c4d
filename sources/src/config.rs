//! What the source configs share: reading a source's keys with serde, pinning a semantic
//! error to the key it is about, and the checks of an HTTP path and a URL. All pure.

use herald_core::config::{ConfigError, Loc, SourceInput};
use serde::de::DeserializeOwned;

/// Paths the server answers itself.
const RESERVED_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Deserializes the source's own keys (`deny_unknown_fields` structs).
pub fn parse<T: DeserializeOwned>(input: &SourceInput<'_>) -> Result<T, Vec<ConfigError>> {
    input.node.deserialize().map_err(|e| {
        vec![ConfigError::from_de(
            &format!("source `{}`", input.name),
            e,
            input.node.loc,
        )]
    })
}

/// Collects semantic errors of one source, each at the key it is about.
pub struct Checks<'a> {
    input: &'a SourceInput<'a>,
    errors: Vec<ConfigError>,
}

impl<'a> Checks<'a> {
    pub fn new(input: &'a SourceInput<'a>) -> Self {
        Checks {
            input,
            errors: Vec::new(),
        }
    }

    /// The location of `key` (`auth.jwks_url` for a nested key), or of the source itself.
    pub fn loc(&self, key: &str) -> Loc {
        let mut node = self.input.node;
        for part in key.split('.') {
            match node.get(part) {
                Some(child) => node = child,
                None => break,
            }
        }
        node.loc
    }

    /// An error about `key`: `source `NAME`: MESSAGE`.
    pub fn error(&mut self, key: &str, message: impl AsRef<str>) {
        let loc = self.loc(key);
        self.errors.push(ConfigError::new(
            loc,
            format!("source `{}`: {}", self.input.name, message.as_ref()),
        ));
    }

    /// An error at `loc` (an item of a list).
    pub fn error_at(&mut self, loc: Loc, message: impl AsRef<str>) {
        self.errors.push(ConfigError::new(
            loc,
            format!("source `{}`: {}", self.input.name, message.as_ref()),
        ));
    }

    pub fn finish<T>(self, value: T) -> Result<T, Vec<ConfigError>> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.errors)
        }
    }
}

/// Checks an HTTP path a source is mounted at; the message says what is wrong.
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.len() < 2 {
        return Err(format!(
            "`path` must start with `/` and name the endpoint, e.g. `/push/classroom`; found `{path}`"
        ));
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~/".contains(*c)))
    {
        return Err(format!(
            "`path` may only use letters, digits, `-`, `.`, `_`, `~` and `/`; found `{c}` in `{path}`"
        ));
    }
    if path.contains("//") || path.ends_with('/') {
        return Err(format!(
            "`path` must not contain an empty segment or end with `/`: `{path}`"
        ));
    }
    if RESERVED_PATHS.contains(&path) {
        return Err(format!(
            "`path` `{path}` is answered by the server itself; choose another"
        ));
    }
    Ok(())
}

/// Checks an `http://` or `https://` URL.
pub fn check_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not a URL ({e})"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(format!("`{text}` must be an http:// or https:// URL")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use herald_core::config::Node;

    use super::*;

    /// Runs a source type's validator on `yaml` (the source's keys without `type`), as if
    /// the config file were /etc/herald/routes.yaml.
    pub fn validate_yaml<T>(
        validate: fn(&SourceInput<'_>) -> Result<T, Vec<ConfigError>>,
        name: &str,
        yaml: &str,
    ) -> Result<T, Vec<ConfigError>> {
        let node: Node = serde_saphyr::from_str(yaml).expect("test YAML parses");
        validate(&SourceInput {
            name,
            node: &node,
            base_dir: Path::new("/etc/herald"),
        })
    }

    #[test]
    fn paths() {
        assert!(check_path("/push/classroom").is_ok());
        assert!(check_path("/webhook/dir-1.v2").is_ok());
        assert!(
            check_path("push")
                .unwrap_err()
                .contains("must start with `/`")
        );
        assert!(check_path("/").is_err());
        assert!(check_path("/push/{id}").unwrap_err().contains("found `{`"));
        assert!(check_path("/a//b").unwrap_err().contains("empty segment"));
        assert!(
            check_path("/healthz")
                .unwrap_err()
                .contains("answered by the server")
        );
    }

    #[test]
    fn urls() {
        assert!(check_url("https://www.googleapis.com/oauth2/v3/certs").is_ok());
        assert!(check_url("http://127.0.0.1:8085").is_ok());
        assert!(check_url("ftp://x").unwrap_err().contains("http://"));
        assert!(check_url("not a url").unwrap_err().contains("is not a URL"));
    }
}
