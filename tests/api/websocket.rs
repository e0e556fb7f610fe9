//! `GET /runs/{id}/ws` with a real WebSocket client (PyPI `websockets`, run as a process):
//! the same events as SSE, resumed from a cursor without a gap, a normal close after `done`,
//! a past-the-end cursor refused by a policy close, the session cookie accepted only from the
//! gateway's own origin, and a reader that stops reading does not hold the run up.

use std::path::PathBuf;
use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::helpers::TestApp;
use crate::run_helpers::{
    sandbox_config, spawn_run_app, spawn_run_app_with, Res, SseEvent, PATIENCE,
};

enum Auth<'a> {
    Bearer(&'a str),
    Cookie { cookie: &'a str, origin: &'a str },
}

struct WsClient {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stdin: ChildStdin,
}

impl WsClient {
    async fn connect(
        app: &TestApp,
        run_id: &str,
        cursor: Option<u64>,
        auth: Auth<'_>,
        stall_after: Option<usize>,
    ) -> WsClient {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut url = format!(
            "{}/runs/{run_id}/ws",
            app.address.replacen("http://", "ws://", 1)
        );
        if let Some(cursor) = cursor {
            url.push_str(&format!("?last_event_id={cursor}"));
        }
        let mut command = Command::new(root.join("tools/venv/bin/python"));
        command.arg(root.join("tests/api/ws_client.py")).arg(url);
        match auth {
            Auth::Bearer(token) => {
                command.args(["--header", &format!("Authorization: Bearer {token}")]);
            }
            Auth::Cookie { cookie, origin } => {
                command.args(["--header", &format!("Cookie: {cookie}"), "--origin", origin]);
            }
        }
        if let Some(after) = stall_after {
            command.args(["--stall-after", &after.to_string()]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start the WebSocket client (scripts/setup.sh installs it)");
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        WsClient {
            _child: child,
            lines: BufReader::new(stdout).lines(),
            stdin,
        }
    }

    /// What the client printed next.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .expect("the WebSocket client said nothing")
            .unwrap()
            .expect("the WebSocket client ended without a close");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Every message until the server's close, and that close.
    async fn read_to_close(&mut self) -> (Vec<Value>, Value) {
        let mut messages = Vec::new();
        loop {
            let next = self.next().await;
            if next.get("close").is_some() {
                return (messages, next);
            }
            assert!(next.get("stalled").is_none(), "{next}");
            messages.push(next);
        }
    }

    async fn resume_reading(&mut self) {
        self.stdin.write_all(b"go\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }
}

/// An SSE event as the WebSocket sends it.
fn as_message(event: &SseEvent) -> Value {
    json!({ "id": event.seq(), "event": event.event, "data": event.json() })
}

async fn session_cookie(app: &TestApp) -> String {
    let response = app.login(&app.admin_token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let header = response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    header.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_socket_sends_the_sse_events_resumes_from_a_cursor_and_closes_1000_after_done() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let resources = [Res::new("a", 300), Res::new("b", 600)];
    let twin = app
        .create_sandbox_twin(&token, "socket", &sandbox_config(&resources))
        .await;
    let run_id = app.start_run_ok(&token, &twin, "deploy").await;

    let mut live = WsClient::connect(&app, &run_id, None, Auth::Bearer(&token), None).await;
    assert_eq!(live.next().await, json!({ "open": true }));
    let (messages, close) = live.read_to_close().await;
    assert_eq!(close, json!({ "close": 1000, "reason": "" }));
    let stored: Vec<Value> = app
        .all_events(&token, &run_id)
        .await
        .iter()
        .map(as_message)
        .collect();
    assert_eq!(messages, stored);
    assert_eq!(messages.last().unwrap()["event"], "done");
    assert_eq!(messages.last().unwrap()["data"]["outcome"], "succeeded");

    // From a cursor: the rest, without a gap, then the same close.
    let cursor = 3;
    let mut resumed =
        WsClient::connect(&app, &run_id, Some(cursor), Auth::Bearer(&token), None).await;
    assert_eq!(resumed.next().await, json!({ "open": true }));
    let (rest, close) = resumed.read_to_close().await;
    assert_eq!(close["close"], 1000);
    assert_eq!(rest, stored[usize::try_from(cursor).unwrap()..]);

    // At the end: nothing more, a normal close at once.
    let last = u64::try_from(stored.len()).unwrap();
    let mut at_end = WsClient::connect(&app, &run_id, Some(last), Auth::Bearer(&token), None).await;
    assert_eq!(at_end.next().await, json!({ "open": true }));
    let (none, close) = at_end.read_to_close().await;
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(close["close"], 1000);

    // Past it: a policy close that says why.
    let mut past =
        WsClient::connect(&app, &run_id, Some(last + 5), Auth::Bearer(&token), None).await;
    assert_eq!(past.next().await, json!({ "open": true }));
    let (none, close) = past.read_to_close().await;
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(close["close"], 1008);
    assert_eq!(
        close["reason"],
        format!(
            "cursor {} is beyond the run's last event ({last})",
            last + 5
        )
    );
}

#[tokio::test]
async fn the_session_cookie_opens_a_socket_from_the_gateways_origin_only() {
    let app =
        spawn_run_app_with(|s| s.cors_origins = vec!["https://dashboard.example".into()]).await;
    let token = app.admin_token.clone();
    let twin = app
        .create_sandbox_twin(&token, "cookie", &sandbox_config(&[Res::new("a", 0)]))
        .await;
    let run_id = app.run_ok(&token, &twin, "deploy").await;
    let cookie = session_cookie(&app).await;

    for origin in ["https://evil.example", "null", "http://127.0.0.1:1"] {
        let mut foreign = WsClient::connect(
            &app,
            &run_id,
            None,
            Auth::Cookie {
                cookie: &cookie,
                origin,
            },
            None,
        )
        .await;
        let refused = foreign.next().await;
        assert_eq!(refused["rejected"], 403, "{origin}: {refused}");
        let body: Value = serde_json::from_str(refused["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["code"], "forbidden", "{body}");
    }
    for origin in [app.address.as_str(), "https://dashboard.example"] {
        let mut own = WsClient::connect(
            &app,
            &run_id,
            None,
            Auth::Cookie {
                cookie: &cookie,
                origin,
            },
            None,
        )
        .await;
        assert_eq!(own.next().await, json!({ "open": true }), "{origin}");
        let (messages, close) = own.read_to_close().await;
        assert_eq!(close["close"], 1000);
        assert_eq!(messages.last().unwrap()["event"], "done");
    }
    // No credential at all: 401 before any upgrade.
    let mut nobody = WsClient::connect(
        &app,
        &run_id,
        None,
        Auth::Cookie {
            cookie: "terrastream_session=forged",
            origin: &app.address,
        },
        None,
    )
    .await;
    assert_eq!(nobody.next().await["rejected"], 401);
}

#[tokio::test]
async fn a_socket_reader_that_stops_reading_does_not_hold_the_run_up_and_then_gets_it_all() {
    // As the SSE test of a reader that reads nothing: 3000 lines of 4 KB from the cleanup
    // command, far more than the client's queue and the socket buffers hold.
    let app = spawn_run_app_with(|s| {
        s.cleanup_command = Some("yes \"$(printf '%4000s' '' | tr ' ' x)\" | head -n 3000".into());
    })
    .await;
    let token = app.admin_token.clone();
    let twin = app
        .create_sandbox_twin(&token, "stalled", &sandbox_config(&[Res::new("only", 0)]))
        .await;
    app.run_ok(&token, &twin, "deploy").await;
    let run_id = app.start_run_ok(&token, &twin, "destroy").await;

    let mut stalled = WsClient::connect(&app, &run_id, None, Auth::Bearer(&token), Some(1)).await;
    assert_eq!(stalled.next().await, json!({ "open": true }));
    let first = stalled.next().await;
    assert_eq!(first["id"], 1, "{first}");
    assert_eq!(stalled.next().await, json!({ "stalled": 1 }));
    // The run ends while that reader reads nothing.
    let run = app.wait_for_run(&token, &run_id).await;
    assert_eq!(run["status"], "completed", "{run}");

    stalled.resume_reading().await;
    let (rest, close) = stalled.read_to_close().await;
    assert_eq!(close["close"], 1000);
    let stored: Vec<Value> = app
        .all_events(&token, &run_id)
        .await
        .iter()
        .map(as_message)
        .collect();
    let mut seen = vec![first];
    seen.extend(rest);
    assert_eq!(seen.len(), stored.len());
    assert!(seen == stored, "the stalled reader saw a different run");
}
