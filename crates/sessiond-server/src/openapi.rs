//! The OpenAPI 3.1 document, generated from the handlers' annotations so it cannot drift.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::document;
use crate::routes::{backend, holder, operations};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sessiond",
        description = "The session service of web and mobile apps: create sessions at login, validate tokens for every request, revoke at logout.",
    ),
    paths(
        holder::forward_auth, holder::read, holder::patch, holder::rotate, holder::logout,
        backend::create, backend::read, backend::patch, backend::revoke, backend::list_user,
        backend::revoke_user, backend::revoke_everyone,
        operations::healthz, operations::readyz, operations::metrics, operations::openapi,
    ),
    components(schemas(
        document::SessionDocument, document::IssuedSession, document::SessionList,
        document::Revoked, document::CreateSession, document::PatchSession,
        document::ProblemDocument,
    )),
    modifiers(&SecuritySchemes),
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

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}
