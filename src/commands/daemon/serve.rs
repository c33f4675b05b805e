//! `GET /metrics` while the daemon runs.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::vault::Vault;

/// Serves `GET /metrics` on `addr` from a thread; returns the address
/// bound and the server (to stop it).
pub(super) fn serve_metrics(
    settings: PathBuf,
    addr: &str,
) -> Result<(String, std::sync::Arc<tiny_http::Server>)> {
    let server = tiny_http::Server::http(addr).map_err(|e| {
        Error::Config(format!(
            "[daemon] metrics-address = {addr:?} cannot be served ({e}); give a free host:port such as 127.0.0.1:9464"
        ))
    })?;
    let bound = server.server_addr().to_string();
    let server = std::sync::Arc::new(server);
    let s = server.clone();
    std::thread::spawn(move || {
        for req in s.incoming_requests() {
            let resp = if req.url() == "/metrics" || req.url().starts_with("/metrics?") {
                match Vault::open(&settings).and_then(|v| crate::commands::metrics::metrics(&v)) {
                    Ok(text) => {
                        let r = tiny_http::Response::from_string(text);
                        match tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            &b"text/plain; version=0.0.4; charset=utf-8"[..],
                        ) {
                            Ok(h) => r.with_header(h),
                            Err(()) => r,
                        }
                    }
                    Err(e) => tiny_http::Response::from_string(format!("coffer: {e}\n"))
                        .with_status_code(500),
                }
            } else {
                tiny_http::Response::from_string("coffer serves /metrics\n").with_status_code(404)
            };
            let _ = req.respond(resp);
        }
    });
    Ok((bound, server))
}
