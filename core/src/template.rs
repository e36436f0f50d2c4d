//! Message templates (MiniJinja), compiled once at load and rendered with the event as context.
//!
//! Every sink declares the names of its template fields (`text`, `subject`, `key`…). A sink's
//! templates are its defaults; a route may override some of them for its own deliveries. The
//! plan of which template renders which field for each `(route, sink)` is fixed at load, so a
//! delivery only looks its plan up and renders.
//!
//! Rendering is strict: a variable the event does not have is an error naming it, never an
//! empty string silently sent to a parent's inbox. A field named `html` is HTML-escaped.

use std::collections::HashMap;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::event::Event;

/// The rendered template fields of one delivery, in the sink's declared order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rendered {
    fields: Vec<(String, String)>,
}

impl Rendered {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, value)| value.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn insert(&mut self, field: impl Into<String>, value: impl Into<String>) {
        self.fields.push((field.into(), value.into()));
    }
}

/// A template failed to render; names the field and what was wrong.
#[derive(Clone, Debug, thiserror::Error)]
#[error("template `{field}`: {message}")]
pub struct RenderError {
    pub field: String,
    pub message: String,
}

/// All compiled templates, and for each `(route, sink)` which template renders each field.
#[derive(Clone)]
pub struct Templates {
    env: Arc<Environment<'static>>,
    /// sink → its own fields as (field, template name).
    sink_fields: HashMap<String, Vec<(String, String)>>,
    /// (route, sink) → the fields that route overrides, as (field, template name).
    overrides: HashMap<(String, String), Vec<(String, String)>>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("sink_fields", &self.sink_fields)
            .field("overrides", &self.overrides)
            .finish()
    }
}

/// Collects templates while a config is validated.
pub struct TemplatesBuilder {
    env: Environment<'static>,
    sink_fields: HashMap<String, Vec<(String, String)>>,
    overrides: HashMap<(String, String), Vec<(String, String)>>,
}

impl Default for TemplatesBuilder {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with("/html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_keep_trailing_newline(true);
        TemplatesBuilder {
            env,
            sink_fields: HashMap::new(),
            overrides: HashMap::new(),
        }
    }
}

impl TemplatesBuilder {
    /// Compiles a sink's template for `field`; the error says what is wrong and on which
    /// line of the template.
    pub fn add_sink_field(&mut self, sink: &str, field: &str, source: &str) -> Result<(), String> {
        let name = format!("sinks/{sink}/{field}");
        self.compile(&name, source)?;
        self.sink_fields
            .entry(sink.to_owned())
            .or_default()
            .push((field.to_owned(), name));
        Ok(())
    }

    /// Compiles a route's override of a sink's `field`.
    pub fn add_override(
        &mut self,
        route: &str,
        sink: &str,
        field: &str,
        source: &str,
    ) -> Result<(), String> {
        let name = format!("routes/{route}/{sink}/{field}");
        self.compile(&name, source)?;
        self.overrides
            .entry((route.to_owned(), sink.to_owned()))
            .or_default()
            .push((field.to_owned(), name));
        Ok(())
    }

    fn compile(&mut self, name: &str, source: &str) -> Result<(), String> {
        self.env
            .add_template_owned(name.to_owned(), source.to_owned())
            .map_err(|e| describe(&e))
    }

    pub fn build(self) -> Templates {
        Templates {
            env: Arc::new(self.env),
            sink_fields: self.sink_fields,
            overrides: self.overrides,
        }
    }
}

impl Templates {
    /// The template context for `event`: its fields by name (`type`, `data`, `meta`…).
    /// Each object of `enriched` answers a field it lacks with the id it stands for, so a
    /// lookup that failed renders `12345` rather than failing the delivery
    /// (docs/architecture.md §11).
    pub fn context(event: &Event) -> Value {
        if event.enriched.is_empty() {
            return Value::from_serialize(event);
        }
        let serde_json::Value::Object(fields) = serde_json::to_value(event).unwrap_or_default()
        else {
            return Value::from_serialize(event);
        };
        let enriched: std::collections::BTreeMap<String, Value> = event
            .enriched
            .iter()
            .map(|(what, value)| {
                let value = match value {
                    serde_json::Value::Object(map) => Value::from_object(OrId(map.clone())),
                    other => Value::from_serialize(other),
                };
                (what.clone(), value)
            })
            .collect();
        let context: std::collections::BTreeMap<String, Value> = fields
            .into_iter()
            .map(|(name, value)| match name.as_str() {
                "enriched" => (name, Value::from(enriched.clone())),
                _ => (name, Value::from_serialize(&value)),
            })
            .collect();
        Value::from(context)
    }

    /// Renders every template field of `sink` for a delivery of `event` through `route`,
    /// building the template context only when there is a template to render.
    pub fn render_event(
        &self,
        route: &str,
        sink: &str,
        event: &Event,
    ) -> Result<Rendered, RenderError> {
        let templated = self.sink_fields.get(sink).is_some_and(|f| !f.is_empty())
            || (!self.overrides.is_empty()
                && self
                    .overrides
                    .contains_key(&(route.to_owned(), sink.to_owned())));
        if !templated {
            return Ok(Rendered::default());
        }
        self.render(route, sink, &Self::context(event))
    }

    /// Renders every template field of `sink` for a delivery through `route`.
    pub fn render(
        &self,
        route: &str,
        sink: &str,
        context: &Value,
    ) -> Result<Rendered, RenderError> {
        let own = self.sink_fields.get(sink).map_or(&[][..], Vec::as_slice);
        let overridden = self
            .overrides
            .get(&(route.to_owned(), sink.to_owned()))
            .map_or(&[][..], Vec::as_slice);
        let mut rendered = Rendered::default();
        let plan = own
            .iter()
            .filter(|(field, _)| !overridden.iter().any(|(f, _)| f == field))
            .chain(overridden.iter());
        for (field, template) in plan {
            let text = self
                .env
                .get_template(template)
                .and_then(|t| t.render(context))
                .map_err(|e| RenderError {
                    field: field.clone(),
                    message: describe(&e),
                })?;
            rendered.insert(field.clone(), text);
        }
        Ok(rendered)
    }
}

/// MiniJinja's error without the internal template name, with the template line.
/// An object of `enriched` in a template: its fields, and for a field it lacks (the lookup
/// failed, or the field is not kept) its `id`.
#[derive(Debug)]
struct OrId(serde_json::Map<String, serde_json::Value>);

impl minijinja::value::Object for OrId {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        self.0
            .get(key)
            .or_else(|| self.0.get("id"))
            .map(Value::from_serialize)
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Values(
            self.0.keys().map(|k| Value::from(k.as_str())).collect(),
        )
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut text = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        text.push_str(&format!(" (template line {line})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn event() -> Event {
        let mut e = Event::new(
            "1",
            "directory",
            "directory.users.add",
            Utc::now(),
            json!({"primaryEmail": "<new>@example.edu"}),
        );
        e.meta.insert("resourceState".into(), "add".into());
        e
    }

    #[test]
    fn renders_event_fields_and_route_overrides() {
        let mut b = TemplatesBuilder::default();
        b.add_sink_field(
            "chat",
            "text",
            "{{ data.primaryEmail }}: {{ meta.resourceState }}",
        )
        .unwrap();
        b.add_sink_field("chat", "channel", "#it").unwrap();
        b.add_override("admins", "chat", "text", "ADMIN {{ type }}")
            .unwrap();
        let t = b.build();
        let ctx = Templates::context(&event());

        let plain = t.render("everything", "chat", &ctx).unwrap();
        assert_eq!(plain.get("text"), Some("<new>@example.edu: add"));
        assert_eq!(plain.get("channel"), Some("#it"));

        let overridden = t.render("admins", "chat", &ctx).unwrap();
        assert_eq!(overridden.get("text"), Some("ADMIN directory.users.add"));
        assert_eq!(overridden.get("channel"), Some("#it"));
    }

    #[test]
    fn render_event_renders_only_where_there_are_templates() {
        let mut b = TemplatesBuilder::default();
        b.add_sink_field("chat", "text", "{{ type }}").unwrap();
        b.add_override("admins", "audit", "line", "{{ id }}")
            .unwrap();
        let t = b.build();
        let e = event();
        let chat = t.render_event("any", "chat", &e).unwrap();
        assert_eq!(chat.get("text"), Some("directory.users.add"));
        let overridden = t.render_event("admins", "audit", &e).unwrap();
        assert_eq!(overridden.get("line"), Some("1"));
        let plain = t.render_event("any", "audit", &e).unwrap();
        assert_eq!(
            plain,
            Rendered::default(),
            "audit has no template on this route"
        );
    }

    #[test]
    fn enriched_fields_render_and_a_missing_one_renders_its_id() {
        let mut b = TemplatesBuilder::default();
        b.add_sink_field(
            "chat",
            "text",
            "{{ enriched.person.name }} joined {{ enriched.course.name }} ({{ enriched.course.section }})",
        )
        .unwrap();
        let t = b.build();
        let mut e = event();
        e.enriched.insert(
            "course".into(),
            json!({"id": "12345", "name": "AP Biology", "section": "Period 3"}),
        );
        e.enriched.insert("person".into(), json!({"id": "45678"}));
        let text = t.render_event("r", "chat", &e).unwrap();
        assert_eq!(
            text.get("text"),
            Some("45678 joined AP Biology (Period 3)"),
            "the person's lookup failed: its id stands in"
        );
    }

    #[test]
    fn undefined_variables_are_errors_naming_the_field() {
        let mut b = TemplatesBuilder::default();
        b.add_sink_field("chat", "text", "{{ data.nope.deeper }}")
            .unwrap();
        let err = b
            .build()
            .render("r", "chat", &Templates::context(&event()))
            .unwrap_err();
        assert_eq!(err.field, "text");
        assert!(err.message.contains("undefined"), "{}", err.message);
    }

    #[test]
    fn syntax_errors_say_what_and_where() {
        let mut b = TemplatesBuilder::default();
        let err = b
            .add_sink_field("chat", "text", "line one\n{{ data.x ")
            .unwrap_err();
        assert!(err.starts_with("syntax error"), "{err}");
        assert!(err.contains("template line 2"), "{err}");
    }

    #[test]
    fn html_fields_are_escaped_and_text_is_not() {
        let mut b = TemplatesBuilder::default();
        b.add_sink_field("mail", "html", "<b>{{ data.primaryEmail }}</b>")
            .unwrap();
        b.add_sink_field("mail", "text", "{{ data.primaryEmail }}")
            .unwrap();
        let r = b
            .build()
            .render("r", "mail", &Templates::context(&event()))
            .unwrap();
        assert_eq!(r.get("html"), Some("<b>&lt;new&gt;@example.edu</b>"));
        assert_eq!(r.get("text"), Some("<new>@example.edu"));
    }
}
