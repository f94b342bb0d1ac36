//! `relais serve`: opens the journal, binds every listener, runs until a stop signal, then drains.
//!
//! Start-up order: checked settings → data dir → journal (recovered) → routes loaded → bus opened (topology
//! declared) → pipeline started (it first re-processes the outbox) → listeners bound → drop folder watched →
//! `listeners.json` written (the bound addresses, for tools and tests that asked for port 0). Stop order:
//! listeners stop
//! accepting, connections answer what they already read, the journal commits what is queued and closes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

use crate::bus::Bus;
use crate::config::{self, Settings};
use crate::ingest::tls::TlsServer;
use crate::ingest::{Intake, folder, http, mllp};
use crate::journal::{Journal, JournalConfig};
use crate::pipeline::{self, Pipeline};
use crate::routing::{self, RouteSet, reload::LiveRoutes};
use crate::shutdown::{self, Shutdown};

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Settings are not acceptable.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// The journal could not be opened or closed.
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::Error),
    /// Route files do not load (every error, with file:line).
    #[error("routes:\n{0}")]
    Routes(#[from] crate::routing::RouteErrors),
    /// A mapping or document table file does not load.
    #[error(transparent)]
    MapStage(#[from] crate::pipeline::map_stage::Error),
    /// The bus could not be opened.
    #[error("bus: {0}")]
    Bus(#[from] crate::bus::Error),
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::ingest::tls::Error),
    /// A sink could not be built (PEM file, templates, directory).
    #[error(transparent)]
    Sink(#[from] crate::sinks::start::StartError),
    /// The XDS tables (`documents.tables`) could not be read.
    #[error("XDS tables: {0}")]
    Tables(#[from] crate::documents::TableError),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The addresses the listeners actually bound (port 0 resolved), as written to `listeners.json`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct BoundAddresses {
    /// Plain MLLP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mllp: Option<SocketAddr>,
    /// MLLP over TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mllp_tls: Option<SocketAddr>,
    /// HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
}

/// Runs the broker until `stop` resolves (Ctrl-C / SIGTERM in the binary).
pub async fn run(settings: Settings, stop: impl std::future::Future<Output = ()>) -> Result<(), Error> {
    settings.check()?;
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(io(format!("creating data dir {}", settings.data_dir.display())))?;

    let journal_path = settings.journal_path();
    let journal = tokio::task::spawn_blocking({
        let cfg = JournalConfig {
            path: journal_path.clone(),
            dedup_window: settings.dedup_window(),
            max_batch: settings.journal.max_batch,
            wal_segment_bytes: settings.journal.wal_segment_mb << 20,
            checkpoint_interval: std::time::Duration::from_millis(settings.journal.checkpoint_ms),
            cache_bytes: settings.journal.cache_mb << 20,
        };
        move || Journal::open(cfg)
    })
    .await
    .map_err(|e| Error::Io { what: "opening the journal".into(), source: std::io::Error::other(e) })??;
    info!(path = %journal_path.display(), "journal open");
    let known_senders: Vec<String> = settings.senders.keys().cloned().collect();
    crate::ops::metrics::install(&known_senders, settings.metrics.label_limit);
    let health = crate::ops::health::Health::new(journal.clone(), settings.data_dir.clone());

    let (trigger, shutdown) = shutdown::channel();
    let sinks = settings.sink_names();
    let routes = if sinks.is_empty() {
        tracing::warn!(
            "no sinks configured (sinks.<name>.kind): routes not loaded, every message is unrouted"
        );
        LiveRoutes::fixed(RouteSet::default())
    } else if settings.routes_dir.is_dir() {
        LiveRoutes::load(&settings.routes_dir, sinks.iter().cloned().collect())?
    } else {
        tracing::warn!(dir = %settings.routes_dir.display(), "no routes directory: every message is unrouted");
        LiveRoutes::fixed(RouteSet::default())
    };
    info!(routes = routes.current().routes().len(), "routes loaded");
    let bus = Bus::open(&settings.bus, &settings.data_dir, &sinks).await?;
    info!(backend = if settings.bus.amqp_url.is_some() { "amqp" } else { "embedded" }, "bus open");
    let pipeline = Pipeline {
        journal: journal.clone(),
        transform: pipeline::transform_for(&settings)?,
        routes: Arc::clone(&routes),
        bus: bus.clone(),
        batch: 1024,
        sinks: Arc::new(sinks.iter().cloned().collect()),
    };
    let mut stages = tokio::task::JoinSet::new();
    let ledger = crate::sinks::ledger::Ledger::open(&settings.data_dir)
        .map(Arc::new)
        .map_err(|e| crate::sinks::start::StartError { sink: "*".into(), reason: e.to_string() })?;
    let pauses = crate::sinks::pause::Pauses::open(&settings.data_dir)
        .map_err(|e| crate::sinks::start::StartError { sink: "*".into(), reason: e.to_string() })?;
    pauses.export(&sinks);
    health.register(Arc::new(crate::sinks::pause::SinksCheck::new(sinks.clone(), pauses.clone())));
    crate::sinks::start::start(&settings, &bus, &journal, (&ledger, &pauses), &shutdown, &mut stages)?;
    stages.spawn(routing::reload::watch(Arc::clone(&routes), shutdown.clone()));
    let pipeline_shutdown = shutdown.clone();
    stages.spawn(async move {
        if let Err(error) = pipeline.run(pipeline_shutdown).await {
            tracing::error!(%error, "pipeline stopped");
        }
    });

    let intake = Intake::new(journal.clone(), &settings);
    let tables = &settings.documents.tables;
    if tables.is_dir() {
        let xds = crate::documents::XdsTables::load(tables)?;
        intake.set_document_types(xds.types.into_keys());
        info!(tables = %tables.display(), "XDS tables loaded");
    } else {
        tracing::warn!(tables = %tables.display(), "no XDS tables: any LOINC document type is taken in");
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut bound = BoundAddresses::default();
    tasks.spawn(crate::ops::metrics::run_housekeeping(
        settings.data_dir.clone(),
        std::time::Duration::from_secs(settings.metrics.scan_interval_secs),
        shutdown.clone(),
    ));

    tasks.spawn(crate::admin::retention::run(
        journal.clone(),
        settings.journal.clone(),
        Arc::clone(&ledger),
        shutdown.clone(),
    ));

    if !settings.mllp.listen.is_empty() {
        let listener = bind("mllp.listen", &settings.mllp.listen).await?;
        bound.mllp = listener.local_addr().ok();
        info!(addr = ?bound.mllp, "MLLP listening");
        tasks.spawn(mllp::run_listener(listener, intake.clone(), None, shutdown.clone()));
    }
    if let Some(tls) = &settings.mllp.tls {
        let server = Arc::new(TlsServer::from_settings(tls)?);
        let listener = bind("mllp.tls.listen", &tls.listen).await?;
        bound.mllp_tls = listener.local_addr().ok();
        info!(addr = ?bound.mllp_tls, mutual = tls.client_ca.is_some(), "MLLP over TLS listening");
        tasks.spawn(mllp::run_listener(listener, intake.clone(), Some(server), shutdown.clone()));
    }
    if !settings.http.listen.is_empty() {
        let listener = bind("http.listen", &settings.http.listen).await?;
        bound.http = listener.local_addr().ok();
        info!(addr = ?bound.http, "HTTP listening");
        let admin = crate::admin::Admin {
            journal: journal.clone(),
            bus: bus.clone(),
            sinks: sinks.clone(),
            token: settings.http.admin_token.clone(),
            ledger: Arc::clone(&ledger),
            pauses: pauses.clone(),
        };
        let router = http::router(intake.clone(), settings.http.admin_token.clone())
            .merge(crate::ops::http::router(health.clone(), journal.clone()))
            .merge(crate::admin::api::router(admin.clone()))
            .merge(crate::admin::console::router(admin));
        let http_shutdown: Shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = http::run(listener, router, http_shutdown).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
    }
    if settings.folder.enabled {
        let dir = settings.folder_path();
        folder::prepare(&dir).map_err(io(format!("creating drop folder {}", dir.display())))?;
        let settle = std::time::Duration::from_secs(settings.folder.settle_secs);
        tasks.spawn(folder::run(intake.clone(), dir, settle, shutdown.clone()));
    }
    let listeners_file = settings.data_dir.join("listeners.json");
    write_atomically(&listeners_file, &serde_json::to_vec_pretty(&bound).unwrap_or_default())?;
    health.set_listeners(bound);
    info!("relais ready");

    stop.await;
    health.set_stopping();
    info!("stopping: no new connections; answering what was already read");
    trigger.fire();
    while tasks.join_next().await.is_some() {}
    while stages.join_next().await.is_some() {}
    bus.close().await;
    drop(intake);
    journal.close().await?;
    let _ = std::fs::remove_file(&listeners_file);
    info!("stopped cleanly");
    Ok(())
}

async fn bind(key: &str, addr: &str) -> Result<TcpListener, Error> {
    let parsed = config::parse_addr(key, addr)?;
    TcpListener::bind(parsed).await.map_err(io(format!("binding {key} = {addr}")))
}

/// Writes `path` so readers see either nothing or the whole content.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("renaming to {}", path.display())))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
