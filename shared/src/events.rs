//! Okta event hook deliveries: validation, the event types okta-port handles (design §5),
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
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeliveryError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body has no data.events array")]
    NoEvents,
    #[error("event {index} has no eventType")]
    NoEventType { index: usize },
}

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

/// A validated delivery: every event, and the ones okta-port handles as queue messages.
#[derive(Debug)]
pub struct Delivery {
    pub delivery_id: Option<String>,
    pub total: usize,
    pub kept: Vec<QueuedEvent>,
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
    for (index, event) in events.iter().enumerate() {
        let event_type = event["eventType"]
            .as_str()
            .ok_or(DeliveryError::NoEventType { index })?;
        if !is_handled(event_type) {
            continue;
        }
        // Preview deliveries may carry `target: null`; targets without an id are useless.
        let targets = event["target"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| serde_json::from_value::<Target>(t.clone()).ok())
            .collect();
        kept.push(QueuedEvent {
            delivery_id: delivery_id.clone(),
            uuid: event["uuid"].as_str().map(str::to_owned),
            event_type: event_type.to_owned(),
            published: event["published"].as_str().map(str::to_owned),
            targets,
        });
    }
    Ok(Delivery {
        delivery_id,
        total: events.len(),
        kept,
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
        assert_eq!(
            parse_delivery(br#"{"data":{"events":[{"eventType":"x"},{"uuid":"1"}]}}"#).unwrap_err(),
            DeliveryError::NoEventType { index: 1 }
        );
    }
}
