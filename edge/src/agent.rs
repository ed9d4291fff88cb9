//! The agent assembled: state directory and token, one poller per bus, the recorder (history,
//! events, node metrics) and the API.

use std::net::SocketAddr;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::devices::Registry;
use crate::recorder::{History, Recorder};
use crate::{api, modbus, state};

/// A running agent; dropping it stops the pollers, the recorder and the API.
pub(crate) struct Agent {
    pub(crate) api_addr: SocketAddr,
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
        let (api_addr, serve) = api::bind(
            config.api_listen,
            registry.clone(),
            history.clone(),
            config.speedtest.clone(),
            token.clone(),
        )
        .await?;
        let mut tasks: Vec<JoinHandle<()>> =
            runners.into_iter().map(|r| tokio::spawn(r.run())).collect();
        tasks.push(tokio::spawn(serve));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let recorder = Some((stop, tokio::spawn(recorder.run(stopped))));
        Ok(Agent {
            api_addr,
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
