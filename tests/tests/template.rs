//! Checks on `template.yaml` that reviewers miss: who may do what (IAM), how the queue, its
//! dead-letter queue and the consumer fit together, the Function URL, the schedule, and that
//! each function builds the right binary. `cfn-lint` and `sam validate --lint` (in .ci/run)
//! check the syntax; these check the intent.
//!
//! Every rule is a `check_*` function returning the problems it found; each is run on the
//! real template and on mutated copies that must fail, so no rule can pass vacuously.
//!
//! Functions are found by the binary they build (`Metadata.BuildProperties.Binary`), not
//! by logical id.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

type Checked = Result<(), String>;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

// ------------------------------------------------------------------ parsing

/// YAML with CloudFormation short-form tags → JSON in CloudFormation's long form
/// (`!Ref X` → `{"Ref": "X"}`, `!GetAtt A.B` → `{"Fn::GetAtt": ["A", "B"]}`, `!Sub s` →
/// `{"Fn::Sub": s}`, …), so that both spellings compare equal.
fn to_json(value: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n.as_f64().expect("a YAML number is an f64"))
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!').to_owned();
            let inner = to_json(tagged.value);
            match name.as_str() {
                "Ref" | "Condition" => json!({ name: inner }),
                "GetAtt" => match inner {
                    Value::String(s) => {
                        let (resource, attribute) = s.split_once('.').unwrap_or((s.as_str(), ""));
                        json!({ "Fn::GetAtt": [resource, attribute] })
                    }
                    other => json!({ "Fn::GetAtt": other }),
                },
                _ => json!({ format!("Fn::{name}"): inner }),
            }
        }
    }
}

fn reference(id: &str) -> Value {
    json!({ "Ref": id })
}

fn get_att(id: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [id, attribute] })
}

/// The target of `{"Ref": X}`.
fn ref_target(value: &Value) -> Option<&str> {
    value.as_object().filter(|m| m.len() == 1)?.get("Ref")?.as_str()
}

/// `(resource, attribute)` of `{"Fn::GetAtt": [resource, attribute]}`.
fn get_att_target(value: &Value) -> Option<(&str, &str)> {
    let args = value
        .as_object()
        .filter(|m| m.len() == 1)?
        .get("Fn::GetAtt")?
        .as_array()?;
    match args.as_slice() {
        [Value::String(r), Value::String(a)] => Some((r, a)),
        _ => None,
    }
}

/// A statement's Action or Resource: one value or a list of them.
fn one_or_many(value: Option<&Value>) -> Vec<Value> {
    match value {
        None => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(other) => vec![other.clone()],
    }
}

#[derive(Clone)]
struct Template {
    doc: Value,
}

impl Template {
    fn parse(text: &str) -> Self {
        let yaml: serde_norway::Value = serde_norway::from_str(text).expect("template.yaml parses as YAML");
        Self { doc: to_json(yaml) }
    }

    fn load() -> Self {
        let path = repo_root().join("template.yaml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self::parse(&text)
    }

    /// A copy changed by `edit`, for checking that a rule can fail.
    fn mutated(&self, edit: impl FnOnce(&mut Value)) -> Self {
        let mut copy = self.clone();
        edit(&mut copy.doc);
        copy
    }

    fn resources(&self) -> &Map<String, Value> {
        self.doc["Resources"].as_object().expect("Resources is a mapping")
    }

    fn resource(&self, id: &str) -> Result<&Value, String> {
        self.resources()
            .get(id)
            .ok_or_else(|| format!("no resource {id}"))
    }

    fn resource_of_type(&self, id: &str, kind: &str) -> Result<&Value, String> {
        let resource = self.resource(id)?;
        match resource["Type"].as_str() {
            Some(t) if t == kind => Ok(resource),
            other => Err(format!("{id} is a {other:?}, not a {kind}")),
        }
    }

    fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.resources()
            .iter()
            .filter(move |(_, r)| r["Type"] == kind)
            .map(|(id, r)| (id.as_str(), r))
    }

    /// Logical id of the function that builds `binary`.
    fn function(&self, binary: &str) -> Result<&str, String> {
        let ids: Vec<&str> = self
            .of_type("AWS::Serverless::Function")
            .filter(|(_, f)| f["Metadata"]["BuildProperties"]["Binary"] == binary)
            .map(|(id, _)| id)
            .collect();
        match ids.as_slice() {
            [id] => Ok(id),
            [] => Err(format!("no function builds the binary {binary}")),
            _ => Err(format!("several functions build the binary {binary}: {ids:?}")),
        }
    }

    /// A function property as deployed: the function's own value, else `Globals.Function`'s;
    /// `Environment.Variables` are merged, the function's winning (as SAM does).
    fn prop(&self, function: &str, key: &str) -> Option<Value> {
        let own = self
            .resources()
            .get(function)?
            .get("Properties")?
            .get(key)
            .cloned();
        let global = self.doc["Globals"]["Function"].get(key).cloned();
        if key == "Environment" {
            let mut variables = global
                .as_ref()
                .and_then(|g| g["Variables"].as_object().cloned())
                .unwrap_or_default();
            if let Some(own) = own.as_ref().and_then(|o| o["Variables"].as_object()) {
                variables.extend(own.clone());
            }
            return Some(json!({ "Variables": variables }));
        }
        own.or(global)
    }

    fn env(&self, function: &str, name: &str) -> Option<Value> {
        self.prop(function, "Environment")?["Variables"]
            .get(name)
            .cloned()
    }

    fn parameter(&self, name: &str) -> Option<&Value> {
        self.doc["Parameters"].get(name)
    }

    /// Resolves what can be resolved before deployment: parameters (`overrides` first, then
    /// their defaults), `Fn::FindInMap` and literals. Anything else is an error.
    fn resolve(&self, value: &Value, overrides: &BTreeMap<String, Value>) -> Result<Value, String> {
        if let Some(name) = ref_target(value) {
            if let Some(v) = overrides.get(name) {
                return Ok(v.clone());
            }
            let parameter = self
                .parameter(name)
                .ok_or_else(|| format!("Ref {name} is not a parameter"))?;
            return parameter
                .get("Default")
                .cloned()
                .ok_or_else(|| format!("parameter {name} has no default"));
        }
        if let Some(args) = value.get("Fn::FindInMap").and_then(Value::as_array) {
            let keys = args
                .iter()
                .map(|a| {
                    self.resolve(a, overrides).map(|v| match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let [map, top, second] = keys.as_slice() else {
                return Err(format!("FindInMap takes 3 arguments: {value}"));
            };
            return self.doc["Mappings"][map][top]
                .get(second)
                .cloned()
                .ok_or_else(|| format!("no Mappings.{map}.{top}.{second}"));
        }
        match value {
            Value::Object(_) | Value::Array(_) => Err(format!("cannot resolve {value}")),
            literal => Ok(literal.clone()),
        }
    }

    fn resolve_number(&self, value: &Value, overrides: &BTreeMap<String, Value>) -> Result<f64, String> {
        match self.resolve(value, overrides)? {
            Value::Number(n) => Ok(n.as_f64().expect("finite")),
            Value::String(s) => s.trim().parse().map_err(|_| format!("{s:?} is not a number")),
            other => Err(format!("{other} is not a number")),
        }
    }

    /// The events (`Events`) of a function, by name.
    fn events(&self, function: &str) -> Map<String, Value> {
        self.resources()[function]["Properties"]["Events"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }
}

const BINARIES: [&str; 3] = ["webhook", "consumer", "resync"];

fn problems(list: Vec<String>) -> Checked {
    if list.is_empty() {
        Ok(())
    } else {
        Err(list.join("\n"))
    }
}

// ------------------------------------------------------------------ the rules

/// The `[[bin]]` names declared by the crates under `functions/`.
fn declared_binaries() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let dir = repo_root().join("functions");
    for entry in std::fs::read_dir(&dir).expect("functions/ exists") {
        let manifest = entry.expect("dir entry").path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let mut in_bin = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin
                && let Some(rest) = line.strip_prefix("name")
                && let Some(value) = rest.trim_start().strip_prefix('=')
            {
                names.insert(value.trim().trim_matches('"').to_owned());
            }
        }
    }
    names
}

/// The three functions build `webhook`, `consumer` and `resync` with cargo-lambda, on
/// `provided.al2023`, for the `Architecture` parameter, and those binaries exist.
fn check_functions_and_binaries(t: &Template) -> Checked {
    let mut found = Vec::new();
    let functions: Vec<(&str, &Value)> = t.of_type("AWS::Serverless::Function").collect();
    let built: BTreeSet<&str> = functions
        .iter()
        .filter_map(|(_, f)| f["Metadata"]["BuildProperties"]["Binary"].as_str())
        .collect();
    if functions.len() != 3 || built != BINARIES.into_iter().collect() {
        found.push(format!(
            "expected 3 functions building {BINARIES:?}, found {} building {built:?}",
            functions.len()
        ));
    }
    let declared = declared_binaries();
    for (id, f) in &functions {
        let binary = f["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap_or("?");
        if !declared.contains(binary) {
            found.push(format!(
                "{id} builds {binary}, which no functions/*/Cargo.toml declares as [[bin]] ({declared:?})"
            ));
        }
        if f["Metadata"]["BuildMethod"] != "rust-cargolambda" {
            found.push(format!("{id}: Metadata.BuildMethod is not rust-cargolambda"));
        }
        let expected = [
            ("CodeUri", json!(".")),
            ("Runtime", json!("provided.al2023")),
            ("Handler", json!("bootstrap")),
            ("Architectures", json!([reference("Architecture")])),
        ];
        for (key, want) in expected {
            let got = t.prop(id, key);
            if got.as_ref() != Some(&want) {
                found.push(format!("{id}: {key} is {got:?}, expected {want}"));
            }
        }
    }
    match t.parameter("Architecture") {
        Some(p) if p["Default"] == "arm64" && p["AllowedValues"] == json!(["arm64", "x86_64"]) => {}
        other => found.push(format!(
            "parameter Architecture must default to arm64 and allow arm64 and x86_64: {other:?}"
        )),
    }
    problems(found)
}

/// The secret: the stack's own, or `ExistingSecretArn`. Returns the expression naming it.
/// The credentials secret, as the consumer's `SECRETS_ARN` names it:
/// `Fn::If [cond, Ref <secret>, Ref ExistingSecretArn]`, the secret existing only under
/// `cond` = (ExistingSecretArn is empty).
fn secret_expression(t: &Template) -> Result<Value, String> {
    let consumer = t.function("consumer")?;
    let arn = t
        .env(consumer, "SECRETS_ARN")
        .ok_or("the consumer has no SECRETS_ARN")?;
    let [condition, created, existing] = arn
        .get("Fn::If")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    else {
        return Err(format!(
            "SECRETS_ARN must be Fn::If [cond, Ref secret, Ref ExistingSecretArn]: {arn}"
        ));
    };
    let secret = ref_target(created).ok_or("SECRETS_ARN: the created secret is not a Ref")?;
    t.resource_of_type(secret, "AWS::SecretsManager::Secret")?;
    if ref_target(existing) != Some("ExistingSecretArn") || t.parameter("ExistingSecretArn").is_none() {
        return Err(format!(
            "SECRETS_ARN's else branch must be Ref ExistingSecretArn: {existing}"
        ));
    }
    let condition = condition
        .as_str()
        .ok_or("SECRETS_ARN: the condition is not a name")?;
    let want = json!({ "Fn::Equals": [reference("ExistingSecretArn"), ""] });
    if t.doc["Conditions"][condition] != want {
        return Err(format!("condition {condition} must be {want}"));
    }
    if t.resource(secret)?["Condition"] != condition {
        return Err(format!("{secret} must only exist under condition {condition}"));
    }
    Ok(arn)
}

/// The webhook's own secret (`Ref <secret>`), which is not the credentials secret: the
/// internet-facing function never reads the Okta or Port credentials.
fn webhook_secret(t: &Template) -> Result<Value, String> {
    let webhook = t.function("webhook")?;
    let arn = t
        .env(webhook, "SECRETS_ARN")
        .ok_or("the webhook has no SECRETS_ARN")?;
    let id = ref_target(&arn).ok_or(format!("the webhook's SECRETS_ARN is not Ref <secret>: {arn}"))?;
    t.resource_of_type(id, "AWS::SecretsManager::Secret")?;
    let credentials = secret_expression(t)?;
    if credentials["Fn::If"][1] == arn {
        return Err("the webhook's SECRETS_ARN is the credentials secret".into());
    }
    Ok(arn)
}

/// Secrets reach the functions only through `SECRETS_ARN`, never as plain variables, and
/// each function's `SECRETS_ARN` names only what it needs.
fn check_secrets(t: &Template) -> Checked {
    let credentials = secret_expression(t)?;
    let webhook = webhook_secret(t)?;
    let mut found = Vec::new();
    if t.doc
        .pointer("/Globals/Function/Environment/Variables/SECRETS_ARN")
        .is_some()
    {
        found.push("SECRETS_ARN is global: every function would read every secret".to_owned());
    }
    let resync = t.function("resync")?;
    let want = json!({ "Fn::Join": [",", [webhook, credentials]] });
    if t.env(resync, "SECRETS_ARN") != Some(want.clone()) {
        found.push(format!("{resync}'s SECRETS_ARN must be {want}"));
    }
    for binary in BINARIES {
        let id = t.function(binary)?;
        for name in [
            "OKTA_API_TOKEN",
            "OKTA_PRIVATE_KEY",
            "PORT_CLIENT_ID",
            "PORT_CLIENT_SECRET",
            "OKTA_WEBHOOK_SECRET",
        ] {
            if t.env(id, name).is_some() {
                found.push(format!(
                    "{id} has {name} in its environment: secrets go in the secret"
                ));
            }
        }
    }
    problems(found)
}

/// One grant: (action, resource expression as JSON text).
type Grant = (String, String);

/// Everything the function's role allows, with the role's own problems (managed policies,
/// NotAction, a trust policy other than Lambda's, …).
fn grants(t: &Template, function: &str) -> Result<BTreeSet<Grant>, String> {
    let f = t.resource(function)?;
    if t.prop(function, "Policies").is_some() {
        return Err(format!(
            "{function} has Policies: give it its own Role (SAM would add managed policies)"
        ));
    }
    let role_ref = f["Properties"].get("Role").ok_or(format!(
        "{function} has no Role: SAM would generate one with managed policies \
         (an SQS event adds AWSLambdaSQSQueueExecutionRole on every queue)"
    ))?;
    let (role_id, "Arn") =
        get_att_target(role_ref).ok_or(format!("{function}: Role is not GetAtt <role>.Arn"))?
    else {
        return Err(format!("{function}: Role is not GetAtt <role>.Arn"));
    };
    let role = t.resource_of_type(role_id, "AWS::IAM::Role")?;
    for key in ["ManagedPolicyArns", "PermissionsBoundary"] {
        if role["Properties"].get(key).is_some() {
            return Err(format!("{role_id} has {key}: write the grants out"));
        }
    }
    let trust = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"];
    let want_trust = json!([{
        "Effect": "Allow",
        "Principal": { "Service": "lambda.amazonaws.com" },
        "Action": "sts:AssumeRole"
    }]);
    if *trust != want_trust {
        return Err(format!("{role_id} must be assumable by Lambda only: {trust}"));
    }
    // Its inline policies, and any stand-alone policy attached to it.
    let mut documents: Vec<&Value> = role["Properties"]["Policies"]
        .as_array()
        .map(|p| p.iter().map(|p| &p["PolicyDocument"]).collect())
        .unwrap_or_default();
    for (id, policy) in t.resources() {
        let kind = policy["Type"].as_str().unwrap_or_default();
        if matches!(
            kind,
            "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" | "AWS::IAM::RolePolicy"
        ) {
            let props = &policy["Properties"];
            let attached = one_or_many(props.get("Roles"))
                .iter()
                .chain(props.get("RoleName"))
                .any(|r| ref_target(r) == Some(role_id));
            if attached {
                if kind == "AWS::IAM::ManagedPolicy" {
                    return Err(format!("{id} is a managed policy on {role_id}"));
                }
                documents.push(&props["PolicyDocument"]);
            }
        }
    }
    let mut grants = BTreeSet::new();
    for document in documents {
        // A statement under `Fn::If [cond, statement, Ref AWS::NoValue]` is granted when the
        // condition holds: it counts.
        let statements = one_or_many(document.get("Statement")).into_iter().flat_map(|st| {
            match st.get("Fn::If").and_then(Value::as_array).map(Vec::as_slice) {
                Some([_, then, otherwise]) => [then.clone(), otherwise.clone()]
                    .into_iter()
                    .filter(|b| ref_target(b) != Some("AWS::NoValue"))
                    .collect::<Vec<_>>(),
                _ => vec![st],
            }
        });
        for statement in statements {
            for key in ["NotAction", "NotResource", "Condition"] {
                if statement.get(key).is_some() {
                    return Err(format!("{role_id}: a statement uses {key}: {statement}"));
                }
            }
            if statement["Effect"] != "Allow" {
                continue;
            }
            let resources = one_or_many(statement.get("Resource"));
            let actions = one_or_many(statement.get("Action"));
            if resources.is_empty() || actions.is_empty() {
                return Err(format!(
                    "{role_id}: a statement lacks Action or Resource: {statement}"
                ));
            }
            for action in &actions {
                let action = action
                    .as_str()
                    .ok_or(format!("{role_id}: action {action} is not a string"))?;
                if action.contains('*') {
                    return Err(format!("{role_id}: wildcard action {action}"));
                }
                for resource in &resources {
                    if resource.as_str().is_some_and(|r| r.contains('*')) {
                        return Err(format!("{role_id}: {action} on the wildcard resource {resource}"));
                    }
                    grants.insert((action.to_ascii_lowercase(), resource.to_string()));
                }
            }
        }
    }
    Ok(grants)
}

/// The queue the webhook writes to (its `EVENTS_QUEUE_URL`).
fn events_queue(t: &Template) -> Result<String, String> {
    let webhook = t.function("webhook")?;
    let url = t
        .env(webhook, "EVENTS_QUEUE_URL")
        .ok_or("the webhook has no EVENTS_QUEUE_URL")?;
    let queue = ref_target(&url).ok_or(format!("EVENTS_QUEUE_URL is not Ref <queue>: {url}"))?;
    t.resource_of_type(queue, "AWS::SQS::Queue")?;
    Ok(queue.to_owned())
}

/// Each function may do exactly what it needs, on exactly its own resources.
fn check_iam(t: &Template) -> Checked {
    let queue = get_att(&events_queue(t)?, "Arn").to_string();
    let credentials = secret_expression(t)?.to_string();
    let webhook_secret = webhook_secret(t)?.to_string();
    let kms_key = reference("SecretsKmsKeyArn").to_string();
    let mut found = Vec::new();
    for binary in BINARIES {
        let id = t.function(binary)?;
        let granted = grants(t, id)?;
        let log_group = t
            .prop(id, "LoggingConfig")
            .and_then(|c| ref_target(&c["LogGroup"]).map(str::to_owned))
            .ok_or(format!("{id} has no LoggingConfig.LogGroup"))?;
        let logs = get_att(&log_group, "Arn").to_string();
        let mut expected: BTreeSet<Grant> = [
            ("logs:createlogstream", &logs),
            ("logs:putlogevents", &logs),
            // Only with a customer-managed key (under the HasKmsKey condition).
            ("kms:decrypt", &kms_key),
        ]
        .into_iter()
        .map(|(a, r)| (a.to_owned(), r.clone()))
        .collect();
        let secrets: &[&String] = match binary {
            "webhook" => &[&webhook_secret],
            "consumer" => &[&credentials],
            _ => &[&webhook_secret, &credentials],
        };
        expected.extend(
            secrets
                .iter()
                .map(|r| ("secretsmanager:getsecretvalue".to_owned(), (*r).clone())),
        );
        let on_queue: &[&str] = match binary {
            "webhook" => &["sqs:sendmessage"],
            // What the SQS event source mapping needs to poll; deleting is how it acknowledges.
            "consumer" => &[
                "sqs:receivemessage",
                "sqs:deletemessage",
                "sqs:getqueueattributes",
            ],
            // The catch-up hands what it finds to the consumer.
            _ => &["sqs:sendmessage"],
        };
        expected.extend(on_queue.iter().map(|a| (a.to_string(), queue.clone())));
        if binary == "resync" {
            // The catch-up's cursor and the resync's checkpoint, under its prefix of the
            // state bucket only.
            let cursor = json!({ "Fn::Sub": "${StateBucket.Arn}/okta-port/*" }).to_string();
            expected.insert(("s3:getobject".into(), cursor.clone()));
            expected.insert(("s3:putobject".into(), cursor.clone()));
            expected.insert(("s3:deleteobject".into(), cursor));
            expected.insert(("s3:listbucket".into(), get_att("StateBucket", "Arn").to_string()));
        }

        for (action, resource) in granted.difference(&expected) {
            found.push(format!(
                "{id} ({binary}) may {action} on {resource}, which it does not need"
            ));
        }
        for (action, resource) in expected.difference(&granted) {
            found.push(format!("{id} ({binary}) lacks {action} on {resource}"));
        }
        // The same rules, spelled out for readable failures.
        let sqs: Vec<&Grant> = granted.iter().filter(|(a, _)| a.starts_with("sqs:")).collect();
        match binary {
            "consumer" if sqs.iter().any(|(a, _)| a.starts_with("sqs:sendmessage")) => {
                found.push(format!("the consumer {id} can send to a queue"));
            }
            "resync" if sqs.iter().any(|(a, _)| a != "sqs:sendmessage") => found.push(format!(
                "the resync {id} may do more than send to the queue: {sqs:?}"
            )),
            _ => {}
        }
    }
    problems(found)
}

/// The webhook is reachable by Okta through a Function URL without SigV4, and the stack
/// outputs that URL.
fn check_webhook(t: &Template) -> Checked {
    let id = t.function("webhook")?;
    let mut found = Vec::new();
    let url_config = t.prop(id, "FunctionUrlConfig");
    if url_config.as_ref().map(|c| &c["AuthType"]) != Some(&json!("NONE")) {
        found.push(format!(
            "{id}: FunctionUrlConfig.AuthType must be NONE, is {url_config:?}"
        ));
    }
    // SAM names the URL resource <FunctionLogicalId>Url.
    let want = get_att(&format!("{id}Url"), "FunctionUrl");
    if t.doc["Outputs"]["WebhookUrl"]["Value"] != want {
        found.push(format!("Outputs.WebhookUrl must be {want}"));
    }
    let timeout = t.prop(id, "Timeout").ok_or(format!("{id} has no Timeout"))?;
    match t.resolve_number(&timeout, &BTreeMap::new()) {
        // Okta gives up after 3 s; nothing slow happens in the webhook.
        Ok(s) if s <= 10.0 => {}
        other => found.push(format!("{id}: Timeout must be at most 10 s, is {other:?}")),
    }
    problems(found)
}

/// The consumer reads the webhook's queue, one batch at a time, and reports partial failures.
fn check_consumer(t: &Template) -> Checked {
    let id = t.function("consumer")?;
    let queue = events_queue(t)?;
    let mut found = Vec::new();
    let events = t.events(id);
    let [(name, event)] = events.iter().collect::<Vec<_>>()[..] else {
        return Err(format!("{id} must have exactly one event, has {}", events.len()));
    };
    let props = &event["Properties"];
    if event["Type"] != "SQS" || props["Queue"] != get_att(&queue, "Arn") {
        found.push(format!("{id}.{name} must be an SQS event on {queue}: {event}"));
    }
    if props["FunctionResponseTypes"] != json!(["ReportBatchItemFailures"]) {
        found.push(format!(
            "{id}.{name}: FunctionResponseTypes must be [ReportBatchItemFailures]"
        ));
    }
    if props["ScalingConfig"]["MaximumConcurrency"]
        .as_u64()
        .is_none_or(|c| c > 2)
    {
        found.push(format!(
            "{id}.{name}: ScalingConfig.MaximumConcurrency must be set (2)"
        ));
    }
    if props.get("MaximumBatchingWindowInSeconds").is_none() {
        found.push(format!("{id}.{name}: no MaximumBatchingWindowInSeconds"));
    }
    match props
        .get("BatchSize")
        .map(|b| t.resolve_number(b, &BTreeMap::new()))
    {
        Some(Ok(n)) if (1.0..=10_000.0).contains(&n) => {}
        other => found.push(format!("{id}.{name}: BatchSize {other:?}")),
    }
    // A reservation below what the event source mapping may run throttles its invokes, and
    // each throttled invoke costs its messages a receive: a burst would reach the DLQ
    // unprocessed. Concurrent batches are made safe in the consumer instead.
    let maximum = props["ScalingConfig"]["MaximumConcurrency"]
        .as_f64()
        .unwrap_or(2.0);
    if let Some(reserved) = t.prop(id, "ReservedConcurrentExecutions")
        && reserved.as_f64().is_none_or(|r| r < maximum)
    {
        found.push(format!(
            "{id}: ReservedConcurrentExecutions {reserved} is below MaximumConcurrency {maximum}: \
             the event source mapping's invokes would throttle and burn receives"
        ));
    }
    for binary in ["webhook", "resync"] {
        let other = t.function(binary)?;
        if t.events(other).values().any(|e| e["Type"] == "SQS") {
            found.push(format!("{other} ({binary}) consumes a queue"));
        }
    }
    problems(found)
}

/// The queue redrives to the dead-letter queue after a few receives; the DLQ keeps
/// messages 14 days and is watched by an alarm.
fn check_redrive(t: &Template) -> Checked {
    let queue = events_queue(t)?;
    let redrive = &t.resource(&queue)?["Properties"]["RedrivePolicy"];
    let (dlq, "Arn") = get_att_target(&redrive["deadLetterTargetArn"]).ok_or(format!(
        "{queue}: RedrivePolicy.deadLetterTargetArn is not GetAtt <dlq>.Arn"
    ))?
    else {
        return Err(format!("{queue}: deadLetterTargetArn is not an Arn"));
    };
    if dlq == queue {
        return Err(format!("{queue} redrives to itself"));
    }
    let dlq_resource = t.resource_of_type(dlq, "AWS::SQS::Queue")?;
    let mut found = Vec::new();
    // A message must survive a 30-minute Port or Okta outage at the shortest visibility
    // timeout the parameters allow, and a poison message must still reach the DLQ.
    let shortest = t.doc["Mappings"]["ConsumerTimeouts"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, m)| m["VisibilityTimeout"].as_f64())
        .fold(f64::INFINITY, f64::min);
    match t.resolve_number(&redrive["maxReceiveCount"], &BTreeMap::new()) {
        Ok(n) if n * shortest >= 1800.0 && n <= 50.0 => {}
        other => found.push(format!(
            "{queue}: maxReceiveCount must outlast a 30-minute outage at the shortest visibility \
             timeout ({shortest} s) and stay at most 50: {other:?}"
        )),
    }
    if dlq_resource["Properties"]["MessageRetentionPeriod"] != json!(1_209_600) {
        found.push(format!("{dlq}: MessageRetentionPeriod must be 14 days (1209600)"));
    }
    let watched = t.of_type("AWS::CloudWatch::Alarm").any(|(_, a)| {
        let p = &a["Properties"];
        p["Namespace"] == "AWS/SQS"
            && p["MetricName"] == "ApproximateNumberOfMessagesVisible"
            && p["Dimensions"] == json!([{ "Name": "QueueName", "Value": get_att(dlq, "QueueName") }])
            && p["ComparisonOperator"] == "GreaterThanThreshold"
            && p["Threshold"] == json!(0)
    });
    if !watched {
        found.push(format!(
            "no alarm on {dlq}'s ApproximateNumberOfMessagesVisible > 0"
        ));
    }
    problems(found)
}

/// For every consumer timeout the parameters allow, the queue's visibility timeout is at
/// least six times it, plus the batching window (AWS's advice; otherwise a slow batch
/// becomes visible again and is processed twice).
fn check_visibility(t: &Template) -> Checked {
    let consumer = t.function("consumer")?;
    let queue = events_queue(t)?;
    let timeout = t
        .prop(consumer, "Timeout")
        .ok_or(format!("{consumer} has no Timeout"))?;
    let visibility = t.resource(&queue)?["Properties"]
        .get("VisibilityTimeout")
        .cloned()
        .ok_or(format!("{queue} has no VisibilityTimeout (default 30 s)"))?;
    let window = t.events(consumer).values().next().map_or(Ok(0.0), |e| {
        e["Properties"]
            .get("MaximumBatchingWindowInSeconds")
            .map_or(Ok(0.0), |w| t.resolve_number(w, &BTreeMap::new()))
    })?;
    // The timeouts to try: the parameter's default and every allowed value.
    let mut cases = vec![BTreeMap::new()];
    if let Some(name) = ref_target(&timeout) {
        let parameter = t.parameter(name).ok_or(format!("no parameter {name}"))?;
        for allowed in parameter["AllowedValues"].as_array().into_iter().flatten() {
            cases.push(BTreeMap::from([(name.to_owned(), allowed.clone())]));
        }
        if parameter.get("AllowedValues").is_none() {
            return Err(format!(
                "parameter {name} has no AllowedValues: the visibility timeout cannot follow every value"
            ));
        }
    }
    let mut found = Vec::new();
    for overrides in cases {
        let t_s = t.resolve_number(&timeout, &overrides)?;
        let v_s = t.resolve_number(&visibility, &overrides)?;
        if v_s < 6.0 * t_s + window {
            found.push(format!(
                "consumer timeout {t_s} s ({overrides:?}): visibility {v_s} s < 6 x {t_s} + {window}"
            ));
        }
    }
    problems(found)
}

/// The state machine that runs the nightly resync, one invocation after another.
const RESYNC_MACHINE: &str = "ResyncStateMachine";

/// Exactly one nightly schedule, EventBridge Scheduler, on the resync state machine (the
/// catch-up's on the resync function), the expression a parameter, and a failed run is
/// not retried (it alarms instead).
fn check_schedule(t: &Template) -> Checked {
    let resync = t.function("resync")?;
    let scheduled = ["Schedule", "ScheduleV2", "EventBridgeRule", "CloudWatchEvent"];
    let mut schedules = Vec::new();
    let machines: Vec<&str> = t
        .of_type("AWS::Serverless::StateMachine")
        .map(|(id, _)| id)
        .collect();
    let functions: Vec<&str> = BINARIES.iter().map(|b| t.function(b)).collect::<Result<_, _>>()?;
    for id in functions.into_iter().chain(machines) {
        for (name, event) in t.events(id) {
            if scheduled.iter().any(|s| event["Type"] == *s) {
                schedules.push((id.to_owned(), name, event));
            }
        }
    }
    let mut found = Vec::new();
    let resync_arn = get_att(resync, "Arn");
    for kind in ["AWS::Scheduler::Schedule", "AWS::Events::Rule"] {
        for (id, r) in t.of_type(kind) {
            let p = &r["Properties"];
            // A rule on an event pattern (Log Streaming) is no schedule: see the ingress test.
            if kind == "AWS::Events::Rule" && p.get("ScheduleExpression").is_none() {
                continue;
            }
            let targets = one_or_many(p.get("Target").or(p.get("Targets")));
            if targets.iter().any(|target| target["Arn"] != resync_arn) {
                found.push(format!("{id} targets something other than {resync}"));
            }
        }
    }
    // The catch-up's schedule (input `{"catchUp": true}`) is checked apart.
    let is_catch_up = |event: &Value| {
        event["Properties"]["Input"]
            .as_str()
            .and_then(|i| serde_json::from_str::<Value>(i).ok())
            .is_some_and(|i| i["catchUp"] == true)
    };
    let (catch_ups, resyncs): (Vec<_>, Vec<_>) = schedules.iter().partition(|(_, _, e)| is_catch_up(e));
    match &catch_ups[..] {
        [(id, name, event)] => {
            if id != resync || event["Type"] != "ScheduleV2" {
                found.push(format!(
                    "the catch-up schedule {id}.{name} must be a ScheduleV2 on {resync}"
                ));
            }
            let expression = event["Properties"]["ScheduleExpression"].to_string();
            if !(expression.contains("rate(15 minutes)") && expression.contains("rate(1 minute)")) {
                found.push(format!(
                    "{id}.{name}: every 15 minutes, every minute in Polling mode; is {expression}"
                ));
            }
        }
        other => found.push(format!("expected one catch-up schedule; found {}", other.len())),
    }
    let [(id, name, event)] = &resyncs[..] else {
        found.push(format!(
            "expected one resync schedule, on {RESYNC_MACHINE}; found {}",
            resyncs.len()
        ));
        return problems(found);
    };
    if id != RESYNC_MACHINE {
        found.push(format!(
            "the schedule {id}.{name} targets {id}, not the resync state machine {RESYNC_MACHINE}"
        ));
    }
    let p = &event["Properties"];
    if event["Type"] != "ScheduleV2" {
        found.push(format!(
            "{id}.{name} must be a ScheduleV2 (EventBridge Scheduler)"
        ));
    }
    match ref_target(&p["ScheduleExpression"]).and_then(|n| t.parameter(n)) {
        Some(param) if param["Default"].as_str().is_some_and(|d| d.starts_with("cron(")) => {}
        _ => found.push(format!(
            "{id}.{name}: ScheduleExpression must be a parameter defaulting to a cron()"
        )),
    }
    if p["RetryPolicy"]["MaximumRetryAttempts"]
        .as_u64()
        .is_none_or(|n| n > 1)
    {
        found.push(format!(
            "{id}.{name}: RetryPolicy.MaximumRetryAttempts must be 0 or 1"
        ));
    }
    if p["Input"]
        .as_str()
        .and_then(|i| serde_json::from_str::<Map<String, Value>>(i).ok())
        .is_none()
    {
        found.push(format!("{id}.{name}: Input must be a JSON object"));
    }
    if t.prop(resync, "EventInvokeConfig")
        .map(|c| c["MaximumRetryAttempts"].clone())
        != Some(json!(0))
    {
        found.push(format!(
            "{resync}: EventInvokeConfig.MaximumRetryAttempts must be 0 (Lambda retries async failures twice)"
        ));
    }
    match t.prop(resync, "Timeout") {
        Some(v) if v == json!(900) => {}
        other => found.push(format!("{resync}: Timeout must be 900, is {other:?}")),
    }
    problems(found)
}

/// Each function logs to its own `/aws/lambda/<name>` group with a retention.
fn check_log_groups(t: &Template) -> Checked {
    let mut found = Vec::new();
    let mut groups = BTreeSet::new();
    for binary in BINARIES {
        let id = t.function(binary)?;
        let name = t.prop(id, "FunctionName").unwrap_or_default();
        let Some(name) = name.get("Fn::Sub").and_then(Value::as_str) else {
            found.push(format!("{id}: FunctionName must be a Fn::Sub string, is {name}"));
            continue;
        };
        let group_id = t
            .prop(id, "LoggingConfig")
            .and_then(|c| ref_target(&c["LogGroup"]).map(str::to_owned));
        let Some(group_id) = group_id else {
            found.push(format!("{id}: LoggingConfig.LogGroup must be Ref <log group>"));
            continue;
        };
        let group = t.resource_of_type(&group_id, "AWS::Logs::LogGroup")?;
        let want = json!({ "Fn::Sub": format!("/aws/lambda/{name}") });
        if group["Properties"]["LogGroupName"] != want {
            found.push(format!("{group_id}: LogGroupName must be {want}"));
        }
        match t.resolve_number(&group["Properties"]["RetentionInDays"], &BTreeMap::new()) {
            Ok(d) if d > 0.0 => {}
            other => found.push(format!("{group_id}: RetentionInDays {other:?}")),
        }
        if !groups.insert(group_id.clone()) {
            found.push(format!("{group_id} is shared by several functions"));
        }
    }
    problems(found)
}

/// Errors and throttles of each function raise an alarm; alarm actions only point at the
/// SNS topic under the topic's own condition.
fn check_alarms(t: &Template) -> Checked {
    let mut found = Vec::new();
    for binary in BINARIES {
        let id = t.function(binary)?;
        for metric in ["Errors", "Throttles"] {
            let watched = t.of_type("AWS::CloudWatch::Alarm").any(|(_, a)| {
                let p = &a["Properties"];
                p["Namespace"] == "AWS/Lambda"
                    && p["MetricName"] == metric
                    && p["Dimensions"] == json!([{ "Name": "FunctionName", "Value": reference(id) }])
                    && p["ComparisonOperator"] == "GreaterThanThreshold"
                    && p["Threshold"] == json!(0)
            });
            if !watched {
                found.push(format!("no alarm on {id}'s {metric} > 0"));
            }
        }
    }
    // Deliveries the webhook refused with a 5xx are not function errors: watched apart.
    let webhook = t.function("webhook")?;
    let refusals_watched = t.of_type("AWS::CloudWatch::Alarm").any(|(_, a)| {
        let p = &a["Properties"];
        p["Namespace"] == "AWS/Lambda"
            && p["MetricName"] == "Url5xxCount"
            && p["Dimensions"] == json!([{ "Name": "FunctionName", "Value": reference(webhook) }])
            && p["Threshold"] == json!(0)
    });
    if !refusals_watched {
        found.push(format!(
            "no alarm on {webhook}'s Url5xxCount > 0 (deliveries refused to Okta)"
        ));
    }
    let topics: BTreeMap<&str, &Value> = t
        .of_type("AWS::SNS::Topic")
        .map(|(id, r)| (id, &r["Condition"]))
        .collect();
    for (id, alarm) in t.of_type("AWS::CloudWatch::Alarm") {
        for key in ["AlarmActions", "OKActions", "InsufficientDataActions"] {
            let Some(actions) = alarm["Properties"].get(key) else {
                continue;
            };
            let ok = actions
                .get("Fn::If")
                .and_then(Value::as_array)
                .and_then(|args| match args.as_slice() {
                    [Value::String(condition), Value::Array(then), otherwise] => {
                        Some((condition, then, otherwise))
                    }
                    _ => None,
                })
                .is_some_and(|(condition, then, otherwise)| {
                    ref_target(otherwise) == Some("AWS::NoValue")
                        && !then.is_empty()
                        && then.iter().all(|a| {
                            ref_target(a).is_some_and(|topic| topics.get(topic) == Some(&&json!(condition)))
                        })
                });
            if !ok {
                found.push(format!(
                    "{id}.{key} must be Fn::If [<topic's condition>, [Ref <topic>], Ref AWS::NoValue]"
                ));
            }
        }
    }
    problems(found)
}

// ------------------------------------------------------------------ the tests

fn assert_fails(check: fn(&Template) -> Checked, t: &Template, what: &str, expect_in_message: &str) {
    match check(t) {
        Ok(()) => panic!("the check passed a template where {what}"),
        Err(message) => assert!(
            message.contains(expect_in_message),
            "{what}: expected {expect_in_message:?} in:\n{message}"
        ),
    }
}

fn statements_of<'a>(doc: &'a mut Value, role: &str) -> &'a mut Vec<Value> {
    doc["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array_mut()
        .expect("a Statement list")
}

#[test]
fn short_form_tags_parse_to_long_form() {
    let t = Template::parse(
        "A: !Ref X\nB: !GetAtt Q.Arn\nC: !Sub '${AWS::StackName}-x'\nD: !If [C, !Ref Y, !Ref AWS::NoValue]\n\
         E: !FindInMap [M, !Ref P, K]\nF: !GetAtt [Q, QueueName]\n",
    );
    assert_eq!(t.doc["A"], json!({"Ref": "X"}));
    assert_eq!(t.doc["B"], json!({"Fn::GetAtt": ["Q", "Arn"]}));
    assert_eq!(t.doc["C"], json!({"Fn::Sub": "${AWS::StackName}-x"}));
    assert_eq!(
        t.doc["D"],
        json!({"Fn::If": ["C", {"Ref": "Y"}, {"Ref": "AWS::NoValue"}]})
    );
    assert_eq!(t.doc["E"], json!({"Fn::FindInMap": ["M", {"Ref": "P"}, "K"]}));
    assert_eq!(t.doc["F"], json!({"Fn::GetAtt": ["Q", "QueueName"]}));
}

#[test]
fn functions_build_the_three_binaries() {
    let t = Template::load();
    check_functions_and_binaries(&t).unwrap();

    let webhook = t.function("webhook").unwrap().to_owned();
    let renamed =
        t.mutated(|d| d["Resources"][&webhook]["Metadata"]["BuildProperties"]["Binary"] = json!("hook"));
    assert_fails(
        check_functions_and_binaries,
        &renamed,
        "a binary is renamed",
        "hook",
    );
    let x86 = t.mutated(|d| d["Globals"]["Function"]["Architectures"] = json!(["x86_64"]));
    assert_fails(
        check_functions_and_binaries,
        &x86,
        "the architecture is fixed",
        "Architectures",
    );
}

#[test]
fn secrets_come_only_from_secrets_manager() {
    let t = Template::load();
    check_secrets(&t).unwrap();

    let consumer = t.function("consumer").unwrap().to_owned();
    let leaked = t.mutated(|d| {
        d["Resources"][&consumer]["Properties"]["Environment"]["Variables"]["OKTA_API_TOKEN"] =
            json!("00abc");
    });
    assert_fails(check_secrets, &leaked, "a token is an env var", "OKTA_API_TOKEN");
    let webhook = t.function("webhook").unwrap().to_owned();
    let credentials = secret_expression(&t).unwrap();
    let webhook_reads_credentials = t.mutated(|d| {
        d["Resources"][&webhook]["Properties"]["Environment"]["Variables"]["SECRETS_ARN"] =
            credentials["Fn::If"][1].clone();
    });
    assert_fails(
        check_secrets,
        &webhook_reads_credentials,
        "the webhook reads the credentials",
        "credentials secret",
    );
    let global = t.mutated(|d| {
        d["Globals"]["Function"]["Environment"]["Variables"]["SECRETS_ARN"] = credentials.clone();
    });
    assert_fails(check_secrets, &global, "SECRETS_ARN is global", "global");
    let unconditional = t.mutated(|d| {
        let secret = ref_target(&credentials["Fn::If"][1]).unwrap().to_owned();
        d["Resources"][&secret]
            .as_object_mut()
            .unwrap()
            .remove("Condition");
    });
    assert_fails(
        check_secrets,
        &unconditional,
        "the secret is always created",
        "only exist",
    );
}

#[test]
fn each_function_may_do_only_its_own_job() {
    let t = Template::load();
    check_iam(&t).unwrap();

    let webhook_role = ref_target_role(&t, "webhook");
    let consumer_role = ref_target_role(&t, "consumer");
    let resync_role = ref_target_role(&t, "resync");
    let dlq = get_att_target(&t.resource(&events_queue(&t).unwrap()).unwrap()["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
        .unwrap()
        .0
        .to_owned();

    let to_dlq = t.mutated(|d| {
        statements_of(d, &webhook_role).push(json!({
            "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": get_att(&dlq, "Arn")
        }));
    });
    assert_fails(
        check_iam,
        &to_dlq,
        "the webhook may send to the DLQ",
        "which it does not need",
    );

    let consumer_sends = t.mutated(|d| {
        let queue = events_queue(&Template { doc: d.clone() }).unwrap();
        statements_of(d, &consumer_role).push(json!({
            "Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": get_att(&queue, "Arn")
        }));
    });
    assert_fails(
        check_iam,
        &consumer_sends,
        "the consumer may send",
        "can send to a queue",
    );

    let resync_polls = t.mutated(|d| {
        statements_of(d, &resync_role).push(json!({
            "Effect": "Allow", "Action": "sqs:ReceiveMessage", "Resource": get_att(&dlq, "Arn")
        }));
    });
    assert_fails(
        check_iam,
        &resync_polls,
        "the resync reads a queue",
        "may do more than send to the queue",
    );

    let wildcard_action = t.mutated(|d| statements_of(d, &consumer_role)[1]["Action"] = json!("sqs:*"));
    assert_fails(check_iam, &wildcard_action, "sqs:* is granted", "wildcard action");

    let wildcard_resource =
        t.mutated(|d| statements_of(d, &resync_role).last_mut().unwrap()["Resource"] = json!("*"));
    assert_fails(
        check_iam,
        &wildcard_resource,
        "any secret may be read",
        "wildcard resource",
    );

    let other_secret = t.mutated(|d| {
        statements_of(d, &webhook_role).last_mut().unwrap()["Resource"] =
            json!("arn:aws:secretsmanager:us-east-1:123456789012:secret:other-AbCdEf");
    });
    assert_fails(
        check_iam,
        &other_secret,
        "the webhook reads another secret",
        "lacks secretsmanager",
    );

    let webhook_credentials = t.mutated(|d| {
        let credentials = secret_expression(&Template { doc: d.clone() }).unwrap();
        statements_of(d, &webhook_role).last_mut().unwrap()["Resource"] = credentials;
    });
    assert_fails(
        check_iam,
        &webhook_credentials,
        "the webhook may read the Okta and Port credentials",
        "which it does not need",
    );

    let managed = t.mutated(|d| {
        d["Resources"][&consumer_role]["Properties"]["ManagedPolicyArns"] =
            json!(["arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"]);
    });
    assert_fails(
        check_iam,
        &managed,
        "a managed policy is attached",
        "ManagedPolicyArns",
    );

    let consumer = t.function("consumer").unwrap().to_owned();
    let sam_role = t.mutated(|d| {
        let props = d["Resources"][&consumer]["Properties"].as_object_mut().unwrap();
        props.remove("Role");
    });
    assert_fails(check_iam, &sam_role, "SAM would generate the role", "has no Role");

    let side_policy = t.mutated(|d| {
        d["Resources"]["Extra"] = json!({
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "PolicyName": "extra",
                "Roles": [reference(&webhook_role)],
                "PolicyDocument": {"Statement": [{
                    "Effect": "Allow", "Action": "sqs:PurgeQueue", "Resource": get_att(&dlq, "Arn")
                }]}
            }
        });
    });
    assert_fails(
        check_iam,
        &side_policy,
        "a stand-alone policy adds a grant",
        "sqs:purgequeue",
    );
}

fn ref_target_role(t: &Template, binary: &str) -> String {
    let id = t.function(binary).unwrap();
    get_att_target(&t.resource(id).unwrap()["Properties"]["Role"])
        .unwrap()
        .0
        .to_owned()
}

#[test]
fn webhook_has_a_public_function_url() {
    let t = Template::load();
    check_webhook(&t).unwrap();

    let webhook = t.function("webhook").unwrap().to_owned();
    let iam = t.mutated(|d| {
        d["Resources"][&webhook]["Properties"]["FunctionUrlConfig"]["AuthType"] = json!("AWS_IAM")
    });
    assert_fails(check_webhook, &iam, "the URL needs SigV4", "AuthType");
    let no_url = t.mutated(|d| {
        d["Resources"][&webhook]["Properties"]
            .as_object_mut()
            .unwrap()
            .remove("FunctionUrlConfig");
    });
    assert_fails(check_webhook, &no_url, "there is no URL", "AuthType");
    let slow = t.mutated(|d| d["Resources"][&webhook]["Properties"]["Timeout"] = json!(30));
    assert_fails(check_webhook, &slow, "the webhook may take 30 s", "Timeout");
}

#[test]
fn consumer_reports_batch_item_failures() {
    let t = Template::load();
    check_consumer(&t).unwrap();

    let consumer = t.function("consumer").unwrap().to_owned();
    let first_event = |d: &mut Value| -> String {
        d["Resources"][&consumer]["Properties"]["Events"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone()
    };
    let all_or_nothing = t.mutated(|d| {
        let name = first_event(d);
        d["Resources"][&consumer]["Properties"]["Events"][&name]["Properties"]
            .as_object_mut()
            .unwrap()
            .remove("FunctionResponseTypes");
    });
    assert_fails(
        check_consumer,
        &all_or_nothing,
        "a failure returns the whole batch",
        "ReportBatchItemFailures",
    );
    let dlq = t.mutated(|d| {
        let name = first_event(d);
        d["Resources"][&consumer]["Properties"]["Events"][&name]["Properties"]["Queue"] =
            get_att("DeadLetterQueue", "Arn");
    });
    assert_fails(
        check_consumer,
        &dlq,
        "the consumer reads another queue",
        "must be an SQS event",
    );
    let throttled = t.mutated(|d| {
        d["Resources"][&consumer]["Properties"]["ReservedConcurrentExecutions"] = json!(1);
    });
    assert_fails(
        check_consumer,
        &throttled,
        "the consumer's reservation is below the mapping's concurrency",
        "burn receives",
    );
}

#[test]
fn queue_redrives_to_the_dead_letter_queue() {
    let t = Template::load();
    check_redrive(&t).unwrap();

    let queue = events_queue(&t).unwrap();
    let to_itself = t.mutated(|d| {
        d["Resources"][&queue]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] = get_att(&queue, "Arn");
    });
    assert_fails(
        check_redrive,
        &to_itself,
        "the queue redrives to itself",
        "itself",
    );
    let no_redrive = t.mutated(|d| {
        d["Resources"][&queue]["Properties"]
            .as_object_mut()
            .unwrap()
            .remove("RedrivePolicy");
    });
    assert_fails(
        check_redrive,
        &no_redrive,
        "there is no redrive",
        "deadLetterTargetArn",
    );
    let forever =
        t.mutated(|d| d["Resources"][&queue]["Properties"]["RedrivePolicy"]["maxReceiveCount"] = json!(1000));
    assert_fails(
        check_redrive,
        &forever,
        "poison messages cycle 1000 times",
        "maxReceiveCount",
    );
    let impatient =
        t.mutated(|d| d["Resources"][&queue]["Properties"]["RedrivePolicy"]["maxReceiveCount"] = json!(5));
    assert_fails(
        check_redrive,
        &impatient,
        "a 30-minute outage sends messages to the DLQ",
        "30-minute outage",
    );
}

#[test]
fn visibility_timeout_covers_six_consumer_timeouts() {
    let t = Template::load();
    check_visibility(&t).unwrap();

    let queue = events_queue(&t).unwrap();
    let fixed = t.mutated(|d| d["Resources"][&queue]["Properties"]["VisibilityTimeout"] = json!(360));
    // 360 s covers the default 60 s timeout but not the larger allowed ones.
    assert_fails(
        check_visibility,
        &fixed,
        "the visibility is fixed at 360 s",
        "visibility 360",
    );
    let short = t.mutated(|d| {
        for row in d["Mappings"]["ConsumerTimeouts"]
            .as_object_mut()
            .unwrap()
            .values_mut()
        {
            row["VisibilityTimeout"] = json!(30);
        }
    });
    assert_fails(
        check_visibility,
        &short,
        "the visibility is 30 s",
        "visibility 30",
    );
}

#[test]
fn schedule_targets_the_resync() {
    let t = Template::load();
    check_schedule(&t).unwrap();

    let consumer = t.function("consumer").unwrap().to_owned();
    let moved = t.mutated(|d| {
        let events = d["Resources"][RESYNC_MACHINE]["Properties"]
            .as_object_mut()
            .unwrap()
            .remove("Events")
            .unwrap();
        let mut consumer_events = d["Resources"][&consumer]["Properties"]["Events"]
            .as_object()
            .unwrap()
            .clone();
        consumer_events.extend(events.as_object().unwrap().clone());
        d["Resources"][&consumer]["Properties"]["Events"] = Value::Object(consumer_events);
    });
    assert_fails(
        check_schedule,
        &moved,
        "the schedule invokes the consumer",
        "not the resync state machine",
    );
    let retried = t.mutated(|d| {
        for event in d["Resources"][RESYNC_MACHINE]["Properties"]["Events"]
            .as_object_mut()
            .unwrap()
            .values_mut()
        {
            event["Properties"].as_object_mut().unwrap().remove("RetryPolicy");
        }
    });
    assert_fails(
        check_schedule,
        &retried,
        "a failed resync is retried 185 times",
        "MaximumRetryAttempts",
    );
    let standalone = t.mutated(|d| {
        d["Resources"]["Stray"] = json!({
            "Type": "AWS::Scheduler::Schedule",
            "Properties": {"Target": {"Arn": get_att(&consumer, "Arn"), "RoleArn": "x"}}
        });
    });
    assert_fails(
        check_schedule,
        &standalone,
        "a stand-alone schedule targets the consumer",
        "Stray",
    );
}

#[test]
fn each_function_has_its_own_log_group() {
    let t = Template::load();
    check_log_groups(&t).unwrap();

    let webhook = t.function("webhook").unwrap().to_owned();
    let consumer = t.function("consumer").unwrap().to_owned();
    let shared = t.mutated(|d| {
        d["Resources"][&consumer]["Properties"]["LoggingConfig"] =
            d["Resources"][&webhook]["Properties"]["LoggingConfig"].clone();
    });
    assert_fails(
        check_log_groups,
        &shared,
        "two functions share a log group",
        "LogGroupName",
    );
}

#[test]
fn errors_throttles_and_the_dlq_raise_alarms() {
    let t = Template::load();
    check_alarms(&t).unwrap();

    let resync = t.function("resync").unwrap().to_owned();
    let unwatched = t.mutated(|d| {
        let alarms: Vec<String> = d["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, r)| {
                r["Type"] == "AWS::CloudWatch::Alarm"
                    && r["Properties"]["MetricName"] == "Throttles"
                    && r["Properties"]["Dimensions"][0]["Value"] == reference(&resync)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in alarms {
            d["Resources"].as_object_mut().unwrap().remove(&id);
        }
    });
    assert_fails(
        check_alarms,
        &unwatched,
        "the resync's throttles are not watched",
        "Throttles",
    );
    let refusals_unwatched = t.mutated(|d| {
        d["Resources"]
            .as_object_mut()
            .unwrap()
            .retain(|_, r| r["Properties"]["MetricName"] != "Url5xxCount");
    });
    assert_fails(
        check_alarms,
        &refusals_unwatched,
        "the webhook's 5xx answers to Okta are not watched",
        "Url5xxCount",
    );
    let unconditional = t.mutated(|d| {
        let topic = d["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, r)| r["Type"] == "AWS::SNS::Topic")
            .map(|(id, _)| id.clone())
            .unwrap();
        for r in d["Resources"].as_object_mut().unwrap().values_mut() {
            if r["Type"] == "AWS::CloudWatch::Alarm" {
                r["Properties"]["AlarmActions"] = json!([reference(&topic)]);
            }
        }
    });
    assert_fails(
        check_alarms,
        &unconditional,
        "alarms point at a topic that may not exist",
        "AlarmActions",
    );
}

#[test]
fn the_ingress_mode_decides_between_the_public_url_and_log_streaming() {
    let t = Template::load();
    let doc = &t.doc;
    let resources = doc["Resources"].as_object().unwrap();
    let condition = |id: &str| resources[id]["Condition"].as_str().unwrap_or("none").to_owned();
    // EventHook: the webhook and everything about it exist only in that mode.
    for (id, r) in resources {
        let webhook_part = id.starts_with("Webhook") && id != "WebhookSecret";
        if webhook_part {
            assert_eq!(condition(id), "HookIngress", "{id} ({})", r["Type"]);
        }
    }
    for output in ["WebhookUrl", "WebhookFunctionName"] {
        assert_eq!(
            doc["Outputs"][output]["Condition"], "HookIngress",
            "output {output}"
        );
    }
    let register = &doc["Conditions"]["RegisterHook"];
    assert!(
        register.to_string().contains("HookIngress"),
        "the hook is registered only in hook mode: {register}"
    );
    // LogStreaming: the partner bus, a rule on exactly the handled types, the queue as its
    // only target, and a queue policy that lets that rule alone send.
    let bus = &resources["OktaEventBus"];
    assert_eq!(condition("OktaEventBus"), "StreamingIngress");
    assert!(
        bus["Properties"]["EventSourceName"]
            .to_string()
            .contains("OktaEventSourceName")
    );
    let rule = &resources["OktaEventsRule"];
    assert_eq!(condition("OktaEventsRule"), "StreamingIngress");
    assert_eq!(rule["Properties"]["EventBusName"], reference("OktaEventBus"));
    let types: Vec<&str> = rule["Properties"]["EventPattern"]["detail"]["eventType"]
        .as_array()
        .expect("the rule matches detail.eventType")
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        okta_port::events::HANDLED_EVENT_TYPES,
        "the rule's types are the handled ones"
    );
    let targets = rule["Properties"]["Targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0]["Arn"], get_att("EventsQueue", "Arn"));
    let policy = &resources["EventsQueuePolicy"];
    assert_eq!(condition("EventsQueuePolicy"), "StreamingIngress");
    let statements = policy["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    assert_eq!(statements.len(), 1);
    let statement = &statements[0];
    assert_eq!(statement["Principal"]["Service"], "events.amazonaws.com");
    assert_eq!(statement["Action"], "sqs:SendMessage");
    assert_eq!(
        statement["Condition"]["ArnEquals"]["aws:SourceArn"],
        get_att("OktaEventsRule", "Arn"),
        "only the Okta rule may send"
    );
    let modes = &doc["Parameters"]["IngressMode"];
    assert_eq!(modes["Default"], "EventHook");
    assert_eq!(
        modes["AllowedValues"],
        serde_json::json!(["EventHook", "LogStreaming", "Polling"])
    );
}

#[test]
fn the_state_bucket_is_private_encrypted_and_expires_what_is_stale() {
    let t = Template::load();
    let bucket = &t.doc["Resources"]["StateBucket"]["Properties"];
    let block = &bucket["PublicAccessBlockConfiguration"];
    for setting in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[setting], true, "{setting}");
    }
    let encryption = &bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0];
    assert!(encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"].is_string());
    let rules = bucket["LifecycleConfiguration"]["Rules"]
        .as_array()
        .expect("a lifecycle rule");
    assert!(
        rules
            .iter()
            .any(|r| r["Status"] == "Enabled" && r["ExpirationInDays"].as_u64().is_some())
    );
    let policy = &t.doc["Resources"]["StateBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0];
    assert_eq!(policy["Effect"], "Deny");
    assert_eq!(
        policy["Condition"]["Bool"]["aws:SecureTransport"], "false",
        "TLS only"
    );
    let env = t.prop(t.function("resync").unwrap(), "Environment").unwrap();
    assert_eq!(
        env["Variables"]["STATE_URL"],
        json!({ "Fn::Sub": "s3://${StateBucket}/okta-port" })
    );
    assert_eq!(env["Variables"]["EVENTS_QUEUE_URL"], reference("EventsQueue"));
}

/// The nightly resync runs as a Standard state machine that invokes the resync function
/// with `{"resumable": true}` until its answer says it is done: one execution at a time,
/// Lambda's own errors retried, failures alarmed.
fn check_state_machine(t: &Template) -> Checked {
    let mut found = Vec::new();
    let resync = t.function("resync")?;
    let machine = &t.resources()[RESYNC_MACHINE];
    let p = &machine["Properties"];
    if machine["Type"] != "AWS::Serverless::StateMachine" || p["Type"] != "STANDARD" {
        return Err(format!(
            "{RESYNC_MACHINE} must be a STANDARD AWS::Serverless::StateMachine"
        ));
    }
    let states = &p["Definition"]["States"];
    let invoke = states
        .as_object()
        .into_iter()
        .flatten()
        .find(|(_, s)| s["Resource"] == "arn:aws:states:::lambda:invoke");
    let Some((invoke_name, invoke)) = invoke else {
        return Err(format!("{RESYNC_MACHINE} never invokes a function"));
    };
    let function = invoke["Parameters"]["FunctionName"].as_str().unwrap_or_default();
    let substituted = function
        .strip_prefix("${")
        .and_then(|f| f.strip_suffix('}'))
        .map(|name| p["DefinitionSubstitutions"][name].clone());
    if substituted != Some(get_att(resync, "Arn")) {
        found.push(format!("{invoke_name} must invoke {resync}, invokes {function}"));
    }
    if invoke["Parameters"]["Payload"]["resumable"] != true {
        found.push(format!("{invoke_name} must send {{\"resumable\": true}}"));
    }
    let retried: Vec<&str> = invoke["Retry"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["ErrorEquals"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    for error in ["Lambda.ServiceException", "Lambda.TooManyRequestsException"] {
        if !retried.contains(&error) {
            found.push(format!("{invoke_name} does not retry {error}"));
        }
    }
    if retried.contains(&"States.ALL") || retried.contains(&"States.TaskFailed") {
        found.push(format!(
            "{invoke_name} retries the resync's own failures: they must fail the execution"
        ));
    }
    // The loop: a Choice on the answer's `resumable` goes back to the invocation.
    let loops = states.as_object().into_iter().flatten().any(|(_, s)| {
        s["Type"] == "Choice"
            && s["Choices"].as_array().into_iter().flatten().any(|c| {
                c["Variable"] == "$.run.resumable" && c["BooleanEquals"] == true && c["Next"] == *invoke_name
            })
    });
    if !loops || invoke["ResultSelector"]["resumable.$"] != "$.Payload.resumable" {
        found.push(format!(
            "{RESYNC_MACHINE} must invoke {invoke_name} again while its answer is resumable"
        ));
    }
    let start = &states[p["Definition"]["StartAt"].as_str().unwrap_or_default()];
    if start["Resource"] != "arn:aws:states:::aws-sdk:sfn:listExecutions"
        || start["Parameters"]["StatusFilter"] != "RUNNING"
    {
        found.push(format!(
            "{RESYNC_MACHINE} must first look for another running execution"
        ));
    }
    let alarmed = t.of_type("AWS::CloudWatch::Alarm").any(|(_, a)| {
        let text = a["Properties"].to_string();
        text.contains("ExecutionsFailed") && text.contains(&json!({ "Ref": RESYNC_MACHINE }).to_string())
    });
    if !alarmed {
        found.push(format!("no alarm on {RESYNC_MACHINE}'s failed executions"));
    }
    problems(found)
}

#[test]
fn the_nightly_resync_is_a_state_machine_that_goes_on_until_done() {
    let t = Template::load();
    check_state_machine(&t).unwrap();
    let no_loop = t.mutated(|d| {
        let states = d["Resources"][RESYNC_MACHINE]["Properties"]["Definition"]["States"]
            .as_object_mut()
            .unwrap();
        for state in states.values_mut() {
            if state["Type"] == "Choice" {
                state["Choices"] = json!([]);
            }
        }
    });
    assert_fails(
        check_state_machine,
        &no_loop,
        "a run that stops is never resumed",
        "again while",
    );
    let retry_all = t.mutated(|d| {
        let states = d["Resources"][RESYNC_MACHINE]["Properties"]["Definition"]["States"]
            .as_object_mut()
            .unwrap();
        for state in states.values_mut() {
            if state["Resource"] == "arn:aws:states:::lambda:invoke" {
                state["Retry"] = json!([{ "ErrorEquals": ["States.ALL"], "MaxAttempts": 3 }]);
            }
        }
    });
    assert_fails(
        check_state_machine,
        &retry_all,
        "a failed resync is retried",
        "own failures",
    );
}
