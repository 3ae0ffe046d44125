//! Server assembly: the shared [`AppState`], the request pipeline (client authentication → route
//! → body → handler → Express-shaped errors, all under the request timeout) and the accept loop
//! (TCP, TLS with optional client certificates, or a Unix socket) with keep-alive / header
//! timeouts and graceful shutdown.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::{ClientAuth, ConnectionInfo};
use crate::config::{Config, Env, Mode};
use crate::error::{ApiError, Secrets, json_response};
use crate::js_json::{JsObject, JsValue};
use crate::keys::keystore::KeyStore;
use crate::keys::unlocked::KeyCache;
use crate::keys::{KdfPool, WalletPassphrases};
use crate::metrics::{Metrics, Refusal};
use crate::routes::{self, Route};
use crate::store;
use crate::store::audit::{AuditLog, AuditRecord, FileAuditLog};
use crate::store::idempotency::{IdempotencyStore, RedbStore};
use crate::upstream::client::{ClientSettings, Clock, SystemClock, UpstreamClient};
use crate::upstream::external_signer::ExternalSigner;
use crate::upstream::metadata_cache::MetadataCache;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

/// How much longer than the request timeout an upstream call may take.
const UPSTREAM_TIMEOUT_MARGIN: Duration = Duration::from_secs(1);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a request head (request line and headers) may take: Node's default
/// `--max-http-header-size`, 16 KiB; more is `431` (hyper's own default is ~400 KiB per
/// connection).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Where signPayload requests are served from.
pub enum Signing {
    /// Normal mode: BitGo's wallet and keychain (spec §1.4).
    Upstream,
    /// Signer mode: the key file (spec §1.5).
    KeyFile(Arc<KeyStore>),
    /// Forward mode: another signer (spec §1.3).
    Forward(ExternalSigner),
}

/// Where the instance is in its life: readiness for `/ofc-signer/ready`.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Startup work is done (signer mode: the environment's keys are unlocked).
    started: AtomicBool,
    /// Shutdown has begun: in-flight requests finish, nothing new should be sent here.
    draining: AtomicBool,
}

impl Lifecycle {
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn mark_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Everything a request handler needs; shared by all requests.
pub struct AppState {
    pub config: Arc<Config>,
    pub upstream: UpstreamClient,
    pub passphrases: WalletPassphrases,
    pub kdf: KdfPool,
    pub signing: Signing,
    pub auth: ClientAuth,
    pub metrics: Arc<Metrics>,
    /// Normal mode's unlocked keys.
    pub key_cache: Arc<KeyCache>,
    /// Normal mode's wallet and keychain documents, per token.
    pub metadata: MetadataCache,
    pub lifecycle: Lifecycle,
    /// Every signature produced is recorded here before it leaves.
    pub audit_log: Arc<dyn AuditLog>,
    /// Sign-and-forward requests (normal and forward modes).
    pub idempotency: Option<Arc<dyn IdempotencyStore>>,
    /// Serialises sign-and-forward requests that share an idempotency key.
    pub key_locks: crate::routes::network::KeyLocks,
    pub clock: Arc<dyn Clock>,
}

/// What a route knows about a signature it produced (the payload text is only hashed).
pub struct AuditEntry {
    pub wallet_id: String,
    pub enterprise: Option<String>,
    pub payload: String,
    pub signature: Option<String>,
    pub outcome: String,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the state from a resolved configuration and the environment it was read from.
    /// In signer mode this reads the key file (startup check §7.3 step 8).
    pub fn new(config: Config, env: &Env) -> Result<Self, String> {
        Self::with_clock(config, env, Arc::new(SystemClock))
    }

    /// As [`AppState::new`], with an injected clock (tests replaying recorded exchanges).
    pub fn with_clock(config: Config, env: &Env, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let metrics = Arc::new(Metrics::new(match &config.mode {
            Mode::Normal => "normal",
            Mode::Signer { .. } => "signer",
            Mode::ExternalSigner(_) => "forward",
        }));
        let upstream = UpstreamClient::new(ClientSettings {
            base_url: config.environment.base_url.clone(),
            auth_version: config.auth_version,
            // The request timeout answers first (503, as Express); the upstream timeout is the
            // backstop for calls made outside a request.
            timeout: config.timeout + UPSTREAM_TIMEOUT_MARGIN,
            clock: clock.clone(),
            proxy: env
                .get("BITGO_USE_PROXY")
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        })?
        .with_metrics(metrics.clone());
        // Argon2id at the SDK's defaults holds 64 MiB per derivation: bound the concurrency.
        let kdf_permits = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2);
        let kdf = KdfPool::new(kdf_permits);
        let passphrases = WalletPassphrases::new(env.wallet_passphrases());
        let signing = match &config.mode {
            Mode::Normal => Signing::Upstream,
            Mode::Signer { key_file, .. } => Signing::KeyFile(Arc::new(KeyStore::open(
                key_file,
                passphrases.clone(),
                kdf.clone(),
            )?)),
            Mode::ExternalSigner(external) => Signing::Forward(ExternalSigner::new(
                external,
                config.timeout + UPSTREAM_TIMEOUT_MARGIN,
            )?),
        };
        let auth = ClientAuth::new(
            &config.signer_auth,
            matches!(config.mode, Mode::Signer { .. }),
        );
        let state_dir = &config.state_dir;
        store::ensure_state_dir(state_dir).map_err(|e| {
            format!(
                "cannot create the state directory {}: {e}",
                state_dir.display()
            )
        })?;
        let sync_metrics = metrics.clone();
        let audit_log: Arc<dyn AuditLog> = Arc::new(
            FileAuditLog::open(state_dir.join(store::AUDIT_FILE))
                .map_err(|e| e.to_string())?
                .with_commit_delay(config.operations.audit_commit_delay)
                .with_sync_observer(move |elapsed| sync_metrics.audit_sync_time(elapsed)),
        );
        let idempotency: Option<Arc<dyn IdempotencyStore>> = match &signing {
            Signing::KeyFile(_) => None,
            _ => Some(Arc::new(
                RedbStore::open(state_dir.join(store::IDEMPOTENCY_FILE))
                    .map_err(|e| e.to_string())?,
            )),
        };
        let key_cache = Arc::new(KeyCache::new(config.operations.key_cache));
        let metadata = MetadataCache::new(config.operations.metadata_cache_ttl);
        Ok(AppState {
            config: Arc::new(config),
            upstream,
            passphrases,
            kdf,
            signing,
            auth,
            metrics,
            key_cache,
            metadata,
            lifecycle: Lifecycle::default(),
            audit_log,
            idempotency,
            key_locks: Default::default(),
            clock,
        })
    }

    /// Appends a signature to the audit log, durably, before the caller releases it; when the
    /// log cannot be written the signature is withheld: 503 (fail closed).
    pub async fn audit(
        &self,
        parts: &Parts,
        route: &str,
        entry: &AuditEntry,
    ) -> Result<(), ApiError> {
        let record = AuditRecord {
            time_ms: self.clock.now_ms(),
            route: route.to_string(),
            wallet_id: entry.wallet_id.clone(),
            enterprise: entry.enterprise.clone(),
            payload_sha256: Sha256::digest(entry.payload.as_bytes()).into(),
            signature: entry.signature.clone().unwrap_or_default(),
            request_id: routes::request_id(&parts.headers),
            token_sha256: routes::access_token(&parts.headers)
                .map(|t| Sha256::digest(t.expose().as_bytes()).into()),
            outcome: entry.outcome.clone(),
        };
        let (done, appended) = tokio::sync::oneshot::channel();
        self.audit_log.append_then(
            record,
            Box::new(move |outcome| {
                let _ = done.send(outcome);
            }),
        );
        let appended = appended.await;
        self.metrics.audit(matches!(appended, Ok(Ok(()))));
        match appended {
            Ok(Ok(())) => {
                self.metrics.signature(&entry.wallet_id, &entry.outcome);
                Ok(())
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "audit log append failed: withholding the signature");
                Err(audit_unavailable())
            }
            Err(_) => Err(audit_unavailable()),
        }
    }

    /// Ready to sign: started, not shutting down, and the audit log and state directory
    /// writable. Returns what is not ready.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.lifecycle.draining() {
            return Err("shutting down");
        }
        if !self.lifecycle.started() {
            return Err("starting");
        }
        if !self.audit_log.healthy() {
            return Err("the audit log cannot be written");
        }
        if !store::probe_writable(&self.config.state_dir) {
            return Err("the state directory is not writable");
        }
        Ok(())
    }

    /// Background work: the key cache's sweeper; in signer mode, unlocking the keys whose
    /// passphrase is in the environment (requests meanwhile wait for, or do, the one derivation
    /// per key; the instance is ready after it) and watching the key file.
    pub fn start_background_tasks(self: &Arc<Self>) {
        self.key_cache.start_sweeper();
        if let (Signing::KeyFile(store), Mode::Signer { poll_interval, .. }) =
            (&self.signing, &self.config.mode)
        {
            let store = store.clone();
            let poll_interval = *poll_interval;
            let state = Arc::downgrade(self);
            tokio::spawn(async move {
                let (unlocked, failed) = store.unlock_from_environment().await;
                tracing::info!(
                    wallets = store.len(),
                    unlocked,
                    failed,
                    "signer keys unlocked from the environment"
                );
                if let Some(state) = state.upgrade() {
                    state.lifecycle.mark_started();
                }
                store.watch(poll_interval);
            });
        } else {
            self.lifecycle.mark_started();
        }
    }
}

/// A server ready to listen: state built, TLS loaded, all startup checks passed.
pub struct Prepared {
    pub state: Arc<AppState>,
    tls: Option<TlsAcceptor>,
    settings: ConnectionSettings,
}

impl Prepared {
    /// Everything that can fail before listening (spec §7.3): the key file, TLS material, clients.
    pub fn new(config: Config, env: &Env, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let tls = match &config.tls {
            Some(source) => Some(TlsAcceptor::from(crate::tls::server_config(
                source,
                config.signer_auth.client_ca.as_deref(),
            )?)),
            None => None,
        };
        let settings = ConnectionSettings::from_config(&config);
        let state = Arc::new(AppState::with_clock(config, env, clock)?);
        Ok(Prepared {
            state,
            tls,
            settings,
        })
    }

    /// Starts the background tasks and serves `listener` until `shutdown`.
    pub async fn serve(
        self,
        listener: impl Into<Listener>,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) {
        self.state.start_background_tasks();
        let state = self.state.clone();
        let shutdown = async move {
            shutdown.await;
            state.lifecycle.mark_draining();
            tracing::info!("shutting down: no new connections; finishing in-flight requests");
        };
        serve_listener(
            listener,
            self.tls,
            router(self.state.clone()),
            self.settings,
            self.state.metrics.clone(),
            shutdown,
            drain,
        )
        .await;
        // Everything acknowledged is already durable (each record and store write is synced
        // before its response); this flushes nothing new but says so.
        tracing::info!("stopped");
    }
}

fn audit_unavailable() -> ApiError {
    ApiError::api_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "the audit log cannot be written: the signature is withheld",
    )
}

/// The HTTP application: every request goes through [`dispatch`].
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .fallback(dispatch)
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("internal error").into_response()
        }))
}

/// The request pipeline: authenticate the client, resolve the route, decode the body, run the
/// handler, render any error with the request's secrets redacted — all within the configured
/// request timeout (`connect-timeout`: 503 `Response timeout`).
async fn dispatch(State(state): State<Arc<AppState>>, mut request: Request) -> Response {
    let started = Instant::now();
    let _in_flight = state.metrics.in_flight();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    // One id for the access log, the audit record and the response: the client's `Request-ID`
    // when it sent a usable one.
    let request_id = routes::request_id(request.headers());
    let request_id_header = HeaderValue::from_str(&request_id).ok();
    if let Some(value) = &request_id_header {
        request.headers_mut().insert(REQUEST_ID, value.clone());
    }
    let route = routes::resolve(&method, &path);
    let timeout = state.config.timeout;
    let body = Arc::new(BodyProgress::default());
    let request = request.map(|inner| {
        axum::body::Body::new(TrackedBody {
            inner,
            progress: body.clone(),
        })
    });
    let mut response = match tokio::time::timeout(timeout, serve(&state, route, request)).await {
        Ok(response) => response,
        // The client was still sending the body: its fault, not ours (Node's `requestTimeout`
        // answers 408 too; Express's 503 `connect-timeout` starts only once the body is read).
        Err(_) if body.incomplete() => ApiError::body_parser(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeoutError",
            "Request Timeout",
        )
        .into_response(),
        Err(_) => ApiError::body_parser(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableError",
            "Response timeout",
        )
        .with_code("ETIMEDOUT")
        .into_response(),
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let label = match route {
        Route::Proxy if path.starts_with("/api/network/") => "network",
        _ => route.label(),
    };
    state.metrics.request(label, status, elapsed);
    tracing::info!(
        target: "access",
        %method,
        path = %path,
        status,
        ms = elapsed.as_secs_f64() * 1000.0,
        request_id = %request_id,
    );
    if let Some(value) = request_id_header {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("request-id");

/// Whether a handler has started reading the request body and whether it has all arrived.
#[derive(Debug, Default)]
struct BodyProgress {
    started: AtomicBool,
    finished: AtomicBool,
}

impl BodyProgress {
    /// Being read, and not all there yet: a request timeout now is the client's slowness.
    fn incomplete(&self) -> bool {
        self.started.load(Ordering::Acquire) && !self.finished.load(Ordering::Acquire)
    }
}

/// The request body, reporting its [`BodyProgress`].
struct TrackedBody {
    inner: axum::body::Body,
    progress: Arc<BodyProgress>,
}

impl hyper::body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.progress.started.store(true, Ordering::Release);
        let frame = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, std::task::Poll::Ready(None)) {
            self.progress.finished.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A refusal (401/403): counted apart from failures.
fn refuse(state: &AppState, reason: Refusal, error: ApiError) -> Response {
    state.metrics.refusal(reason);
    error.render(&Secrets::default())
}

async fn serve(state: &AppState, route: Route, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let signer_mode = matches!(state.signing, Signing::KeyFile(_));
    let connection = parts
        .extensions
        .get::<ConnectionInfo>()
        .copied()
        .unwrap_or_default();
    if route.is_admin() {
        if state.config.operations.admin_loopback_only && !connection.loopback {
            return refuse(
                state,
                Refusal::Admin,
                ApiError::api_response(
                    StatusCode::FORBIDDEN,
                    "this route is served to local clients only",
                ),
            );
        }
        return admin(state, route);
    }
    if let Err(refusal) = state.auth.check_request(&parts.headers, connection) {
        return refuse(state, Refusal::Authentication, refusal);
    }
    match route {
        Route::SignPayload => {
            let mut body = match routes::read_typed_body(&parts, body).await {
                Ok(body) => body,
                Err(error) => return error.render(&Secrets::default()),
            };
            if let Some(wallet_id) = body.value.get("walletId").and_then(JsValue::as_str)
                && let Err(refusal) = state.auth.check_wallet(wallet_id)
            {
                return refuse(state, Refusal::Wallet, refusal);
            }
            let result = match &state.signing {
                Signing::Upstream => routes::sign_payload::handle(state, &parts, &mut body).await,
                Signing::KeyFile(store) => {
                    routes::sign_payload::handle_signer_mode(state, store, &parts, &mut body).await
                }
                Signing::Forward(signer) => {
                    routes::sign_payload::handle_forward(signer, &body).await
                }
            };
            match result {
                Ok(response) => {
                    // Forward mode: the signer behind made (and audited) the signature.
                    if let Signing::Forward(_) = state.signing {
                        let wallet = body.value.get("walletId").and_then(JsValue::as_str);
                        state
                            .metrics
                            .signature(wallet.unwrap_or_default(), "forwarded");
                    }
                    response
                }
                Err(error) => {
                    state.metrics.sign_failure(error.status.as_u16());
                    error.render(&body.secrets)
                }
            }
        }
        // Signer mode serves nothing else (Express: its default 404).
        _ if signer_mode => ApiError::api_response(
            StatusCode::NOT_FOUND,
            format!("Cannot {} {}", parts.method, parts.uri.path()),
        )
        .render(&Secrets::default()),
        Route::PingExpress => routes::local::ping_express(),
        Route::Ping => routes::local::ping(state, &parts)
            .await
            .unwrap_or_else(|e| e.render(&Secrets::default())),
        Route::Encrypt | Route::Decrypt => {
            let body = match routes::read_typed_body(&parts, body).await {
                Ok(body) => body,
                Err(error) => return error.render(&Secrets::default()),
            };
            let result = match route {
                Route::Encrypt => routes::local::encrypt(state, &body).await,
                _ => routes::local::decrypt(state, &body).await,
            };
            result.unwrap_or_else(|error| error.render(&body.secrets))
        }
        Route::NotApi | Route::Proxy => routes::proxy::handle(state, parts, body).await,
        Route::Health | Route::Live | Route::Ready | Route::Metrics => admin(state, route),
    }
}

/// ofc-signer's operational routes.
fn admin(state: &AppState, route: Route) -> Response {
    match route {
        Route::Live => {
            let mut body = JsObject::new();
            body.insert("status", "ok");
            json_response(StatusCode::OK, JsValue::Object(body).to_json())
        }
        Route::Ready => {
            let mut body = JsObject::new();
            let status = match state.readiness() {
                Ok(()) => {
                    body.insert("status", "ready");
                    StatusCode::OK
                }
                Err(reason) => {
                    body.insert("status", "not ready");
                    body.insert("reason", reason);
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            json_response(status, JsValue::Object(body).to_json())
        }
        Route::Metrics => {
            let levels = crate::metrics::Levels {
                unlocked_keys: state.key_cache.len(),
                audit_syncs: state.audit_log.syncs(),
            };
            let mut response = state.metrics.render(levels).into_response();
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => health(state),
    }
}

/// `GET /ofc-signer/health`: ofc-signer's own status route (no secrets; not authenticated).
fn health(state: &AppState) -> Response {
    let mut body = JsObject::new();
    body.insert("status", "ok");
    let mode = match &state.signing {
        Signing::Upstream => "normal",
        Signing::KeyFile(_) => "signer",
        Signing::Forward(_) => "forward",
    };
    body.insert("mode", mode);
    if let Signing::KeyFile(store) = &state.signing {
        body.insert("wallets", store.len() as f64);
    }
    let (signatures, failures, refusals) = state.metrics.totals();
    body.insert("signatures", signatures as f64);
    body.insert("failures", failures as f64);
    body.insert("refusals", refusals as f64);
    body.insert("kdfRuns", state.kdf.runs() as f64);
    body.insert("version", env!("CARGO_PKG_VERSION"));
    json_response(StatusCode::OK, JsValue::Object(body).to_json())
}

/// Connection-level settings of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSettings {
    /// Idle keep-alive connections and slow request heads are cut after this long.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl ConnectionSettings {
    /// Node's defaults are a 5 s keep-alive timeout and a 60 s headers timeout; hyper has one
    /// timer for both (it runs while a connection waits for the next request head), so the
    /// shorter of the two applies.
    pub fn from_config(config: &Config) -> Self {
        let keep_alive = config.keep_alive_timeout.unwrap_or(Duration::from_secs(5));
        let headers = config.headers_timeout.unwrap_or(Duration::from_secs(60));
        ConnectionSettings {
            header_read_timeout: keep_alive.min(headers).max(Duration::from_millis(1)),
            max_connections: config.operations.max_connections,
        }
    }
}

/// A bound listening socket.
pub enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// Binds `<bind>:<port>`, or the Unix socket `ipc` (an existing socket file is replaced; any
    /// other existing file is an error, as in Express).
    pub async fn bind(config: &Config) -> Result<Listener, String> {
        match &config.ipc {
            #[cfg(unix)]
            Some(path) => bind_ipc(path).map(Listener::Unix),
            #[cfg(not(unix))]
            Some(_) => Err("IPC option is not supported on this platform".to_string()),
            None => {
                let address = format!("{}:{}", config.bind, config.port);
                TcpListener::bind(&address)
                    .await
                    .map(Listener::Tcp)
                    .map_err(|e| format!("listen {address}: {e}"))
            }
        }
    }

    /// The bound TCP port (0 for Unix sockets).
    pub fn port(&self) -> u16 {
        match self {
            Listener::Tcp(listener) => listener.local_addr().map(|a| a.port()).unwrap_or(0),
            #[cfg(unix)]
            Listener::Unix(_) => 0,
        }
    }
}

#[cfg(unix)]
fn bind_ipc(path: &Path) -> Result<tokio::net::UnixListener, String> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if !metadata.file_type().is_socket() {
            return Err("IPC socket is not actually a socket".to_string());
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    tokio::net::UnixListener::bind(path).map_err(|e| format!("listen {}: {e}", path.display()))
}

/// Serves `app` until `shutdown` resolves, then stops accepting and lets in-flight requests
/// finish (at most `drain` long). With `tls`, every TCP connection is a TLS connection.
pub async fn serve_listener(
    listener: impl Into<Listener>,
    tls: Option<TlsAcceptor>,
    app: Router,
    settings: ConnectionSettings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let listener = listener.into();
    // At most this many connections are served at once; the next waits in the listen backlog.
    let connection_slots = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        // A client may shut its write side once the request is sent: it is still answered, as
        // Node (`allowHalfOpen`) does.
        .half_close(true)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(None);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = connection_slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (app, builder, watcher, tls) = (
            app.clone(),
            builder.clone(),
            graceful.watcher(),
            tls.clone(),
        );
        let open = metrics.connection();
        let idle = settings.header_read_timeout;
        tokio::spawn(async move {
            let _held = (slot, open);
            match (stream, tls) {
                (Accepted::Tcp(stream, loopback), Some(tls)) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await;
                    let Ok(Ok(stream)) = handshake else {
                        tracing::debug!("TLS handshake failed or timed out");
                        return;
                    };
                    let info = ConnectionInfo {
                        client_certificate: stream.get_ref().1.peer_certificates().is_some(),
                        loopback,
                    };
                    serve_connection(stream, info, app, &builder, watcher, idle).await;
                }
                (Accepted::Tcp(stream, loopback), None) => {
                    let info = ConnectionInfo {
                        client_certificate: false,
                        loopback,
                    };
                    serve_connection(stream, info, app, &builder, watcher, idle).await;
                }
                #[cfg(unix)]
                (Accepted::Unix(stream), _) => {
                    let info = ConnectionInfo {
                        client_certificate: false,
                        loopback: true,
                    };
                    serve_connection(stream, info, app, &builder, watcher, idle).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {drain:?}");
    }
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Listener::Tcp(listener)
    }
}

enum Accepted {
    /// The stream, and whether the peer is a loopback address.
    Tcp(tokio::net::TcpStream, bool),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(listener) => {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok(Accepted::Tcp(
                stream,
                peer.ip().to_canonical().is_loopback(),
            ))
        }
        #[cfg(unix)]
        Listener::Unix(listener) => Ok(Accepted::Unix(listener.accept().await?.0)),
    }
}

async fn serve_connection<S>(
    stream: S,
    info: ConnectionInfo,
    app: Router,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    idle: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let stream = ClientIo::new(stream, idle, activity.clone());
    let service = tower::service_fn({
        let activity = activity.clone();
        move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(info);
            let in_flight = activity.begin();
            let app = app.clone();
            async move {
                let response = tower::ServiceExt::oneshot(app, request).await;
                drop(in_flight);
                response
            }
        }
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::select! {
        result = watcher.watch(connection.into_owned()) => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        // hyper cuts idle HTTP/1 connections itself (`header_read_timeout`) but has no idle
        // timeout for HTTP/2: a connection with nothing in flight that has sent nothing for the
        // keep-alive timeout is closed, whatever its protocol.
        () = activity.idle_for(idle) => tracing::debug!("closing an idle connection"),
    }
}

/// What a connection has been doing: requests in flight and when it last did something.
struct Activity {
    since: Instant,
    /// Milliseconds after `since` of the last bytes received or sent, or request begun or finished.
    last_ms: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            since: Instant::now(),
            last_ms: Default::default(),
            in_flight: Default::default(),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// A request in flight until the guard is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    /// Resolves once nothing has been in flight or received for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = self.since.elapsed().saturating_sub(last);
            let wait = if self.in_flight.load(Ordering::Acquire) > 0 {
                limit
            } else if quiet >= limit {
                return;
            } else {
                (limit - quiet).max(Duration::from_millis(100))
            };
            tokio::time::sleep(wait).await;
        }
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client connection whose protocol must be decided within a deadline. hyper-util reads the
/// first bytes to choose between HTTP/1 and HTTP/2 (up to the 24-byte HTTP/2 preface) with no
/// timer of its own, so a client that sends nothing, or a slice of the preface, would hold its
/// connection slot forever. Until the bytes received stop matching the preface (HTTP/1) or
/// complete it (HTTP/2) a pending read fails once `deadline` has passed; after that, reads pass
/// through and hyper's own timers apply. Bytes received and sent are recorded as [`Activity`].
struct ClientIo<S> {
    inner: S,
    /// Every byte received counts as activity.
    activity: Arc<Activity>,
    /// Armed while the protocol is undecided.
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Bytes of the preface matched so far.
    matched: usize,
}

impl<S> ClientIo<S> {
    fn new(inner: S, deadline: Duration, activity: Arc<Activity>) -> Self {
        ClientIo {
            inner,
            activity,
            deadline: Some(Box::pin(tokio::time::sleep(deadline))),
            matched: 0,
        }
    }

    /// Bytes going out count as activity too: a large answer to a slow reader is not idle.
    fn wrote(&self, written: &std::task::Poll<std::io::Result<usize>>) {
        if matches!(written, std::task::Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.touch();
        }
    }

    /// Follows the protocol detection over newly received bytes.
    fn received(&mut self, bytes: &[u8]) {
        let expected = &H2_PREFACE[self.matched..];
        let n = bytes.len().min(expected.len());
        if bytes.is_empty() || bytes[..n] != expected[..n] || self.matched + n == H2_PREFACE.len() {
            // EOF, HTTP/1, or the whole preface: decided.
            self.deadline = None;
        } else {
            self.matched += n;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.activity.touch();
                }
                if self.deadline.is_some() {
                    self.received(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = self
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request within the headers timeout",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&written);
        written
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: the signal to shut down gracefully.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cli;
    use clap::Parser;

    async fn prepared(args: &[&str]) -> (Prepared, tempfile::TempDir) {
        let state_dir = tempfile::tempdir().unwrap();
        let mut argv = vec![
            "ofc-signer",
            "--state-dir",
            state_dir.path().to_str().unwrap(),
        ];
        argv.extend_from_slice(args);
        let env = Env::default();
        let config = Config::resolve(Cli::try_parse_from(argv).unwrap(), &env).unwrap();
        let prepared = Prepared::new(config, &env, Arc::new(SystemClock)).unwrap();
        (prepared, state_dir)
    }

    fn admin_request(path: &str, loopback: bool) -> Request {
        let mut request = Request::builder()
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        request.extensions_mut().insert(ConnectionInfo {
            client_certificate: false,
            loopback,
        });
        request
    }

    #[tokio::test]
    async fn admin_refused_off_loopback() {
        let (prepared, _dir) = prepared(&["--admin-loopback-only"]).await;
        for (path, route) in [
            ("/metrics", Route::Metrics),
            ("/ofc-signer/live", Route::Live),
            ("/ofc-signer/ready", Route::Ready),
            ("/ofc-signer/health", Route::Health),
        ] {
            let remote = serve(&prepared.state, route, admin_request(path, false)).await;
            assert_eq!(remote.status(), StatusCode::FORBIDDEN, "{path}");
            let local = serve(&prepared.state, route, admin_request(path, true)).await;
            assert_ne!(local.status(), StatusCode::FORBIDDEN, "{path}");
        }
        let (_, _, refusals) = prepared.state.metrics.totals();
        assert_eq!(refusals, 4);
    }

    #[tokio::test]
    async fn admin_served_to_anyone_by_default() {
        let (prepared, _dir) = prepared(&[]).await;
        let remote = serve(
            &prepared.state,
            Route::Metrics,
            admin_request("/metrics", false),
        )
        .await;
        assert_eq!(remote.status(), StatusCode::OK);
    }
}
