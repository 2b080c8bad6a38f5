//! The OpenAPI document against the route table.

use std::path::Path;

/// Every `.route(`, `.route_service(`, `.nest(` and `.nest_service(` in the gateway's source,
/// with the path literal that follows it (file, path).
fn raw_routes(dir: &Path, found: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            raw_routes(&p, found);
            continue;
        }
        if p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        for call in [".route(", ".route_service(", ".nest(", ".nest_service("] {
            for (at, _) in text.match_indices(call) {
                let rest = text[at + call.len()..].trim_start();
                let path = rest
                    .strip_prefix('"')
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("(not a literal)");
                found.push((p.display().to_string(), path.to_string()));
            }
        }
    }
}

#[test]
fn every_api_route_is_in_the_openapi_document() {
    let doc = super::openapi();
    let json = serde_json::to_value(&doc).unwrap();
    assert!(
        json["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1"
    );
    let paths: Vec<&String> = doc.paths.paths.keys().collect();
    // The JSON API is added only through `routes!` (route and document from one annotation):
    // any other route must be a console page, which is HTML and not part of the API.
    let mut raw = Vec::new();
    raw_routes(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut raw);
    let stray: Vec<_> = raw
        .iter()
        .filter(|(file, path)| !path.starts_with("/console") && !file.ends_with("http/tests.rs"))
        .collect();
    assert!(
        stray.is_empty(),
        "routes added outside the OpenAPI route table (http::api_routes, `routes!` with #[utoipa::path]): {stray:?}"
    );
    for expected in [
        "/healthz",
        "/metrics",
        "/api/openapi.json",
        "/api/alerts",
        "/api/alerts/stream",
        "/api/alerts/{id}/ack",
        "/api/residents/{id}/topup",
        "/api/roster",
    ] {
        assert!(
            paths.iter().any(|p| *p == expected),
            "{expected} missing from {paths:?}"
        );
    }
    // Every operation says what it answers, and every path parameter is declared.
    for (path, item) in &doc.paths.paths {
        let ops = serde_json::to_value(item).unwrap();
        let ops = ops.as_object().unwrap();
        assert!(!ops.is_empty(), "{path} has no operation");
        for (method, op) in ops {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no response"
            );
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(
                    declared,
                    "{method} {path}: path parameter {name} not declared"
                );
            }
        }
    }
}

#[test]
fn the_route_scan_sees_a_route_added_the_plain_way() {
    // The check above is only as good as its scan: it must see a plain `.route("/api/…")`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("x.rs"),
        "Router::new()\n    .route(\n        \"/api/new\", get(h))\n    .route(\"/console/x\", get(h))",
    )
    .unwrap();
    let mut raw = Vec::new();
    raw_routes(dir.path(), &mut raw);
    let paths: Vec<&str> = raw.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(paths, ["/api/new", "/console/x"]);
}
