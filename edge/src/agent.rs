//! The agent assembled: state directory and token, one poller per bus, and the API.

use std::net::SocketAddr;

use tokio::task::JoinHandle;

use crate::config::Config;
use crate::devices::Registry;
use crate::{api, modbus, state};

/// A running agent; dropping it stops the pollers and the API.
pub(crate) struct Agent {
    pub(crate) api_addr: SocketAddr,
    pub(crate) token: String,
    pub(crate) registry: Registry,
    tasks: Vec<JoinHandle<()>>,
}

impl Agent {
    pub(crate) async fn start(config: &Config) -> anyhow::Result<Agent> {
        let token = state::api_token(&config.state_dir)?;
        let (registry, runners) = modbus::start(config);
        let (api_addr, serve) =
            api::bind(config.api_listen, registry.clone(), token.clone()).await?;
        let mut tasks: Vec<JoinHandle<()>> =
            runners.into_iter().map(|r| tokio::spawn(r.run())).collect();
        tasks.push(tokio::spawn(serve));
        Ok(Agent {
            api_addr,
            token,
            registry,
            tasks,
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
