//! One resource of a port-app-config: compiled from its configuration once, then
//! evaluated against each Okta object of its kind.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use jaq_json::Val;
use serde_json::{Map, Value};

use super::{Expr, Known, Relation, Resource, to_json};
use crate::domain::{Entity, ObjectKind};
use crate::mapping::config::{MappingConfigError, ResourceConfig};
use crate::mapping::{DefaultMapping, Mapping, MappingError};

/// A field's path in the configuration and what is wrong with it.
type FieldProblem = (String, String);

impl Resource {
    /// Compiles `resources[index]`; every problem names the field it lies in.
    pub(super) fn from_config(
        index: usize,
        r: &ResourceConfig,
        origin: &str,
    ) -> Result<Resource, MappingConfigError> {
        let field_error = |(field, message): FieldProblem| MappingConfigError::Field {
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
        let selector = selector_of(r).map_err(field_error)?;
        let m = &r.port.entity.mappings;
        let identifier_field = format!("{BASE}.identifier");
        let identifier = field_expr(&m.identifier, identifier_field).map_err(field_error)?;
        let title = m
            .title
            .as_deref()
            .map(|code| Expr::new(code, format!("{BASE}.title")))
            .transpose()
            .map_err(field_error)?;
        let blueprint = blueprint_of(&m.blueprint).map_err(field_error)?;
        for (name, code) in [("icon", &m.icon), ("team", &m.team)] {
            if let Some(code) = code {
                Expr::new(code, format!("{BASE}.{name}")).map_err(field_error)?;
                tracing::warn!(
                    resource = index,
                    field = name,
                    "okta-port does not write an entity's {name}; the mapping is ignored"
                );
            }
        }
        let mut properties = Vec::new();
        for (name, code) in &m.properties {
            properties.push((
                name.clone(),
                field_expr(code, format!("{BASE}.properties.{name}")).map_err(field_error)?,
            ));
        }
        let mut relations = Vec::new();
        for (name, code) in &m.relations {
            let expr = field_expr(code, format!("{BASE}.relations.{name}")).map_err(field_error)?;
            let many = AtomicBool::new(default_relation_many(&blueprint, name).unwrap_or(false));
            relations.push((name.clone(), Relation { expr, many }));
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

    /// The entity this resource makes of `input`, or `None` when its selector says no.
    pub(super) fn map(&self, input: &Val, known: Known) -> Result<Option<Entity>, MappingError> {
        if !self.selects(input, known)? {
            return Ok(None);
        }
        self.require_known(&self.identifier, known)?;
        let identifier = match self.single(&self.identifier, input)? {
            Value::String(s) if !s.trim().is_empty() => s,
            other => {
                return Err(self.error(
                    &self.identifier,
                    format!("must yield a non-empty string, yielded {other}"),
                ));
            }
        };
        let title = match &self.title {
            None => None,
            Some(t) => {
                self.require_known(t, known)?;
                match self.single(t, input)? {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    other => return Err(self.error(t, format!("must yield a string, yielded {other}"))),
                }
            }
        };
        let mut properties = Map::new();
        for (name, e) in self.properties.iter().filter(|(_, e)| !e.needs_unknown(known)) {
            properties.insert(name.clone(), self.single(e, input)?);
        }
        let mut relations = Map::new();
        for (name, rel) in self
            .relations
            .iter()
            .filter(|(_, r)| !r.expr.needs_unknown(known))
        {
            let value = if rel.many.load(Ordering::Relaxed) {
                self.targets(&rel.expr, input)?
            } else {
                self.single(&rel.expr, input)?
            };
            relations.insert(name.clone(), value);
        }
        Ok(Some(Entity {
            identifier,
            title,
            properties,
            relations,
        }))
    }

    /// What the selector says of `input` (no selector: yes). Anything but one boolean is
    /// a mistake in the configuration, which stops the run.
    fn selects(&self, input: &Val, known: Known) -> Result<bool, MappingError> {
        let Some(selector) = &self.selector else {
            return Ok(true);
        };
        self.require_known(selector, known)?;
        let result = selector.run(input).map_err(|m| self.error(selector, m))?;
        match result.as_slice() {
            [Val::Bool(yes)] => Ok(*yes),
            other => {
                let shown: Vec<String> = other
                    .iter()
                    .take(3)
                    .map(|v| {
                        let v = to_json(v);
                        format!("{} ({v})", crate::json_type(&v))
                    })
                    .collect();
                Err(MappingError::Selector {
                    resource: self.index,
                    yielded: if shown.is_empty() {
                        "nothing".into()
                    } else {
                        shown.join(", ")
                    },
                })
            }
        }
    }

    /// A many-relation's targets: every output, each a string or an array of strings
    /// (nulls skipped), deduplicated and sorted.
    fn targets(&self, e: &Expr, input: &Val) -> Result<Value, MappingError> {
        let mut ids = BTreeSet::new();
        let not_a_target =
            |other: &Value| self.error(e, format!("relation targets must be strings, got {other}"));
        for v in e.run(input).map_err(|m| self.error(e, m))? {
            let items = match to_json(&v) {
                Value::Array(items) => items,
                one => vec![one],
            };
            for item in items {
                match item {
                    Value::String(s) => {
                        ids.insert(s);
                    }
                    Value::Null => {}
                    other => return Err(not_a_target(&other)),
                }
            }
        }
        Ok(Value::Array(ids.into_iter().map(Value::String).collect()))
    }

    fn single(&self, e: &Expr, input: &Val) -> Result<Value, MappingError> {
        e.single(input).map_err(|m| self.error(e, m))
    }

    fn require_known(&self, e: &Expr, known: Known) -> Result<(), MappingError> {
        if e.needs_unknown(known) {
            return Err(self.error(
                e,
                "needs the user's groups, applications or manager, which are unknown in this run".into(),
            ));
        }
        Ok(())
    }

    fn error(&self, e: &Expr, message: String) -> MappingError {
        MappingError::Jq {
            resource: self.index,
            field: e.field.clone(),
            message,
        }
    }
}

const BASE: &str = "port.entity.mappings";

/// The selector, compiled; one that cannot yield a boolean is refused now (one that
/// depends on the object fails that object at evaluation). `true` is no selector.
fn selector_of(r: &ResourceConfig) -> Result<Option<Expr>, FieldProblem> {
    let code = match r.selector.query.as_deref().map(str::trim) {
        None | Some("true") => return Ok(None),
        Some(code) => code,
    };
    let expr = Expr::new(code, "selector.query".into())?;
    let probe = expr.run(&Val::obj(Default::default()));
    if let Ok(out) = probe
        && let Some(bad) = out.iter().find(|v| !matches!(v, Val::Bool(_) | Val::Null))
    {
        return Err((
            "selector.query".into(),
            format!("must yield a boolean, yields {bad}"),
        ));
    }
    Ok(Some(expr))
}

/// The blueprint: a jq string literal, since okta-port lists and deletes per blueprint
/// and must know them before reading Okta.
fn blueprint_of(code: &str) -> Result<String, FieldProblem> {
    let field = format!("{BASE}.blueprint");
    Expr::new(code, field.clone())?;
    serde_json::from_str(code.trim())
        .ok()
        .filter(|b: &String| !b.trim().is_empty())
        .ok_or_else(|| {
            (
                field,
                format!(
                    "must be a jq string literal such as '\"oktaUser\"' (okta-port lists and deletes per \
                     blueprint, so it must know them before reading Okta); got {code:?}"
                ),
            )
        })
}

/// A property's or relation's expression: jq text (a number or boolean is its own jq).
fn field_expr(code: &Value, field: String) -> Result<Expr, FieldProblem> {
    let text = jq_text(code, &field)?;
    Expr::new(&text, field)
}

fn jq_text(v: &Value, field: &str) -> Result<String, FieldProblem> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
        _ => Err((
            field.to_owned(),
            "must be a jq expression (search-query objects are not supported)".into(),
        )),
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
