//! The OpenAPI 3.1 document, generated from the handlers' annotations so it cannot drift.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::document::{self, SESSION_ID_PATTERN, USER_ID_MAX_LEN, USER_ID_PATTERN};
use crate::error::PROBLEM_JSON;
use crate::routes::{audit, backend, holder, operations};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sessiond",
        description = "The session service of web and mobile apps: create sessions at login, validate tokens for every request, revoke at logout.",
    ),
    paths(
        holder::forward_auth, holder::read, holder::patch, holder::rotate, holder::logout,
        backend::create, backend::read, backend::patch, backend::revoke, backend::list_user,
        backend::revoke_user, backend::revoke_everyone, audit::user_events, audit::session_events,
        operations::healthz, operations::readyz, operations::metrics, operations::openapi,
    ),
    components(schemas(
        document::SessionDocument, document::IssuedSession, document::SessionList,
        document::Revoked, document::CreateSession, document::PatchSession,
        document::ProblemDocument, sessiond_wire::EventDocument, sessiond_wire::EventPage,
    )),
    modifiers(&SecuritySchemes, &Contract),
    tags(
        (name = "token holder", description = "A browser or app presenting its own session token"),
        (name = "backend", description = "Trusted backends authenticated by X-Api-Key"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("__Host-sid"))),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
    }
}

/// What every operation of the same kind has in common, written once instead of on each
/// handler (where one forgotten line is a document that contradicts the server):
///
/// - parameters named `sessionId`, `except` and `exceptSessionId` have the session id's
///   shape, `userId` the user id's, and `If-Match` the entity-tag list `extract::if_match`
///   reads;
/// - every operation that takes a body may answer `408` (the body stopped arriving), `413`
///   (too large) and `415` (not JSON), and `400`;
/// - every operation behind a credential may answer `401`; a token holder's also `429` (the
///   client presented too many invalid tokens, with `guard.reject_over_limit`);
/// - every operation but `/healthz`, `/metrics` and `/openapi.json` may answer `503` (the
///   store cannot be reached, or the request ran out of time), and its path `405` for a method
///   it does not serve;
/// - except the gateway's check, `GET /v1/auth`, which answers only `200`, `401` or `503`.
struct Contract;

impl Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            let store_free = matches!(path.as_str(), "/healthz" | "/metrics" | "/openapi.json");
            // The gateway's check answers only 200, 401 or 503, whatever it is sent.
            let gateway = path == "/v1/auth";
            for operation in operations(item) {
                contract(operation, store_free, gateway);
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

fn contract(operation: &mut Operation, store_free: bool, gateway: bool) {
    for parameter in operation.parameters.iter_mut().flatten() {
        let schema = match parameter.name.as_str() {
            "sessionId" | "except" | "exceptSessionId" => {
                Some(text(SESSION_ID_PATTERN, 21, Some(21)))
            }
            "userId" => Some(text(USER_ID_PATTERN, 1, Some(USER_ID_MAX_LEN))),
            // Bounded by the request head's limit (431 beyond), like every header.
            "If-Match" => Some(text(IF_MATCH_PATTERN, 1, None)),
            _ => None,
        };
        if let Some(schema) = schema {
            parameter.schema = Some(schema.into());
        }
    }
    let credentialed = operation.security.is_some();
    let holder = operation.tags.iter().flatten().any(|t| t == "token holder");
    let mut add = |status: &str, description: &str| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| problem_response(description).into());
    };
    if operation.request_body.is_some() {
        add("400", "Malformed body");
        add("408", "The body stopped arriving before it was complete");
        add("413", "The body is larger than the limit");
        add("415", "The body is not application/json");
    }
    if credentialed {
        add("401", "Missing or invalid credential");
    }
    if holder && !gateway {
        add(
            "429",
            "Too many invalid tokens from this client; see Retry-After",
        );
    }
    if !store_free {
        add(
            "503",
            "The store cannot be reached, or the request ran out of time; see Retry-After",
        );
    }
    if !gateway {
        add("405", "A method this path does not serve; see Allow");
    }
}

/// `If-Match` as `extract::if_match` reads it: `*`, or a comma-separated list of entity tags
/// (`"3"`, `W/"3"`), or a bare version number.
const IF_MATCH_PATTERN: &str =
    r#"^[ \t]*(\*|(W/)?"[!#-~]*"|[0-9]+)([ \t]*,[ \t]*(\*|(W/)?"[!#-~]*"|[0-9]+))*[ \t]*$"#;

fn text(pattern: &str, min: usize, max: Option<usize>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(min))
        .max_length(max)
        .build()
}

fn problem_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ProblemDocument")))
                .build(),
        )
        .build()
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}
