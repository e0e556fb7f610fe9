//! Who is calling: a bearer token (API token or HS256 JWT) or the dashboard's session cookie.

use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::HttpMessage;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ErrorBody};
use super::openapi::{Caller, LoggedOut, Session};
use crate::auth::{generate_secret, hash_secret, RunGrants};
use crate::clock;
use crate::domain::{Principal, RunGrant};
use crate::store::{run_blocking, Store};

pub const SESSION_COOKIE: &str = "terrastream_session";

/// How requests are authenticated; shared by every worker.
pub struct Authenticator {
    store: Arc<dyn Store>,
    grants: Arc<RunGrants>,
    jwt: Option<DecodingKey>,
    /// Accept JWTs without `exp` (they never expire); off unless the operator asks.
    jwt_allow_no_exp: bool,
    session_ttl: chrono::Duration,
    secure_cookies: bool,
}

#[derive(Deserialize)]
struct JwtClaims {
    sub: String,
    #[serde(default)]
    admin: bool,
}

impl Authenticator {
    pub fn new(
        store: Arc<dyn Store>,
        grants: Arc<RunGrants>,
        settings: &crate::config::Settings,
    ) -> Self {
        Self {
            store,
            grants,
            jwt: settings
                .jwt_secret
                .as_deref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            jwt_allow_no_exp: settings.jwt_allow_no_exp,
            session_ttl: chrono::Duration::from_std(settings.session_ttl)
                .unwrap_or_else(|_| chrono::Duration::hours(12)),
            secure_cookies: settings.secure_cookies,
        }
    }

    /// The principal behind a bearer credential, if it is a known token or a valid JWT.
    pub async fn principal_for_token(&self, token: &str) -> Result<Option<Principal>, ApiError> {
        if let (Some(key), 3) = (&self.jwt, token.split('.').count()) {
            let mut validation = Validation::new(Algorithm::HS256);
            // A token without `exp` would be valid forever: refused unless the operator says.
            if self.jwt_allow_no_exp {
                validation.set_required_spec_claims(&["sub"]);
            } else {
                validation.set_required_spec_claims(&["sub", "exp"]);
            }
            return Ok(jsonwebtoken::decode::<JwtClaims>(token, key, &validation)
                .ok()
                .filter(|data| !data.claims.sub.trim().is_empty())
                .map(|data| Principal {
                    owner: data.claims.sub,
                    is_admin: data.claims.admin,
                }));
        }
        let hash = hash_secret(token);
        Ok(run_blocking(&self.store, move |store| store.find_token(&hash)).await?)
    }

    async fn principal_for_session(&self, session: &str) -> Result<Option<Principal>, ApiError> {
        let hash = hash_secret(session);
        let now = clock::now();
        Ok(run_blocking(&self.store, move |store| store.find_session(&hash, &now)).await?)
    }

    /// The caller, and the run grant when a run's terraform is calling the state backend.
    async fn authenticate(
        &self,
        req: &HttpRequest,
    ) -> Result<(Principal, Option<RunGrant>), ApiError> {
        if let Some(header) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
            let value = header.to_str().unwrap_or_default();
            if let Some(encoded) = value.strip_prefix("Basic ") {
                return self.authenticate_basic(encoded.trim()).await;
            }
            let token = value
                .strip_prefix("Bearer ")
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::Unauthorized("Authorization must be 'Bearer <token>'".into())
                })?;
            let principal = self
                .principal_for_token(token)
                .await?
                .ok_or_else(|| ApiError::Unauthorized("the bearer token is not valid".into()))?;
            return Ok((principal, None));
        }
        if let Some(cookie) = req.cookie(SESSION_COOKIE) {
            let principal = self
                .principal_for_session(cookie.value())
                .await?
                .ok_or_else(|| {
                    ApiError::Unauthorized("the session has expired; sign in again".into())
                })?;
            return Ok((principal, None));
        }
        Err(ApiError::Unauthorized(
            "authentication required: send 'Authorization: Bearer <token>' or sign in".into(),
        ))
    }
}

/// Middleware for every protected scope: authenticates before any handler or body extractor
/// runs, so a bad credential is always a 401, and leaves the [`Principal`] in the request.
pub async fn require_principal(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let auth = req
        .app_data::<web::Data<Authenticator>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("authenticator is not configured"))?;
    match auth.authenticate(req.request()).await {
        Ok((_, Some(grant))) if !grant_allows(&grant, req.path()) => {
            Ok(req.error_response(ApiError::Unauthorized(
                "a run's backend credential only reaches its twin's state".into(),
            )))
        }
        Ok((principal, grant)) => {
            req.extensions_mut().insert(principal);
            if let Some(grant) = grant {
                req.extensions_mut().insert(grant);
            }
            Ok(next.call(req).await?.map_into_boxed_body())
        }
        Err(err) => Ok(req.error_response(err)),
    }
}

impl Authenticator {
    /// HTTP basic auth, as terraform's http backend sends it: the password is a run's
    /// backend secret, or an API token (or JWT) for an admin's own terraform CLI.
    async fn authenticate_basic(
        &self,
        encoded: &str,
    ) -> Result<(Principal, Option<RunGrant>), ApiError> {
        use base64::Engine;
        let refuse = || ApiError::Unauthorized("basic credentials are not valid".into());
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| refuse())?;
        let text = String::from_utf8(decoded).map_err(|_| refuse())?;
        let (_, password) = text.split_once(':').ok_or_else(refuse)?;
        if let Some(grant) = self.grants.find(password).await? {
            let principal = Principal {
                owner: grant.owner.clone(),
                is_admin: false,
            };
            return Ok((principal, Some(grant)));
        }
        let principal = self
            .principal_for_token(password)
            .await?
            .ok_or_else(refuse)?;
        Ok((principal, None))
    }
}

/// A run's credential reaches only its own twin's state backend routes.
fn grant_allows(grant: &RunGrant, path: &str) -> bool {
    let base = format!("/twins/{}/tfstate", grant.twin_id);
    path == base || path == format!("{base}/lock")
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .ok_or_else(|| ApiError::Unauthorized("authentication required".into())),
        )
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"token": "tst_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}))]
pub struct LoginRequest {
    /// An API token (`tst_...`) or, with `--jwt-secret`, a JWT.
    token: String,
}

/// `POST /auth/login`: trades a token for an HttpOnly session cookie (EventSource cannot send
/// headers, so the browser dashboard uses this).
#[utoipa::path(
    post,
    path = "/auth/login",
    operation_id = "login",
    tag = "auth",
    security(()),
    summary = "Sign in (session cookie)",
    description = "Trades a token for the HttpOnly `terrastream_session` cookie (SameSite=Strict): EventSource cannot send headers, so browsers use the cookie.",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in.", body = Session, headers(("Set-Cookie" = String, description = "`terrastream_session=...; HttpOnly; SameSite=Strict; Path=/`"))),
        (status = 401, description = "The token is not valid.", body = ErrorBody),
    ),
)]
pub async fn login(
    auth: web::Data<Authenticator>,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let principal = auth
        .principal_for_token(body.token.trim())
        .await?
        .ok_or_else(|| ApiError::Unauthorized("that token is not valid".into()))?;
    let session = generate_secret("");
    let expires = chrono::Utc::now() + auth.session_ttl;
    let (hash, who, expires_at) = (
        hash_secret(&session),
        principal.clone(),
        clock::format(expires),
    );
    run_blocking(&auth.store, move |store| {
        store.insert_session(&hash, &who, &expires_at)
    })
    .await?;
    let cookie = Cookie::build(SESSION_COOKIE, session)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(auth.secure_cookies)
        .max_age(actix_web::cookie::time::Duration::seconds(
            auth.session_ttl.num_seconds(),
        ))
        .finish();
    Ok(HttpResponse::Ok()
        .cookie(cookie)
        .json(json!({ "owner": principal.owner, "is_admin": principal.is_admin, "expires_at": clock::format(expires) })))
}

/// `POST /auth/logout`: ends the session and clears the cookie.
#[utoipa::path(
    post,
    path = "/auth/logout",
    operation_id = "logout",
    tag = "auth",
    security(()),
    summary = "Sign out",
    description = "Ends the session of the cookie sent, if any, and clears the cookie.",
    responses(
        (status = 200, description = "Signed out.", body = LoggedOut),
    ),
)]
pub async fn logout(
    auth: web::Data<Authenticator>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        let hash = hash_secret(cookie.value());
        run_blocking(&auth.store, move |store| store.delete_session(&hash)).await?;
    }
    let mut removal = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    removal.make_removal();
    Ok(HttpResponse::Ok()
        .cookie(removal)
        .json(json!({ "success": true })))
}

/// `GET /auth/whoami`: the caller, for the dashboard to show and to check a session.
#[utoipa::path(
    get,
    path = "/auth/whoami",
    operation_id = "whoami",
    tag = "auth",
    summary = "Who is calling",
    responses(
        (status = 200, description = "The caller.", body = Caller),
    ),
)]
pub async fn whoami(principal: Principal) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "owner": principal.owner, "is_admin": principal.is_admin }))
}
