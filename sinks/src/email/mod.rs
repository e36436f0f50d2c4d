//! `email`: one email per delivery over SMTP (lettre, tokio, rustls with aws-lc-rs), through a
//! pool of connections. `from`, `to`, `cc`, `bcc`, `subject`, `text` and `html` are templates,
//! so a recipient can come from the event (`"{{ data.teacherEmail }}"`); `html` is HTML-escaped
//! by core. A delivery is done when the server answered 250 to the message.
//!
//! **Connection security.** `smtp://host:port` upgrades with STARTTLS when the server offers
//! it (`tls: required` refuses to send otherwise; it is the default when a password is set,
//! which never crosses the network unencrypted); `smtps://` is TLS from the first byte;
//! `smtp://localhost` (or any loopback address) is plain, for a local relay. `tls_ca` adds a
//! private CA to the system's roots.
//!
//! **Answers.** SMTP 4xx, timeouts and connection failures are retryable; 5xx is permanent;
//! the server's reply is in the error. The password is never logged or shown.
//!
//! **Digests.** With `digest: {window: 15m, max: 100}`, a `deliver()` call joins the open
//! digest for its rendered sender and recipients (opening one if there is none) and waits.
//! The digest is sent as one email when `max` deliveries joined or `window` after it opened,
//! whichever is first; every delivery in it returns that email's result. So the type's default
//! delivery policy lets deliveries wait: `concurrency: 128` (at most that many wait at once;
//! set it above `digest.max` times the number of recipient lists you expect) and `timeout:
//! 20m` (set it above a longer `window`). If the engine's timeout still ends waiting
//! deliveries first, their digest is sent at once without them, later digests close within
//! half the time the engine turned out to allow, and the deliveries that gave up are retried
//! into those: smaller digests, nothing lost, and a warning says to raise `delivery.timeout`.

mod address;
mod config;
mod digest;
mod sink;
#[cfg(test)]
mod tests;

pub use config::EMAIL;
