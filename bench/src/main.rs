//! `palisade-bench`: the load side of `make bench`.
//!
//! - `floor`: a minimal TLS server that only parses the AdmissionReview and
//!   re-serialises an allowing response ([`palisade_bench::floor_review`]).
//! - `load`: keep-alive HTTPS load on several endpoints in alternating
//!   rounds; requests/s and latency percentiles of each.
//! - `ingest`: report batches into the policy service; events/s, with a
//!   policy pushed every 200 ms meanwhile (both must succeed under load).
//! - `propagation`: N enforcer long-polls waiting; one push; time until all
//!   have the new policy.
//! - `lookup`: `/mutate` of a confined pod whose image sets its own command,
//!   decode to encode, with the image looked up in a real registry: on a
//!   cache miss (a fresh resolver) and on a hit.
//! - `fleet`: thousands of simulated enforcers against replicas
//!   ([`fleet`]): connections, heartbeats, events, push arrival.
//! - `observe`: busy pods' enforcers sending observation batches, hour by
//!   hour of simulated time; database size, rows and ingest rate after each
//!   hour, then fetching and drafting the largest workload ([`observe`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::{TlsAcceptor, TlsConnector};

mod fleet;
mod observe;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the floor (parse + re-serialise only) on ADDR; writes its CA to --ca-out.
    Floor {
        #[arg(long, default_value = "127.0.0.1:9443")]
        listen: SocketAddr,
        #[arg(long)]
        ca_out: PathBuf,
    },
    /// HTTPS keep-alive load: POST BODY to each target in turn, --rounds
    /// times (alternating targets cancels drift in a shared machine's speed);
    /// one JSON line per target.
    Load {
        /// LABEL=ADDR/PATH@CA, e.g. `floor=127.0.0.1:9443/mutate@ca.crt`.
        #[arg(long = "target", required = true)]
        targets: Vec<Target>,
        #[arg(long)]
        body: PathBuf,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Seconds per target per round.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Report ingestion: batches of --batch events from --connections clients.
    Ingest {
        #[command(flatten)]
        service: Service,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Policy propagation to --pollers waiting enforcers.
    Propagation {
        #[command(flatten)]
        service: Service,
        #[arg(long, default_value_t = 1000)]
        pollers: usize,
    },
    /// `/mutate` with a registry lookup of IMAGE (served over plain HTTP).
    Lookup {
        #[arg(long)]
        image: String,
        /// Its registry, `host:port`.
        #[arg(long)]
        registry: String,
        #[arg(long, default_value_t = 200)]
        iterations: usize,
    },
    /// Simulated enforcers against one or more replicas (`make bench-fleet`).
    Fleet(fleet::FleetArgs),
    /// Observation batches from --pods busy pods every --interval seconds
    /// of simulated time, --hours hours sent back to back; one JSON line
    /// per hour (database size read from --database), then one for
    /// fetching and drafting the largest workload.
    Observe {
        #[command(flatten)]
        service: Service,
        /// The service's database: `sqlite://PATH` or `postgres://...`.
        #[arg(long)]
        database: String,
        #[arg(long, default_value = "bench-learn")]
        namespace: String,
        #[arg(long, default_value_t = 100)]
        pods: usize,
        /// Of those, pods that show 10 new destinations a round (they
        /// reach the per-workload bound).
        #[arg(long, default_value_t = 10)]
        noisy: usize,
        /// Applications the pods run (pods of one share an image).
        #[arg(long, default_value_t = 10)]
        apps: usize,
        #[arg(long, default_value_t = 2)]
        hours: u64,
        /// Seconds of simulated time between an enforcer's batches.
        #[arg(long, default_value_t = 15)]
        interval: u64,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Fetches (and drafts) of the largest workload at the end.
        #[arg(long, default_value_t = 20)]
        fetches: usize,
    },
}

/// The policy service a measurement talks to, and the token it sends.
#[derive(clap::Args)]
struct Service {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long)]
    ca: PathBuf,
    #[arg(long)]
    token: String,
}

impl Service {
    fn client(&self) -> anyhow::Result<Client> {
        Client::new(self.addr, &self.ca)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Floor { listen, ca_out } => floor(listen, ca_out).await,
        Command::Load {
            targets,
            body,
            connections,
            seconds,
            rounds,
        } => {
            let body = Bytes::from(
                std::fs::read(&body).with_context(|| format!("reading {}", body.display()))?,
            );
            let run = LoadRun {
                body,
                connections,
                duration: Duration::from_secs(seconds),
                rounds,
            };
            run.compare(&targets).await
        }
        Command::Ingest {
            service,
            batch,
            connections,
            seconds,
            label,
        } => {
            ingest(
                service.client()?,
                service.token,
                batch,
                connections,
                seconds,
                label,
            )
            .await
        }
        Command::Fleet(args) => fleet::run(args).await,
        Command::Propagation { service, pollers } => {
            propagation(service.client()?, service.token, pollers).await
        }
        Command::Lookup {
            image,
            registry,
            iterations,
        } => lookup(&image, &registry, iterations).await,
        Command::Observe {
            service,
            database,
            namespace,
            pods,
            noisy,
            apps,
            hours,
            interval,
            connections,
            fetches,
        } => {
            let simulation = observe::Simulation {
                namespace,
                pods,
                noisy,
                apps,
                hours,
                rounds_per_hour: 3600 / interval.max(1),
                interval: Duration::from_secs(interval.max(1)),
                connections,
                fetches,
            };
            observe::run(service.client()?, service.token, &database, simulation).await
        }
    }
}

// ------------------------------------------------------------------ floor

async fn floor(listen: SocketAddr, ca_out: PathBuf) -> anyhow::Result<()> {
    let generated =
        palisade_server::tls::generate_self_signed(&["127.0.0.1".into(), "localhost".into()])?;
    std::fs::write(&ca_out, &generated.ca_pem)?;
    let certs = CertificateDer::pem_slice_iter(generated.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(generated.key_pem.as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(listen).await?;
    eprintln!("floor listening on {listen}");
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let body = req.into_body().collect().await?.to_bytes();
                    let reply = palisade_bench::floor_review(&body);
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(reply))))
                });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
        });
    }
}

// ------------------------------------------------------------------ client

#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    connector: TlsConnector,
}

type Sender = http1::SendRequest<Full<Bytes>>;

impl Client {
    fn new(addr: SocketAddr, ca: &PathBuf) -> anyhow::Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            roots.add(cert?)?;
        }
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            addr,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// One keep-alive HTTP/1.1 connection.
    async fn connect(&self) -> anyhow::Result<Sender> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = self.connector.connect(name, tcp).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }
}

async fn send(sender: &mut Sender, req: Request<Full<Bytes>>) -> anyhow::Result<(u16, Bytes)> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

fn post(path: &str, token: Option<&str>, body: Bytes) -> Request<Full<Bytes>> {
    let mut req = Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.header("content-length", body.len())
        .body(Full::new(body))
        .expect("valid request")
}

// ------------------------------------------------------------------ load

/// One endpoint under load.
#[derive(Clone)]
struct Target {
    label: String,
    addr: SocketAddr,
    path: String,
    ca: PathBuf,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("{s:?}: expected LABEL=ADDR/PATH@CA");
        let (label, rest) = s.split_once('=').ok_or_else(usage)?;
        let (endpoint, ca) = rest.rsplit_once('@').ok_or_else(usage)?;
        let slash = endpoint.find('/').ok_or_else(usage)?;
        Ok(Self {
            label: label.to_string(),
            addr: endpoint[..slash]
                .parse()
                .map_err(|e| format!("{s:?}: {e}"))?,
            path: endpoint[slash..].to_string(),
            ca: PathBuf::from(ca),
        })
    }
}

struct LoadRun {
    body: Bytes,
    connections: usize,
    duration: Duration,
    rounds: usize,
}

impl LoadRun {
    /// Every target for `duration`, `rounds` times in turn; latencies and
    /// request counts are summed over the rounds.
    async fn compare(&self, targets: &[Target]) -> anyhow::Result<()> {
        let mut totals = Vec::new();
        for _ in targets {
            totals.push(Histogram::<u64>::new(3)?);
        }
        for _ in 0..self.rounds {
            for (target, total) in targets.iter().zip(&mut totals) {
                total.add(self.one(target).await?)?;
            }
        }
        let seconds = self.duration.as_secs_f64() * self.rounds as f64;
        for (target, total) in targets.iter().zip(&totals) {
            println!(
                "{{\"label\":\"{}\",\"requests_per_sec\":{:.0},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"requests\":{}}}",
                target.label,
                total.len() as f64 / seconds,
                total.value_at_quantile(0.5),
                total.value_at_quantile(0.99),
                total.value_at_quantile(0.999),
                total.len()
            );
        }
        Ok(())
    }

    /// `connections` keep-alive connections posting the body for `duration`.
    async fn one(&self, target: &Target) -> anyhow::Result<Histogram<u64>> {
        let client = Client::new(target.addr, &target.ca)?;
        let deadline = Instant::now() + self.duration;
        let mut tasks = Vec::new();
        for _ in 0..self.connections {
            let (client, path, body) = (client.clone(), target.path.clone(), self.body.clone());
            tasks.push(tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new(3)?;
                let mut sender = client.connect().await?;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let (status, _) = send(&mut sender, post(&path, None, body.clone())).await?;
                    if status != 200 {
                        bail!("HTTP {status}");
                    }
                    hist.record(started.elapsed().as_micros() as u64)?;
                }
                Ok::<_, anyhow::Error>(hist)
            }));
        }
        let mut total = Histogram::<u64>::new(3)?;
        for t in tasks {
            total.add(t.await??)?;
        }
        Ok(total)
    }
}

// ------------------------------------------------------------------ ingest

async fn ingest(
    client: Client,
    token: String,
    batch: usize,
    connections: usize,
    seconds: u64,
    label: String,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for conn in 0..connections {
        let (client, token) = (client.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = client.connect().await?;
            let mut stored = 0u64;
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let events: Vec<serde_json::Value> = (0..batch)
                    .map(|_| {
                        seq += 1;
                        serde_json::json!({"id": format!("bench-{conn}-{seq}"), "timeMs": seq, "kind": "behavior",
                            "rule": "behavior/denied-process", "mode": "audit", "message": "sh started"})
                    })
                    .collect();
                let body = serde_json::json!({"pod": {"namespace": "bench", "name": format!("pod-{conn}"), "uid": "u"}, "events": events});
                let (status, reply) = send(&mut sender, post("/api/v1/reports", Some(&token), Bytes::from(body.to_string()))).await?;
                if status != 200 {
                    bail!("HTTP {status}: {}", String::from_utf8_lossy(&reply));
                }
                let result: serde_json::Value = serde_json::from_slice(&reply)?;
                stored += result["stored"].as_u64().unwrap_or(0);
            }
            Ok::<_, anyhow::Error>(stored)
        }));
    }
    let pusher = tokio::spawn(push_meanwhile(client.clone(), token.clone(), deadline));
    let mut stored = 0;
    for t in tasks {
        stored += t.await??;
    }
    let pushes = pusher.await??;
    println!(
        "{{\"label\":\"{label}\",\"events_per_sec\":{:.0},\"events\":{stored},\"pushes\":{},\"push_failures\":{},\"push_p50_ms\":{:.1},\"push_max_ms\":{:.1}}}",
        stored as f64 / seconds as f64,
        pushes.ok.len(),
        pushes.failed,
        pushes.ok.value_at_quantile(0.5) as f64 / 1000.0,
        pushes.ok.max() as f64 / 1000.0,
    );
    Ok(())
}

/// Policy pushes made while reports are flowing in.
struct Pushes {
    /// Latencies of the pushes that succeeded, in µs.
    ok: Histogram<u64>,
    failed: u64,
}

/// Pushes a new revision of one policy every 200 ms until `deadline`.
async fn push_meanwhile(
    client: Client,
    token: String,
    deadline: Instant,
) -> anyhow::Result<Pushes> {
    let mut sender = client.connect().await?;
    let mut pushes = Pushes {
        ok: Histogram::<u64>::new(3)?,
        failed: 0,
    };
    let mut revision = 0u64;
    while Instant::now() < deadline {
        revision += 1;
        let doc = format!(
            "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {{name: bench-push}}\n\
             spec:\n  mode: audit\n  selector: {{namespaces: [bench-push]}}\n  runtime: {{deniedProcesses: [tool-{revision}]}}\n"
        );
        let request = Request::put("/api/v1/policies")
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(doc)))
            .expect("valid request");
        let started = Instant::now();
        match send(&mut sender, request).await {
            Ok((200, _)) => pushes.ok.record(started.elapsed().as_micros() as u64)?,
            Ok(_) => pushes.failed += 1,
            Err(_) => {
                pushes.failed += 1;
                sender = client.connect().await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(pushes)
}

// ------------------------------------------------------------------ propagation

async fn propagation(client: Client, token: String, pollers: usize) -> anyhow::Result<()> {
    let get = |path: String| {
        Request::get(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .expect("valid request")
    };
    let mut first = client.connect().await?;
    let (_, body) = send(&mut first, get("/api/v1/bundle?namespace=bench".into())).await?;
    let etag = serde_json::from_slice::<serde_json::Value>(&body)?["etag"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // Every poller connected and waiting before the push.
    let mut senders = Vec::with_capacity(pollers);
    for _ in 0..pollers {
        senders.push(client.connect().await?);
    }
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(pollers);
    let pushed_at = Arc::new(tokio::sync::OnceCell::<Instant>::new());
    let mut tasks = Vec::new();
    for mut sender in senders {
        let req = get(format!(
            "/api/v1/bundle?namespace=bench&etag={etag}&wait=30"
        ));
        let (ready_tx, pushed_at) = (ready_tx.clone(), pushed_at.clone());
        tasks.push(tokio::spawn(async move {
            sender.ready().await?;
            let response = sender.send_request(req);
            ready_tx.send(()).await.ok();
            let resp = response.await?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await?;
            let received = Instant::now();
            let pushed = *pushed_at.get().context("answered before the push")?;
            if status != 200 {
                bail!("HTTP {status}");
            }
            Ok::<_, anyhow::Error>(received.duration_since(pushed))
        }));
    }
    for _ in 0..pollers {
        ready_rx.recv().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // requests reach the server
    let policy = "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: bench-propagation}\nspec:\n  selector: {namespaces: [bench]}\n  runtime: {deniedProcesses: [nc]}\n";
    let mut admin = client.connect().await?;
    let push = Request::put("/api/v1/policies")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(policy)))?;
    let _ = pushed_at.set(Instant::now());
    let (status, reply) = send(&mut admin, push).await?;
    if status != 200 {
        bail!(
            "push failed: HTTP {status}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for t in tasks {
        hist.record(t.await??.as_millis() as u64)?;
    }
    println!(
        "{{\"label\":\"propagation\",\"pollers\":{pollers},\"p50_ms\":{},\"max_ms\":{}}}",
        hist.value_at_quantile(0.5),
        hist.max()
    );
    Ok(())
}

/// Admission time of a confined pod running its image's own command, miss
/// and hit; one JSON line each.
async fn lookup(image: &str, registry: &str, iterations: usize) -> anyhow::Result<()> {
    use palisade_engine::admission::{self, Webhook};
    use palisade_engine::policy::PolicySet;
    use palisade_engine::settings::{ImageLookupSettings, Settings};
    use palisade_server::images::ImageResolver;
    use palisade_server::metrics::Metrics;

    let policy = serde_json::json!({
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": "RuntimePolicy",
        "metadata": {"name": "prevent"},
        "spec": {"mode": "enforce", "runtime": {"prevent": true}}
    });
    let policies = PolicySet::from_documents([(
        "bench".to_string(),
        serde_json::from_value::<palisade_common::policy::PolicyDocument>(policy)
            .context("prevention policy")?,
    )])
    .context("prevention policy")?;
    let settings = ImageLookupSettings {
        insecure_registries: vec![registry.to_string()],
        pull_secrets: false,
        ..ImageLookupSettings::default()
    };
    let webhook = Webhook::new(&Settings::default());
    let review = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "bench", "operation": "CREATE", "namespace": "bench", "name": "app",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "userInfo": {"username": "bench"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"},
                       "spec": {"containers": [{"name": "app", "image": image}]}}
        }
    }))?;
    let metrics = Arc::new(Metrics::new());
    let admit = |resolver: Arc<ImageResolver>| {
        let (review, webhook, policies) = (&review, &webhook, &policies);
        async move {
            let started = Instant::now();
            let req = admission::decode(review)?;
            let lookups = webhook
                .image_lookups(&req, policies)
                .context("the pod asks for no lookup")?;
            let images = resolver.resolve(&lookups).await;
            if images.failures().next().is_some() {
                bail!("lookup failed: {images:?}");
            }
            let (response, _, _) = webhook.mutate_explained(&req, policies, &images);
            let body = admission::encode(&response);
            anyhow::ensure!(
                String::from_utf8_lossy(&body).contains("\"patch\""),
                "no patch"
            );
            Ok::<_, anyhow::Error>(started.elapsed())
        }
    };
    let warm = Arc::new(ImageResolver::new(settings, None, metrics).context("registry client")?);
    admit(warm.clone()).await?;
    // A miss keeps the resolver's connections, as a running server would.
    for (label, miss) in [("registry-miss", true), ("registry-hit", false)] {
        let mut histogram = Histogram::<u64>::new(3)?;
        for _ in 0..iterations {
            if miss {
                warm.clear_cache();
            }
            histogram.record(admit(warm.clone()).await?.as_micros() as u64)?;
        }
        println!(
            "{}",
            serde_json::json!({
                "label": label,
                "iterations": iterations,
                "p50_us": histogram.value_at_quantile(0.5),
                "p99_us": histogram.value_at_quantile(0.99),
            })
        );
    }
    Ok(())
}
