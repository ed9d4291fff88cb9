//! How the agent, the demo and the simulator are told to stop.

/// Waits for Ctrl-C or SIGTERM (systemd's stop).
pub(crate) async fn signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
    }
    Ok(())
}
