//! The agent assembled: state directory and token, one poller per bus, the recorder (history,
//! events, node metrics) and the API.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cluster::Method;
use crate::config::Config;
use crate::devices::Registry;
use crate::recorder::{History, Recorder};
use crate::{api, bot, cluster, modbus, state};

/// A running agent; dropping it stops the pollers, the recorder and the API.
pub(crate) struct Agent {
    pub(crate) api_addr: SocketAddr,
    /// Where peers reach this node, if it belongs to a network.
    pub(crate) cluster_listen: Option<SocketAddr>,
    pub(crate) token: String,
    pub(crate) registry: Registry,
    pub(crate) history: History,
    recorder: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Agent {
    pub(crate) async fn start(config: &Config) -> anyhow::Result<Agent> {
        let token = state::api_token(&config.state_dir)?;
        let (polls_tx, polls_rx) = mpsc::channel(256);
        let (registry, runners) = modbus::start(config, polls_tx);
        let (history, recorder) = Recorder::open(
            &config.state_dir,
            config.history,
            registry.clone(),
            polls_rx,
        )?;
        let router_cell: Arc<OnceLock<axum::Router>> = Arc::default();
        let local = local_call(router_cell.clone(), token.clone());
        let mut cluster = if cluster::exists(&config.state_dir) {
            Some(cluster::start(&config.state_dir, config.cluster.clone(), local.clone()).await?)
        } else {
            None
        };
        let (api_addr, router, serve) = api::bind(
            config.api_listen,
            registry.clone(),
            history.clone(),
            config.speedtest.clone(),
            token.clone(),
            cluster.as_ref().map(|c| c.handle.clone()),
            cluster
                .as_ref()
                .and_then(|c| c.overlay.as_ref().map(|(view, _)| view.clone())),
        )
        .await?;
        let mut tasks: Vec<JoinHandle<()>> =
            runners.into_iter().map(|r| tokio::spawn(r.run())).collect();
        tasks.push(tokio::spawn(serve));
        if let Some((view, overlay_tasks)) = cluster.as_mut().and_then(|c| c.overlay.take()) {
            tasks.extend(overlay_tasks.into_iter().map(tokio::spawn));
            let listener = view.overlay.listen(api_addr.port()).with_context(|| {
                format!(
                    "Failed to serve the API on the overlay, port {}",
                    api_addr.port()
                )
            })?;
            tracing::info!(api = %listener.local_addr(), "API on the overlay");
            tasks.push(tokio::spawn(api::serve_on_overlay(
                listener,
                router.clone(),
            )));
        }
        let _ = router_cell.set(router);
        let cluster_listen = cluster.map(|started| {
            tasks.push(tokio::spawn(started.serve));
            tasks.push(tokio::spawn(started.run));
            tasks.push(tokio::spawn(bot::host(
                started.turns,
                started.handle,
                local,
            )));
            started.listen
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let recorder = Some((stop, tokio::spawn(recorder.run(stopped))));
        Ok(Agent {
            api_addr,
            cluster_listen,
            token,
            registry,
            history,
            recorder,
            tasks,
        })
    }

    /// Stops polling and writes the recorder's pending batch before returning.
    pub(crate) async fn stop(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some((stop, recorder)) = self.recorder.take() {
            let _ = stop.send(());
            if tokio::time::timeout(std::time::Duration::from_secs(30), recorder)
                .await
                .is_err()
            {
                tracing::warn!("history was not written within 30 s of stopping");
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some((_, recorder)) = &self.recorder {
            recorder.abort();
        }
    }
}

/// Cluster calls run against this node's own API, in-process, with its own token.
fn local_call(router: Arc<OnceLock<axum::Router>>, token: String) -> cluster::LocalCall {
    Arc::new(move |method, path| {
        let router = router.get().cloned();
        let token = token.clone();
        Box::pin(async move {
            use tower::ServiceExt as _;
            let Some(router) = router else {
                return (
                    503,
                    b"{\"error\":{\"code\":\"starting\",\"message\":\"the API is starting\"}}"
                        .to_vec(),
                );
            };
            let method = match method {
                Method::Get => "GET",
                Method::Post => "POST",
            };
            let request = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::empty());
            let Ok(request) = request else {
                return (
                    400,
                    b"{\"error\":{\"code\":\"bad_request\",\"message\":\"bad path\"}}".to_vec(),
                );
            };
            let Ok(response) = router.oneshot(request).await;
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 64 << 20)
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            (status, body)
        })
    })
}
