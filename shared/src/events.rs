//! Okta event hook deliveries: validation, the event types okta-port handles (docs/architecture.md),
//! and the message each kept event becomes on the queue.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every event type the hook subscribes to and the consumer handles.
pub const HANDLED_EVENT_TYPES: &[&str] = &[
    "user.lifecycle.create",
    "user.lifecycle.activate",
    "user.lifecycle.reactivate",
    "user.lifecycle.deactivate",
    "user.lifecycle.suspend",
    "user.lifecycle.unsuspend",
    "user.lifecycle.delete.initiated",
    "user.account.update_profile",
    "user.account.lock",
    "user.account.unlock_by_admin",
    "user.account.unlock",
    "user.account.reset_password",
    "user.account.update_password",
    "group.lifecycle.create",
    "group.lifecycle.delete",
    "group.profile.update",
    "group.user_membership.add",
    "group.user_membership.remove",
    "application.lifecycle.create",
    "application.lifecycle.update",
    "application.lifecycle.activate",
    "application.lifecycle.deactivate",
    "application.lifecycle.delete",
    "application.user_membership.add",
    "application.user_membership.remove",
    "group.application_assignment.add",
    "group.application_assignment.remove",
];

pub fn is_handled(event_type: &str) -> bool {
    HANDLED_EVENT_TYPES.contains(&event_type)
}

/// Why a delivery was refused (a 400: Okta does not retry 4xx, and nothing was queued).
/// Only the delivery as a whole can be refused: a bad event inside it is set aside.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeliveryError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body has no data.events array")]
    NoEvents,
}

/// The target types the consumer reads; the others (AppUser assignment ids, sessions, ...)
/// are not queued.
pub const QUEUED_TARGET_TYPES: [&str; 3] = ["User", "UserGroup", "AppInstance"];

/// Bytes one queue message may take (SQS's 256 KiB, less room for SQS's own accounting).
pub const MAX_QUEUED_BYTES: usize = 250_000;

/// One target of a System Log event. `type` says what the id is: in app assignment
/// events the `AppUser` id is an assignment id, the user is the `User` target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternate_id: Option<String>,
}

/// What goes on the queue for one kept event: only what the consumer needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedEvent {
    /// The delivery's `eventId` (Okta's duplicate-detection key).
    #[serde(default)]
    pub delivery_id: Option<String>,
    /// The event's stable System Log id.
    #[serde(default)]
    pub uuid: Option<String>,
    pub event_type: String,
    #[serde(default)]
    pub published: Option<String>,
    #[serde(default)]
    pub targets: Vec<Target>,
}

impl QueuedEvent {
    /// Ids of the targets of one type (`User`, `UserGroup`, `AppInstance`, `AppUser`).
    pub fn targets_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.targets
            .iter()
            .filter(move |t| t.kind == kind)
            .map(|t| t.id.as_str())
    }
}

impl QueuedEvent {
    /// The event as queue messages: one, or several when its targets do not fit in one
    /// message (an event touching thousands of users). Each part keeps the event's fields
    /// and a share of its targets; parts after the first get `uuid#n`, so the consumer's
    /// duplicate check by uuid keeps them all.
    pub fn into_messages(self) -> Vec<String> {
        let whole = serde_json::to_string(&self).expect("queued events serialize");
        if whole.len() <= MAX_QUEUED_BYTES {
            return vec![whole];
        }
        let bare = QueuedEvent {
            targets: Vec::new(),
            ..self.clone()
        };
        // Room for the uuid suffix and the separators.
        let room = MAX_QUEUED_BYTES - serde_json::to_string(&bare).expect("serializes").len() - 32;
        let mut parts: Vec<Vec<Target>> = vec![Vec::new()];
        let mut used = 0;
        for target in self.targets {
            let size = serde_json::to_string(&target).expect("serializes").len() + 1;
            if used + size > room && !parts.last().expect("one part").is_empty() {
                parts.push(Vec::new());
                used = 0;
            }
            used += size;
            parts.last_mut().expect("one part").push(target);
        }
        parts
            .into_iter()
            .enumerate()
            .map(|(n, targets)| {
                let uuid = match (&bare.uuid, n) {
                    (uuid, 0) => uuid.clone(),
                    (Some(uuid), n) => Some(format!("{uuid}#{n}")),
                    (None, _) => None,
                };
                let part = QueuedEvent {
                    uuid,
                    targets,
                    ..bare.clone()
                };
                serde_json::to_string(&part).expect("queued events serialize")
            })
            .collect()
    }
}

/// An event of a delivery that cannot be used, set aside and counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub index: usize,
    pub uuid: Option<String>,
    pub reason: &'static str,
}

/// A validated delivery: every event, and the ones okta-port handles as queue messages.
#[derive(Debug)]
pub struct Delivery {
    pub delivery_id: Option<String>,
    pub total: usize,
    pub kept: Vec<QueuedEvent>,
    /// Events that cannot be used (no event type, targets of the wrong shape).
    pub malformed: Vec<Malformed>,
}

/// One System Log event (as a hook delivers it, or as `/api/v1/logs` lists it) as the
/// queued event the consumer applies; `None` when okta-port does not handle its type, an
/// error naming what is wrong when it cannot be used.
pub fn parse_event(event: &Value, delivery_id: Option<&str>) -> Result<Option<QueuedEvent>, &'static str> {
    let Some(event_type) = event["eventType"].as_str() else {
        return Err("no eventType string");
    };
    if !is_handled(event_type) {
        return Ok(None);
    }
    // Preview deliveries may carry `target: null`; targets without an id are useless.
    let targets: Vec<Target> = match &event["target"] {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .filter_map(|t| serde_json::from_value::<Target>(t.clone()).ok())
            .collect(),
        _ => return Err("target is not an array"),
    };
    if targets.is_empty() && event["target"].as_array().is_some_and(|t| !t.is_empty()) {
        return Err("no target of a known shape");
    }
    let targets = targets
        .into_iter()
        .filter(|t| QUEUED_TARGET_TYPES.contains(&t.kind.as_str()))
        .collect();
    Ok(Some(QueuedEvent {
        delivery_id: delivery_id.map(str::to_owned),
        uuid: event["uuid"].as_str().map(str::to_owned),
        event_type: event_type.to_owned(),
        published: event["published"].as_str().map(str::to_owned),
        targets,
    }))
}

/// A queue message as the consumer's queued event. Two shapes arrive: the webhook's
/// `QueuedEvent`, and an EventBridge event from Okta Log Streaming, whose `detail` is the
/// System Log event. `None` for an event of a type okta-port does not handle.
pub fn parse_message(body: &str) -> Result<Option<QueuedEvent>, String> {
    let value: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("detail").is_some_and(Value::is_object) && value.get("detail-type").is_some() {
        let envelope_id = value["id"].as_str();
        return parse_event(&value["detail"], envelope_id)
            .map_err(|reason| format!("EventBridge event: {reason}"));
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| format!("not a queued Okta event: {e}"))
}

/// Validates an event hook delivery and keeps the events okta-port handles.
pub fn parse_delivery(body: &[u8]) -> Result<Delivery, DeliveryError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| DeliveryError::NotJson(e.to_string()))?;
    let events = value
        .pointer("/data/events")
        .and_then(Value::as_array)
        .ok_or(DeliveryError::NoEvents)?;
    let delivery_id = value["eventId"].as_str().map(str::to_owned);
    let mut kept = Vec::new();
    let mut malformed = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match parse_event(event, delivery_id.as_deref()) {
            Ok(Some(queued)) => kept.push(queued),
            Ok(None) => {}
            Err(reason) => malformed.push(Malformed {
                index,
                uuid: event["uuid"].as_str().map(str::to_owned),
                reason,
            }),
        }
    }
    Ok(Delivery {
        delivery_id,
        total: events.len(),
        kept,
        malformed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_handled_events_with_their_targets() {
        let body = json!({ "eventId": "d1", "data": { "events": [
            { "uuid": "u1", "eventType": "group.user_membership.add", "published": "2026-01-01T00:00:00.000Z",
              "target": [ { "id": "00u1", "type": "User", "alternateId": "a@x", "displayName": "A" },
                          { "id": "00g1", "type": "UserGroup", "alternateId": "G", "displayName": "G" } ] },
            { "uuid": "u2", "eventType": "user.session.start", "target": [] },
            { "uuid": "u3", "eventType": "group.profile.update", "target": null },
        ] } });
        let d = parse_delivery(body.to_string().as_bytes()).unwrap();
        assert_eq!((d.total, d.kept.len()), (3, 2));
        assert_eq!(d.kept[0].targets_of("User").collect::<Vec<_>>(), ["00u1"]);
        assert_eq!(d.kept[0].delivery_id.as_deref(), Some("d1"));
        assert!(d.kept[1].targets.is_empty());
        // The queued form round-trips.
        let text = serde_json::to_string(&d.kept[0]).unwrap();
        assert_eq!(serde_json::from_str::<QueuedEvent>(&text).unwrap(), d.kept[0]);
    }

    #[test]
    fn malformed_shapes_are_refused() {
        assert!(matches!(
            parse_delivery(b"not json"),
            Err(DeliveryError::NotJson(_))
        ));
        assert_eq!(parse_delivery(b"{}").unwrap_err(), DeliveryError::NoEvents);
        assert_eq!(
            parse_delivery(br#"{"data":{"events":{}}}"#).unwrap_err(),
            DeliveryError::NoEvents
        );
        // A bad event is set aside; the good ones stay.
        let d = parse_delivery(
            br#"{"data":{"events":[{"eventType":"group.profile.update","target":[{"id":"00g1","type":"UserGroup"}]},{"uuid":"1"},{"eventType":7},{"eventType":"user.lifecycle.create","target":{"id":"00u1"}},{"eventType":"user.lifecycle.create","target":[{"nope":1}]}]}}"#,
        )
        .unwrap();
        assert_eq!(d.kept.len(), 1);
        let reasons: Vec<(usize, &str)> = d.malformed.iter().map(|m| (m.index, m.reason)).collect();
        assert_eq!(
            reasons,
            [
                (1, "no eventType string"),
                (2, "no eventType string"),
                (3, "target is not an array"),
                (4, "no target of a known shape")
            ]
        );
    }

    #[test]
    fn an_event_with_thousands_of_targets_is_split_to_fit() {
        let targets: Vec<Target> = (0..6000)
            .map(|i| Target {
                id: format!("00u{i:017}"),
                kind: "User".into(),
                alternate_id: Some(format!("user.number.{i}@example.com")),
            })
            .collect();
        let event = QueuedEvent {
            delivery_id: Some("d".into()),
            uuid: Some("u".into()),
            event_type: "group.application_assignment.add".into(),
            published: None,
            targets: targets.clone(),
        };
        let messages = event.into_messages();
        assert!(messages.len() >= 2, "{}", messages.len());
        let parts: Vec<QueuedEvent> = messages
            .iter()
            .map(|m| {
                assert!(m.len() <= MAX_QUEUED_BYTES, "{}", m.len());
                serde_json::from_str(m).unwrap()
            })
            .collect();
        let rejoined: Vec<Target> = parts.iter().flat_map(|p| p.targets.clone()).collect();
        assert_eq!(rejoined, targets);
        assert_eq!(parts[0].uuid.as_deref(), Some("u"));
        assert_eq!(parts[1].uuid.as_deref(), Some("u#1"));
    }
}
