//! The throwaway PKI of the sink tests (the benches' one, `benches/common/pki.rs`: a CA, a server certificate
//! for localhost / 127.0.0.1 and a client certificate, made at run time) and an axum TLS listener.

// The benches' file also has `serve_tls`, which these tests do not use.
#[allow(dead_code)]
#[path = "../../../benches/common/pki.rs"]
mod shared;

pub use shared::Pki;

/// An axum listener serving TLS (the handshake happens in `accept`; failed handshakes are dropped).
pub struct TlsListener {
    pub tcp: tokio::net::TcpListener,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else { continue };
            // A client without a valid certificate fails here and is never served.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }
}
