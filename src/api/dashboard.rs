//! The browser dashboard: `static/` built into the binary and served at `/` and `/ui/...`.
//! It is plain HTML, CSS and JS modules that talk only to the public API, so it needs no
//! build step; a strict Content-Security-Policy allows nothing but this origin's own files.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};

use super::error::{ApiError, ErrorBody};

/// Nothing inline, nothing from elsewhere: scripts, styles, images and fetches from this
/// origin only (EventSource and fetch are `connect-src`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One file of the dashboard.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("../../static/index.html"),
};

/// Everything under `/ui/`, by file name.
const ASSETS: &[Asset] = &[
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../static/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../static/favicon.svg"),
    },
    Asset {
        name: "app.js",
        content_type: JS,
        body: include_str!("../../static/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: JS,
        body: include_str!("../../static/api.js"),
    },
    Asset {
        name: "dom.js",
        content_type: JS,
        body: include_str!("../../static/dom.js"),
    },
    Asset {
        name: "log-view.js",
        content_type: JS,
        body: include_str!("../../static/log-view.js"),
    },
    Asset {
        name: "run-modal.js",
        content_type: JS,
        body: include_str!("../../static/run-modal.js"),
    },
    Asset {
        name: "twins.js",
        content_type: JS,
        body: include_str!("../../static/twins.js"),
    },
    Asset {
        name: "twin-view.js",
        content_type: JS,
        body: include_str!("../../static/twin-view.js"),
    },
    Asset {
        name: "twin-panels.js",
        content_type: JS,
        body: include_str!("../../static/twin-panels.js"),
    },
    Asset {
        name: "resource-map.js",
        content_type: JS,
        body: include_str!("../../static/resource-map.js"),
    },
    Asset {
        name: "forms.js",
        content_type: JS,
        body: include_str!("../../static/forms.js"),
    },
    Asset {
        name: "wizard.js",
        content_type: JS,
        body: include_str!("../../static/wizard.js"),
    },
    Asset {
        name: "runs-view.js",
        content_type: JS,
        body: include_str!("../../static/runs-view.js"),
    },
    Asset {
        name: "credentials.js",
        content_type: JS,
        body: include_str!("../../static/credentials.js"),
    },
    Asset {
        name: "webhooks.js",
        content_type: JS,
        body: include_str!("../../static/webhooks.js"),
    },
    Asset {
        name: "audit.js",
        content_type: JS,
        body: include_str!("../../static/audit.js"),
    },
];

fn serve(asset: &Asset) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .insert_header((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .insert_header((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        // Revalidate each time, so a new binary's dashboard is seen at once.
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .body(asset.body)
}

/// `GET /`: the dashboard's page; it signs in and reads everything else through the API.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "dashboard",
    tag = "dashboard",
    summary = "The browser dashboard",
    security(()),
    responses(
        (status = 200, description = "Its page.", body = String, content_type = "text/html"),
    ),
)]
pub async fn index() -> HttpResponse {
    serve(&INDEX)
}

/// The name of a file of the dashboard: one of [`ASSETS`].
pub struct DashboardFile;

impl utoipa::PartialSchema for DashboardFile {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ASSETS.iter().map(|asset| asset.name)))
            .into()
    }
}

impl utoipa::ToSchema for DashboardFile {}

/// `GET /ui/{file}`: the dashboard's scripts, styles and icon.
#[utoipa::path(
    get,
    path = "/ui/{file}",
    operation_id = "dashboard_file",
    tag = "dashboard",
    summary = "A file of the dashboard",
    params(("file" = inline(DashboardFile), Path, description = "A script, style sheet or icon of the dashboard.")),
    security(()),
    responses(
        (status = 200, description = "The file.", content(("text/javascript"), ("text/css"), ("image/svg+xml"))),
        (status = 404, description = "No such file.", body = ErrorBody),
    ),
)]
pub async fn asset(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    ASSETS
        .iter()
        .find(|asset| asset.name == path.as_str())
        .map(serve)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no dashboard file '{}'",
                path.chars().take(80).collect::<String>()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::{ASSETS, INDEX};

    /// The `/ui/...` files a text refers to: `href`/`src` attributes and module imports.
    fn references(text: &str) -> Vec<String> {
        text.split("/ui/")
            .skip(1)
            .chain(text.split("from './").skip(1))
            .chain(text.split("import('./").skip(1))
            .filter_map(|rest| rest.split(['"', '\'']).next())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_file_the_page_refers_to_is_served() {
        let served: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        for asset in ASSETS.iter().chain([&INDEX]) {
            for name in references(asset.body) {
                assert!(
                    served.contains(&name.as_str()),
                    "{} refers to /ui/{name}, which is not served",
                    asset.name
                );
            }
        }
    }

    #[test]
    fn every_served_script_is_reachable_from_the_page() {
        let mut reached = references(INDEX.body);
        let mut next = 0;
        while let Some(name) = reached.get(next).cloned() {
            next += 1;
            if let Some(asset) = ASSETS.iter().find(|a| a.name == name) {
                for found in references(asset.body) {
                    if !reached.contains(&found) {
                        reached.push(found);
                    }
                }
            }
        }
        for asset in ASSETS {
            assert!(
                reached.iter().any(|r| r == asset.name),
                "{} is served but nothing loads it",
                asset.name
            );
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        for asset in ASSETS.iter().chain([&INDEX]) {
            if asset.name.ends_with(".html") {
                assert!(!asset.body.contains("<script>"), "inline script");
                assert!(!asset.body.contains("<style"), "inline style");
                assert!(!asset.body.contains(" style=\""), "style attribute");
                assert!(!asset.body.contains(" onclick="), "inline handler");
            }
            let body = asset.body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !body.contains("https://") && !body.contains("http://"),
                "{} loads something from elsewhere",
                asset.name
            );
        }
    }
}
