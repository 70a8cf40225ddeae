//! The operator dashboard at `/dashboard`: one HTML page, its CSS and two scripts, embedded in
//! the binary (no build step, nothing fetched from elsewhere). The assets hold no data and
//! need no credentials; the page signs in with the admin key or a `project_admin` token and
//! reads everything through the public REST API, the WebSocket API and `/metrics`.

/// One embedded file.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// Headers sent with every dashboard file: scripts, styles and connections only from this
/// origin, no framing, no sniffing, no referrer.
pub const HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
];

/// Whether `path` belongs to the dashboard.
pub fn is_path(path: &str) -> bool {
    path == "/dashboard" || path.starts_with("/dashboard/")
}

/// The file at `path`, if there is one.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body): (&str, &[u8]) = match path {
        "/dashboard" | "/dashboard/" | "/dashboard/index.html" => (
            "text/html; charset=utf-8",
            include_bytes!("assets/index.html"),
        ),
        "/dashboard/app.css" => ("text/css; charset=utf-8", include_bytes!("assets/app.css")),
        "/dashboard/app.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("assets/app.js"),
        ),
        "/dashboard/chart.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("assets/chart.js"),
        ),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served() {
        let html = std::str::from_utf8(asset("/dashboard").unwrap().body).unwrap();
        for part in html.split("\"/dashboard/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(asset(&format!("/dashboard/{name}")).is_some(), "{name}");
        }
        assert!(asset("/dashboard/../Cargo.toml").is_none());
        assert!(!is_path("/dashboardx"));
    }
}
