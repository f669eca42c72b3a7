//! The listener and the shutdown signal.

/// Turns a bound standard listener into poem's acceptor and reports its address (the real port
/// when bound to port 0). Must be called inside a Tokio runtime.
///
/// # Errors
///
/// When the listener cannot be made non-blocking or has no address.
pub fn acceptor(
    listener: std::net::TcpListener,
) -> std::io::Result<(poem::listener::TcpAcceptor, std::net::SocketAddr)> {
    use poem::listener::Acceptor as _;
    listener.set_nonblocking(true)?;
    let acceptor = poem::listener::TcpAcceptor::from_std(listener)?;
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .ok_or_else(|| std::io::Error::other("listener has no address"))?;
    Ok((acceptor, addr))
}

/// Completes on Ctrl-C or SIGTERM: what a server's graceful shutdown waits for.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
