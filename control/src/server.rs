//! Runs the control process: opens the core, starts the event bridge and rollout controller
//! tasks, serves HTTP until shutdown.
//!
//! Owns task lifetimes. Does not parse arguments (see the binary).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::core::Core;
use crate::error::ControlError;

/// Spawns the event-ring poller and the rollout controller on the current runtime.
pub fn spawn_tasks(core: Arc<Core>) {
    let c = core.clone();
    let poll = Duration::from_millis(core.cfg.event_poll_ms.max(1));
    tokio::spawn(async move {
        let mut t = tokio::time::interval(poll);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            let c2 = c.clone();
            match tokio::task::spawn_blocking(move || c2.poll_events()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "event bridge"),
                Err(e) => tracing::error!(error = %e, "event bridge task"),
            }
        }
    });
    let tick = Duration::from_millis(core.cfg.controller_tick_ms.max(1));
    tokio::spawn(async move {
        let mut t = tokio::time::interval(tick);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            let c2 = core.clone();
            match tokio::task::spawn_blocking(move || c2.controller_tick()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "rollout controller"),
                Err(e) => tracing::error!(error = %e, "rollout controller task"),
            }
        }
    });
}

/// Opens everything, binds, and serves until `shutdown` resolves. Calls `on_bound` with the
/// bound address before serving.
pub async fn run(
    cfg: Config,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    let listen = cfg.listen;
    let core = tokio::task::spawn_blocking(move || Core::open(cfg))
        .await
        .map_err(|e| ControlError::Io {
            op: "start",
            path: "core".into(),
            source: std::io::Error::other(e),
        })??;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ControlError::Io {
            op: "bind",
            path: listen.to_string().into(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ControlError::Io {
        op: "local_addr",
        path: listen.to_string().into(),
        source,
    })?;
    spawn_tasks(core.clone());
    on_bound(addr);
    let app = crate::http::router(core);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(|source| ControlError::Io {
        op: "serve",
        path: addr.to_string().into(),
        source,
    })
}
