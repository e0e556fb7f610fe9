//! A run's events as `text/event-stream`: `id:` is the sequence number, `event:` the type,
//! `data:` one-line JSON. Keep-alive comments make vanished clients visible.

use std::time::Duration;

use actix_web::{HttpResponse, Responder};
use actix_web_lab::sse::{self, Sse};
use futures_util::stream;

use crate::hub::Subscription;
use crate::metrics::{Metrics, StreamGuard};
use crate::store::StoredEvent;

/// How long browsers wait before reconnecting.
const RETRY: Duration = Duration::from_secs(2);

pub fn to_sse(event: &StoredEvent) -> sse::Event {
    sse::Event::Data(
        sse::Data::new(event.data.clone())
            .id(event.seq.to_string())
            .event(event.event.clone()),
    )
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
    let end = req
        .app_data::<actix_web::web::Data<StreamsEnd>>()
        .map(|end| end.0.clone())
        .unwrap_or_default();
    let events = stream::unfold(
        (subscription, guard, end),
        |(mut subscription, guard, end)| async move {
            let next = tokio::select! {
                next = subscription.next() => next,
                () = end.cancelled() => return None,
            };
            match next {
                Ok(Some(event)) => {
                    if let Some(guard) = &guard {
                        guard.sent();
                    }
                    Some((
                        Ok::<_, std::convert::Infallible>(to_sse(&event)),
                        (subscription, guard, end),
                    ))
                }
                Ok(None) => None,
                Err(err) => {
                    tracing::error!(%err, "reading stored events failed; ending the stream");
                    None
                }
            }
        },
    );
    let mut response = Sse::from_stream(events)
        .with_keep_alive(keep_alive)
        .with_retry_duration(RETRY)
        .respond_to(req);
    response.headers_mut().insert(
        actix_web::http::header::HeaderName::from_static("x-accel-buffering"),
        actix_web::http::header::HeaderValue::from_static("no"),
    );
    response
}

/// Does the client ask for an event stream?
pub fn wants_stream(req: &actix_web::HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}
