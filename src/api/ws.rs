//! `GET /runs/{id}/ws`: a run's events over a WebSocket, the same events as the SSE stream
//! from the same subscription (the store's backlog, then live; a slow reader served from the
//! store), one text message per event: `{"id": <seq>, "event": <name>, "data": <object>}`.
//! The cursor is the SSE one (`?last_event_id=N`). Pings keep the connection alive; after
//! `done` the server closes normally (1000); a cursor past the run's end is closed with 1008
//! and the reason; a gateway that stops closes with 1001 (reconnect with the last id).

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};

use super::error::{ApiError, ErrorBody};
use super::runs::{cursor, run_position, EventsQuery};
use super::sse::StreamsEnd;
use crate::config::Settings;
use crate::domain::{Principal, RunId};
use crate::hub::Subscription;
use crate::metrics::{Metrics, StreamGuard};
use crate::runs::Supervisor;
use crate::store::StoredEvent;

/// The message of one event: `data` is the stored JSON as it is (one line).
fn message(event: &StoredEvent) -> String {
    format!(
        "{{\"id\":{},\"event\":{},\"data\":{}}}",
        event.seq,
        serde_json::Value::String(event.event.clone()),
        event.data
    )
}

/// A browser's WebSocket carries the session cookie to any site that asks: a connection
/// authenticated by the cookie must come from the gateway's own origin or one of
/// `--cors-origins`. A bearer token (which no page can make a browser send) needs no check.
fn check_origin(req: &HttpRequest, settings: &Settings) -> Result<(), ApiError> {
    if req
        .headers()
        .contains_key(actix_web::http::header::AUTHORIZATION)
    {
        return Ok(());
    }
    let origin = req
        .headers()
        .get(actix_web::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let host = req.connection_info().host().to_owned();
    let own = [format!("http://{host}"), format!("https://{host}")];
    let allowed = own.iter().any(|o| o == origin)
        || settings
            .cors_origins
            .iter()
            .any(|o| o == origin && o != "*");
    if allowed {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "a WebSocket signed in with the session cookie must come from this gateway's origin or one of --cors-origins, not '{}'",
        origin.chars().take(100).collect::<String>()
    )))
}

#[utoipa::path(
    get,
    path = "/runs/{id}/ws",
    operation_id = "run_events_ws",
    tag = "runs",
    summary = "A run's events over a WebSocket",
    description = "Upgrades to a WebSocket with the events of the SSE stream from the same store: one text message per event, a `RunEventMessage` as JSON. The cursor is the same (`last_event_id`, or `Last-Event-ID`); after `done` the server closes with 1000; a cursor at the end of a finished run closes with 1000 at once, one beyond the run's last event with 1008 and the reason; a gateway that stops closes with 1001. The server pings every 15 s. A socket signed in with the session cookie must come from the gateway's own origin or one of `--cors-origins`.",
    params(("id" = RunId, Path, description = "The run's id (`job_id`)."), EventsQuery, ("Last-Event-ID" = Option<u64>, Header, description = "The cursor, as on the SSE stream.")),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket, carrying `RunEventMessage`s."),
        (status = 400, description = "Not a WebSocket handshake, or a cursor that is not a number.", body = ErrorBody),
        (status = 403, description = "Signed in with the session cookie from a foreign `Origin`.", body = ErrorBody),
    ),
)]
pub async fn run_events(
    req: HttpRequest,
    body: web::Payload,
    supervisor: web::Data<Supervisor>,
    settings: web::Data<Settings>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    check_origin(&req, &settings)?;
    let run = supervisor.twins().visible_run(&principal, &path).await?;
    let after = cursor(&req, &query)?;
    let subscription = supervisor.hub().subscribe(&run.id, after);
    let (last, finished) = run_position(&supervisor.store(), &run.id).await?;
    let (response, session, messages) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket handshake: {e}")))?;
    let guard = req
        .app_data::<web::Data<Metrics>>()
        .map(|m| StreamGuard::new(m.clone().into_inner()));
    let end = req
        .app_data::<web::Data<StreamsEnd>>()
        .map(|end| end.0.clone())
        .unwrap_or_default();
    let keep_alive = settings.keep_alive;
    actix_web::rt::spawn(async move {
        if after > last {
            let reason = format!("cursor {after} is beyond the run's last event ({last})");
            let _ = session
                .close(Some(CloseReason {
                    code: CloseCode::Policy,
                    description: Some(reason),
                }))
                .await;
            return;
        }
        if after == last && finished {
            let _ = session.close(Some(CloseCode::Normal.into())).await;
            return;
        }
        let stream = Stream {
            session,
            messages,
            subscription,
            guard,
            last_sent: after,
        };
        stream.serve(keep_alive, end).await;
    });
    Ok(response)
}

struct Stream {
    session: Session,
    messages: MessageStream,
    subscription: Subscription,
    guard: Option<StreamGuard>,
    last_sent: u64,
}

/// How a stream ends.
enum Ending {
    Close(CloseCode, Option<String>),
    /// The client went away (closed, or the connection broke): nothing more to send.
    Gone,
}

impl Stream {
    async fn serve(mut self, keep_alive: Duration, end: tokio_util::sync::CancellationToken) {
        let mut ping = tokio::time::interval(keep_alive);
        ping.tick().await;
        // Registered once for the stream's life (every stream shares the token).
        let end = end.cancelled_owned();
        tokio::pin!(end);
        let ending = loop {
            tokio::select! {
                next = self.subscription.next() => match next {
                    Ok(Some(event)) => {
                        if self.session.text(message(&event)).await.is_err() {
                            break Ending::Gone;
                        }
                        self.last_sent = event.seq;
                        if let Some(guard) = &self.guard {
                            guard.sent();
                        }
                        if event.is_done() {
                            break Ending::Close(CloseCode::Normal, None);
                        }
                    }
                    // A finished run read to its end.
                    Ok(None) => break Ending::Close(CloseCode::Normal, None),
                    Err(err) => {
                        tracing::error!(%err, "reading stored events failed; closing the WebSocket");
                        break Ending::Close(CloseCode::Error, Some("the gateway could not read the run's events; reconnect with last_event_id".into()));
                    }
                },
                received = self.messages.recv() => match received {
                    Some(Ok(Message::Ping(bytes))) => {
                        if self.session.pong(&bytes).await.is_err() {
                            break Ending::Gone;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break Ending::Gone,
                    // Pongs, and anything a client sends: nothing to answer.
                    Some(Ok(_)) => {}
                },
                _ = ping.tick() => {
                    if self.session.ping(b"").await.is_err() {
                        break Ending::Gone;
                    }
                }
                () = &mut end => break Ending::Close(
                    CloseCode::Away,
                    Some(format!("the gateway is stopping; reconnect with last_event_id={}", self.last_sent)),
                ),
            }
        };
        if let Ending::Close(code, description) = ending {
            let _ = self
                .session
                .close(Some(CloseReason { code, description }))
                .await;
        }
    }
}
