//! The serving process (`fluid-fuse serve`, started by the keeper): builds the sources, the
//! cache and the file system, and answers the kernel on the /dev/fuse descriptor the keeper
//! hands it. The first one does the INIT handshake; a successor takes over the initialized
//! connection from the hand-over journal and asks the kernel to send the requests its
//! predecessor left unanswered again.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use fluid_proto::Endpoint;
use fluid_proto::cache_auth::RequireToken;
use fluid_proto::fluid::cache_node_server::CacheNodeServer;

use crate::cache::{BlockCache, CacheOptions};
use crate::cli::ServeArgs;
use crate::config::MountConfig;
use crate::error::{Error, Result};
use crate::fs::{FluidFs, Handover};
use crate::handover::journal::{InitRecord, Journal, Record, Replayed};
use crate::handover::protocol::{CAN_RESEND, CANNOT_TAKE_OVER, HANDED_OVER, READY, inherited};
use crate::namespace::Namespace;
use crate::reader::Reader;
use crate::service::control::Control;

/// How a serving process ends when nothing failed. `main` turns it into the exit status the
/// keeper reads (see [`crate::handover::protocol`]).
#[derive(Debug)]
pub enum Outcome {
    /// The connection ended: the mount was unmounted, or the keeper ended it.
    Ended,
    /// A successor takes over (SIGUSR1): the cache index is flushed and the process must
    /// exit at once with [`HANDED_OVER`], its FUSE threads and runtime left as they are
    /// (tearing the runtime down would fail the requests those threads are answering; the
    /// kernel resends the ones left unanswered to the successor).
    HandedOver,
    /// This successor cannot take the connection over (the journal is incomplete): exit with
    /// [`CANNOT_TAKE_OVER`], so the keeper ends the connection rather than try again.
    CannotTakeOver(Error),
}

impl Outcome {
    /// The exit status of the serving process.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Ended => 0,
            Outcome::HandedOver => HANDED_OVER,
            Outcome::CannotTakeOver(_) => CANNOT_TAKE_OVER,
        }
    }
}

/// What the main thread waits for once the session runs.
enum Event {
    Ended(std::io::Result<()>),
    HandedOver,
}

pub fn serve(rt: &tokio::runtime::Runtime, args: ServeArgs) -> Result<Outcome> {
    let fuse = inherited(args.fuse_fd, "--fuse-fd")?;
    let journal = Arc::new(Journal::open(inherited(args.journal_fd, "--journal-fd")?));
    let mut ready = std::fs::File::from(inherited(args.ready_fd, "--ready-fd")?);
    let adopting = args.generation > 0;
    let replayed = if adopting {
        let r = journal.replay().and_then(|r| match r.init {
            Some(_) => Ok(r),
            None => Err(Error::invalid(
                "the hand-over journal",
                "it holds no INIT record: nothing to take over",
            )),
        });
        match r {
            Ok(r) => Some(r),
            Err(e) => return Ok(Outcome::CannotTakeOver(e)),
        }
    } else {
        None
    };
    let m = &MountConfig::from_args(&args.mount)?;
    let (reader, control) = rt.block_on(build(m, journal.clone(), replayed.as_ref()))?;

    let stop = Arc::new(tokio::sync::Notify::new());
    if let Some(fd) = args.metrics_fd {
        let listener = std::net::TcpListener::from(inherited(fd, "--metrics-fd")?);
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| {
                let _guard = rt.enter();
                tokio::net::TcpListener::from_std(listener)
            })
            .map_err(|e| Error::io("the metrics listener", e))?;
        rt.spawn(crate::service::metrics::serve(listener, control.clone()));
    }
    let mut servers = Vec::new();
    if let Some(ep) = &m.control {
        let router = tonic::transport::Server::builder()
            .add_service(CacheNodeServer::new(control.as_ref().clone()));
        servers.push(listen(rt, "--control", ep, router, &stop)?);
    }
    if let Some(ep) = &m.peers.peer_listen {
        // `peers::join` refused a peer endpoint without a token.
        let token = m.peers.peer_token.as_ref().map(|t| t.as_str());
        let router = tonic::transport::Server::builder().add_service(
            CacheNodeServer::with_interceptor(control.as_ref().clone(), RequireToken::new(token)),
        );
        servers.push(listen(rt, "--peer-listen", ep, router, &stop)?);
    }

    let fuse_fd = fuse.as_raw_fd();
    let handover = Handover {
        journal: journal.clone(),
        fuse_fd,
        generation: args.generation,
    };
    let fs = FluidFs::new(rt.handle().clone(), reader.clone(), m.passthrough, handover);
    let config = m.session();
    let acl = config.acl;
    let (session, init) = match &replayed {
        Some(Replayed {
            init: Some(init),
            nodes,
            opens,
            ..
        }) => {
            let adopted = fs.adopt_opens(opens);
            tracing::info!(
                generation = args.generation,
                nodes = nodes.len(),
                open_files = adopted,
                "taking over the connection"
            );
            let session =
                fuser::Session::from_initialized_fd(fs, fuse, acl, config, negotiated(init))
                    .map_err(|e| Error::io("taking over the FUSE connection", e))?;
            (session, *init)
        }
        _ => {
            let session = fuser::Session::from_fd(fs, fuse, acl, config)
                .map_err(|e| Error::io("the FUSE INIT handshake", e))?;
            let Some(n) = session.negotiated() else {
                return Err(Error::io(
                    "the FUSE INIT handshake",
                    std::io::Error::other("no INIT was answered"),
                ));
            };
            let init = init_record(&n);
            journal.append(&[Record::Init(init)]);
            (session, init)
        }
    };
    if adopting {
        // Before this process reads any request: a request it had read already would be
        // queued again too, and answered twice.
        session
            .notifier()
            .resend()
            .map_err(|e| Error::io("FUSE_NOTIFY_RESEND (needs Linux 6.9+)", e))?;
        tracing::info!("asked the kernel to resend the requests left unanswered");
    }
    let running = session
        .spawn()
        .map_err(|e| Error::io("starting the FUSE session", e))?;
    let can_resend =
        m.resend && init.kernel_capabilities & fuser::InitFlags::FUSE_HAS_RESEND.bits() != 0;
    let line = if can_resend {
        format!("{READY} {CAN_RESEND}\n")
    } else {
        format!("{READY}\n")
    };
    ready
        .write_all(line.as_bytes())
        .map_err(|e| Error::io("telling the keeper we serve", e))?;
    drop(ready);
    // An upgrade: the keeper starts the successor once we are gone; the requests we took
    // and did not answer are resent to it.
    let (events, event) = std::sync::mpsc::channel();
    let cache = reader.cache.clone();
    let handed_over = events.clone();
    rt.spawn(async move {
        let Ok(mut usr1) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        else {
            return;
        };
        usr1.recv().await;
        tracing::info!("handing the mount over to a new serving process");
        cache.flush().await;
        let _ = handed_over.send(Event::HandedOver);
    });
    // The session's thread is joined on a thread of its own, so that a hand-over need not
    // wait for it (its FUSE threads keep serving until the process exits).
    std::thread::Builder::new()
        .name("fuse-join".into())
        .spawn(move || {
            let _ = events.send(Event::Ended(running.join()));
        })
        .map_err(|e| Error::io("starting the FUSE session", e))?;

    // Until the connection ends (the mount was unmounted, or the keeper ended it) or a
    // successor takes over.
    let ended = match event.recv() {
        Ok(Event::HandedOver) => return Ok(Outcome::HandedOver),
        Ok(Event::Ended(ended)) => ended,
        Err(_) => Err(std::io::Error::other("the FUSE session thread is gone")),
    };
    stop.notify_waiters();
    rt.block_on(async {
        reader.cache.flush().await;
        for server in servers {
            let _ = server.await;
        }
    });
    ended
        .map(|()| Outcome::Ended)
        .map_err(|e| Error::io("serving FUSE requests", e))
}

/// Serves `router` on the endpoint `ep` (given as `flag`) until `stop`.
fn listen(
    rt: &tokio::runtime::Runtime,
    flag: &str,
    ep: &str,
    router: tonic::transport::server::Router,
    stop: &Arc<tokio::sync::Notify>,
) -> Result<tokio::task::JoinHandle<std::result::Result<(), fluid_proto::EndpointError>>> {
    let ep: Endpoint = ep
        .parse()
        .map_err(|e: fluid_proto::EndpointError| Error::invalid(flag, e.to_string()))?;
    let bound = rt
        .block_on(ep.bind())
        .map_err(|e| Error::invalid(flag, e.to_string()))?;
    tracing::info!(listen = %bound.endpoint(), "{flag} serving");
    let stop = stop.clone();
    Ok(rt.spawn(bound.serve(router, async move { stop.notified().await })))
}

/// The sources, the cache and the namespace of the mount. A successor skips the checks of
/// the sources: a store that is down for a moment must not stop it from serving what the
/// cache holds (and readers are waiting).
async fn build(
    m: &MountConfig,
    journal: Arc<Journal>,
    replayed: Option<&Replayed>,
) -> Result<(Arc<Reader>, Arc<Control>)> {
    let mut sources = Vec::with_capacity(m.mounts.len());
    for mount in m.mounts.iter().cloned() {
        let src = fluid_source::open(&mount.mount_point).await?;
        if replayed.is_none() {
            src.check().await.map_err(|e| {
                Error::invalid(
                    format!("mount {:?} ({})", mount.name, mount.mount_point.url),
                    e.to_string(),
                )
            })?;
        }
        sources.push((mount, src));
    }
    let options = CacheOptions {
        block_size: m.block_size,
        ..CacheOptions::default()
    };
    let cache = Arc::new(BlockCache::open_with(m.tiers.clone(), options).await?);
    let ns = Namespace::new(sources, m.ttl).with_journal(journal);
    if let Some(r) = replayed {
        ns.adopt(&r.nodes);
    }
    let mut reader = Reader::new(Arc::new(ns), cache, m.read);
    if let Some(cluster) = crate::peers::join(&m.peers)? {
        tracing::info!(
            me = cluster.me(),
            members = cluster.members().len(),
            "sharing the cache with the peers"
        );
        reader = reader.with_cluster(cluster, m.peers.peer_copy.keep());
    }
    let reader = Arc::new(reader);
    let control = Arc::new(Control {
        reader: reader.clone(),
    });
    Ok((reader, control))
}

fn init_record(n: &fuser::Negotiated) -> InitRecord {
    InitRecord {
        abi_major: n.kernel_abi.0,
        abi_minor: n.kernel_abi.1,
        kernel_capabilities: n.kernel_capabilities.bits(),
        granted: n.granted.bits(),
        max_readahead: n.max_readahead,
    }
}

fn negotiated(i: &InitRecord) -> fuser::Negotiated {
    fuser::Negotiated {
        kernel_abi: fuser::Version(i.abi_major, i.abi_minor),
        kernel_capabilities: fuser::InitFlags::from_bits_retain(i.kernel_capabilities),
        granted: fuser::InitFlags::from_bits_retain(i.granted),
        max_readahead: i.max_readahead,
    }
}
