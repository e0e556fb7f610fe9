//! A run's events as `text/event-stream`: `id:` is the sequence number, `event:` the type,
//! `data:` one-line JSON. Keep-alive comments make vanished clients visible.
//!
//! Each live event is encoded once and its bytes are shared by every stream that sends it
//! ([`SharedEvent::wire`]): with thousands of readers of one run, encoding per reader was the
//! gateway's largest cost of its own (docs/performance.md). The frames are the bytes
//! actix-web-lab's `Sse` writes (a test below holds the two to the same bytes).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::header::{self, CacheControl, CacheDirective, ContentEncoding};
use actix_web::web::Bytes;
use actix_web::HttpResponse;
use futures_util::stream::{self, LocalBoxStream, Stream};
use futures_util::StreamExt;
use tokio::time::{Interval, MissedTickBehavior};

use crate::hub::{SharedEvent, Subscription};
use crate::metrics::{Metrics, StreamGuard};
use crate::store::StoredEvent;

/// How long browsers wait before reconnecting.
const RETRY: Duration = Duration::from_secs(2);
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// The SSE frame of an event: `id:`, `event:`, one `data:` line per line of data, a blank line.
pub fn encode(event: &StoredEvent) -> Bytes {
    let mut frame = String::with_capacity(event.data.len() + event.event.len() + 40);
    frame.push_str("id: ");
    frame.push_str(&event.seq.to_string());
    frame.push_str("\nevent: ");
    // Event names are the gateway's own identifiers; never let one break the framing.
    frame.extend(
        event
            .event
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c }),
    );
    frame.push('\n');
    let mut data = event.data.as_str();
    loop {
        frame.push_str("data: ");
        match data.find(['\r', '\n']) {
            None => {
                frame.push_str(data);
                frame.push('\n');
                break;
            }
            Some(at) => {
                frame.push_str(&data[..at]);
                frame.push('\n');
                let rest = &data[at + 1..];
                data = if data.as_bytes()[at] == b'\r' {
                    rest.strip_prefix('\n').unwrap_or(rest)
                } else {
                    rest
                };
            }
        }
    }
    frame.push('\n');
    Bytes::from(frame)
}

fn wire(event: &SharedEvent) -> Bytes {
    event.wire(encode)
}

/// Fired when the gateway stops: every open stream ends (without `done` for a run that goes
/// on), so clients reconnect to the next start.
#[derive(Debug, Default)]
pub struct StreamsEnd(pub tokio_util::sync::CancellationToken);

/// The SSE response for a subscription; it ends after the run's `done` event, or when the
/// gateway stops.
pub fn event_stream(
    subscription: Subscription,
    keep_alive: Duration,
    req: &actix_web::HttpRequest,
) -> HttpResponse {
    let guard = req
        .app_data::<actix_web::web::Data<Metrics>>()
        .map(|m| StreamGuard::new(m.clone().into_inner()));
    // Waited on for the stream's whole life, not made again per event: every stream shares the
    // token, whose waiter list is locked at each registration.
    let end = Box::pin(
        req.app_data::<actix_web::web::Data<StreamsEnd>>()
            .map(|end| end.0.clone())
            .unwrap_or_default()
            .cancelled_owned(),
    );
    let events = stream::unfold(
        (subscription, guard, end),
        |(mut subscription, guard, mut end)| async move {
            let next = tokio::select! {
                next = subscription.next() => next,
                () = &mut end => return None,
            };
            match next {
                Ok(Some(event)) => {
                    if let Some(guard) = &guard {
                        guard.sent();
                    }
                    Some((wire(&event), (subscription, guard, end)))
                }
                Ok(None) => None,
                Err(err) => {
                    tracing::error!(%err, "reading stored events failed; ending the stream");
                    None
                }
            }
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(ContentEncoding::Identity)
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .insert_header((
            header::HeaderName::from_static("x-accel-buffering"),
            header::HeaderValue::from_static("no"),
        ))
        .streaming(EventBody::new(events.boxed_local(), keep_alive))
}

/// `retry:` first, then the events, with a keep-alive comment every `keep_alive`; ends with
/// the events.
struct EventBody {
    retry: Option<Bytes>,
    events: LocalBoxStream<'static, Bytes>,
    keep_alive: Interval,
}

impl EventBody {
    fn new(events: LocalBoxStream<'static, Bytes>, keep_alive: Duration) -> Self {
        let mut keep_alive = tokio::time::interval(keep_alive);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            retry: Some(Bytes::from(format!("retry: {}\n\n", RETRY.as_millis()))),
            events,
            keep_alive,
        }
    }
}

impl Stream for EventBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(retry) = this.retry.take() {
            return Poll::Ready(Some(Ok(retry)));
        }
        if let Poll::Ready(next) = this.events.poll_next_unpin(cx) {
            return Poll::Ready(next.map(Ok));
        }
        if this.keep_alive.poll_tick(cx).is_ready() {
            return Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE))));
        }
        Poll::Pending
    }
}

/// Does the client ask for an event stream?
pub fn wants_stream(req: &actix_web::HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use actix_web_lab::sse;

    use super::*;
    use crate::domain::RunId;

    fn event(name: &str, data: &str) -> StoredEvent {
        StoredEvent {
            run_id: RunId::generate(),
            seq: 42,
            event: name.into(),
            data: data.into(),
        }
    }

    /// What actix-web-lab's `Sse` writes for the same event.
    async fn reference(event: &StoredEvent) -> Bytes {
        let data = sse::Data::new(event.data.clone())
            .id(event.seq.to_string())
            .event(event.event.clone());
        let body = sse::Sse::from_infallible_stream(stream::iter([sse::Event::Data(data)]));
        actix_web::body::to_bytes(body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[actix_web::test]
    async fn frames_are_the_bytes_actix_web_lab_writes() {
        for data in [
            r#"{"type":"log","line":"sandbox_resource.a: Creating...","n":1}"#,
            "",
            "two\nlines",
            "cr\rand crlf\r\nend",
            "trailing\n",
        ] {
            let event = event("log", data);
            assert_eq!(encode(&event), reference(&event).await, "data {data:?}");
        }
    }

    #[test]
    fn a_shared_event_is_encoded_once_and_its_bytes_shared() {
        let shared = SharedEvent::new(event("log", "{}"));
        let mut calls = 0;
        let first = shared.wire(|e| {
            calls += 1;
            encode(e)
        });
        let second = shared.wire(|e| {
            calls += 1;
            encode(e)
        });
        assert_eq!(calls, 1);
        assert_eq!(first, second);
        assert_eq!(first.as_ptr(), second.as_ptr(), "shared, not copied");
    }
}
