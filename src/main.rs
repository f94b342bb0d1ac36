//! The `relais` command line: a thin layer over the library (errors become reports and exit codes here).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use relais::config::Settings;
use relais::send::{self, SendOptions};

/// mimalloc: mapping a message allocates many small values (FHIR models, strings); faster than the system one.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Relais: HL7v2/CDA to FHIR integration broker.
#[derive(Debug, Parser)]
#[command(name = "relais", version, about)]
struct Cli {
    /// Log as JSON lines instead of text (level from RELAIS_LOG, default `info`).
    #[arg(long, global = true, env = "RELAIS_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker: MLLP and HTTP listeners, journal.
    Serve {
        /// Settings file (TOML); `RELAIS__*` environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides `data_dir`).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Send HL7v2 files over MLLP and print each ACK; exit 1 if any ACK is not AA.
    Send {
        /// Server address.
        #[arg(long, default_value = "127.0.0.1:2575")]
        to: String,
        /// PEM CA of the server certificate: connect with TLS.
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// Client certificate (PEM), for mutual TLS.
        #[arg(long, requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// Client private key (PEM), for mutual TLS.
        #[arg(long, requires = "client_cert")]
        client_key: Option<PathBuf>,
        /// Name to verify the server certificate against (default: the host of --to).
        #[arg(long)]
        server_name: Option<String>,
        /// Files or directories of messages.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Convert one HL7v2 message to a FHIR R4 Bundle (JSON on stdout), offline.
    Convert {
        /// The message file.
        file: PathBuf,
        /// Bundle type: a FHIR message, or a transaction of conditional PUTs.
        #[arg(long = "as", value_enum, default_value_t = BundleAs::Message)]
        bundle_as: BundleAs,
        /// Indent the JSON.
        #[arg(long)]
        pretty: bool,
        /// Mapping rules directory.
        #[arg(long, env = "RELAIS_MAPPINGS", default_value = "mappings")]
        mappings: PathBuf,
        /// Settings file: per-sender time zones and charsets (`senders.<MSH-4>.timezone`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check mapping and route files (routes against the configured sinks); every error names file:line.
    Check {
        /// Settings file (for `sinks.*` and `routes_dir`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Route files directory (default: `routes_dir` of the settings, when it exists).
        #[arg(long)]
        routes: Option<PathBuf>,
        /// Mapping rules directory.
        #[arg(long, env = "RELAIS_MAPPINGS", default_value = "mappings")]
        mappings: PathBuf,
    },
    /// Route tools.
    Routes {
        #[command(subcommand)]
        command: RoutesCommand,
    },
    /// The local MSSanté directory (RPPS → GP mailboxes) used by the GP notification sink.
    Directory {
        /// Settings file (TOML), for `data_dir`.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Data directory (overrides `data_dir`).
        #[arg(long, global = true)]
        data: Option<PathBuf>,
        #[command(subcommand)]
        action: DirectoryAction,
    },
    /// Search journaled messages through the admin API (newest first).
    Messages {
        #[command(flatten)]
        conn: AdminConn,
        /// Journal state (received, failed, published...).
        #[arg(long)]
        state: Option<String>,
        /// Sending facility (MSH-4).
        #[arg(long)]
        sender: Option<String>,
        /// Message control id (MSH-10).
        #[arg(long)]
        control_id: Option<String>,
        /// Event class (admission, discharge...).
        #[arg(long)]
        event: Option<String>,
        /// Received at or after (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Received before (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        until: Option<String>,
        /// Patient key (`<assigner>|<IPP>` or INS); hashed by the server, never logged.
        #[arg(long)]
        patient: Option<String>,
        /// Most messages.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send messages through the pipeline again (by id, or every message in a state).
    Replay {
        #[command(flatten)]
        conn: AdminConn,
        /// Every message in this state (e.g. failed).
        #[arg(long, required_unless_present = "ids")]
        state: Option<String>,
        /// Start again from the mapping (map) or re-publish the stored bundle (publish).
        #[arg(long, value_enum, default_value_t = FromStage::Map)]
        from: FromStage,
        /// Journal ids.
        ids: Vec<u64>,
    },
    /// Dead letters of a sink: list, show, replay, purge.
    Dlq {
        #[command(flatten)]
        conn: AdminConn,
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Sinks: list them, pause or resume one, list what they could not deliver.
    Sinks {
        #[command(flatten)]
        conn: AdminConn,
        #[command(subcommand)]
        command: SinksCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SinksCommand {
    /// Every sink: running or paused, recent traffic, dead letters.
    List,
    /// Stop a sink taking from the bus (messages wait, in order; kept across restarts).
    Pause {
        /// Sink instance name.
        sink: String,
    },
    /// Let a paused sink take from the bus again.
    Resume {
        /// Sink instance name.
        sink: String,
    },
    /// Messages a sink could not deliver for good (no GP, no address, opposition), newest first.
    Undeliverable {
        /// Only this sink.
        #[arg(long)]
        sink: Option<String>,
        /// Most entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// Where `relais replay` starts.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FromStage {
    /// Map the raw message again.
    Map,
    /// Publish the stored bundle again.
    Publish,
}

/// How to reach the admin API.
#[derive(Debug, clap::Args)]
struct AdminConn {
    /// Base URL of the Relais HTTP listener.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080", env = "RELAIS_URL")]
    url: String,
    /// Admin bearer token (`http.admin_token`).
    #[arg(long, global = true, env = "RELAIS_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List a sink's dead letters.
    List {
        /// Sink instance name.
        sink: String,
        /// Most entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter with its FHIR bundle.
    Show {
        /// Sink instance name.
        sink: String,
        /// Journal id.
        id: u64,
    },
    /// Publish dead letters again (all of the sink when no id is given).
    Replay {
        /// Sink instance name.
        sink: String,
        /// Journal ids.
        ids: Vec<u64>,
    },
    /// Drop dead letters (all of the sink when no id is given).
    Purge {
        /// Sink instance name.
        sink: String,
        /// Journal ids.
        ids: Vec<u64>,
    },
}

/// `--as` values of `relais convert`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BundleAs {
    /// `Bundle.type = message`, MessageHeader first.
    Message,
    /// `Bundle.type = transaction`, conditional PUTs keyed by business identifiers.
    Transaction,
}

#[derive(Debug, Subcommand)]
enum RoutesCommand {
    /// Print which routes match a message and, for the others, which predicate failed.
    Explain {
        /// The message file (HL7v2, or a CDA document when it starts with `<`).
        file: PathBuf,
        /// Settings file (for `sinks.*` and `routes_dir`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Route directory (default: `routes_dir` of the settings).
        #[arg(long)]
        routes: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum DirectoryAction {
    /// Replace the directory with a public Annuaire Santé MSSanté mailbox extraction (pipe-separated text).
    Import {
        /// The extraction file.
        file: PathBuf,
    },
    /// Print the MSSanté addresses known for an RPPS (or IDNPS) number, one a line.
    Lookup {
        /// RPPS (11 digits) or IDNPS (8 + RPPS).
        rpps: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Offline commands: no runtime, no logging on stdout; one line on stderr on failure.
    match cli.command {
        Command::Convert { file, bundle_as, pretty, mappings, config } => {
            return convert(&file, bundle_as, pretty, &mappings, config.as_deref());
        }
        Command::Check { config, routes, mappings } => return check(config.as_deref(), routes, &mappings),
        Command::Messages { .. } | Command::Replay { .. } | Command::Dlq { .. } | Command::Sinks { .. } => {
            return match admin_command(cli.command) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("relais: {e:#}");
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    init_logging(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relais: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(run(cli.command));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("relais: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config, data } => {
            let mut settings = Settings::load(config.as_deref())?;
            if let Some(dir) = data {
                settings.data_dir = dir;
            }
            relais::server::run(settings, relais::server::stop_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Convert { .. }
        | Command::Check { .. }
        | Command::Messages { .. }
        | Command::Replay { .. }
        | Command::Dlq { .. }
        | Command::Sinks { .. } => Ok(ExitCode::SUCCESS),
        Command::Send { to, tls_ca, client_cert, client_key, server_name, paths } => {
            let options = SendOptions { to, tls_ca, client_cert, client_key, server_name };
            let messages = send::collect(&paths)?;
            let bar = (messages.len() > 20 && std::io::stderr().is_terminal())
                .then(|| indicatif::ProgressBar::new(messages.len() as u64));
            let mut not_aa = 0usize;
            let results = send::send_all(&options, &messages, |sent| {
                let line = match &sent.error_text {
                    Some(text) => {
                        format!("{}\t{}\t{}\t{}", sent.file.display(), sent.control_id, sent.code, text)
                    }
                    None => format!("{}\t{}\t{}", sent.file.display(), sent.control_id, sent.code),
                };
                match &bar {
                    Some(bar) => {
                        bar.println(line);
                        bar.inc(1);
                    }
                    None => println!("{line}"),
                }
                if sent.code != "AA" {
                    not_aa += 1;
                }
            })
            .await
            .context("send")?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            eprintln!("{} sent, {} not AA", results.len(), not_aa);
            Ok(if not_aa == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Routes { command: RoutesCommand::Explain { file, config, routes } } => {
            let (settings, set) = load_routes(config.as_deref(), routes)?;
            let raw = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let transform = relais::pipeline::transform_for(&settings)?;
            // A CDA document starts with `<` (after an optional BOM and blank lines); anything else is HL7v2.
            let text = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&raw);
            let kind = match text.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'<') => relais::facts::MessageKind::Cda,
                _ => relais::facts::MessageKind::Hl7v2,
            };
            match relais::routing::explain_message(&set, transform.as_ref(), kind, &raw) {
                Ok(verdicts) => {
                    print!("{}", relais::routing::render_verdicts(&verdicts));
                    Ok(ExitCode::SUCCESS)
                }
                Err(failure) => {
                    eprintln!("relais: {}: {failure}", file.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Directory { config, data, action } => {
            let mut settings = Settings::load(config.as_deref())?;
            if let Some(dir) = data {
                settings.data_dir = dir;
            }
            let directory = relais::sinks::directory::Directory::open(&settings.data_dir)?;
            match action {
                DirectoryAction::Import { file } => {
                    let r = directory.import(&file)?;
                    println!(
                        "{} lines, {} practitioners, {} mailboxes imported, {} lines skipped",
                        r.lines, r.practitioners, r.mailboxes, r.skipped
                    );
                    Ok(ExitCode::SUCCESS)
                }
                DirectoryAction::Lookup { rpps } => {
                    let found = directory.lookup(&rpps)?;
                    for address in &found {
                        println!("{address}");
                    }
                    Ok(if found.is_empty() { ExitCode::from(1) } else { ExitCode::SUCCESS })
                }
            }
        }
    }
}

fn convert(
    file: &std::path::Path,
    bundle_as: BundleAs,
    pretty: bool,
    mappings: &std::path::Path,
    config: Option<&std::path::Path>,
) -> ExitCode {
    use relais::mapping::{BundleKind, Mapper};
    use std::io::Write;
    let mapper = match Mapper::load(mappings) {
        Ok(m) => m,
        Err(e) => {
            let first = e.0.first().map(ToString::to_string).unwrap_or_default();
            eprintln!("relais convert: mappings: {first}");
            return ExitCode::from(2);
        }
    };
    let mapper = match config.map(|c| Settings::load(Some(c)).and_then(|s| s.check().map(|()| s))) {
        None => mapper,
        Some(Ok(settings)) => mapper.with_settings(&settings),
        Some(Err(e)) => {
            eprintln!("relais convert: {e}");
            return ExitCode::from(2);
        }
    };
    let raw = match std::fs::read(file) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("relais convert: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let kind = match bundle_as {
        BundleAs::Message => BundleKind::Message,
        BundleAs::Transaction => BundleKind::Transaction,
    };
    // A CDA document, or an ORU^R01 carrying one, goes through the documents module (its Bundle is always a
    // transaction: a document is not an event message).
    let message_kind = relais::documents::sniff_kind(&raw);
    let converted =
        if message_kind == relais::facts::MessageKind::Cda || relais::documents::oru::is_oru_r01(&raw) {
            convert_document(&mappings.join("tables").join("xds"), message_kind, &raw, pretty)
        } else {
            mapper.convert(&raw, kind, pretty)
        };
    match converted {
        Ok(mapped) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&mapped.bundle).and_then(|()| out.write_all(b"\n")).is_err() {
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("{}", failure.to_string().replace(['\n', '\r'], " "));
            ExitCode::from(1)
        }
    }
}

/// The documents module's Bundle for a CDA document or an ORU^R01 (XDS tables from `tables`).
fn convert_document(
    tables: &std::path::Path,
    kind: relais::facts::MessageKind,
    raw: &[u8],
    pretty: bool,
) -> Result<relais::facts::Mapped, relais::facts::MapFailure> {
    let mapper = relais::documents::DocumentMapper::load(tables).map_err(|e| relais::facts::MapFailure {
        location: tables.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut mapped = mapper.map_document(kind, raw)?.mapped;
    if pretty && let Ok(value) = serde_json::from_slice::<serde_json::Value>(&mapped.bundle) {
        mapped.bundle = serde_json::to_vec_pretty(&value).unwrap_or(mapped.bundle);
    }
    Ok(mapped)
}

fn check(config: Option<&std::path::Path>, routes: Option<PathBuf>, mappings: &std::path::Path) -> ExitCode {
    let mut failed = false;
    match relais::mapping::check::check_mappings(mappings) {
        Ok(summary) => println!("{summary}"),
        Err(errors) => {
            failed = true;
            for e in errors {
                eprintln!("{e}");
            }
        }
    }
    let settings = match Settings::load(config).and_then(|s| s.check().map(|()| s)) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("relais check: {e}");
            return ExitCode::from(1);
        }
    };
    // Routes are checked against the sinks of a configuration: the directory given, else the configured one.
    let dir = routes.or_else(|| config.map(|_| settings.routes_dir.clone()));
    if let Some(dir) = dir {
        let sinks = settings.sink_names().into_iter().collect();
        match relais::routing::check::check_routes(&dir, &sinks) {
            Ok(count) => println!("{}: {count} routes OK", dir.display()),
            Err(errors) => {
                failed = true;
                eprintln!("{errors}");
            }
        }
    } else {
        eprintln!("relais check: routes not checked (give --routes DIR, or --config FILE naming the sinks)");
    }
    if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn load_routes(
    config: Option<&std::path::Path>,
    routes: Option<PathBuf>,
) -> anyhow::Result<(Settings, relais::routing::RouteSet)> {
    let settings = Settings::load(config)?;
    settings.check()?;
    let dir = routes.unwrap_or_else(|| settings.routes_dir.clone());
    let sinks = settings.sink_names().into_iter().collect();
    let set = relais::routing::RouteSet::load_dir(&dir, &sinks)
        .map_err(|errors| anyhow::anyhow!("route errors:\n{errors}"))?;
    Ok((settings, set))
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELAIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `relais messages | replay | dlq | sinks`: one admin API call (or a few), the output as text.
fn admin_command(command: Command) -> anyhow::Result<String> {
    use relais::admin::api::SearchQuery;
    use relais::admin::client::{self, Client};
    use relais::journal::ReplayFrom;

    let json = |value: &dyn erased::Json| value.pretty();
    match command {
        Command::Messages { conn, state, sender, control_id, event, since, until, patient, limit } => {
            let client = Client::new(&conn.url, conn.token)?;
            let query =
                SearchQuery { state, sender, control_id, event, since, until, patient, limit: Some(limit) };
            let found = client.search(&query)?;
            Ok(if conn.json { json(&found) } else { client::messages_table(&found) })
        }
        Command::Replay { conn, state, from, mut ids } => {
            let client = Client::new(&conn.url, conn.token)?;
            if let Some(state) = state {
                let query = SearchQuery { state: Some(state), limit: Some(10_000), ..SearchQuery::default() };
                ids.extend(client.search(&query)?.iter().map(|e| e.id));
            }
            let from = match from {
                FromStage::Map => ReplayFrom::Map,
                FromStage::Publish => ReplayFrom::Publish,
            };
            let report = client.replay(&ids, from, !conn.json && std::io::stderr().is_terminal())?;
            Ok(if conn.json { json(&report) } else { client::replay_text(&report) })
        }
        Command::Dlq { conn, command } => {
            let client = Client::new(&conn.url, conn.token)?;
            match command {
                DlqCommand::List { sink, limit } => {
                    let dead = client.dead_letters(&sink, limit)?;
                    Ok(if conn.json { json(&dead) } else { client::dead_letters_table(&dead) })
                }
                DlqCommand::Show { sink, id } => Ok(json(&client.dead_letter(&sink, id)?)),
                DlqCommand::Replay { sink, ids } => {
                    let done = client.dead_letter_action(&sink, "replay", &ids)?;
                    Ok(if conn.json { json(&done) } else { format!("replayed {}\n", done["replayed"]) })
                }
                DlqCommand::Purge { sink, ids } => {
                    let done = client.dead_letter_action(&sink, "purge", &ids)?;
                    Ok(if conn.json { json(&done) } else { format!("purged {}\n", done["purged"]) })
                }
            }
        }
        Command::Sinks { conn, command } => {
            let client = Client::new(&conn.url, conn.token)?;
            match command {
                SinksCommand::List => {
                    let flows = client.sinks()?;
                    Ok(if conn.json { json(&flows) } else { client::sinks_table(&flows) })
                }
                SinksCommand::Pause { ref sink } | SinksCommand::Resume { ref sink } => {
                    let paused = matches!(command, SinksCommand::Pause { .. });
                    let done = client.set_paused(sink, paused)?;
                    let state = if paused { "paused" } else { "running" };
                    Ok(if conn.json { json(&done) } else { format!("{sink}: {state}\n") })
                }
                SinksCommand::Undeliverable { sink, limit } => {
                    let found = client.undeliverable(sink.as_deref(), limit)?;
                    Ok(if conn.json { json(&found) } else { client::undeliverable_table(&found) })
                }
            }
        }
        _ => Ok(String::new()),
    }
}

/// Pretty JSON of any serializable value (object-safe, so one closure prints every answer type).
mod erased {
    /// A value printable as pretty JSON.
    pub trait Json {
        /// The value as indented JSON with a final newline.
        fn pretty(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> String {
            serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
        }
    }
}
