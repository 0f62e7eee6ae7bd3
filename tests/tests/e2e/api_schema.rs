//! Schemathesis against the served OpenAPI document, through the local Functions runtime:
//! generated requests for every operation must get no 5xx and only documented answers.

use std::path::PathBuf;
use std::process::Command;

use culvert_tests::stack::Stack;
use culvert_tests::workdir;

fn schemathesis() -> PathBuf {
    if let Ok(p) = std::env::var("SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let venv = PathBuf::from(home).join(".cache/culvert/venv/bin/schemathesis");
    assert!(
        venv.exists(),
        "schemathesis not found at {}; run scripts/setup.sh",
        venv.display()
    );
    venv
}

#[test]
fn served_document_holds_under_generated_requests() {
    let state = workdir("api-schema");
    let stack = Stack::up(&state);
    // Lists with items in them: an environment and two connectors.
    stack.json(&["env", "create", "fuzz", "--local"]);
    for (name, ty) in [("fz-src", "postgres-source"), ("fz-dst", "postgres-target")] {
        let r = stack.culvert(&[
            "connector",
            "create",
            name,
            "--env",
            "fuzz",
            "--type",
            ty,
            "--set",
            "host=127.0.0.1",
            "--set",
            "user=postgres",
            "--set",
            "database=app",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let key = std::fs::read_to_string(state.join("admin.key")).unwrap();
    let out = Command::new(schemathesis())
        .arg("run")
        .arg(format!("{}/openapi.json", stack.api))
        .args(["--url", &stack.api])
        .args(["-H", &format!("Authorization: Bearer {}", key.trim())])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "15", "--workers", "2", "--no-color"])
        .args(["--max-failures", "20"])
        .current_dir(&state)
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("passed"), "{text}");
}
