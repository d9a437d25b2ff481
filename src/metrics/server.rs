//! The `/metrics` HTTP endpoint.

use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        super::global().render(),
    )
}

/// Serves `GET /metrics` on `addr` until `stop` is cancelled. Returns the bound address (useful
/// with port 0) once listening.
pub async fn serve(
    addr: SocketAddr,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new().route("/metrics", get(metrics));
    let task = tokio::spawn(async move {
        let shutdown = async move { stop.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok((local, task))
}
