//! `JqMapping`: a port-app-config (Ocean's format) evaluated with jaq. Every jq expression
//! is compiled once, when the configuration is loaded; each object is then evaluated
//! against the compiled filters.
//!
//! What jq sees: the Okta object as Okta returns it. A user is enriched with `groups` (its
//! group objects), `applications` (its app objects) and `manager` (the resolved manager's
//! Okta id, or null). When the sync does not know a user's groups or apps (the listing
//! failed, or the live path did not refetch them), the fields whose expressions mention
//! them are left out of the write, so a merge upsert keeps what Port has.

use std::sync::atomic::{AtomicBool, Ordering};

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::{Num, Val};
use serde::Deserialize;
use serde_json::Value;

mod resource;

use super::config::{AppConfig, ConfigSource, MappingConfigError};
use super::{DefaultMapping, Mapped, Mapping, MappingError, ObjectKind, UserLinks};

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
            resources.push(Resource::from_config(index, resource, origin)?);
        }
        Ok(JqMapping {
            resources,
            builtin: false,
            deletion_threshold: config.entity_deletion_threshold,
        })
    }

    /// `entityDeletionThreshold`, when the configuration sets it.
    pub fn deletion_threshold(&self) -> Option<f64> {
        self.deletion_threshold
    }
}

impl JqMapping {
    fn map_object(&self, kind: ObjectKind, input: &Val, known: Known) -> Result<Vec<Mapped>, MappingError> {
        let mut out = Vec::new();
        for r in self.resources.iter().filter(|r| r.kind == kind) {
            if let Some(entity) = r.map(input, known)? {
                out.push(Mapped {
                    blueprint: r.blueprint.clone(),
                    entity,
                });
            }
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
