//! terraform's machine-readable output (`-json`): one object per line with `@level`,
//! `@message` and `type`. The human text becomes the `log` line; the object drives progress.

use std::collections::HashSet;

use serde_json::Value;

/// One parsed line of `-json` output.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub level: String,
    pub text: String,
    pub kind: String,
    pub raw: Value,
}

/// Parses a line of `-json` output; `None` for anything else (plain text, partial lines).
pub fn parse(line: &str) -> Option<Message> {
    if !line.starts_with('{') {
        return None;
    }
    let raw: Value = serde_json::from_str(line).ok()?;
    let text = raw.get("@message")?.as_str()?.to_owned();
    Some(Message {
        level: raw["@level"].as_str().unwrap_or("info").to_owned(),
        kind: raw["type"].as_str().unwrap_or("").to_owned(),
        text,
        raw,
    })
}

impl Message {
    /// The summary that ends a plan (`Plan: 2 to add, ...`), also the one an `apply` prints
    /// before it starts applying.
    pub fn is_plan_summary(&self) -> bool {
        self.kind == "change_summary" && self.raw["changes"]["operation"] == "plan"
    }

    /// The first message of an apply's applying, after its plan: a change starting, or the
    /// apply's summary when there was nothing to change.
    pub fn starts_applying(&self) -> bool {
        self.kind == "apply_start"
            || (self.kind == "change_summary" && self.raw["changes"]["operation"] == "apply")
    }

    /// For an error diagnostic, its summary (and detail), to say why a run failed.
    pub fn error_summary(&self) -> Option<String> {
        if self.kind != "diagnostic" || self.raw["diagnostic"]["severity"] != "error" {
            return None;
        }
        let diagnostic = &self.raw["diagnostic"];
        let summary = diagnostic["summary"].as_str().unwrap_or(&self.text);
        Some(
            match diagnostic["detail"].as_str().filter(|d| !d.is_empty()) {
                Some(detail) => format!("{summary}: {detail}"),
                None => summary.to_owned(),
            },
        )
    }
}

/// Progress of a run: distinct completed (address, action) pairs over planned actions; a
/// replace counts as a delete and a create.
#[derive(Debug, Default)]
pub struct Progress {
    planned: HashSet<(String, &'static str)>,
    completed: HashSet<(String, &'static str)>,
}

/// Actions that change a resource; reads and no-ops are not work to show.
fn planned_actions(action: &str) -> &'static [&'static str] {
    match action {
        "create" => &["create"],
        "update" => &["update"],
        "delete" => &["delete"],
        "replace" => &["delete", "create"],
        _ => &[],
    }
}

impl Progress {
    /// Feeds one message; returns `(done, total)` when the figures changed.
    pub fn observe(&mut self, message: &Message) -> Option<(u32, u32)> {
        let before = (self.completed.len(), self.planned.len());
        match message.kind.as_str() {
            "planned_change" => {
                let change = &message.raw["change"];
                if let (Some(addr), Some(action)) = (
                    change["resource"]["addr"].as_str(),
                    change["action"].as_str(),
                ) {
                    for action in planned_actions(action) {
                        self.planned.insert((addr.to_owned(), action));
                    }
                }
            }
            "apply_complete" => {
                let hook = &message.raw["hook"];
                if let (Some(addr), Some(action)) =
                    (hook["resource"]["addr"].as_str(), hook["action"].as_str())
                {
                    for action in planned_actions(action) {
                        let key = (addr.to_owned(), *action);
                        // Work terraform did without announcing it still counts.
                        self.planned.insert(key.clone());
                        self.completed.insert(key);
                    }
                }
            }
            _ => {}
        }
        let after = (self.completed.len(), self.planned.len());
        (after != before).then(|| self.figures())
    }

    /// Work known in advance (a kept plan's changes), counted as planned.
    pub fn expect(&mut self, address: &str, action: &str) {
        for action in planned_actions(action) {
            self.planned.insert((address.to_owned(), action));
        }
    }

    pub fn figures(&self) -> (u32, u32) {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        (count(self.completed.len()), count(self.planned.len()))
    }

    /// Percent done, 0-100; 100 only when everything planned is done.
    pub fn percent(&self) -> u8 {
        let (done, total) = self.figures();
        if total == 0 {
            return 0;
        }
        u8::try_from(u64::from(done) * 100 / u64::from(total)).unwrap_or(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(line: &str) -> Message {
        parse(line).unwrap_or_else(|| panic!("not a message: {line}"))
    }

    #[test]
    fn plain_text_is_not_a_message() {
        assert_eq!(parse("Terraform has been successfully initialized!"), None);
        assert_eq!(parse("{not json"), None);
        assert_eq!(parse(r#"{"no_message": 1}"#), None);
    }

    #[test]
    fn replace_counts_twice_and_completions_are_distinct() {
        let mut progress = Progress::default();
        progress.observe(&message(
            r#"{"@level":"info","@message":"a: Plan to create","type":"planned_change","change":{"resource":{"addr":"a"},"action":"create"}}"#,
        ));
        let figures = progress.observe(&message(
            r#"{"@level":"info","@message":"b: Plan to replace","type":"planned_change","change":{"resource":{"addr":"b"},"action":"replace"}}"#,
        ));
        assert_eq!(figures, Some((0, 3)));
        let done = r#"{"@level":"info","@message":"a: Creation complete","type":"apply_complete","hook":{"resource":{"addr":"a"},"action":"create"}}"#;
        assert_eq!(progress.observe(&message(done)), Some((1, 3)));
        assert_eq!(
            progress.observe(&message(done)),
            None,
            "a repeated completion is not progress"
        );
        assert_eq!(progress.percent(), 33);
    }

    #[test]
    fn error_diagnostics_explain_failures() {
        let line = r#"{"@level":"error","@message":"Error: boom","type":"diagnostic","diagnostic":{"severity":"error","summary":"boom","detail":"the sandbox said no"}}"#;
        assert_eq!(
            message(line).error_summary().as_deref(),
            Some("boom: the sandbox said no")
        );
        let warning = r#"{"@level":"warn","@message":"Warning: x","type":"diagnostic","diagnostic":{"severity":"warning","summary":"x","detail":""}}"#;
        assert_eq!(message(warning).error_summary(), None);
    }

    /// Transcripts captured from real terraform runs (scripts/capture-fixtures.sh).
    mod transcripts {
        use super::super::*;

        const PLAN_CREATE: &str =
            include_str!("../../tests/fixtures/terraform/plan_create.stdout.jsonl");
        const APPLY_SUCCESS: &str =
            include_str!("../../tests/fixtures/terraform/apply_success.stdout.jsonl");
        const APPLY_FAILED: &str =
            include_str!("../../tests/fixtures/terraform/apply_fail_on_create.stdout.jsonl");
        const APPLY_OLD: &str =
            include_str!("../../tests/fixtures/terraform/apply_success_1.0.3.stdout.jsonl");
        const PLAN_REPLACE: &str =
            include_str!("../../tests/fixtures/terraform/plan_rename_replace.stdout.jsonl");
        const DESTROY: &str = include_str!("../../tests/fixtures/terraform/destroy.stdout.jsonl");

        fn feed(progress: &mut Progress, transcript: &str) -> Vec<Message> {
            let messages: Vec<Message> = transcript.lines().filter_map(parse).collect();
            for message in &messages {
                progress.observe(message);
            }
            messages
        }

        #[test]
        fn every_line_of_json_output_is_a_message_with_text() {
            for transcript in [
                PLAN_CREATE,
                APPLY_SUCCESS,
                APPLY_FAILED,
                APPLY_OLD,
                PLAN_REPLACE,
                DESTROY,
            ] {
                for line in transcript.lines().filter(|l| !l.trim().is_empty()) {
                    let message = parse(line).unwrap_or_else(|| panic!("not parsed: {line}"));
                    assert!(!message.text.is_empty(), "{line}");
                }
            }
        }

        #[test]
        fn a_plan_then_its_apply_reach_exactly_all_twelve_resources() {
            let mut progress = Progress::default();
            feed(&mut progress, PLAN_CREATE);
            assert_eq!(progress.figures(), (0, 12));
            let messages = feed(&mut progress, APPLY_SUCCESS);
            assert_eq!(progress.figures(), (12, 12));
            assert_eq!(progress.percent(), 100);
            // Operations over 10 s are announced while they run.
            assert!(messages.iter().any(|m| m.kind == "apply_progress"));
        }

        /// An `apply -auto-approve` plans first: its plan's summary comes before the first
        /// change starts, in 1.15.5 and 1.0.3 alike, and only once.
        #[test]
        fn an_apply_that_plans_first_ends_its_plan_with_one_plan_summary() {
            for transcript in [APPLY_FAILED, APPLY_OLD] {
                let messages: Vec<Message> = transcript.lines().filter_map(parse).collect();
                let summaries: Vec<usize> = (0..messages.len())
                    .filter(|i| messages[*i].is_plan_summary())
                    .collect();
                assert_eq!(summaries.len(), 1);
                let first_start = messages.iter().position(|m| m.kind == "apply_start");
                assert!(first_start.is_some_and(|start| summaries[0] < start));
            }
        }

        #[test]
        fn a_replace_counts_twice() {
            let mut progress = Progress::default();
            feed(&mut progress, PLAN_REPLACE);
            let (_, total) = progress.figures();
            assert!(total >= 2, "a replace is a delete and a create");
            let replaced = PLAN_REPLACE
                .lines()
                .filter_map(parse)
                .filter(|m| m.kind == "planned_change" && m.raw["change"]["action"] == "replace")
                .count();
            assert_eq!(replaced, 1);
        }

        #[test]
        fn a_destroy_counts_every_deletion() {
            let mut progress = Progress::default();
            feed(&mut progress, DESTROY);
            assert_eq!(progress.figures(), (12, 12));
        }

        #[test]
        fn a_failed_create_names_its_error_and_stops_short() {
            let mut progress = Progress::default();
            let messages = feed(&mut progress, APPLY_FAILED);
            let errors: Vec<String> = messages.iter().filter_map(Message::error_summary).collect();
            assert!(!errors.is_empty());
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains("grafana") || e.to_lowercase().contains("fail")),
                "{errors:?}"
            );
            let (done, total) = progress.figures();
            // apply -auto-approve announces its plan: all 12 planned, the failed create and
            // what depends on it never complete.
            assert_eq!(total, 12);
            assert!(done < 12, "{done}/{total}");
            assert!(progress.percent() < 100);
        }

        #[test]
        fn terraform_1_0_3_output_drives_progress_too() {
            let mut progress = Progress::default();
            feed(&mut progress, APPLY_OLD);
            assert_eq!(progress.figures(), (12, 12));
        }
    }
}
