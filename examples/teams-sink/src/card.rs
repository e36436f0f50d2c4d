use herald_plugin::Delivery;
use serde_json::{Value, json};

use crate::Format;

/// The request body for one delivery.
pub fn payload(format: Format, delivery: &Delivery) -> Value {
    let title = delivery
        .template("title")
        .or(delivery.attribute("type"))
        .unwrap_or("Herald event")
        .to_owned();
    let text = delivery
        .template("text")
        .or(delivery.attribute("subject"))
        .unwrap_or_default()
        .to_owned();
    let facts = facts(delivery);
    match format {
        Format::AdaptiveCard => adaptive_card(&title, &text, &facts),
        Format::MessageCard => message_card(&title, &text, &facts),
    }
}

/// The event's attributes worth a glance, in a fixed order.
fn facts(delivery: &Delivery) -> Vec<(&'static str, String)> {
    [
        ("Type", "type"),
        ("Subject", "subject"),
        ("Source", "source"),
        ("Time", "time"),
        ("Event", "id"),
    ]
    .into_iter()
    .filter_map(|(label, attr)| Some((label, delivery.attribute(attr)?.to_owned())))
    .chain([("Route", delivery.route.clone())])
    .collect()
}

/// What a Workflows incoming webhook takes: a message with one Adaptive Card attachment.
fn adaptive_card(title: &str, text: &str, facts: &[(&str, String)]) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true
    })];
    if !text.is_empty() {
        body.push(json!({ "type": "TextBlock", "text": text, "wrap": true }));
    }
    body.push(json!({
        "type": "FactSet",
        "facts": facts.iter().map(|(t, v)| json!({ "title": t, "value": v })).collect::<Vec<_>>()
    }));
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            }
        }]
    })
}

/// What a legacy Office 365 connector takes.
fn message_card(title: &str, text: &str, facts: &[(&str, String)]) -> Value {
    let mut card = json!({
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": title,
        "themeColor": "0076D7",
        "title": title,
        "sections": [{
            "facts": facts.iter().map(|(n, v)| json!({ "name": n, "value": v })).collect::<Vec<_>>()
        }]
    });
    if !text.is_empty() {
        card["text"] = json!(text);
    }
    card
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(templates: &[(&str, &str)]) -> Delivery {
        let mut d: Delivery = serde_json::from_value(json!({
            "route": "admins", "sink": "teams",
            "templates": templates.iter().map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        }))
        .unwrap();
        d.event = json!({
            "id": "c/1", "source": "directory", "type": "directory.users.add",
            "subject": "users/42", "time": "2026-01-01T00:00:00Z", "data": {}
        });
        d
    }

    #[test]
    fn an_adaptive_card_carries_the_templates_and_the_facts() {
        let p = payload(
            Format::AdaptiveCard,
            &delivery(&[("title", "New user"), ("text", "a@example.edu")]),
        );
        assert_eq!(p["type"], "message");
        let card = &p["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let body = &card["content"]["body"];
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(body[0]["text"], "New user");
        assert_eq!(body[1]["text"], "a@example.edu");
        assert_eq!(
            body[2]["facts"][0],
            json!({"title": "Type", "value": "directory.users.add"})
        );
        assert_eq!(
            body[2]["facts"][5],
            json!({"title": "Route", "value": "admins"})
        );
    }

    #[test]
    fn without_templates_the_type_and_subject_are_the_title_and_text() {
        let p = payload(Format::MessageCard, &delivery(&[]));
        assert_eq!(p["@type"], "MessageCard");
        assert_eq!(p["title"], "directory.users.add");
        assert_eq!(p["text"], "users/42");
        assert_eq!(
            p["sections"][0]["facts"][1],
            json!({"name": "Subject", "value": "users/42"})
        );
    }
}
