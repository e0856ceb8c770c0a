//! Unit tests of `mapping`.

use super::*;

fn user(id: &str, profile: Value) -> Value {
    json!({ "id": id, "status": "ACTIVE", "profile": profile, "type": { "id": "oty1" } })
}

#[test]
fn manager_resolution_follows_the_rules() {
    let users = vec![
        user(
            "00u1",
            json!({ "login": "Ann@Example.com", "email": "ann@example.com", "employeeNumber": "100" }),
        ),
        user(
            "00u2",
            json!({ "login": "bob@example.com", "email": "bob@example.com", "employeeNumber": "200" }),
        ),
        user(
            "00u3",
            json!({ "login": "cy@example.com", "email": "shared@example.com", "employeeNumber": "200" }),
        ),
        user(
            "00u4",
            json!({ "login": "dee@example.com", "email": "shared@example.com" }),
        ),
    ];
    let index = ManagerIndex::build(&users);
    assert_eq!(index.resolve("00u2").as_deref(), Some("00u2"));
    assert_eq!(index.resolve("100").as_deref(), Some("00u1"));
    assert_eq!(index.resolve("200"), None, "ambiguous employeeNumber");
    assert_eq!(
        index.resolve("ANN@example.COM").as_deref(),
        Some("00u1"),
        "login and email of one user"
    );
    assert_eq!(
        index.resolve("shared@example.com"),
        None,
        "two users share the email"
    );
    assert_eq!(index.resolve("nobody"), None);
    // The live path cannot search these in Okta, so neither path resolves them.
    let quoted = ManagerIndex::build(&[user(
        "00u9",
        json!({ "login": "q\"x@example.com", "employeeNumber": "9\\9" }),
    )]);
    assert_eq!(quoted.resolve("q\"x@example.com"), None);
    assert_eq!(quoted.resolve("9\\9"), None);
    // An id is taken as an id only in Okta's user-id form.
    let odd = ManagerIndex::build(&[user("abc", json!({ "login": "abc@example.com" }))]);
    assert_eq!(odd.resolve("abc"), None);
}

#[test]
fn titles_fall_back() {
    assert_eq!(
        user_title(&user(
            "1",
            json!({ "displayName": "D", "firstName": "F", "lastName": "L" })
        ))
        .unwrap(),
        "D"
    );
    assert_eq!(
        user_title(&user(
            "1",
            json!({ "displayName": "", "firstName": "F", "lastName": "L" })
        ))
        .unwrap(),
        "F L"
    );
    assert_eq!(
        user_title(&user("1", json!({ "firstName": "F", "login": "l@x" }))).unwrap(),
        "l@x"
    );
}

#[test]
fn unknown_relations_are_left_out() {
    let u = user("00u1", json!({ "login": "a@x" }));
    let groups = vec!["00g2".to_string(), "00g1".to_string()];
    let links = UserLinks {
        groups: Some(&groups),
        applications: None,
        manager: Some(None),
        ..UserLinks::default()
    };
    let mapped = DefaultMapping.map_user(&u, &links).unwrap();
    let e = &mapped[0].entity;
    assert_eq!(e.relations["groups"], json!(["00g1", "00g2"]));
    assert_eq!(e.relations["manager"], Value::Null);
    assert!(!e.relations.contains_key("applications"));
    assert_eq!(e.properties["department"], Value::Null);
    assert_eq!(e.properties["type"], json!("oty1"));
    assert_eq!(e.properties.len(), 12);
}
