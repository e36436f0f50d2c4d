use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use herald_core::config::{BuildContext, SinkSpec};
use herald_core::{Delivery, Sink, SinkError};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::{Digest as _, Sha256};

use super::address;
use super::digest::Digests;

/// How the connection to the server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Security {
    /// Plain SMTP: a local relay.
    None,
    /// STARTTLS when the server offers it.
    Opportunistic,
    /// STARTTLS or nothing is sent.
    StartTls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Digest {
    pub window: Duration,
    pub max: usize,
}

/// Every SMTP command (connect, greeting, each reply) must come within this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// A whole send (connection, TLS, AUTH, the message) must end within this, whatever the
/// server does: the engine's own timeout is long for digests.
const SEND_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub(super) struct EmailSpec {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub tls_ca: Option<PathBuf>,
    /// `(username, password)`; the password is a secret.
    pub credentials: Option<(String, String)>,
    pub max_connections: u32,
    pub digest: Option<Digest>,
}

impl std::fmt::Debug for EmailSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSpec")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("tls_ca", &self.tls_ca)
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .field("max_connections", &self.max_connections)
            .field("digest", &self.digest)
            .finish()
    }
}

impl SinkSpec for EmailSpec {
    fn build(&self, _context: &BuildContext) -> Result<Arc<dyn Sink>, String> {
        let tls = self.tls()?;
        let smtp = Arc::new(Smtp {
            spec: self.clone(),
            tls,
            transport: OnceLock::new(),
        });
        let digests = self.digest.map(|d| Digests::new(d, smtp.clone()));
        Ok(Arc::new(EmailSink { smtp, digests }))
    }

    fn describe(&self) -> String {
        let scheme = if self.security == Security::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        let security = match self.security {
            Security::None => "no TLS",
            Security::Opportunistic => "STARTTLS when offered",
            Security::StartTls => "STARTTLS required",
            Security::Implicit => "TLS",
        };
        let mut text = format!("{scheme}://{}:{} ({security}", self.host, self.port);
        if let Some((user, _)) = &self.credentials {
            text.push_str(&format!(", as {user}"));
        }
        text.push(')');
        if let Some(d) = self.digest {
            text.push_str(&format!(
                ", digests of up to {} per {}s",
                d.max,
                d.window.as_secs()
            ));
        }
        text
    }
}

impl EmailSpec {
    /// The TLS settings; reading `tls_ca` is the one thing here that can fail.
    fn tls(&self) -> Result<Tls, String> {
        if self.security == Security::None {
            return Ok(Tls::None);
        }
        let mut params = TlsParameters::builder(self.host.clone());
        if let Some(path) = &self.tls_ca {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read `tls_ca` {}: {e}", path.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "`tls_ca` {} holds no PEM certificate",
                    path.display()
                ));
            }
            let certs = Certificate::from_pem(&pem)
                .map_err(|e| format!("`tls_ca` {}: {e}", path.display()))?;
            params = params.add_root_certificate(certs);
        }
        let params = params
            .build_rustls()
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        Ok(match self.security {
            Security::None => Tls::None,
            Security::Opportunistic => Tls::Opportunistic(params),
            Security::StartTls => Tls::Required(params),
            Security::Implicit => Tls::Wrapper(params),
        })
    }
}

/// The pooled SMTP transport, made on first use (its pool needs the runtime).
pub(super) struct Smtp {
    spec: EmailSpec,
    tls: Tls,
    transport: OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
}

impl Smtp {
    fn transport(&self) -> &AsyncSmtpTransport<Tokio1Executor> {
        self.transport.get_or_init(|| {
            let mut builder =
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.spec.host.as_str())
                    .port(self.spec.port)
                    .tls(self.tls.clone())
                    .timeout(Some(COMMAND_TIMEOUT))
                    .pool_config(PoolConfig::new().max_size(self.spec.max_connections));
            if let Some((user, password)) = &self.spec.credentials {
                builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
            }
            builder.build()
        })
    }

    /// Sends one email for `mails` (one, or a digest of several for the same recipients).
    /// `Ok` only once the server answered 250 to the message.
    pub async fn send(&self, mails: &[&Mail]) -> Result<(), SinkError> {
        let message = message(mails)?;
        match tokio::time::timeout(SEND_TIMEOUT, self.transport().send(message)).await {
            Ok(result) => result.map(|_| ()).map_err(smtp_error),
            Err(_) => Err(SinkError::retryable(format!(
                "the SMTP server did not finish within {}s",
                SEND_TIMEOUT.as_secs()
            ))),
        }
    }
}

struct EmailSink {
    smtp: Arc<Smtp>,
    digests: Option<Digests>,
}

#[async_trait]
impl Sink for EmailSink {
    async fn deliver(&self, d: Delivery<'_>) -> Result<(), SinkError> {
        let mail = Mail::from_delivery(&d)?;
        match &self.digests {
            None => self.smtp.send(&[&mail]).await,
            Some(digests) => digests.join(mail).await,
        }
    }
}

/// One delivery's email, rendered and parsed.
#[derive(Clone, Debug)]
pub(super) struct Mail {
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// The same for every attempt of one delivery: `source/id/route/sink`.
    pub id: String,
}

impl Mail {
    pub fn from_delivery(d: &Delivery<'_>) -> Result<Mail, SinkError> {
        let list = |field: &str| {
            address::parse_list(d.rendered.get(field).unwrap_or_default())
                .map_err(|e| SinkError::permanent(format!("`{field}` rendered badly: {e}")))
        };
        let mut from = list("from")?;
        if from.len() != 1 {
            return Err(SinkError::permanent(format!(
                "`from` must render to one address, not {}",
                from.len()
            )));
        }
        let (to, cc, bcc) = (list("to")?, list("cc")?, list("bcc")?);
        if to.is_empty() && cc.is_empty() && bcc.is_empty() {
            return Err(SinkError::permanent(
                "no recipient: `to`, `cc` and `bcc` rendered empty",
            ));
        }
        // A header is one line.
        let subject = d
            .rendered
            .get("subject")
            .unwrap_or_default()
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Mail {
            from: from.remove(0),
            to,
            cc,
            bcc,
            subject,
            text: d.rendered.get("text").unwrap_or_default().to_owned(),
            html: d
                .rendered
                .get("html")
                .filter(|h| !h.trim().is_empty())
                .map(str::to_owned),
            id: format!("{}/{}/{}/{}", d.event.source, d.event.id, d.route, d.sink),
        })
    }

    /// Mails with the same key can be one digest: same sender, same recipients.
    pub fn recipients(&self) -> String {
        let join = |l: &[Mailbox]| {
            l.iter()
                .map(|m| m.email.to_string().to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "{}|{}|{}|{}",
            self.from.email.to_string().to_ascii_lowercase(),
            join(&self.to),
            join(&self.cc),
            join(&self.bcc)
        )
    }
}

/// The email for one mail, or the digest of several with the same recipients: the subject of
/// the first (with how many more), the bodies one after the other.
pub(super) fn message(mails: &[&Mail]) -> Result<Message, SinkError> {
    let Some(first) = mails.first() else {
        return Err(SinkError::permanent("an email with no content"));
    };
    let n = mails.len();
    let subject = if n == 1 {
        first.subject.clone()
    } else if mails.iter().all(|m| m.subject == first.subject) {
        format!("{} ({n} notifications)", first.subject)
    } else {
        format!("{} (and {} more)", first.subject, n - 1)
    };
    let text = if n == 1 {
        first.text.clone()
    } else {
        let bodies: Vec<&str> = mails.iter().map(|m| m.text.trim_end()).collect();
        format!("{n} notifications\n\n{}\n", bodies.join("\n\n----\n\n"))
    };
    let html = if mails.iter().all(|m| m.html.is_none()) {
        None
    } else if n == 1 {
        first.html.clone()
    } else {
        let bodies: Vec<String> = mails
            .iter()
            .map(|m| match &m.html {
                Some(html) => html.clone(),
                // Text into HTML: escaped, line breaks kept.
                None => format!("<pre>{}</pre>", escape_html(&m.text)),
            })
            .collect();
        Some(format!(
            "<p>{n} notifications</p>\n{}",
            bodies.join("\n<hr>\n")
        ))
    };

    let mut builder = Message::builder()
        .from(first.from.clone())
        .subject(subject)
        .message_id(Some(message_id(mails)))
        .date_now();
    for m in &first.to {
        builder = builder.to(m.clone());
    }
    for m in &first.cc {
        builder = builder.cc(m.clone());
    }
    for m in &first.bcc {
        builder = builder.bcc(m.clone());
    }
    let built = match html {
        None => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(text),
        ),
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(text, html)),
    };
    built.map_err(|e| SinkError::permanent(format!("cannot build the email: {e}")))
}

/// The same Message-ID on every attempt of the same delivery (or digest), so mail clients can
/// drop the duplicate of a retried send.
fn message_id(mails: &[&Mail]) -> String {
    let mut hash = Sha256::new();
    for m in mails {
        hash.update(m.id.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let domain = mails
        .first()
        .map(|m| m.from.email.domain().to_owned())
        .unwrap_or_else(|| "herald".into());
    format!("<{hex}.herald@{domain}>")
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// SMTP 4xx, timeouts and connection failures are retryable; 5xx is permanent. The server's
/// reply is in the message; credentials never are.
fn smtp_error(e: lettre::transport::smtp::Error) -> SinkError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    if e.is_permanent() {
        SinkError::permanent(format!("the SMTP server refused: {text}"))
    } else if e.is_transient() {
        SinkError::retryable(format!("the SMTP server deferred: {text}"))
    } else if e.is_client() {
        SinkError::permanent(format!("SMTP: {text}"))
    } else {
        SinkError::retryable(format!("SMTP: {text}"))
    }
}
