//! What the run and stream tests share: a gateway that runs the real terraform from `tools/`
//! (and can be restarted on its data directory), sandbox configurations, a small SSE client,
//! and readers of the sandbox directory and the twin's terraform state.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use terrastream::app::Application;
use terrastream::config::Settings;
use tokio::task::JoinHandle;

use crate::helpers::{json_body, TestApp};

/// Longest wait for any one thing (an event, a run's end). Only a guard against hangs: runs
/// here take seconds.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A gateway whose server task is kept, so a test can stop it and start another on the same
/// data directory.
pub struct RunApp {
    pub app: TestApp,
    server: JoinHandle<std::io::Result<()>>,
}

impl std::ops::Deref for RunApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// A gateway that runs the repository's terraform (`tools/`), with a short keep-alive and a
/// grace period long enough for terraform to stop gracefully on cancel.
pub async fn spawn_run_app() -> RunApp {
    spawn_run_app_with(|_| {}).await
}

pub async fn spawn_run_app_with(configure: impl FnOnce(&mut Settings)) -> RunApp {
    let data_dir = tempfile::tempdir().expect("cannot create a temporary data directory");
    let mut settings = Settings::new(data_dir.path());
    settings.bind = "127.0.0.1:0".into();
    // Runs' monitors are the gateway binary (this test binary is not one).
    settings.monitor_program = Some(env!("CARGO_BIN_EXE_terrastream").into());
    settings.tools_dir = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools"));
    settings.keep_alive = Duration::from_secs(1);
    settings.cancel_grace = Duration::from_secs(30);
    settings.create_demo = false;
    settings.database_url = crate::helpers::test_database_url();
    configure(&mut settings);
    let (server, address, new_token) = start(&settings);
    let app = TestApp {
        address,
        admin_token: new_token.expect("a fresh data directory must get an admin token"),
        client: client(),
        settings,
        data_dir,
        store: std::sync::OnceLock::new(),
    };
    RunApp { app, server }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("cannot build the HTTP client")
}

fn start(settings: &Settings) -> (JoinHandle<std::io::Result<()>>, String, Option<String>) {
    let application =
        Application::build(settings.clone()).expect("the application failed to build");
    let address = format!("http://127.0.0.1:{}", application.port());
    let token = application.new_admin_token().map(str::to_owned);
    (
        tokio::spawn(application.run_until_stopped()),
        address,
        token,
    )
}

impl RunApp {
    /// Stops this gateway (dropping its server and runs runtime) and builds a new one on the
    /// same data directory, as a restarted process would.
    pub async fn restart(self) -> RunApp {
        let RunApp { app, server } = self;
        server.abort();
        let stopped = server.await;
        assert!(
            stopped.as_ref().is_err_and(|e| e.is_cancelled()),
            "the server ended before it was stopped: {stopped:?}"
        );
        let (server, address, new_token) = start(&app.settings);
        assert!(new_token.is_none(), "a restart must keep the admin token");
        RunApp {
            app: TestApp {
                address,
                client: client(),
                ..app
            },
            server,
        }
    }
}

/// One `sandbox_resource` of a test configuration.
#[derive(Debug, Clone, Copy)]
pub struct Res {
    pub name: &'static str,
    pub create_ms: u64,
    pub destroy_ms: u64,
    pub fail_on_create: bool,
    pub fail_on_destroy: bool,
}

impl Res {
    pub const fn new(name: &'static str, create_ms: u64) -> Self {
        Self {
            name,
            create_ms,
            destroy_ms: 0,
            fail_on_create: false,
            fail_on_destroy: false,
        }
    }

    pub const fn destroy_ms(mut self, ms: u64) -> Self {
        self.destroy_ms = ms;
        self
    }

    pub const fn failing_create(mut self) -> Self {
        self.fail_on_create = true;
        self
    }

    pub const fn failing_destroy(mut self) -> Self {
        self.fail_on_destroy = true;
        self
    }
}

/// A configuration of independent sandbox objects with two outputs of the first one: its
/// endpoint, and its generated secret as a sensitive output.
pub fn sandbox_config(resources: &[Res]) -> String {
    let mut tf = String::from(
        "terraform {\n  required_providers {\n    sandbox = {\n      source  = \"terrastream.local/terrastream/sandbox\"\n      version = \">= 0.1.0\"\n    }\n  }\n}\n",
    );
    for r in resources {
        tf.push_str(&format!(
            "\nresource \"sandbox_resource\" \"{name}\" {{\n  name             = \"{name}\"\n  kind             = \"test\"\n  create_delay_ms  = {create}\n  destroy_delay_ms = {destroy}\n  fail_on_create   = {foc}\n  fail_on_destroy  = {fod}\n}}\n",
            name = r.name,
            create = r.create_ms,
            destroy = r.destroy_ms,
            foc = r.fail_on_create,
            fod = r.fail_on_destroy,
        ));
    }
    if let Some(first) = resources.first() {
        tf.push_str(&format!(
            "\noutput \"endpoint\" {{\n  value = sandbox_resource.{0}.endpoint\n}}\n\noutput \"secret\" {{\n  value     = sandbox_resource.{0}.secret\n  sensitive = true\n}}\n",
            first.name
        ));
    }
    tf
}

/// A client's cursor when it (re)connects to a run's events.
#[derive(Debug, Clone, Copy)]
pub enum Cursor {
    None,
    /// `Last-Event-ID` header, as browsers send it.
    Header(u64),
    /// `?last_event_id=`, as the Flutter client sends it.
    Query(u64),
}

impl TestApp {
    /// Creates a sandbox twin with `main.tf` and returns its id.
    pub async fn create_sandbox_twin(&self, token: &str, name: &str, main_tf: &str) -> String {
        let body = json!({ "name": name, "provider": "sandbox", "files": { "main.tf": main_tf } });
        let response = self.create_twin(token, &body).await;
        let status = response.status();
        let twin = json_body(response).await;
        assert_eq!(status, StatusCode::CREATED, "create failed: {twin}");
        twin["id"].as_str().expect("a twin id").to_owned()
    }

    async fn post_run(&self, token: &str, twin_id: &str, action: &str, stream: bool) -> Response {
        let mut request = self.request(Method::POST, &format!("/twins/{twin_id}/{action}"), token);
        if stream {
            request = request.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        request.send().await.expect("the request failed to send")
    }

    /// `POST /twins/{id}/deploy` without asking for a stream (202 and a job id).
    pub async fn deploy(&self, token: &str, twin_id: &str) -> Response {
        self.post_run(token, twin_id, "deploy", false).await
    }

    /// Starts a deploy or destroy without a stream; returns the job id, failing unless 202.
    pub async fn start_run_ok(&self, token: &str, twin_id: &str, action: &str) -> String {
        let response = self.post_run(token, twin_id, action, false).await;
        let status = response.status();
        let body = json_body(response).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{action} not accepted: {body}"
        );
        assert_eq!(body["status"], "accepted");
        let job_id = body["job_id"].as_str().expect("a job id").to_owned();
        assert_eq!(body["events_url"], format!("/runs/{job_id}/events"));
        job_id
    }

    /// `POST /twins/{id}/{deploy|destroy}` with `Accept: text/event-stream`: the run's events on
    /// the POST response.
    pub async fn run_streamed(&self, token: &str, twin_id: &str, action: &str) -> SseStream {
        let response = self.post_run(token, twin_id, action, true).await;
        SseStream::open(response).await
    }

    pub async fn cancel_run(&self, token: &str, twin_id: &str) -> Response {
        self.request(Method::POST, &format!("/twins/{twin_id}/cancel"), token)
            .send()
            .await
            .expect("the request failed to send")
    }

    pub async fn get_run(&self, token: &str, run_id: &str) -> Response {
        self.request(Method::GET, &format!("/runs/{run_id}"), token)
            .send()
            .await
            .expect("the request failed to send")
    }

    /// `GET /runs/{id}` as JSON, failing unless 200.
    pub async fn get_run_ok(&self, token: &str, run_id: &str) -> Value {
        let response = self.get_run(token, run_id).await;
        let status = response.status();
        let body = json_body(response).await;
        assert_eq!(status, StatusCode::OK, "GET /runs/{run_id}: {body}");
        body
    }

    /// `GET /twins/{id}` as JSON, failing unless 200.
    pub async fn get_twin_ok(&self, token: &str, twin_id: &str) -> Value {
        let response = self.get_twin(token, twin_id).await;
        let status = response.status();
        let body = json_body(response).await;
        assert_eq!(status, StatusCode::OK, "GET /twins/{twin_id}: {body}");
        body
    }

    pub async fn twin_runs(&self, token: &str, twin_id: &str) -> Response {
        self.request(Method::GET, &format!("/twins/{twin_id}/runs"), token)
            .send()
            .await
            .expect("the request failed to send")
    }

    /// `GET /runs/{id}/events` with a cursor; the raw response.
    pub async fn run_events(&self, token: &str, run_id: &str, cursor: Cursor) -> Response {
        let mut request = self.request(Method::GET, &format!("/runs/{run_id}/events"), token);
        match cursor {
            Cursor::None => {}
            Cursor::Header(id) => request = request.header("Last-Event-ID", id.to_string()),
            Cursor::Query(id) => request = request.query(&[("last_event_id", id)]),
        }
        request.send().await.expect("the request failed to send")
    }

    /// Subscribes to a run's events (failing unless the stream opens).
    pub async fn subscribe(&self, token: &str, run_id: &str, cursor: Cursor) -> SseStream {
        SseStream::open(self.run_events(token, run_id, cursor).await).await
    }

    pub async fn run_logs(
        &self,
        token: &str,
        run_id: &str,
        after: u64,
        limit: Option<usize>,
    ) -> Response {
        let mut request = self
            .request(Method::GET, &format!("/runs/{run_id}/logs"), token)
            .query(&[("after_event_id", after)]);
        if let Some(limit) = limit {
            request = request.query(&[("limit", limit)]);
        }
        request.send().await.expect("the request failed to send")
    }

    /// Every event of a run through its whole stream from the start.
    pub async fn all_events(&self, token: &str, run_id: &str) -> Vec<SseEvent> {
        self.subscribe(token, run_id, Cursor::None)
            .await
            .read_to_end()
            .await
    }

    /// Waits for a run to end (by following its stream) and returns `GET /runs/{id}`.
    pub async fn wait_for_run(&self, token: &str, run_id: &str) -> Value {
        let events = self.all_events(token, run_id).await;
        assert_eq!(
            events.last().map(|e| e.event.as_str()),
            Some("done"),
            "the stream of {run_id} ended without done"
        );
        self.get_run_ok(token, run_id).await
    }

    /// Runs a deploy or destroy to its end, failing the test unless it succeeded; returns its id.
    pub async fn run_ok(&self, token: &str, twin_id: &str, action: &str) -> String {
        let run_id = self.start_run_ok(token, twin_id, action).await;
        let events = self.all_events(token, &run_id).await;
        let run = self.get_run_ok(token, &run_id).await;
        assert_eq!(
            run["status"],
            "completed",
            "{action} failed: {run}\n{:#?}",
            lines(&events)
        );
        run_id
    }

    pub fn sandbox_dir(&self, twin_id: &str) -> PathBuf {
        self.settings.sandbox_root().join(twin_id)
    }

    pub fn work_dir(&self, twin_id: &str) -> PathBuf {
        self.settings.data_dir.join("work").join(twin_id)
    }

    /// The sandbox objects that exist for the twin, by id (`<id>.json` files).
    pub fn sandbox_objects(&self, twin_id: &str) -> Vec<Value> {
        let dir = self.sandbox_dir(twin_id);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(err) => panic!("cannot read {}: {err}", dir.display()),
        };
        let mut objects = Vec::new();
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let Some(stem) = name
                .strip_suffix(".json")
                .filter(|_| !name.starts_with('.'))
            else {
                continue;
            };
            let text = std::fs::read_to_string(&path).unwrap();
            let object: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text}", path.display()));
            assert_eq!(object["id"], stem, "file name and id differ in {name}");
            objects.push(object);
        }
        objects
    }

    pub fn sandbox_ids(&self, twin_id: &str) -> BTreeSet<String> {
        self.sandbox_objects(twin_id)
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The twin's terraform state as terraform last wrote it: from the gateway's state
    /// backend (`GET /twins/{id}/state`, sensitive values masked) when it holds one, else the
    /// working directory's local `terraform.tfstate`.
    pub async fn terraform_state(&self, twin_id: &str) -> Value {
        let response = self
            .request(
                Method::GET,
                &format!("/twins/{twin_id}/state"),
                &self.admin_token,
            )
            .send()
            .await
            .expect("the request failed to send");
        if response.status() == StatusCode::OK {
            let body = json_body(response).await;
            if body["state"].is_object() {
                return body["state"].clone();
            }
        }
        let path = self.work_dir(twin_id).join("terraform.tfstate");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no state in the backend, nor in {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("the state is not JSON ({e})"))
    }

    /// Ids of the sandbox objects the twin's terraform state holds.
    pub async fn state_ids(&self, twin_id: &str) -> BTreeSet<String> {
        let state = self.terraform_state(twin_id).await;
        let mut ids = BTreeSet::new();
        for resource in state["resources"].as_array().expect("state resources") {
            if resource["type"] != "sandbox_resource" {
                continue;
            }
            for instance in resource["instances"].as_array().expect("instances") {
                ids.insert(
                    instance["attributes"]["id"]
                        .as_str()
                        .expect("an instance id")
                        .to_owned(),
                );
            }
        }
        ids
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    /// The `id:` as the run's sequence number.
    pub fn seq(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("event without a numeric id: {self:?}"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {}", self.data))
    }

    /// A log event's line.
    pub fn line(&self) -> Option<String> {
        (self.event == "log").then(|| self.json()["line"].as_str().unwrap().to_owned())
    }
}

/// The `text/event-stream` grammar, fed bytes as they come: lines end with LF, CRLF or CR; a
/// blank line ends an event; `:` starts a comment; `field: value` (one space stripped).
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    /// The previous chunk ended with CR: an LF starting this one belongs to it.
    after_cr: bool,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    pub comments: usize,
    pub retry: Option<u64>,
    /// Fields in the order they came, for wire-order assertions (`retry` first).
    pub fields: Vec<String>,
}

impl SseParser {
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<SseEvent> {
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        let mut events = Vec::new();
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.buffer.extend_from_slice(&rest[..pos]);
            let line = String::from_utf8(std::mem::take(&mut self.buffer))
                .expect("an SSE line is not UTF-8");
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            let crlf = rest[pos] == b'\r' && rest.get(pos + 1) == Some(&b'\n');
            if rest[pos] == b'\r' && pos + 1 == rest.len() {
                self.after_cr = true;
            }
            rest = &rest[pos + if crlf { 2 } else { 1 }..];
        }
        self.buffer.extend_from_slice(rest);
        events
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take();
            let event = self.event.take();
            return data.map(|data| SseEvent {
                id: self.id.clone(),
                event: event.unwrap_or_else(|| "message".into()),
                data,
            });
        }
        if line.starts_with(':') {
            self.comments += 1;
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        self.fields.push(field.to_owned());
        match field {
            "id" => self.id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "retry" => self.retry = value.parse().ok(),
            _ => {}
        }
        None
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

/// A response body read as server-sent events.
pub struct SseStream {
    pub headers: reqwest::header::HeaderMap,
    body: Body,
    pub parser: SseParser,
    pending: std::collections::VecDeque<SseEvent>,
    ended: bool,
}

impl SseStream {
    /// Wraps a response, failing the test unless it is a 200 `text/event-stream`.
    pub async fn open(response: Response) -> SseStream {
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if status != StatusCode::OK || !content_type.starts_with("text/event-stream") {
            let body = response.text().await.unwrap_or_default();
            panic!("expected a 200 event stream, got {status} {content_type}: {body}");
        }
        SseStream {
            headers,
            body: Box::pin(
                response
                    .bytes_stream()
                    .map(|chunk| chunk.map(|b| b.to_vec())),
            ),
            parser: SseParser::default(),
            pending: Default::default(),
            ended: false,
        }
    }

    /// The next event; `None` once the server ended the body.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("no event within {PATIENCE:?}"));
            match chunk {
                Some(Ok(bytes)) => self.pending.extend(self.parser.feed(&bytes)),
                Some(Err(err)) => panic!("the event stream broke: {err}"),
                None => self.ended = true,
            }
        }
    }

    /// Reads until the server ends the stream.
    pub async fn read_to_end(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next_event().await {
            events.push(event);
        }
        events
    }

    /// Reads events into `seen` until one matches (returning true), or the stream ends.
    pub async fn read_until(
        &mut self,
        seen: &mut Vec<SseEvent>,
        mut wanted: impl FnMut(&SseEvent) -> bool,
    ) -> bool {
        while let Some(event) = self.next_event().await {
            let found = wanted(&event);
            seen.push(event);
            if found {
                return true;
            }
        }
        false
    }
}

#[test]
fn the_parser_follows_the_event_stream_grammar_across_chunk_boundaries() {
    let wire = b"retry: 2000\r\n\r\n: keep-alive\n\nid: 1\nevent: log\ndata: {\"a\":1}\n\nid:2\r\nevent: x\rdata: one\ndata: two\n\ndata: no-id-change\n\n";
    let whole = SseParser::default().feed(wire);
    for split in 0..wire.len() {
        let mut parser = SseParser::default();
        let mut events = parser.feed(&wire[..split]);
        events.extend(parser.feed(&wire[split..]));
        assert_eq!(events, whole, "split at {split}");
        assert_eq!(parser.comments, 1);
        assert_eq!(parser.retry, Some(2000));
        assert_eq!(parser.fields.first().map(String::as_str), Some("retry"));
    }
    let expected = [
        (Some("1"), "log", "{\"a\":1}"),
        (Some("2"), "x", "one\ntwo"),
        (Some("2"), "message", "no-id-change"),
    ];
    assert_eq!(whole.len(), expected.len());
    for (event, (id, name, data)) in whole.iter().zip(expected) {
        assert_eq!(event.id.as_deref(), id);
        assert_eq!(event.event, name);
        assert_eq!(event.data, data);
    }
}

/// What every run's stream must be: ids 1, 2, 3 ... without a gap, `type` repeating the event
/// name, the run's `job_id` on every event but `status`, and exactly one `done`, last.
pub fn assert_well_formed(events: &[SseEvent], run_id: &str) {
    assert!(!events.is_empty(), "no events");
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.seq(), index as u64 + 1, "ids are not 1..N: {event:?}");
        let data = event.json();
        assert!(data.is_object(), "data is not a JSON object: {event:?}");
        assert_eq!(
            data["type"],
            event.event.as_str(),
            "type differs from the event name"
        );
        if event.event != "status" {
            assert_eq!(data["job_id"], run_id, "another run's job_id: {event:?}");
        }
        assert!(
            !event.data.contains('\n'),
            "data is not one line: {event:?}"
        );
        // One event per line terraform printed: a log line never holds another.
        if let Some(line) = data["line"].as_str().filter(|_| event.event == "log") {
            assert!(
                !line.contains('\n'),
                "a log event holds several lines: {event:?}"
            );
        }
    }
    let dones = events.iter().filter(|e| e.event == "done").count();
    assert_eq!(dones, 1, "exactly one done");
    assert_eq!(events.last().unwrap().event, "done", "done is not last");
}

/// `ts` of a log event: RFC 3339 with microseconds.
pub fn assert_rfc3339_micros(ts: &str) {
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
        "not RFC 3339: {ts}"
    );
    let fraction = ts
        .split_once('.')
        .map(|(_, rest)| rest.chars().take_while(char::is_ascii_digit).count());
    assert_eq!(fraction, Some(6), "not microseconds: {ts}");
}

/// The stages of a stream, in order.
pub fn stages(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event == "stage")
        .map(|e| e.json()["stage"].as_str().unwrap().to_owned())
        .collect()
}

/// The twin statuses a stream announced, in order.
pub fn statuses(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event == "status")
        .map(|e| e.json()["status"].as_str().unwrap().to_owned())
        .collect()
}

/// The `done` event's data.
pub fn done(events: &[SseEvent]) -> Value {
    let last = events.last().expect("no events");
    assert_eq!(last.event, "done", "the stream did not end with done");
    last.json()
}

/// Index of the first log line containing `text`, failing the test if there is none.
pub fn log_index(events: &[SseEvent], text: &str) -> usize {
    events
        .iter()
        .position(|e| e.line().is_some_and(|l| l.contains(text)))
        .unwrap_or_else(|| panic!("no log line contains {text:?}; lines: {:#?}", lines(events)))
}

pub fn lines(events: &[SseEvent]) -> Vec<String> {
    events.iter().filter_map(SseEvent::line).collect()
}

/// A terraform that keeps a copy of what it prints: a wrapper around `tools/bin/terraform` that
/// tees each invocation's stdout and stderr into files, so a test can compare a run's `log`
/// events with what terraform really printed.
pub struct RecordingTerraform {
    dir: tempfile::TempDir,
    pub program: PathBuf,
}

/// One terraform invocation as the wrapper saw it.
#[derive(Debug)]
pub struct Invocation {
    pub args: Vec<String>,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl RecordingTerraform {
    pub fn new() -> Self {
        let real = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/bin/terraform");
        assert!(
            real.is_file(),
            "run scripts/setup.sh first: no {}",
            real.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("terraform");
        let script = format!(
            "#!/bin/bash\nset -o pipefail\nn=$(printf %03d $(ls '{dir}' | grep -c '\\.args$'))\nprintf '%s\\n' \"$@\" > '{dir}'/$n.args\n'{real}' \"$@\" 2> >(tee '{dir}'/$n.err >&2) | tee '{dir}'/$n.out\n",
            dir = dir.path().display(),
            real = real.display(),
        );
        std::fs::write(&program, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir, program }
    }

    /// Where the recordings go (runs must be able to write there).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Every invocation so far, in order.
    pub fn invocations(&self) -> Vec<Invocation> {
        let read = |name: String| -> Vec<String> {
            std::fs::read_to_string(self.dir.path().join(name))
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        };
        (0..)
            .map(|n| format!("{n:03}"))
            .take_while(|n| self.dir.path().join(format!("{n}.args")).is_file())
            .map(|n| Invocation {
                args: read(format!("{n}.args")),
                stdout: read(format!("{n}.out")),
                stderr: read(format!("{n}.err")),
            })
            .collect()
    }
}

/// A line of terraform output as the gateway shows it: the human `@message` of a `-json`
/// object, any other line as it is.
pub fn shown(line: &str) -> String {
    match serde_json::from_str::<Value>(line) {
        Ok(json) if json["@message"].is_string() => json["@message"].as_str().unwrap().to_owned(),
        _ => line.to_owned(),
    }
}

/// The log lines between the `stage` event of `stage` and the next `stage` event.
pub fn stage_lines(events: &[SseEvent], stage: &str) -> Vec<String> {
    let start = events
        .iter()
        .position(|e| e.event == "stage" && e.json()["stage"] == stage)
        .unwrap_or_else(|| panic!("no stage {stage}"));
    events[start + 1..]
        .iter()
        .take_while(|e| e.event != "stage")
        .filter_map(SseEvent::line)
        .collect()
}
