//! Harbor compatibility, checked against Harbor's own API description
//! (`../shared/harbor/swagger.yaml`): a real `berth` (auth on) holding a
//! pushed image, a robot, a quota, an immutability rule, a webhook policy,
//! audit entries and a GC run answers every `GET` of Harbor's API that it
//! implements with the status the description documents and a body whose
//! every field is one the description defines for that answer, with the
//! JSON type it gives (objects recursively, arrays item by item). A field
//! berth adds must be listed in `BERTH_FIELDS` (and `docs/api.md`), so a
//! renamed or retyped field fails here. The creating requests are made
//! with bodies built from the description's request schemas (every
//! property it defines, typed as it says), as a Harbor client would send
//! them.

use std::path::PathBuf;

use berth_testkit::distribution::basic;
use berth_testkit::oci_layout;
use berth_testkit::server::{api_json, header, skopeo_ok, TestServer};
use serde_json::{json, Map, Value};

const ADMIN_PW: &str = "compat-admin-pw";

/// Fields berth sends that Harbor's description does not define, by
/// definition: documented in `docs/api.md`.
const BERTH_FIELDS: &[(&str, &str)] = &[
    // What the GC run found and deleted, and why it failed (docs/api.md,
    // system/gc).
    ("GCHistory", "report"),
    ("GCHistory", "error"),
    // Harbor v2.0 had it; later descriptions dropped it with ChartMuseum.
    ("ProjectSummary", "chart_count"),
    // A proxy cache project's upstream (Harbor has it in `Project` too,
    // newer descriptions only).
    ("Project", "registry_id"),
    // The bytes a repository's artifacts hold, each blob once (the
    // console's repository list shows it).
    ("Repository", "size"),
];

struct Swagger(Value);

impl Swagger {
    fn load() -> Swagger {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/harbor/swagger.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (../shared/harbor/swagger.yaml)", path.display()));
        Swagger(serde_yaml::from_str(&text).expect("swagger YAML"))
    }

    /// The schema of `method template`'s `status` answer.
    fn response(&self, method: &str, template: &str, status: &str) -> Value {
        let op = &self.0["paths"][template][method];
        assert!(op.is_object(), "swagger has no {method} {template}");
        let r = &op["responses"][status];
        assert!(
            r.is_object(),
            "swagger documents no {status} for {method} {template}"
        );
        r["schema"].clone()
    }

    fn definition(&self, name: &str) -> &Value {
        let d = &self.0["definitions"][name];
        assert!(d.is_object(), "swagger has no definition {name}");
        d
    }

    /// Follows `$ref`s: the schema and the definition name it came from.
    fn resolve<'a>(
        &'a self,
        schema: &'a Value,
        mut name: Option<String>,
    ) -> (&'a Value, Option<String>) {
        let mut s = schema;
        while let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let n = r.trim_start_matches("#/definitions/").to_owned();
            s = self.definition(&n);
            name = Some(n);
        }
        (s, name)
    }

    /// Every field of `value` is one `schema` defines, of its type; the
    /// problems found, each with its path.
    fn check(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        name: Option<String>,
        out: &mut Vec<String>,
    ) {
        let (s, name) = self.resolve(schema, name);
        if value.is_null() {
            return; // absent in Go's JSON, as `null` here
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            // Merge the parts' properties.
            let mut props = Map::new();
            for part in all {
                let (p, _) = self.resolve(part, None);
                if let Some(m) = p.get("properties").and_then(Value::as_object) {
                    props.extend(m.clone());
                }
            }
            let merged = json!({"type": "object", "properties": props});
            return self.check(&merged, value, at, name, out);
        }
        let ty =
            s.get("type")
                .and_then(Value::as_str)
                .unwrap_or(if s.get("properties").is_some() {
                    "object"
                } else {
                    ""
                });
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true, // untyped: anything
        };
        if !ok {
            out.push(format!("{at}: {value} is not {ty}"));
            return;
        }
        match ty {
            "array" => {
                if let (Some(items), Some(list)) = (s.get("items"), value.as_array()) {
                    for (i, v) in list.iter().enumerate() {
                        self.check(items, v, &format!("{at}[{i}]"), None, out);
                    }
                }
            }
            "object" => {
                let Some(obj) = value.as_object() else { return };
                let props = s.get("properties").and_then(Value::as_object);
                let extra = s.get("additionalProperties");
                for (k, v) in obj {
                    match props.and_then(|p| p.get(k)) {
                        Some(p) => self.check(p, v, &format!("{at}.{k}"), None, out),
                        None => match extra {
                            Some(Value::Object(e)) if !e.is_empty() => self.check(
                                &Value::Object(e.clone()),
                                v,
                                &format!("{at}.{k}"),
                                None,
                                out,
                            ),
                            Some(Value::Object(_)) | Some(Value::Bool(true)) => {}
                            _ if props.is_none() => {}
                            _ => {
                                let allowed = name.as_deref().is_some_and(|n| {
                                    BERTH_FIELDS.iter().any(|(d, f)| *d == n && f == k)
                                });
                                if !allowed {
                                    out.push(format!(
                                        "{at}.{k}: not a field of {}",
                                        name.as_deref().unwrap_or("the documented answer")
                                    ));
                                }
                            }
                        },
                    }
                }
            }
            _ => {}
        }
    }

    /// A request body with every property `definition` defines, typed as
    /// it says, overridden by `set` (what a Harbor client fills in).
    fn body(&self, definition: &str, set: Value) -> Value {
        let (d, _) = self.resolve(self.definition(definition), None);
        let mut out = Map::new();
        if let Some(props) = d.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                let (p, _) = self.resolve(p, None);
                if p.get("readOnly").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                let v = match p.get("type").and_then(Value::as_str) {
                    Some("string") => json!(""),
                    Some("boolean") => json!(false),
                    Some("array") => json!([]),
                    Some("object") => json!({}),
                    _ => continue, // numbers and references: only when set
                };
                out.insert(k.clone(), v);
            }
        }
        if let Value::Object(m) = set {
            out.extend(m);
        }
        Value::Object(out)
    }
}

#[test]
fn berth_answers_harbors_api_as_harbors_description_says() {
    let swagger = Swagger::load();
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("data");
    let env = [
        ("BERTH_AUTH_ENABLED", "true"),
        ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
    ];
    let server = TestServer::start(&data, &env);
    let admin = basic("admin", ADMIN_PW);
    let call =
        |method: &str, path: &str, body: &Value| api_json(server.addr, &admin, method, path, body);
    let created = |what: &str, (st, h, v): (u16, Vec<(String, String)>, Value)| -> String {
        assert_eq!(st, 201, "{what}: {v}");
        header(&h, "location").unwrap_or_default().to_owned()
    };

    // Made with Harbor-shaped bodies.
    created(
        "project",
        call(
            "POST",
            "/api/v2.0/projects",
            &swagger.body(
                "ProjectReq",
                json!({"project_name": "team", "metadata": {"public": "false"}, "storage_limit": -1}),
            ),
        ),
    );
    let user = created(
        "user",
        call(
            "POST",
            "/api/v2.0/users",
            &swagger.body(
                "UserCreationReq",
                json!({"username": "dev", "password": "Dev-password-1", "email": "dev@example.com", "realname": "Dev"}),
            ),
        ),
    );
    created(
        "member",
        call(
            "POST",
            "/api/v2.0/projects/team/members",
            &json!({"role_id": 2, "member_user": {"username": "dev"}}),
        ),
    );
    let (st, _, robot) = call(
        "POST",
        "/api/v2.0/robots",
        &json!({"name": "ci", "duration": -1, "level": "project", "description": "",
                "permissions": [{"kind": "project", "namespace": "team",
                                 "access": [{"resource": "repository", "action": "pull"}]}]}),
    );
    assert_eq!(st, 201, "{robot}");
    let mut out = Vec::new();
    swagger.check(
        &swagger.response("post", "/robots", "201"),
        &robot,
        "POST /robots",
        None,
        &mut out,
    );
    created(
        "immutability rule",
        call(
            "POST",
            "/api/v2.0/projects/team/immutabletagrules",
            &json!({"disabled": false, "action": "immutable", "template": "immutable_template",
                    "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "rel-*"}],
                    "scope_selectors": {"repository": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}]}}),
        ),
    );
    let hook = created(
        "webhook policy",
        call(
            "POST",
            "/api/v2.0/projects/team/webhook/policies",
            &swagger.body(
                "WebhookPolicy",
                json!({"name": "ci", "enabled": true, "event_types": ["PUSH_ARTIFACT"],
                       "targets": [{"type": "http", "address": "http://192.0.2.1/hook", "auth_header": "x",
                                    "skip_cert_verify": false, "payload_format": "Default"}]}),
            ),
        ),
    );
    let layout = work.path().join("layout");
    oci_layout::write_image(&layout, "v1", "compat", &[1200]);
    skopeo_ok(
        &server,
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("admin:{ADMIN_PW}"),
            "--preserve-digests",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{}/team/app:v1", server.url()),
        ],
    );
    let (st, h, _) = call(
        "POST",
        "/api/v2.0/system/gc/schedule",
        &json!({"schedule": {"type": "Manual"}, "parameters": {"delete_untagged": false, "dry_run": true}}),
    );
    assert_eq!(st, 201);
    let gc = header(&h, "location")
        .expect("location")
        .trim_start_matches("/api/v2.0")
        .to_owned();
    for _ in 0..100 {
        let (_, _, run) = call("GET", &format!("/api/v2.0{gc}"), &Value::Null);
        if run["job_status"] == "Success" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (_, _, team) = call("GET", "/api/v2.0/projects/team", &Value::Null);
    let retention = created(
        "retention policy",
        call(
            "POST",
            "/api/v2.0/retentions",
            &swagger.body(
                "RetentionPolicy",
                json!({"algorithm": "or",
                       "rules": [{"disabled": false, "action": "retain", "template": "always", "params": {},
                                  "tag_selectors": [{"kind": "doublestar", "decoration": "matches",
                                                     "pattern": "**", "extras": "{\"untagged\":true}"}],
                                  "scope_selectors": {"repository": [{"kind": "doublestar",
                                      "decoration": "repoMatches", "pattern": "**"}]}}],
                       "trigger": {"kind": "Schedule", "settings": {"cron": ""}},
                       "scope": {"level": "project", "ref": team["project_id"]}}),
            ),
        ),
    )
    .trim_start_matches("/api/v2.0")
    .to_owned();
    let retention_run = created(
        "retention run",
        call(
            "POST",
            &format!("/api/v2.0{retention}/executions"),
            &json!({"dry_run": true}),
        ),
    )
    .trim_start_matches("/api/v2.0")
    .to_owned();
    for _ in 0..100 {
        let (_, _, runs) = call(
            "GET",
            &format!("/api/v2.0{retention}/executions"),
            &Value::Null,
        );
        if runs[0]["status"] != "Running" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (_, _, quotas) = call("GET", "/api/v2.0/quotas?reference_id=2", &Value::Null);
    let quota = quotas[0]["id"].as_u64().unwrap_or(2);
    let user_id = user.rsplit('/').next().unwrap_or_default().to_owned();
    let robot_id = robot["id"].as_u64().expect("robot id");
    let hook_id = hook.rsplit('/').next().unwrap_or_default().to_owned();

    // (swagger template, berth path): every GET berth implements.
    let gets: Vec<(&str, String)> = vec![
        ("/projects", "/projects".into()),
        ("/projects/{project_name_or_id}", "/projects/team".into()),
        (
            "/projects/{project_name_or_id}/summary",
            "/projects/team/summary".into(),
        ),
        (
            "/projects/{project_name_or_id}/members",
            "/projects/team/members".into(),
        ),
        (
            "/projects/{project_name}/repositories",
            "/projects/team/repositories".into(),
        ),
        (
            "/projects/{project_name}/repositories/{repository_name}",
            "/projects/team/repositories/app".into(),
        ),
        (
            "/projects/{project_name}/repositories/{repository_name}/artifacts",
            "/projects/team/repositories/app/artifacts".into(),
        ),
        (
            "/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}",
            "/projects/team/repositories/app/artifacts/v1".into(),
        ),
        (
            "/projects/{project_name_or_id}/immutabletagrules",
            "/projects/team/immutabletagrules".into(),
        ),
        (
            "/projects/{project_name_or_id}/webhook/policies",
            "/projects/team/webhook/policies".into(),
        ),
        (
            "/projects/{project_name_or_id}/webhook/policies/{webhook_policy_id}",
            format!("/projects/team/webhook/policies/{hook_id}"),
        ),
        (
            "/projects/{project_name_or_id}/webhook/jobs",
            format!("/projects/team/webhook/jobs?policy_id={hook_id}"),
        ),
        ("/audit-logs", "/audit-logs".into()),
        (
            "/projects/{project_name}/logs",
            "/projects/team/logs".into(),
        ),
        ("/users", "/users".into()),
        ("/users/current", "/users/current".into()),
        ("/users/{user_id}", format!("/users/{user_id}")),
        ("/robots", "/robots".into()),
        ("/robots/{robot_id}", format!("/robots/{robot_id}")),
        ("/registries", "/registries".into()),
        ("/replication/policies", "/replication/policies".into()),
        ("/quotas", "/quotas".into()),
        ("/quotas/{id}", format!("/quotas/{quota}")),
        ("/system/gc", "/system/gc".into()),
        ("/system/gc/{gc_id}", gc.clone()),
        ("/retentions/metadatas", "/retentions/metadatas".into()),
        ("/retentions/{id}", retention.clone()),
        (
            "/retentions/{id}/executions",
            format!("{retention}/executions"),
        ),
        (
            "/retentions/{id}/executions/{eid}/tasks",
            format!("{retention_run}/tasks"),
        ),
    ];
    for (template, path) in &gets {
        let (st, _, body) = call("GET", &format!("/api/v2.0{path}"), &Value::Null);
        assert_eq!(st, 200, "GET {path}: {body}");
        let schema = swagger.response("get", template, "200");
        swagger.check(&schema, &body, &format!("GET {path}"), None, &mut out);
        assert!(!body.is_null(), "GET {path}: empty");
    }
    // Lists that must not be empty here, so their items were checked.
    let must_list: Vec<String> = vec![
        "/projects".into(),
        "/audit-logs".into(),
        "/robots".into(),
        "/quotas".into(),
        "/system/gc".into(),
        "/projects/team/repositories/app/artifacts".into(),
        "/projects/team/webhook/policies".into(),
        format!("{retention}/executions"),
        format!("{retention_run}/tasks"),
    ];
    for path in &must_list {
        let (_, _, body) = call("GET", &format!("/api/v2.0{path}"), &Value::Null);
        assert!(
            body.as_array().is_some_and(|a| !a.is_empty()),
            "GET {path}: {body}"
        );
    }
    // Errors are Harbor's `Errors`.
    let (st, _, err) = call("GET", "/api/v2.0/projects/nope", &Value::Null);
    assert_eq!(st, 404);
    swagger.check(
        &json!({"$ref": "#/definitions/Errors"}),
        &err,
        "404",
        None,
        &mut out,
    );
    assert!(err["errors"][0]["code"].is_string() && err["errors"][0]["message"].is_string());
    assert!(
        out.is_empty(),
        "answers that differ from Harbor's description:\n{}",
        out.join("\n")
    );
}
