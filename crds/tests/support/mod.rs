//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use kube::CustomResourceExt;
use serde_json::Value;

/// The crate directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `crd.spec.versions[0].schema.openAPIV3Schema` of `K`, as JSON.
pub fn open_api_schema<K: CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// A validator for `.spec` of `K` (draft 4 is the closest JSON Schema draft to OpenAPI v3).
pub fn spec_validator<K: CustomResourceExt>() -> jsonschema::Validator {
    jsonschema::draft4::new(&open_api_schema::<K>()["properties"]["spec"]).unwrap()
}

/// The schema errors of `spec`, one line each (`/path: message`).
pub fn schema_errors(validator: &jsonschema::Validator, spec: &Value) -> Vec<String> {
    validator.iter_errors(spec).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

/// Parses YAML into JSON.
pub fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}
