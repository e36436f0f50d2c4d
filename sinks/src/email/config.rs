use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herald_core::config::units;
use herald_core::config::{
    ConfigError, Node, NodeKind, SinkInput, SinkKeys, SinkType, TemplateField, ValidSink,
};
use herald_core::sink::DeliveryPolicy;
use serde::Deserialize;

use super::address;
use super::sink::{Digest, EmailSpec, Security};

/// `type: email`. The template fields are checked here for their type and then read from the
/// node, where their locations are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct EmailConfig {
    /// `smtp://host:port` (STARTTLS when offered), `smtps://host:port` (implicit TLS);
    /// `smtp://localhost` is plain, for a local relay.
    url: String,
    /// `opportunistic` (STARTTLS when offered), `required` (refuse to send without STARTTLS)
    /// or `none`; only for `smtp://` URLs.
    #[serde(default)]
    tls: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's (a private CA).
    #[serde(default)]
    tls_ca: Option<PathBuf>,
    #[serde(default)]
    username: Option<String>,
    /// A secret: never logged or shown.
    #[serde(default)]
    password: Option<String>,
    /// Templates: `"Herald <herald@example.edu>"`, `"{{ data.teacherEmail }}"`.
    from: String,
    to: Addresses,
    #[serde(default)]
    cc: Option<Addresses>,
    #[serde(default)]
    bcc: Option<Addresses>,
    subject: String,
    /// The text body; a summary of the event when absent.
    #[serde(default)]
    text: Option<String>,
    /// An HTML body besides the text one; values are HTML-escaped.
    #[serde(default)]
    html: Option<String>,
    /// Events for the same recipients within `window` go out as one email.
    #[serde(default)]
    digest: Option<DigestConfig>,
    /// Pooled SMTP connections kept open to the server.
    #[serde(default)]
    max_connections: Option<u32>,
}

/// One address template or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Addresses {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DigestConfig {
    #[serde(deserialize_with = "units::duration")]
    window: Duration,
    #[serde(default)]
    max: Option<usize>,
}

const DEFAULT_DIGEST_MAX: usize = 100;
const DEFAULT_MAX_CONNECTIONS: u32 = 4;
const FIELDS: &[&str] = &["from", "to", "cc", "bcc", "subject", "text", "html"];

/// Without a `text` template the body says what happened and carries the event's data.
pub(super) const DEFAULT_TEXT: &str = "{{ type }} from {{ source }}\n\
{% if subject is defined %}subject: {{ subject }}\n{% endif %}\
time: {{ time }}\nid: {{ id }}\n\n{{ data | tojson(indent=2) }}\n";

pub const EMAIL: SinkType = SinkType {
    name: "email",
    template_fields: FIELDS,
    default_policy,
    validate,
};

/// A digest's `deliver()` calls wait in the sink until their window closes, so the defaults
/// leave room for it: 128 deliveries may wait at once (more than a digest's default `max`),
/// and an attempt may last 20 minutes (longer than a 15-minute window). Without a digest an
/// attempt still ends within a minute or two: every SMTP command times out after 60 s.
fn default_policy() -> DeliveryPolicy {
    DeliveryPolicy {
        concurrency: 128,
        timeout: Duration::from_secs(20 * 60),
        ..DeliveryPolicy::default()
    }
}

fn validate(input: &SinkInput<'_>) -> Result<ValidSink, Vec<ConfigError>> {
    let mut keys = SinkKeys::new(input);
    let config: EmailConfig = keys.typed()?;
    let node = input.node;

    let credentials = match (config.username, config.password) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        (Some(_), None) => {
            keys.invalid("username", "needs a `password`");
            None
        }
        (None, Some(_)) => {
            keys.invalid("password", "needs a `username`");
            None
        }
    };
    let server = parse_url(&config.url, config.tls.as_deref(), credentials.is_some());
    let server = match server {
        Ok(s) => Some(s),
        Err((key, message)) => {
            keys.error(key, message);
            None
        }
    };
    if let Some(ca) = &config.tls_ca
        && ca.as_os_str().is_empty()
    {
        keys.invalid("tls_ca", "is empty; give a PEM file of CA certificates");
    }
    let digest = match config.digest {
        None => None,
        Some(d) => {
            if d.window.is_zero() {
                keys.invalid("digest.window", "must be longer than 0s");
            }
            let max = keys.at_least("digest.max", d.max.unwrap_or(DEFAULT_DIGEST_MAX), 2);
            Some(Digest {
                window: d.window,
                max,
            })
        }
    };
    let max_connections = keys.at_least(
        "max_connections",
        config.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        1,
    );
    for key in ["from", "to", "cc", "bcc"] {
        if let Some(n) = node.get(key) {
            check_literal_addresses(&mut keys, key, n);
        }
    }
    if matches!(config.to, Addresses::Many(ref v) if v.is_empty()) {
        keys.invalid("to", "is empty; give at least one recipient");
    }
    keys.finish()?;
    // Not reached without a server: a URL that is not one is a mistake above.
    let Some((host, port, security)) = server else {
        return Err(Vec::new());
    };

    let mut templates: Vec<TemplateField> = Vec::new();
    for key in ["from", "to", "cc", "bcc"] {
        templates.extend(address_template(node, key));
    }
    templates.extend(TemplateField::from_node(node, "subject"));
    templates.push(
        TemplateField::from_node(node, "text").unwrap_or_else(|| TemplateField {
            field: "text".into(),
            source: DEFAULT_TEXT.into(),
            loc: node.loc,
        }),
    );
    templates.extend(TemplateField::from_node(node, "html"));
    Ok(ValidSink {
        templates,
        spec: Arc::new(EmailSpec {
            host,
            port,
            security,
            tls_ca: config.tls_ca.map(|p| input.base_dir.join(p)),
            credentials,
            max_connections,
            digest,
        }),
    })
}

/// `(host, port, security)` from `url` and `tls`; the error names the key to fix. The URL is
/// never quoted (it could carry a password).
fn parse_url(
    text: &str,
    tls: Option<&str>,
    has_credentials: bool,
) -> Result<(String, u16, Security), (&'static str, String)> {
    let url = reqwest::Url::parse(text).map_err(|e| {
        (
            "url",
            format!("`url` is not a URL ({e}); write e.g. `smtp://mail.example.edu:587`"),
        )
    })?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or(("url", "`url` has no host".to_owned()))?
        .trim_matches(['[', ']'])
        .to_owned();
    if !url.username().is_empty() || url.password().is_some() {
        return Err((
            "url",
            "`url` carries credentials; put them in `username` and `password`".into(),
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err((
            "url",
            "`url` takes no path or query; write `smtp://host:port`".into(),
        ));
    }
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let security = match (url.scheme(), tls) {
        ("smtps", None | Some("implicit")) => Security::Implicit,
        ("smtps", Some(_)) => {
            return Err((
                "tls",
                "`tls` does not apply to `smtps://` (always implicit TLS); remove it or use `smtp://`".into(),
            ));
        }
        ("smtp", Some("required")) => Security::StartTls,
        ("smtp", Some("opportunistic")) => Security::Opportunistic,
        ("smtp", Some("none")) => Security::None,
        // A password must not cross the network in clear, and a local relay needs no TLS.
        ("smtp", None) if local => Security::None,
        ("smtp", None) if has_credentials => Security::StartTls,
        ("smtp", None) => Security::Opportunistic,
        ("smtp", Some(other)) => {
            return Err((
                "tls",
                format!("`tls: {other}` is not `required`, `opportunistic` or `none`"),
            ));
        }
        (other, _) => {
            return Err((
                "url",
                format!("`url` scheme `{other}` is not `smtp` or `smtps`"),
            ));
        }
    };
    if has_credentials && !local && matches!(security, Security::None | Security::Opportunistic) {
        return Err((
            "tls",
            "a `password` must not be sent unencrypted: use `tls: required` or `smtps://`".into(),
        ));
    }
    let port = url.port().unwrap_or(match security {
        Security::Implicit => 465,
        _ => 25,
    });
    Ok((host, port, security))
}

/// The address entries of `key` with where each stands: a string or a list of strings.
fn entries(node: &Node) -> Vec<(String, herald_core::config::Loc)> {
    match &node.kind {
        NodeKind::Seq(items) => items
            .iter()
            .filter_map(|i| Some((i.scalar_text()?, i.loc)))
            .collect(),
        _ => node
            .scalar_text()
            .map(|t| vec![(t, node.loc)])
            .unwrap_or_default(),
    }
}

/// Addresses written without a template are checked now, where they stand.
fn check_literal_addresses(keys: &mut SinkKeys<'_>, key: &str, node: &Node) {
    for (text, loc) in entries(node) {
        if text.contains("{{") || text.contains("{%") {
            continue;
        }
        match address::parse_list(&text) {
            Ok(list) if key == "from" && list.len() != 1 => keys.error_at(
                loc,
                format_args!("`from` must be one address, found {}", list.len()),
            ),
            Ok(_) => {}
            Err(e) => keys.error_at(loc, format_args!("`{key}`: {e}")),
        }
    }
}

/// `to: [a@x, "{{ data.teacherEmail }}"]` is one template, its entries joined by commas (each
/// entry may itself render several comma-separated addresses).
fn address_template(node: &Node, key: &str) -> Option<TemplateField> {
    let value = node.get(key)?;
    let entries = entries(value);
    let loc = entries
        .iter()
        .find(|(t, _)| t.contains('{'))
        .map_or(value.loc, |(_, l)| *l);
    Some(TemplateField {
        field: key.to_owned(),
        source: entries
            .into_iter()
            .map(|(t, _)| t)
            .collect::<Vec<_>>()
            .join(", "),
        loc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_transport_security() {
        let ok = |url: &str, tls: Option<&str>, creds: bool| parse_url(url, tls, creds).unwrap();
        assert_eq!(
            ok("smtp://mail.example.edu:587", None, false),
            ("mail.example.edu".into(), 587, Security::Opportunistic)
        );
        assert_eq!(
            ok("smtp://mail.example.edu:587", None, true),
            ("mail.example.edu".into(), 587, Security::StartTls)
        );
        assert_eq!(
            ok("smtp://mail.example.edu", Some("required"), false),
            ("mail.example.edu".into(), 25, Security::StartTls)
        );
        assert_eq!(
            ok("smtps://mail.example.edu", None, true),
            ("mail.example.edu".into(), 465, Security::Implicit)
        );
        assert_eq!(
            ok("smtp://localhost", None, false),
            ("localhost".into(), 25, Security::None)
        );
        assert_eq!(
            ok("smtp://127.0.0.1:2525", None, true),
            ("127.0.0.1".into(), 2525, Security::None)
        );
        let err =
            |url: &str, tls: Option<&str>, creds: bool| parse_url(url, tls, creds).unwrap_err().1;
        assert!(err("http://x", None, false).contains("not `smtp` or `smtps`"));
        assert!(err("smtp://mail.example.edu", Some("none"), true).contains("unencrypted"));
        assert!(err("smtps://x", Some("none"), false).contains("does not apply"));
        assert!(err("smtp://x", Some("maybe"), false).contains("`tls: maybe`"));
        let e = err("smtp://u:hunter2@x", None, false);
        assert!(
            e.contains("carries credentials") && !e.contains("hunter2"),
            "{e}"
        );
    }
}
