//! A run's event stream as many clients see it: subscribers arriving at any moment, dropping
//! and resuming with either kind of cursor, reading nothing until the end, and reconnecting to
//! a finished run.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::watch;

use serde_json::json;

use crate::helpers::{assert_error, json_body, TestApp};
use crate::run_helpers::{
    assert_well_formed, done, sandbox_config, spawn_run_app, spawn_run_app_with, Cursor, Res,
    SseEvent,
};

/// How far the run has come, as the first subscriber saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Seen {
    last_id: u64,
    first_log: bool,
    creating: bool,
    done: bool,
}

impl Seen {
    fn after(self, moment: Moment) -> bool {
        match moment {
            Moment::Start => true,
            Moment::FirstLog => self.first_log,
            Moment::Creating => self.creating,
            Moment::Done => self.done,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Moment {
    Start,
    FirstLog,
    Creating,
    Done,
}

/// What one subscriber does.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Attach at `Moment` and read to the end.
    Follow(Moment),
    /// Attach at the first moment, read `n` events, hang up; reconnect at the second moment
    /// with the last id as a header (`true`) or query parameter (`false`); read to the end.
    Resume(Moment, usize, Moment, bool),
    /// Open the stream at once and read nothing until the run is over.
    Lazy,
}

async fn wait(moments: &mut watch::Receiver<Seen>, moment: Moment) {
    moments
        .wait_for(|seen| seen.after(moment))
        .await
        .expect("the first subscriber stopped reporting");
}

async fn subscriber(
    app: &TestApp,
    token: &str,
    run_id: &str,
    plan: Plan,
    mut moments: watch::Receiver<Seen>,
) -> Vec<SseEvent> {
    match plan {
        Plan::Follow(moment) => {
            wait(&mut moments, moment).await;
            let mut stream = app.subscribe(token, run_id, Cursor::None).await;
            stream.read_to_end().await
        }
        Plan::Resume(first, n, second, as_header) => {
            wait(&mut moments, first).await;
            let mut stream = app.subscribe(token, run_id, Cursor::None).await;
            let mut events = Vec::new();
            while events.len() < n {
                events.push(stream.next_event().await.expect("the stream ended early"));
            }
            drop(stream);
            wait(&mut moments, second).await;
            let last = events.last().map_or(0, SseEvent::seq);
            let cursor = if as_header {
                Cursor::Header(last)
            } else {
                Cursor::Query(last)
            };
            let mut resumed = app.subscribe(token, run_id, cursor).await;
            events.extend(resumed.read_to_end().await);
            events
        }
        Plan::Lazy => {
            let mut stream = app.subscribe(token, run_id, Cursor::None).await;
            wait(&mut moments, Moment::Done).await;
            stream.read_to_end().await
        }
    }
}

/// The subscribers besides the first: 49, arriving before the first log, at it, mid-apply and
/// after the end; 16 of them hang up and resume, by header or by query, live or after the end.
fn plans() -> Vec<Plan> {
    use Moment::{Creating, Done, FirstLog, Start};
    let mut plans = Vec::new();
    for moment in [Start, FirstLog, Creating, Done] {
        plans.extend([Plan::Follow(moment); 8]);
    }
    for (i, n) in [1, 3, 5, 8, 13, 21, 2, 4].into_iter().enumerate() {
        let as_header = i % 2 == 0;
        plans.push(Plan::Resume(Start, n, FirstLog, as_header));
        plans.push(Plan::Resume(FirstLog, n, Done, as_header));
    }
    plans.push(Plan::Lazy);
    plans
}

#[tokio::test]
async fn fifty_subscribers_arriving_leaving_and_resuming_all_get_the_same_whole_run() {
    let app = spawn_run_app_with(|s| s.keep_alive = Duration::from_millis(200)).await;
    let token = app.admin_token.clone();
    let resources = [
        Res::new("a", 200),
        Res::new("b", 400),
        Res::new("c", 600),
        Res::new("d", 800),
        Res::new("e", 1000),
        Res::new("f", 1200),
    ];
    let twin = app
        .create_sandbox_twin(&token, "watched", &sandbox_config(&resources))
        .await;
    let run_id = app.start_run_ok(&token, &twin, "deploy").await;
    let (report, moments) = watch::channel(Seen::default());

    // The first subscriber reports how far the run has come; the others act on it.
    let first = async {
        let mut stream = app.subscribe(&token, &run_id, Cursor::None).await;
        let mut events = Vec::new();
        while let Some(event) = stream.next_event().await {
            let line = event.line().unwrap_or_default();
            report.send_modify(|seen| {
                seen.last_id = event.seq();
                seen.first_log |= event.event == "log";
                seen.creating |= line.contains(": Creating...");
            });
            events.push(event);
        }
        report.send_modify(|seen| seen.done = true);
        events
    };
    let plans = plans();
    assert_eq!(plans.len(), 49);
    let others = futures_util::future::join_all(
        plans
            .iter()
            .map(|plan| subscriber(&app, &token, &run_id, *plan, moments.clone())),
    );
    let (reference, others) = tokio::join!(first, others);

    assert_well_formed(&reference, &run_id);
    assert_eq!(done(&reference)["outcome"], "succeeded");
    for (plan, events) in plans.iter().zip(&others) {
        assert_eq!(
            events.len(),
            reference.len(),
            "{plan:?} got {} events of {}",
            events.len(),
            reference.len()
        );
        assert!(events == &reference, "{plan:?} saw a different run");
    }
    // The lazy reader did not hold the run up: it finished, and the stored copy is the same.
    let run = app.get_run_ok(&token, &run_id).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(app.all_events(&token, &run_id).await, reference);
}

#[tokio::test]
async fn reconnecting_to_a_finished_run_at_its_end_is_204_and_past_it_422() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let twin = app
        .create_sandbox_twin(&token, "short", &sandbox_config(&[Res::new("only", 0)]))
        .await;
    let run_id = app.start_run_ok(&token, &twin, "deploy").await;
    let events = app.all_events(&token, &run_id).await;
    assert_well_formed(&events, &run_id);
    let last = events.last().unwrap().seq();

    for cursor in [Cursor::Header(last), Cursor::Query(last)] {
        let response = app.run_events(&token, &run_id, cursor).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{cursor:?}");
        assert_eq!(response.text().await.unwrap(), "");
    }
    for cursor in [
        Cursor::Header(last + 1),
        Cursor::Query(last + 1),
        Cursor::Query(last + 1000),
    ] {
        let response = app.run_events(&token, &run_id, cursor).await;
        assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    }
    // The JSON pages answer a cursor past the end the same way.
    let response = app.run_logs(&token, &run_id, last + 1, None).await;
    assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    let at_end = json_body(app.run_logs(&token, &run_id, last, None).await).await;
    assert_eq!(at_end["events"], json!([]), "{at_end}");
    // A cursor inside the run replays exactly what follows it.
    for cursor in [Cursor::Header(last - 3), Cursor::Query(last - 3)] {
        let mut stream = app.subscribe(&token, &run_id, cursor).await;
        assert_eq!(
            stream.read_to_end().await,
            events[events.len() - 3..],
            "{cursor:?}"
        );
    }
}

#[tokio::test]
async fn a_reader_that_reads_nothing_while_megabytes_stream_past_still_gets_every_event() {
    // The cleanup command's output is streamed like terraform's: 3000 lines of 4 KB, far more
    // than the socket buffers and the live buffer hold, so the idle reader's connection
    // stalls while the run goes on.
    let app = spawn_run_app_with(|s| {
        s.cleanup_command = Some("yes \"$(printf '%4000s' '' | tr ' ' x)\" | head -n 3000".into());
    })
    .await;
    let token = app.admin_token.clone();
    let twin = app
        .create_sandbox_twin(&token, "chatty", &sandbox_config(&[Res::new("only", 0)]))
        .await;
    app.run_ok(&token, &twin, "deploy").await;
    let run_id = app.start_run_ok(&token, &twin, "destroy").await;

    let mut idle = app.subscribe(&token, &run_id, Cursor::None).await;
    // A reader that keeps up sees the whole run end while the idle one has read nothing.
    let live = app.all_events(&token, &run_id).await;
    assert_well_formed(&live, &run_id);
    assert_eq!(done(&live)["outcome"], "succeeded", "{:?}", done(&live));
    let long_lines = live
        .iter()
        .filter(|e| e.line().is_some_and(|l| l.len() == 4000))
        .count();
    assert_eq!(long_lines, 3000);

    let caught_up = idle.read_to_end().await;
    assert_eq!(caught_up.len(), live.len());
    assert!(caught_up == live, "the idle reader saw a different run");
}

#[tokio::test]
async fn hanging_up_on_the_post_stream_leaves_the_run_going_and_get_resumes_it() {
    let app = spawn_run_app().await;
    let token = app.admin_token.clone();
    let resources = [Res::new("a", 1000), Res::new("b", 1500)];
    let twin = app
        .create_sandbox_twin(&token, "tab closed", &sandbox_config(&resources))
        .await;

    let mut stream = app.run_streamed(&token, &twin, "deploy").await;
    let mut seen = Vec::new();
    let creating = stream
        .read_until(&mut seen, |e| {
            e.line().is_some_and(|l| l.ends_with(": Creating..."))
        })
        .await;
    assert!(creating, "the run ended before any create started");
    drop(stream);

    let run_id = seen
        .iter()
        .find_map(|e| e.json()["job_id"].as_str().map(str::to_owned))
        .expect("an event naming the run");
    let last = seen.last().unwrap().seq();
    let mut resumed = app.subscribe(&token, &run_id, Cursor::Header(last)).await;
    seen.extend(resumed.read_to_end().await);
    assert_well_formed(&seen, &run_id);
    assert_eq!(done(&seen)["outcome"], "succeeded");
    assert_eq!(app.sandbox_ids(&twin).len(), 2);
}
