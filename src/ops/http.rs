//! The operations HTTP endpoint (`[ops] http_bind`, loopback by default):
//! - `GET /metrics`: Prometheus text format ([`super::metrics`]);
//! - `GET /healthz`: `200 ok` when the daemon is really working, else `503` with the reasons ([`super::health`]);
//! - `GET /`: a status page; its HTML comes from a callback so the shell can replace the placeholder.
//!
//! Anything else: `404`; methods other than GET and HEAD: `405`. hyper does the HTTP; this module bounds it: request
//! heads of at most [`HttpLimits::max_header_bytes`], a deadline to send them, a deadline for the whole connection,
//! one request per connection, and at most [`HttpLimits::max_connections`] at a time (more are closed at once).
//! Meant for loopback (a scraper on the gateway or an SSH tunnel); a non-loopback bind is logged as a warning.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::health::Health;
use super::metrics;

/// Renders the body of `/metrics` (called once per scrape, on a runtime worker: keep it quick).
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;
/// Renders the HTML of `/`.
pub type PageFn = Arc<dyn Fn() -> String + Send + Sync>;

/// What the server answers with.
#[derive(Clone)]
pub struct Handlers {
    pub metrics: MetricsFn,
    pub page: PageFn,
    pub health: Health,
}

impl Handlers {
    pub fn new(metrics: MetricsFn, health: Health) -> Self {
        Handlers { metrics, page: Arc::new(placeholder_page), health }
    }
}

/// The placeholder status page.
pub fn placeholder_page() -> String {
    concat!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>district-gateway</title></head>\n",
        "<body><h1>district-gateway</h1>\n",
        "<p><a href=\"/metrics\">metrics</a> &middot; <a href=\"/healthz\">health</a></p>\n",
        "</body></html>\n"
    )
    .to_owned()
}

/// Bounds on what a client can make the server do.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_header_bytes: usize,
    /// Time a client has to send its request head.
    pub header_timeout: Duration,
    /// Time a whole connection may take.
    pub connection_timeout: Duration,
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            max_connections: 16,
        }
    }
}

/// A bound, not yet serving, listener: bind at startup (so a bad `http_bind` fails early), then [`HttpServer::run`].
pub struct HttpServer {
    listener: TcpListener,
    addr: SocketAddr,
    limits: HttpLimits,
}

impl HttpServer {
    pub async fn bind(addr: SocketAddr) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "ops HTTP (metrics, health) listens on a non-loopback address");
        }
        Ok(HttpServer { listener, addr, limits: HttpLimits::default() })
    }

    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until `shutdown` becomes true (or its sender is dropped); open connections are then closed.
    pub async fn run(self, handlers: Handlers, mut shutdown: watch::Receiver<bool>) {
        let HttpServer { listener, addr, limits } = self;
        let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let mut conns = JoinSet::new();
        tracing::info!(%addr, "ops HTTP listening");
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // E.g. EMFILE: back off instead of spinning.
                            tracing::warn!(error = %e, "ops HTTP accept failed");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        tracing::debug!(%peer, "ops HTTP: too many connections, closing");
                        continue;
                    };
                    let handlers = handlers.clone();
                    conns.spawn(async move {
                        let _permit = permit;
                        let service = service_fn(move |req: Request<Incoming>| {
                            let response = respond(&handlers, &req);
                            async move { Ok::<_, Infallible>(response) }
                        });
                        let conn = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(limits.header_timeout)
                            .max_buf_size(limits.max_header_bytes.max(8192))
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), service);
                        match tokio::time::timeout(limits.connection_timeout, conn).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "ops HTTP connection"),
                            Err(_) => tracing::debug!(%peer, "ops HTTP connection timed out"),
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.shutdown().await;
        tracing::info!(%addr, "ops HTTP stopped");
    }
}

fn respond(h: &Handlers, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into(), "text/plain; charset=utf-8");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => text(StatusCode::OK, (h.metrics)(), metrics::CONTENT_TYPE),
        "/healthz" => {
            let report = h.health.check();
            let status = if report.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            text(status, format!("{}\n", report.reason()), "text/plain; charset=utf-8")
        }
        "/" => text(StatusCode::OK, (h.page)(), "text/html; charset=utf-8"),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain; charset=utf-8"),
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Counters;
    use crate::ops::metrics::tests::{parse_exposition, sample_snapshot, value};
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    struct Reply {
        status: u16,
        headers: String,
        body: String,
    }

    async fn request(addr: SocketAddr, raw: &str) -> Reply {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.unwrap().unwrap();
        let text = String::from_utf8(buf).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Reply { status, headers: head.to_ascii_lowercase(), body: body.to_owned() }
    }

    async fn get(addr: SocketAddr, path: &str) -> Reply {
        request(addr, &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")).await
    }

    async fn start(
        handlers: Handlers,
        limits: HttpLimits,
    ) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let server = HttpServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap().with_limits(limits);
        let addr = server.local_addr();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(server.run(handlers, rx));
        (addr, tx, task)
    }

    #[tokio::test]
    async fn metrics_health_page_and_errors() {
        let counters = Arc::new(Counters::default());
        let health = Health::new(Duration::from_millis(300));
        health.journal_ok(true);
        let c = counters.clone();
        let mut handlers = Handlers::new(Arc::new(move || metrics::render(&sample_snapshot(&c))), health.clone());
        handlers.page = Arc::new(|| "<p>status</p>".to_owned());
        let (addr, shutdown, task) = start(handlers, HttpLimits::default()).await;

        // Counters as a test would have caused them.
        for _ in 0..7 {
            Counters::inc(&counters.frames_ok);
        }
        Counters::inc(&counters.frames_bad_mic);
        counters.readings_journaled.store(7, Ordering::Relaxed);
        let r = get(addr, "/metrics").await;
        assert_eq!(r.status, 200);
        assert!(r.headers.contains("content-type: text/plain; version=0.0.4"), "{}", r.headers);
        let (samples, _) = parse_exposition(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body));
        assert_eq!(value(&samples, "district_gateway_frames_total", &[("result", "ok")]), Some(7.0));
        assert_eq!(value(&samples, "district_gateway_frames_total", &[("result", "bad_mic")]), Some(1.0));
        assert_eq!(value(&samples, "district_gateway_readings_journaled_total", &[]), Some(7.0));

        // Healthy while the loop ticks; 503 once it stalls; healthy again when it resumes.
        let ticker = {
            let h = health.clone();
            tokio::spawn(async move {
                loop {
                    h.loop_tick();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = get(addr, "/healthz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
        health.stall_for_test(true);
        tokio::time::sleep(Duration::from_millis(450)).await;
        let r = get(addr, "/healthz").await;
        assert_eq!(r.status, 503);
        assert!(r.body.starts_with("core loop stalled"), "{}", r.body);
        health.stall_for_test(false);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(get(addr, "/healthz").await.status, 200);
        ticker.abort();

        let r = get(addr, "/").await;
        assert_eq!((r.status, r.body.as_str()), (200, "<p>status</p>"));
        assert!(r.headers.contains("content-type: text/html"));
        assert_eq!(get(addr, "/nope").await.status, 404);
        assert_eq!(get(addr, "/metrics?x=1").await.status, 200);
        let r = request(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(r.status, 405);
        assert!(r.headers.contains("allow: get, head"));
        let r = request(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!((r.status, r.body.as_str()), (200, ""));

        // An oversized request head is refused, not buffered.
        let big = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(big.as_bytes()).await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.unwrap();
        let head = String::from_utf8_lossy(&buf);
        assert!(head.is_empty() || head.starts_with("HTTP/1.1 431"), "{head}");
        // Garbage gets a 400 and the server carries on.
        assert_eq!(request(addr, "BLAH\r\n\r\n").await.status, 400);
        assert_eq!(get(addr, "/").await.status, 200);

        shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn slow_clients_are_cut_off_and_bounded() {
        let health = Health::new(Duration::from_secs(5));
        let handlers = Handlers::new(Arc::new(String::new), health);
        let limits = HttpLimits {
            header_timeout: Duration::from_millis(200),
            connection_timeout: Duration::from_millis(500),
            max_connections: 2,
            ..HttpLimits::default()
        };
        let (addr, shutdown, task) = start(handlers, limits).await;

        // A client that never finishes its request head is disconnected after the header timeout.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        let mut buf = Vec::new();
        let started = std::time::Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));

        // With two slow clients holding both slots, a third connection is closed at once...
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await.unwrap();
        assert!(buf.is_empty());
        // ...and served again once they timed out.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(get(addr, "/healthz").await.status, 503);

        // Dropping the shutdown sender also stops the server.
        drop(shutdown);
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }
}
