//! TLS on both ports: the PEM files of `[server.tls]` become rustls server
//! configs (ALPN `h2` for gRPC, `h2` and `http/1.1` for HTTP, client
//! certificates checked when `client_ca_file` is set), read again when the
//! files change or on SIGHUP, and a TCP listener becomes a stream of
//! finished handshakes for tonic and axum. Every handshake runs in its own
//! task under `handshake_timeout`, so a slow or silent client costs only its
//! own connection, never the accept loop.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, info, warn};

use super::reload::{self, Watched};
use crate::config::TlsConfig;
use crate::self_metrics::ReloadLabels;

/// Handshakes under way at once on one port; a connection beyond it is
/// closed at once (the client retries), so a flood of half-open handshakes
/// holds bounded memory.
const MAX_HANDSHAKES: usize = 1024;

/// Finished handshakes waiting for the server to take them.
const READY_QUEUE: usize = 128;

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.{key} {path}: {source}")]
    Unreadable {
        key: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("server.tls.{key} {path}: {what}")]
    Pem {
        key: &'static str,
        path: String,
        what: String,
    },
    #[error("server.tls: the certificate and key do not make a TLS server: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("server.tls.client_ca_file {path}: {what}")]
    ClientCa { path: String, what: String },
}

/// Which port a config is for: they differ in ALPN only.
#[derive(Debug, Clone, Copy)]
pub enum Port {
    Grpc,
    Http,
}

/// The two server configs in force.
#[derive(Debug, Clone)]
struct Configs {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
}

/// The TLS state both ports share.
#[derive(Debug)]
pub struct Tls {
    files: TlsConfig,
    configs: RwLock<Configs>,
    watched: Watched,
}

impl Tls {
    /// Reads the configured files; `None` when TLS is off. A file that is
    /// missing or broken stops the start, with the reason.
    pub fn load(
        files: &TlsConfig,
        reloads: Family<ReloadLabels, Counter>,
    ) -> Result<Option<Arc<Tls>>, TlsError> {
        if !files.enabled() {
            return Ok(None);
        }
        let paths = [&files.cert_file, &files.key_file, &files.client_ca_file];
        let watched = Watched::new(paths.map(String::clone).to_vec(), reloads);
        let configs = build(files)?;
        info!(
            cert_file = %files.cert_file,
            mutual = !files.client_ca_file.is_empty(),
            "TLS on both ports"
        );
        Ok(Some(Arc::new(Tls {
            files: files.clone(),
            configs: RwLock::new(configs),
            watched,
        })))
    }

    /// Reads the files again and puts them in force for new connections;
    /// on an error the configs in force stay, and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let configs = self.watched.reload(|| build(&self.files))?;
        *self.configs.write().expect("tls config lock") = configs;
        Ok(())
    }

    /// Reloads when any file's modification time or length changed since
    /// last read. Logs the outcome.
    fn reload_if_changed(&self) {
        if self.watched.changed() {
            self.reload_logged("the files changed");
        }
    }

    /// Reloads and says how it went.
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => info!(why, cert_file = %self.files.cert_file, "TLS certificates reloaded"),
            Err(e) => {
                warn!(why, error = %e, "TLS certificates not reloaded; the previous ones stay in force")
            }
        }
    }

    fn acceptor(&self, port: Port) -> TlsAcceptor {
        let configs = self.configs.read().expect("tls config lock");
        TlsAcceptor::from(match port {
            Port::Grpc => configs.grpc.clone(),
            Port::Http => configs.http.clone(),
        })
    }

    /// Looks at the files every `reload_interval` until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let interval = self.files.reload_interval;
        reload::every(interval, stop, move || self.reload_if_changed()).await;
    }

    /// Accepts TCP connections on `listener` and hands over those whose
    /// handshake finished, until `stop`.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
        port: Port,
        stop: CancellationToken,
    ) -> io::Result<Incoming> {
        let addr = listener.local_addr()?;
        let (ready, rx) = mpsc::channel(READY_QUEUE);
        let timeout = self.files.handshake_timeout;
        tokio::spawn(accept_loop(self, listener, port, ready, timeout, stop));
        Ok(Incoming { rx, addr })
    }
}

async fn accept_loop(
    tls: Arc<Tls>,
    listener: TcpListener,
    port: Port,
    ready: mpsc::Sender<TlsConn>,
    timeout: Duration,
    stop: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait, don't spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(place) = handshakes.clone().try_acquire_owned() else {
            debug!(%peer, "too many TLS handshakes under way; connection closed");
            continue;
        };
        let acceptor = tls.acceptor(port);
        let ready = ready.clone();
        tokio::spawn(async move {
            let _place = place;
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send(TlsConn(stream)).await;
                }
                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Finished handshakes of one port.
pub struct Incoming {
    rx: mpsc::Receiver<TlsConn>,
    addr: SocketAddr,
}

impl Incoming {
    /// For tonic's `serve_with_incoming_shutdown`.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = io::Result<TlsConn>> {
        futures_util::stream::unfold(self.rx, |mut rx| async move {
            rx.recv().await.map(|conn| (Ok(conn), rx))
        })
    }
}

impl axum::serve::Listener for Incoming {
    type Io = TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => {
                let peer = conn.0.get_ref().0.peer_addr().unwrap_or(self.addr);
                (conn, peer)
            }
            // The accept loop stopped: so is the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// One TLS connection after its handshake.
pub struct TlsConn(TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

fn read(key: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Unreadable {
        key,
        path: path.to_string(),
        source,
    })
}

fn certificates(key: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            key,
            path: path.to_string(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            key,
            path: path.to_string(),
            what: "no PEM certificate in it".to_string(),
        });
    }
    Ok(certs)
}

/// Both ports' server configs from the files.
fn build(files: &TlsConfig) -> Result<Configs, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("cert_file", &files.cert_file)?;
    let key_pem = read("key_file", &files.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        key: "key_file",
        path: files.key_file.clone(),
        what: e.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if files.client_ca_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let path = &files.client_ca_file;
        let mut roots = RootCertStore::empty();
        for ca in certificates("client_ca_file", path)? {
            roots.add(ca).map_err(|e| TlsError::ClientCa {
                path: path.clone(),
                what: e.to_string(),
            })?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError::ClientCa {
                path: path.clone(),
                what: e.to_string(),
            })?;
        builder.with_client_cert_verifier(verifier)
    };
    let base = builder.with_single_cert(chain, key)?;
    let with_alpn = |protocols: &[&[u8]]| {
        let mut c = base.clone();
        c.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    };
    Ok(Configs {
        grpc: with_alpn(&[b"h2"]),
        http: with_alpn(&[b"h2", b"http/1.1"]),
    })
}
