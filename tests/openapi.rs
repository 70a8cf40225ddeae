//! The OpenAPI document (`docs/openapi.json`) against the router: the same paths with the same
//! methods, in both directions, and the document served at `/api/realtime/openapi.json` is the
//! one in the repo. `scripts/schemathesis` checks the responses against it on a live node.

mod common;

use std::collections::BTreeSet;

use common::{TestServer, http};
use ringcast::http::routes::ROUTES;
use serde_json::Value;

fn document() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
        .expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .map(move |m| (path.clone(), m.to_uppercase()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|(path, methods)| {
            methods
                .split(", ")
                .map(move |m| (path.to_string(), m.to_string()))
        })
        .collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(missing.is_empty(), "routes the document lacks: {missing:?}");
    assert!(
        extra.is_empty(),
        "documented routes that do not exist: {extra:?}"
    );
    // Every operation documents its success answer and refers only to schemas that exist.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    for r in text.split("#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "no schema {name}");
    }
}

#[test]
fn the_served_document_is_the_one_in_the_repo() {
    let s = TestServer::start("legacy");
    let (st, served) = http(s.addr, "GET", "/api/realtime/openapi.json", None, None);
    assert_eq!(st, 200);
    assert_eq!(served, document());
    s.shutdown();
}
