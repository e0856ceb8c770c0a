//! `JqMapping`: a port-app-config (Ocean's format) evaluated with jaq. Every jq expression
//! is compiled once, when the configuration is loaded; each object is then evaluated
//! against the compiled filters.
//!
//! What jq sees: the Okta object as Okta returns it. A user is enriched with `groups` (its
//! group objects), `applications` (its app objects) and `manager` (the resolved manager's
//! Okta id, or null). When the sync does not know a user's groups or apps (the listing
//! failed, or the live path did not refetch them), the fields whose expressions mention
//! them are left out of the write, so a merge upsert keeps what Port has.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::{Num, Val};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::{AppConfig, ConfigSource, MappingConfigError, ResourceConfig};
use super::{
    APP_BLUEPRINT, DefaultMapping, GROUP_BLUEPRINT, Mapped, Mapping, MappingError, ObjectKind,
    USER_BLUEPRINT, UserLinks,
};
use crate::domain::Entity;

type D = data::JustLut<Val>;
type JqFilter = jaq_core::compile::Filter<jaq_core::Native<D>>;

/// More outputs than this from one expression is an error (e.g. `repeat`).
const MAX_OUTPUTS: usize = 100_000;

/// Compiles one jq expression, or says why not (jq's message, with the position).
pub fn compile(code: &str) -> Result<JqFilter, String> {
    let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
    // `env` would let a configuration copy the process environment (secrets) into Port.
    let funs = jaq_core::funs()
        .chain(jaq_std::funs().filter(|f| f.0 != "env"))
        .chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let at = |rest: &str| -> String {
        let (start, pos) = (code.as_ptr() as usize, rest.as_ptr() as usize);
        if pos >= start && pos <= start + code.len() {
            let offset = pos - start;
            let near: String = rest.chars().take(20).collect();
            if near.is_empty() {
                format!("at the end (byte {offset})")
            } else {
                format!("at byte {offset} ({near:?})")
            }
        } else {
            format!("near {rest:?}")
        }
    };
    let modules = loader.load(&arena, File { code, path: () }).map_err(|errors| {
        let mut messages = Vec::new();
        for (_, error) in errors {
            match error {
                jaq_core::load::Error::Io(list) => messages.extend(
                    list.into_iter()
                        .map(|(path, e)| format!("cannot load {path}: {e}")),
                ),
                jaq_core::load::Error::Lex(list) => {
                    messages.extend(list.into_iter().map(|(expect, rest)| {
                        format!("lex error: expected {} {}", expect.as_str(), at(rest))
                    }))
                }
                jaq_core::load::Error::Parse(list) => {
                    messages.extend(list.into_iter().map(|(expect, rest)| {
                        format!("syntax error: expected {} {}", expect.as_str(), at(rest))
                    }))
                }
            }
        }
        format!("jq: {}", messages.join("; "))
    })?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errors| {
            let messages: Vec<String> = errors
                .into_iter()
                .flat_map(|(_, list)| list)
                .map(|(name, undefined)| {
                    let what = match undefined {
                        // A bare word: almost always a string or a field written without
                        // its quotes or its dot (`blueprint: oktaUser`, `title: name`).
                        jaq_core::compile::Undefined::Filter(0) if name == "env" => {
                            "filter env/0 (okta-port leaves it out: it would copy the process \
                             environment, secrets included, into Port)"
                                .to_owned()
                        }
                        jaq_core::compile::Undefined::Filter(0) => format!(
                            "filter {name}/0. A jq string needs its quotes, inside YAML's: write \
                             '\"{name}\"' for the text {name}, or .{name} for the field {name}"
                        ),
                        jaq_core::compile::Undefined::Filter(arity) => format!("filter {name}/{arity}"),
                        jaq_core::compile::Undefined::Var => format!("variable ${name}"),
                        other => format!("{other:?} {name}"),
                    };
                    format!("undefined {what}")
                })
                .collect();
            format!("jq: {}", messages.join("; "))
        })
}

/// One compiled expression and what it reads.
struct Expr {
    field: String,
    filter: JqFilter,
    uses_groups: bool,
    uses_apps: bool,
    uses_manager: bool,
}

impl Expr {
    fn new(code: &str, field: String) -> Result<Self, (String, String)> {
        let filter = compile(code).map_err(|m| (field.clone(), m))?;
        Ok(Expr {
            field,
            filter,
            uses_groups: code.contains("groups"),
            uses_apps: code.contains("applications"),
            uses_manager: code.contains("manager"),
        })
    }

    fn run(&self, input: &Val) -> Result<Vec<Val>, String> {
        let ctx = Ctx::<D>::new(&self.filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for v in self.filter.id.run((ctx, input.clone())).map(unwrap_valr) {
            out.push(v.map_err(|e| format!("jq: {e}"))?);
            if out.len() > MAX_OUTPUTS {
                return Err(format!("more than {MAX_OUTPUTS} outputs"));
            }
        }
        Ok(out)
    }

    /// At most one output (none = null); more is an error naming the field.
    fn single(&self, input: &Val) -> Result<Value, String> {
        let out = self.run(input)?;
        match out.as_slice() {
            [] => Ok(Value::Null),
            [one] => Ok(to_json(one)),
            many => Err(format!(
                "yielded {} values where one was expected (wrap it in [...] for an array)",
                many.len()
            )),
        }
    }

    fn needs_unknown(&self, known: Known) -> bool {
        (self.uses_groups && !known.groups)
            || (self.uses_apps && !known.apps)
            || (self.uses_manager && !known.manager)
    }
}

#[derive(Clone, Copy)]
struct Known {
    groups: bool,
    apps: bool,
    manager: bool,
}

const ALL_KNOWN: Known = Known {
    groups: true,
    apps: true,
    manager: true,
};

struct Relation {
    expr: Expr,
    /// The blueprint's relation is `many: true`: every output is taken. Otherwise it is
    /// single-valued. Known from our default blueprints at load, and from Port's own
    /// definition once the sync has read it (`learn_blueprint`), which wins.
    many: AtomicBool,
}

struct Resource {
    index: usize,
    kind: ObjectKind,
    selector: Option<Expr>,
    identifier: Expr,
    title: Option<Expr>,
    blueprint: String,
    properties: Vec<(String, Expr)>,
    relations: Vec<(String, Relation)>,
}

/// A loaded port-app-config.
pub struct JqMapping {
    resources: Vec<Resource>,
    /// Loaded from the built-in default: its blueprints are ours to create.
    builtin: bool,
    deletion_threshold: Option<f64>,
}

impl std::fmt::Debug for JqMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JqMapping")
            .field("resources", &self.resources.len())
            .field("builtin", &self.builtin)
            .finish()
    }
}

fn kind_of(kind: &str) -> Option<ObjectKind> {
    match kind {
        "okta-user" => Some(ObjectKind::User),
        "okta-group" => Some(ObjectKind::Group),
        "okta-application" => Some(ObjectKind::App),
        _ => None,
    }
}

/// Whether `blueprint`'s `relation` is a many-relation, when the blueprint is one of ours.
fn default_relation_many(blueprint: &str, relation: &str) -> Option<bool> {
    DefaultMapping
        .blueprints()
        .iter()
        .find(|b| b["identifier"] == blueprint)
        .and_then(|b| b["relations"][relation]["many"].as_bool())
}

impl JqMapping {
    /// The built-in default configuration.
    pub fn builtin() -> Self {
        Self::load(&ConfigSource::Default).expect("the built-in port-app-config.yml is valid")
    }

    /// Reads and compiles a configuration; any error refuses it before anything is written.
    pub fn load(source: &ConfigSource) -> Result<Self, MappingConfigError> {
        let mut mapping = Self::parse(&source.text()?, &source.origin())?;
        mapping.builtin = *source == ConfigSource::Default;
        Ok(mapping)
    }

    /// Compiles a configuration given as YAML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, MappingConfigError> {
        let config = AppConfig::parse(text, origin)?;
        let mut resources = Vec::new();
        for (index, resource) in config.resources.iter().enumerate() {
            resources.push(Self::resource(index, resource, origin)?);
        }
        Ok(JqMapping {
            resources,
            builtin: false,
            deletion_threshold: config.entity_deletion_threshold,
        })
    }

    fn resource(index: usize, r: &ResourceConfig, origin: &str) -> Result<Resource, MappingConfigError> {
        let field_error = |(field, message): (String, String)| MappingConfigError::Field {
            origin: origin.to_owned(),
            index,
            field,
            message,
        };
        let kind = kind_of(&r.kind).ok_or_else(|| MappingConfigError::UnknownKind {
            origin: origin.to_owned(),
            index,
            kind: r.kind.clone(),
        })?;
        if r.port.items_to_parse.is_some() {
            return Err(field_error((
                "port.itemsToParse".into(),
                "not supported by okta-port (one Okta object is one entity)".into(),
            )));
        }
        let selector = match r.selector.query.as_deref().map(str::trim) {
            None | Some("true") => None,
            Some(code) => {
                let expr = Expr::new(code, "selector.query".into()).map_err(field_error)?;
                // A selector that cannot yield a boolean is refused now; one that depends on
                // the object fails that object at evaluation.
                let probe = expr.run(&Val::obj(Default::default()));
                if let Ok(out) = probe
                    && let Some(bad) = out.iter().find(|v| !matches!(v, Val::Bool(_) | Val::Null))
                {
                    return Err(field_error((
                        "selector.query".into(),
                        format!("must yield a boolean, yields {bad}"),
                    )));
                }
                Some(expr)
            }
        };
        let m = &r.port.entity.mappings;
        let base = "port.entity.mappings";
        let jq_text = |v: &Value, field: &str| -> Result<String, (String, String)> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
                _ => Err((
                    field.to_owned(),
                    "must be a jq expression (search-query objects are not supported)".into(),
                )),
            }
        };
        let identifier_field = format!("{base}.identifier");
        let identifier = Expr::new(
            &jq_text(&m.identifier, &identifier_field).map_err(field_error)?,
            identifier_field,
        )
        .map_err(field_error)?;
        let title = m
            .title
            .as_deref()
            .map(|code| Expr::new(code, format!("{base}.title")))
            .transpose()
            .map_err(field_error)?;
        let blueprint_field = format!("{base}.blueprint");
        Expr::new(&m.blueprint, blueprint_field.clone()).map_err(field_error)?;
        let blueprint: String = serde_json::from_str(m.blueprint.trim())
            .ok()
            .filter(|b: &String| !b.trim().is_empty())
            .ok_or_else(|| {
                field_error((
                    blueprint_field,
                    format!(
                        "must be a jq string literal such as '\"oktaUser\"' (okta-port lists and deletes per \
                         blueprint, so it must know them before reading Okta); got {:?}",
                        m.blueprint
                    ),
                ))
            })?;
        for (name, code) in [("icon", &m.icon), ("team", &m.team)] {
            if let Some(code) = code {
                Expr::new(code, format!("{base}.{name}")).map_err(field_error)?;
                tracing::warn!(
                    resource = index,
                    field = name,
                    "okta-port does not write an entity's {name}; the mapping is ignored"
                );
            }
        }
        let mut properties = Vec::new();
        for (name, code) in &m.properties {
            let field = format!("{base}.properties.{name}");
            let code = jq_text(code, &field).map_err(field_error)?;
            properties.push((name.clone(), Expr::new(&code, field).map_err(field_error)?));
        }
        let mut relations = Vec::new();
        for (name, code) in &m.relations {
            let field = format!("{base}.relations.{name}");
            let code = jq_text(code, &field).map_err(field_error)?;
            let expr = Expr::new(&code, field).map_err(field_error)?;
            let many = default_relation_many(&blueprint, name).unwrap_or(false);
            relations.push((
                name.clone(),
                Relation {
                    expr,
                    many: AtomicBool::new(many),
                },
            ));
        }
        Ok(Resource {
            index,
            kind,
            selector,
            identifier,
            title,
            blueprint,
            properties,
            relations,
        })
    }

    /// Whether this is the built-in configuration (its blueprints are created by okta-port).
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// `entityDeletionThreshold`, when the configuration sets it.
    pub fn deletion_threshold(&self) -> Option<f64> {
        self.deletion_threshold
    }

    fn map_object(&self, kind: ObjectKind, input: &Val, known: Known) -> Result<Vec<Mapped>, MappingError> {
        let mut out = Vec::new();
        for r in self.resources.iter().filter(|r| r.kind == kind) {
            let err = |field: &str, message: String| MappingError::Jq {
                resource: r.index,
                field: field.to_owned(),
                message,
            };
            let require_known = |e: &Expr| -> Result<(), MappingError> {
                if e.needs_unknown(known) {
                    Err(err(
                        &e.field,
                        "needs the user's groups, applications or manager, which are unknown in this run"
                            .into(),
                    ))
                } else {
                    Ok(())
                }
            };
            if let Some(selector) = &r.selector {
                require_known(selector)?;
                let result = selector.run(input).map_err(|m| err(&selector.field, m))?;
                match result.as_slice() {
                    [Val::Bool(true)] => {}
                    [Val::Bool(false)] => continue,
                    other => {
                        let shown: Vec<String> = other
                            .iter()
                            .take(3)
                            .map(|v| {
                                let v = to_json(v);
                                format!("{} ({v})", crate::json_type(&v))
                            })
                            .collect();
                        return Err(MappingError::Selector {
                            resource: r.index,
                            yielded: if shown.is_empty() {
                                "nothing".into()
                            } else {
                                shown.join(", ")
                            },
                        });
                    }
                }
            }
            require_known(&r.identifier)?;
            let identifier = match r
                .identifier
                .single(input)
                .map_err(|m| err(&r.identifier.field, m))?
            {
                Value::String(s) if !s.trim().is_empty() => s,
                other => {
                    return Err(err(
                        &r.identifier.field,
                        format!("must yield a non-empty string, yielded {other}"),
                    ));
                }
            };
            let title = match &r.title {
                None => None,
                Some(t) => {
                    require_known(t)?;
                    match t.single(input).map_err(|m| err(&t.field, m))? {
                        Value::Null => None,
                        Value::String(s) => Some(s),
                        other => return Err(err(&t.field, format!("must yield a string, yielded {other}"))),
                    }
                }
            };
            let mut properties = Map::new();
            for (name, e) in &r.properties {
                if e.needs_unknown(known) {
                    continue;
                }
                properties.insert(name.clone(), e.single(input).map_err(|m| err(&e.field, m))?);
            }
            let mut relations = Map::new();
            for (name, rel) in &r.relations {
                let e = &rel.expr;
                if e.needs_unknown(known) {
                    continue;
                }
                let value = if rel.many.load(Ordering::Relaxed) {
                    let mut ids = BTreeSet::new();
                    for v in e.run(input).map_err(|m| err(&e.field, m))? {
                        match to_json(&v) {
                            Value::Null => {}
                            Value::String(s) => {
                                ids.insert(s);
                            }
                            Value::Array(items) => {
                                for item in items {
                                    match item {
                                        Value::String(s) => {
                                            ids.insert(s);
                                        }
                                        Value::Null => {}
                                        other => {
                                            return Err(err(
                                                &e.field,
                                                format!("relation targets must be strings, got {other}"),
                                            ));
                                        }
                                    }
                                }
                            }
                            other => {
                                return Err(err(
                                    &e.field,
                                    format!("relation targets must be strings, got {other}"),
                                ));
                            }
                        }
                    }
                    Value::Array(ids.into_iter().map(Value::String).collect())
                } else {
                    e.single(input).map_err(|m| err(&e.field, m))?
                };
                relations.insert(name.clone(), value);
            }
            out.push(Mapped {
                blueprint: r.blueprint.clone(),
                entity: Entity {
                    identifier,
                    title,
                    properties,
                    relations,
                },
            });
        }
        Ok(out)
    }
}

fn key(name: &str) -> Val {
    Val::from(name.to_owned())
}

/// serde_json → jaq.
pub fn to_val(value: &Value) -> Val {
    Val::deserialize(value).unwrap_or(Val::Null)
}

/// jaq → serde_json.
pub fn to_json(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Num(Num::Int(i)) => Value::from(*i as i64),
        Val::Num(Num::Float(f)) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Val::Num(_) => serde_json::from_str(&v.to_string()).unwrap_or(Value::Null),
        Val::Arr(items) => Value::Array(items.iter().map(to_json).collect()),
        Val::Obj(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let k = match k {
                        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                        other => other.to_string(),
                    };
                    (k, to_json(v))
                })
                .collect(),
        ),
    }
}

/// The objects of `objects`, or `{"id": …}` stand-ins built from `ids`.
fn link_vals(objects: Option<&[&Value]>, ids: Option<&[String]>) -> Option<Val> {
    match (objects, ids) {
        (Some(objects), _) => Some(objects.iter().map(|o| to_val(o)).collect()),
        (None, Some(ids)) => Some(
            ids.iter()
                .map(|id| {
                    let mut m: jaq_json::Map = Default::default();
                    m.insert(key("id"), Val::from(id.clone()));
                    Val::obj(m)
                })
                .collect(),
        ),
        (None, None) => None,
    }
}

/// The user as jq sees it: the Okta user plus `groups`, `applications` and `manager`.
pub fn user_input(user: &Value, links: &UserLinks<'_>) -> Val {
    let mut val = to_val(user);
    if let Val::Obj(map) = &mut val {
        let map = jaq_json::Rc::make_mut(map);
        if let Some(groups) = link_vals(links.group_objects, links.groups) {
            map.insert(key("groups"), groups);
        }
        if let Some(apps) = link_vals(links.app_objects, links.applications) {
            map.insert(key("applications"), apps);
        }
        if let Some(manager) = links.manager {
            map.insert(
                key("manager"),
                manager.map_or(Val::Null, |m| Val::from(m.to_owned())),
            );
        }
    }
    val
}

impl Mapping for JqMapping {
    fn identifier(&self, kind: ObjectKind, blueprint: &str, object: &Value) -> Option<String> {
        let resource = self
            .resources
            .iter()
            .find(|r| r.kind == kind && r.blueprint == blueprint)?;
        let input = to_val(object);
        match resource.identifier.single(&input) {
            Ok(Value::String(s)) if !s.trim().is_empty() => Some(s),
            _ => None,
        }
    }

    fn learn_blueprint(&self, definition: &Value) {
        let Some(id) = definition["identifier"].as_str() else {
            return;
        };
        for r in self.resources.iter().filter(|r| r.blueprint == id) {
            for (name, rel) in &r.relations {
                if let Some(many) = definition["relations"][name]["many"].as_bool() {
                    rel.many.store(many, Ordering::Relaxed);
                }
            }
        }
    }

    fn blueprints(&self) -> Vec<Value> {
        if self.builtin {
            DefaultMapping.blueprints()
        } else {
            Vec::new()
        }
    }

    fn blueprint_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for kind in [ObjectKind::Group, ObjectKind::App, ObjectKind::User] {
            for bp in self.kind_blueprints(kind) {
                if !ids.contains(&bp) {
                    ids.push(bp);
                }
            }
        }
        ids
    }

    fn kind_blueprints(&self, kind: ObjectKind) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for r in self.resources.iter().filter(|r| r.kind == kind) {
            if !ids.contains(&r.blueprint) {
                ids.push(r.blueprint.clone());
            }
        }
        ids
    }

    fn user_needs_links(&self) -> bool {
        self.resources
            .iter()
            .filter(|r| r.kind == ObjectKind::User)
            .any(|r| {
                let any = |e: &Expr| e.uses_groups || e.uses_apps;
                r.selector.as_ref().is_some_and(any)
                    || any(&r.identifier)
                    || r.title.as_ref().is_some_and(any)
            })
    }

    fn builtin_shape(&self) -> bool {
        self.builtin
    }

    fn map_group(&self, group: &Value) -> Result<Vec<Mapped>, MappingError> {
        self.map_object(ObjectKind::Group, &to_val(group), ALL_KNOWN)
    }

    fn map_app(&self, app: &Value) -> Result<Vec<Mapped>, MappingError> {
        self.map_object(ObjectKind::App, &to_val(app), ALL_KNOWN)
    }

    fn map_user(&self, user: &Value, links: &UserLinks<'_>) -> Result<Vec<Mapped>, MappingError> {
        let known = Known {
            groups: links.groups.is_some() || links.group_objects.is_some(),
            apps: links.applications.is_some() || links.app_objects.is_some(),
            manager: links.manager.is_some(),
        };
        self.map_object(ObjectKind::User, &user_input(user, links), known)
    }
}

/// Blueprint constants re-exported for callers that name the default blueprints.
pub const DEFAULT_BLUEPRINTS: [&str; 3] = [GROUP_BLUEPRINT, APP_BLUEPRINT, USER_BLUEPRINT];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_errors_carry_jqs_message_and_position() {
        let e = compile(".profile.firstName +").err().expect("refused");
        assert!(e.starts_with("jq: syntax error: expected "), "{e}");
        assert!(e.contains("byte"), "{e}");
        let e = compile("nosuch(.id)").err().expect("refused");
        assert_eq!(e, "jq: undefined filter nosuch/1");
        assert!(compile("env").is_err(), "env is not available");
    }

    #[test]
    fn values_round_trip_between_serde_and_jaq() {
        let v = serde_json::json!({ "a": [1, 2.5, "x", null, true], "b": { "c": "é" } });
        assert_eq!(to_json(&to_val(&v)), v);
    }
}
