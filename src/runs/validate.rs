//! `terraform validate`: is the twin's configuration valid, and if not, where. Runs in a
//! directory of its own (providers installed, no backend), so it never touches a run.

use std::sync::Arc;

use serde_json::{json, Value};

use tokio_util::sync::CancellationToken;

use super::isolation::{Isolation, Jail};
use super::process::{capture_stdout, LineSink, ProcessSpec};
use super::toolchain::Toolchain;
use super::workspace;
use crate::config::Settings;
use crate::domain::{LogStream, RunId, Twin};

/// `{"valid", "errors": [...], "warnings": [...]}`, each diagnostic with summary, detail,
/// file and line.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Validation {
    pub valid: bool,
    #[schema(value_type = Vec<Diagnostic>)]
    pub errors: Vec<Value>,
    #[schema(value_type = Vec<Diagnostic>)]
    pub warnings: Vec<Value>,
}

/// The schema of one diagnostic as [`classify`] shapes it.
#[derive(utoipa::ToSchema)]
#[schema(description = "One diagnostic of terraform; any part may be missing.")]
#[allow(dead_code)] // A schema only: diagnostics are built as JSON.
pub struct Diagnostic {
    summary: Option<String>,
    detail: Option<String>,
    file: Option<String>,
    line: Option<u64>,
    column: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error(transparent)]
    Toolchain(#[from] super::ToolchainError),
    #[error("{0}")]
    Failed(String),
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// Drops terraform's stderr: validation answers with diagnostics, not logs.
struct Ignore;
impl LineSink for Ignore {
    fn line(&self, _: LogStream, _: String, _: String) {}
}

/// Validates `twin` in a directory of its own; `stop` (the gateway shutting down) kills
/// whatever terraform it started.
pub async fn validate(
    settings: &Settings,
    isolation: &Isolation,
    twin: &Twin,
    stop: &CancellationToken,
) -> Result<Validation, ValidateError> {
    let toolchain = Toolchain::find(settings).await?;
    let dir = workspace::preview_dir(&settings.data_dir, &RunId::generate());
    let (target, data_dir, sandbox_root, owned, tools) = (
        dir.clone(),
        settings.data_dir.clone(),
        settings.sandbox_root(),
        twin.clone(),
        toolchain.clone(),
    );
    tokio::task::spawn_blocking(move || {
        workspace::prepare(&target, &data_dir, &sandbox_root, &owned, &tools)
    })
    .await
    .map_err(|e| ValidateError::Failed(e.to_string()))?
    .map_err(|e| ValidateError::Failed(e.to_string()))?;
    let result = run_validation(settings, isolation, &toolchain, &dir, stop).await;
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    result
}

async fn run_validation(
    settings: &Settings,
    isolation: &Isolation,
    toolchain: &Toolchain,
    dir: &std::path::Path,
    stop: &CancellationToken,
) -> Result<Validation, ValidateError> {
    // Validation runs the twin's configuration (init installs its providers): jailed like a run.
    let mut readable = toolchain.readable_paths();
    readable.extend(settings.run_readable.iter().cloned());
    let jail = Jail {
        writable: vec![dir.to_path_buf()],
        readable,
    };
    let spec = |args: &[&str]| {
        let spec = ProcessSpec {
            program: toolchain.terraform.clone(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            cwd: dir.to_path_buf(),
            env: toolchain.base_env(),
            command_depth: 0,
        };
        isolation.wrap(spec, &jail)
    };
    let limit = settings.timeouts.plan;
    let run = |spec: ProcessSpec| async move {
        let sink: Arc<dyn LineSink> = Arc::new(Ignore);
        capture_stdout(&spec, sink, limit, stop)
            .await
            .map_err(|e| ValidateError::Failed(e.to_string()))
    };
    // A syntax error stops init already; its diagnostics say where.
    let (init_exit, init_out) =
        run(spec(&["init", "-backend=false", "-input=false", "-json"])).await?;
    if !init_exit.success() {
        let diagnostics: Vec<Value> = String::from_utf8_lossy(&init_out)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|message| message["type"] == "diagnostic")
            .map(|message| message["diagnostic"].clone())
            .collect();
        if diagnostics.is_empty() {
            return Err(ValidateError::Failed(format!(
                "terraform init failed (exit code {:?})",
                init_exit.code
            )));
        }
        return Ok(classify(&diagnostics));
    }
    let (_, out) = run(spec(&["validate", "-json", "-no-color"])).await?;
    let report: Value = serde_json::from_slice(&out).map_err(|e| {
        ValidateError::Failed(format!("terraform validate printed invalid JSON: {e}"))
    })?;
    Ok(classify(
        report["diagnostics"]
            .as_array()
            .map_or(&[][..], Vec::as_slice),
    ))
}

/// Splits terraform diagnostics into errors and warnings, each `{summary, detail, file, line,
/// column}`.
fn classify(diagnostics: &[Value]) -> Validation {
    let shape = |d: &Value| {
        json!({
            "summary": d["summary"],
            "detail": d["detail"],
            "file": d["range"]["filename"],
            "line": d["range"]["start"]["line"],
            "column": d["range"]["start"]["column"],
        })
    };
    let errors: Vec<Value> = diagnostics
        .iter()
        .filter(|d| d["severity"] == "error")
        .map(shape)
        .collect();
    // init prefaces located errors with a general one ("problems during initialisation"):
    // keep it only when it is all there is.
    let located = errors.iter().any(|e| !e["file"].is_null());
    let errors: Vec<Value> = errors
        .into_iter()
        .filter(|e| !located || !e["file"].is_null())
        .collect();
    let warnings: Vec<Value> = diagnostics
        .iter()
        .filter(|d| d["severity"] == "warning")
        .map(shape)
        .collect();
    Validation {
        valid: errors.is_empty(),
        errors,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_are_split_with_file_and_line() {
        let diagnostics = vec![
            json!({"severity": "error", "summary": "Unsupported block type", "detail": "x",
                   "range": {"filename": "main.tf", "start": {"line": 3, "column": 1}}}),
            json!({"severity": "warning", "summary": "Deprecated", "detail": ""}),
        ];
        let v = classify(&diagnostics);
        assert!(!v.valid);
        assert_eq!(v.errors[0]["file"], "main.tf");
        assert_eq!(v.errors[0]["line"], 3);
        assert_eq!(v.warnings.len(), 1);
        assert!(classify(&[]).valid);
    }
}
