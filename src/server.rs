//! Server assembly: the shared [`AppState`], the request pipeline (route → body → handler →
//! Express-shaped errors, all under the request timeout) and the accept loop with keep-alive /
//! header timeouts and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::{Config, Env};
use crate::error::{ApiError, Secrets};
use crate::keys::{KdfPool, WalletPassphrases};
use crate::routes::{self, Route};
use crate::upstream::client::{ClientSettings, Clock, SystemClock, UpstreamClient};

/// How much longer than the request timeout an upstream call may take.
const UPSTREAM_TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

/// Everything a request handler needs; shared by all requests.
pub struct AppState {
    pub config: Arc<Config>,
    pub upstream: UpstreamClient,
    pub passphrases: WalletPassphrases,
    pub kdf: KdfPool,
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
    pub fn new(config: Config, env: &Env) -> Result<Self, String> {
        Self::with_clock(config, env, Arc::new(SystemClock))
    }

    /// As [`AppState::new`], with an injected clock (tests replaying recorded exchanges).
    pub fn with_clock(config: Config, env: &Env, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let upstream = UpstreamClient::new(ClientSettings {
            base_url: config.environment.base_url.clone(),
            auth_version: config.auth_version,
            // The request timeout answers first (503, as Express); the upstream timeout is the
            // backstop for calls made outside a request.
            timeout: config.timeout + UPSTREAM_TIMEOUT_MARGIN,
            clock,
            proxy: env
                .get("BITGO_USE_PROXY")
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        })?;
        // Argon2id at the SDK's defaults holds 64 MiB per derivation: bound the concurrency.
        let kdf_permits = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2);
        Ok(AppState {
            config: Arc::new(config),
            upstream,
            passphrases: WalletPassphrases::new(env.wallet_passphrases()),
            kdf: KdfPool::new(kdf_permits),
        })
    }
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

/// The request pipeline: resolve the route, decode the body, run the handler, render any error
/// with the request's secrets redacted — all within the configured request timeout
/// (`connect-timeout`: 503 `Response timeout`).
async fn dispatch(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let timeout = state.config.timeout;
    let response = match tokio::time::timeout(timeout, serve(&state, request)).await {
        Ok(response) => response,
        Err(_) => ApiError::body_parser(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableError",
            "Response timeout",
        )
        .with_code("ETIMEDOUT")
        .into_response(),
    };
    tracing::info!(
        target: "access",
        %method,
        path = %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
    );
    response
}

async fn serve(state: &AppState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let route = routes::resolve(&parts.method, parts.uri.path());
    match route {
        Route::PingExpress => routes::local::ping_express(),
        Route::Ping => routes::local::ping(state, &parts)
            .await
            .unwrap_or_else(|e| e.render(&Secrets::default())),
        Route::SignPayload | Route::Encrypt | Route::Decrypt => {
            let mut body = match routes::read_typed_body(&parts, body).await {
                Ok(body) => body,
                Err(error) => return error.render(&Secrets::default()),
            };
            let result = match route {
                Route::SignPayload => routes::sign_payload::handle(state, &parts, &mut body).await,
                Route::Encrypt => routes::local::encrypt(state, &body).await,
                _ => routes::local::decrypt(state, &body).await,
            };
            result.unwrap_or_else(|error| error.render(&body.secrets))
        }
        Route::NotApi => ApiError::api_response(StatusCode::NOT_FOUND, "bitgo-express can only proxy BitGo API requests")
            .render(&Secrets::default()),
        Route::Proxy => ApiError::api_response(
            StatusCode::NOT_FOUND,
            "ofc-signer does not proxy this BitGo API route (the generic proxy is not enabled in this version)",
        )
        .render(&Secrets::default()),
    }
}

/// Connection-level settings of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSettings {
    /// Idle keep-alive connections and slow request heads are cut after this long.
    pub header_read_timeout: Duration,
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
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish (at most `drain` long).
pub async fn serve_listener(
    listener: TcpListener,
    app: Router,
    settings: ConnectionSettings,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(None);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
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
