//! The HTTP request path through an in-process sinew to an in-process loopback backend, beside the same
//! request sent to the backend directly, so the proxy's added cost reads as a ratio from one run.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sinew::agent::Agent;
use sinew::config::{Config, Format};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use tokio::net::TcpListener;

async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn request_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (direct, agent) = rt.block_on(async {
        let backend = backend().await;
        let yaml = format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  web:\n    listen: 127.0.0.1:0\n    mode: http\n    backends: [{backend}]\n"
        );
        let config = Config::parse(&yaml, Format::Yaml, Path::new("bench.yaml")).expect("config");
        (backend, Agent::start(config).await.expect("agent"))
    });
    let proxied = agent.service_addr("web").expect("listener");
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut group = c.benchmark_group("http_request");
    for (name, addr) in [("direct", direct), ("through_sinew", proxied)] {
        let uri: hyper::Uri = format!("http://{addr}/").parse().expect("uri");
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let req = Request::get(uri.clone())
                    .body(Empty::new())
                    .expect("request");
                let resp = client.request(req).await.expect("response");
                resp.into_body().collect().await.expect("body").to_bytes()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, request_path);
criterion_main!(benches);
