//! Groups and apps: refetched, mapped and written, or deleted; and the users an app's
//! group assignment touches.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use async_trait::async_trait;
use futures::future::BoxFuture;

use super::{
    Context, Converged, FollowUps, Kind, Processor, Wanted, converge_objects, primary_blueprint, write,
};
use crate::events::QueuedEvent;
use crate::mapping::{APP_BLUEPRINT, USER_BLUEPRINT};
use crate::okta::ids_of;
use crate::port::Entity;

pub struct GroupProcessor;

#[async_trait]
impl Processor for GroupProcessor {
    fn kind(&self) -> Kind {
        Kind::Group
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("group.lifecycle.")
            || event_type == "group.profile.update"
            || event_type.starts_with("group.user_membership.")
    }
    fn targets(&self, event: &QueuedEvent) -> Vec<(String, Wanted)> {
        let wanted = if event.event_type == "group.lifecycle.delete" {
            Wanted::DELETE
        } else {
            Wanted::REFETCH
        };
        event
            .targets_of("UserGroup")
            .map(|id| (id.to_owned(), wanted))
            .collect()
    }
    async fn converge(&self, ctx: &Context<'_>, touched: &BTreeMap<String, Wanted>) -> Converged {
        let (okta, port) = (ctx.okta, ctx.port);
        let (user_bp, group_bp) = (
            primary_blueprint(ctx, Kind::User),
            primary_blueprint(ctx, Kind::Group),
        );
        let (user_bp, group_bp) = (&user_bp, &group_bp);
        // A deleted group takes with it the apps its members had through it: refetch them.
        let members = |id: String| -> BoxFuture<'_, Result<FollowUps, String>> {
            Box::pin(async move {
                let members = port
                    .own_related(user_bp, group_bp, &id)
                    .await
                    .map_err(|e| e.to_string())?;
                let refetch_users = members.into_iter().map(|m| m.entity.identifier).collect();
                Ok(FollowUps {
                    refetch_users,
                    ..FollowUps::default()
                })
            })
        };
        let fetch = |id: String| -> BoxFuture<'_, _> { Box::pin(async move { okta.group(&id).await }) };
        converge_objects(
            ctx,
            touched,
            Kind::Group,
            fetch,
            |m, g| m.map_group(g),
            Some(&members),
        )
        .await
    }
}

pub struct AppProcessor;

#[async_trait]
impl Processor for AppProcessor {
    fn kind(&self) -> Kind {
        Kind::App
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("application.lifecycle.")
            || event_type.starts_with("application.user_membership.")
            || event_type.starts_with("group.application_assignment.")
    }
    fn targets(&self, event: &QueuedEvent) -> Vec<(String, Wanted)> {
        let wanted = match event.event_type.as_str() {
            "application.lifecycle.delete" => Wanted::DELETE,
            t if t.starts_with("group.application_assignment.") => Wanted::RECONCILE,
            _ => Wanted::REFETCH,
        };
        event
            .targets_of("AppInstance")
            .map(|id| (id.to_owned(), wanted))
            .collect()
    }
    async fn converge(&self, ctx: &Context<'_>, touched: &BTreeMap<String, Wanted>) -> Converged {
        let okta = ctx.okta;
        let fetch = |id: String| -> BoxFuture<'_, _> { Box::pin(async move { okta.app(&id).await }) };
        let mut results = converge_objects(ctx, touched, Kind::App, fetch, |m, a| m.map_app(a), None).await;
        for (app, wanted) in touched {
            if wanted.reconcile_assignments && !wanted.delete {
                let outcome = if ctx.mapping.builtin_shape() {
                    reconcile_assignments(ctx, app)
                        .await
                        .map(|()| FollowUps::default())
                } else {
                    assignment_members(ctx, app).await
                };
                results.insert(app.clone(), outcome);
            }
        }
        results
    }
}

/// A group's assignment to an app changed: every member may have gained or lost the app.
/// Instead of one Okta call per member, list the app's users once (direct and through
/// groups) and diff that against the users whose Port entity relates to the app; only the
/// `applications` relation of those that differ is rewritten (a merge upsert).
async fn reconcile_assignments(ctx: &Context<'_>, app: &str) -> Result<(), String> {
    let assigned: HashSet<String> = match ctx.okta.list_app_user_ids(app).await {
        Ok(ids) => ids.into_iter().collect(),
        // The app is gone: deleting it clears every user's reference to it.
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let related = ctx
        .port
        .own_related(USER_BLUEPRINT, APP_BLUEPRINT, app)
        .await
        .map_err(|e| e.to_string())?;
    let related_ids: HashSet<String> = related.iter().map(|s| s.entity.identifier.clone()).collect();
    let gaining: Vec<String> = assigned.difference(&related_ids).cloned().collect();
    let mut current = related;
    current.extend(
        ctx.port
            .list_own_among(USER_BLUEPRINT, &gaining)
            .await
            .map_err(|e| e.to_string())?,
    );
    // Who gains or loses the app is read off Port; what they then have is read off Okta,
    // one call per such user. Never Port's relation plus or minus this app: another batch
    // may be writing the same user, and a patch computed from what it read could undo that.
    let differing: Vec<String> = current
        .into_iter()
        .filter(|stored| {
            let has = stored.entity.related("applications").contains(&app);
            has != assigned.contains(&stored.entity.identifier)
        })
        .map(|stored| stored.entity.identifier)
        .collect();
    let mut patches = Vec::new();
    for user in differing {
        let apps: BTreeSet<String> = match ctx.okta.user_apps(&user).await {
            Ok(apps) => ids_of(&apps).into_iter().collect(),
            // Gone from Okta: its own delete event (or the resync) removes it.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(format!("user {user}: {e}")),
        };
        let mut relations = serde_json::Map::new();
        relations.insert("applications".into(), serde_json::json!(apps));
        patches.push(Entity {
            identifier: user,
            title: None,
            properties: Default::default(),
            relations,
        });
    }
    tracing::info!(
        app,
        users = patches.len(),
        "reconciled the app's user assignments"
    );
    let failures = write(ctx.port, BTreeMap::from([(USER_BLUEPRINT.to_owned(), patches)])).await;
    match failures.into_iter().next() {
        None => Ok(()),
        Some((id, reason)) => Err(format!("user {id}: {reason}")),
    }
}

/// `reconcile_assignments` for a configured mapping, whose relation names okta-port cannot
/// know: every user that has the app, or whose entity relates to it, is refetched in full.
async fn assignment_members(ctx: &Context<'_>, app: &str) -> Result<FollowUps, String> {
    let mut refetch_users: BTreeSet<String> = match ctx.okta.list_app_user_ids(app).await {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) if e.is_not_found() => BTreeSet::new(),
        Err(e) => return Err(e.to_string()),
    };
    let (user_bp, app_bp) = (
        primary_blueprint(ctx, Kind::User),
        primary_blueprint(ctx, Kind::App),
    );
    let related = ctx
        .port
        .own_related(&user_bp, &app_bp, app)
        .await
        .map_err(|e| e.to_string())?;
    refetch_users.extend(related.into_iter().map(|s| s.entity.identifier));
    Ok(FollowUps {
        refetch_users,
        ..FollowUps::default()
    })
}
