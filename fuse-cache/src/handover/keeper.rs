//! The keeper (`fluid-fuse mount`): mounts the file system, holds its /dev/fuse descriptor
//! and the hand-over journal, and runs the serving process (`fluid-fuse serve`) on them.
//!
//! The kernel ends a FUSE connection when the last descriptor of it is closed; the keeper's
//! copy keeps it open while a serving process dies. A dead serving process is replaced at
//! once by a successor that adopts the connection from the journal and asks the kernel to
//! resend the requests left unanswered (FUSE_NOTIFY_RESEND, Linux 6.9+): readers see a stall,
//! no error, and nothing is unmounted or re-bound. Without RESEND (older kernels, or
//! `--resend false`) a dead serving process ends the connection as it always did: the keeper
//! closes its copy, readers get ENOTCONN, and it exits with an error so its supervisor (the
//! node plugin) mounts again and re-binds.
//!
//! The keeper does no I/O for readers and holds no cache, so what crashes (a bug in the data
//! path, the OOM killer picking the process with the cache) is the serving process. The
//! serving process dies with the keeper (PR_SET_PDEATHSIG) and ignores SIGINT/SIGTERM: the
//! keeper ends it by ending the connection, which lets it flush its cache index first.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;

use fluid_volume::upgrade::{self, Upgraded};

use crate::cli::MountArgs;
use crate::config::MountConfig;
use crate::error::{Error, Result};
use crate::handover::journal::Journal;
use crate::handover::protocol::{
    CAN_RESEND, CANNOT_TAKE_OVER, FUSE_FD, HANDED_OVER, JOURNAL_FD, METRICS_FD, READY, READY_FD,
};

/// How long a serving process may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Serving processes in a row that may fail to start or die within [`QUICK_DEATH`] of
/// serving before the keeper gives up (one that cannot serve would otherwise be replaced
/// forever while readers wait). One that served longer resets the count.
const MAX_QUICK_DEATHS: u32 = 10;
const QUICK_DEATH: Duration = Duration::from_secs(1);
/// How long the serving process gets to end after the connection was ended.
const END_GRACE: Duration = Duration::from_secs(10);

pub fn run(args: MountArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    // The serving process is started from this (the main) thread: PR_SET_PDEATHSIG fires
    // when the thread that forked it ends.
    rt.block_on(keep(args))
}

/// Why the keeper stops.
enum End {
    /// SIGTERM or SIGINT: unmount.
    Stop,
    /// Unmounted by someone else.
    Gone,
    /// The serving process ended because the connection ended.
    Ended,
    /// The serving process died and cannot be replaced.
    Crashed(String),
}

async fn keep(mut args: MountArgs) -> Result<()> {
    // The serving process resolves the flags too; here a bad one fails before anything is
    // mounted.
    let config = MountConfig::from_args(&args)?;
    crate::peers::check(&args.peers)?;
    check_mountpoint(&args.mountpoint)?;
    // Canonical, as /proc/self/mountinfo shows it, for the unmount watch.
    args.mountpoint = std::fs::canonicalize(&args.mountpoint)
        .map_err(|e| Error::io(format!("--mountpoint {}", args.mountpoint.display()), e))?;
    let mp = args.mountpoint.clone();
    let (fuse, mount) = fuser::mount_unserved(&mp, &config.mount_options())
        .map_err(|e| Error::io(format!("mounting FUSE at {}", mp.display()), e))?;
    let journal = Journal::create()?;
    // Before the ready line: whoever waits for it may unmount at once. (From mountinfo:
    // a stat of the mount would wait for the INIT no one has answered yet.)
    let dev = mounted_dev(&mp);

    let listener = match &args.keeper_socket {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            Some(
                UnixListener::bind(path)
                    .map_err(|e| Error::io(format!("--keeper-socket {}", path.display()), e))?,
            )
        }
        None => None,
    };
    // Bound here, once: every serving process answers on the same port, and port 0 is
    // resolved before anyone is told the address.
    let metrics = match args.metrics {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|e| Error::io(format!("--metrics {addr}"), e))?;
            let bound = listener
                .local_addr()
                .map_err(|e| Error::io("--metrics", e))?;
            println!("FLUID-FUSE METRICS http://{bound}/metrics");
            tracing::info!("metrics on http://{bound}/metrics");
            Some(listener)
        }
        None => None,
    };
    let mut serving = Serving {
        fuse,
        journal,
        metrics,
        args: serve_args(),
        binary: None,
    };
    let mut generation = 0;
    let (mut worker, can_resend) = match serving.start(generation).await {
        Ok(w) => w,
        Err(e) => {
            let _ = mount.umount().or_else(|_| detach(&mp));
            return Err(e);
        }
    };
    raise_kernel_readahead(&mp);
    if let Some(f) = &args.ready_file {
        std::fs::write(f, format!("{}\n", std::process::id()))
            .map_err(|e| Error::io(format!("writing {}", f.display()), e))?;
    }
    println!("FLUID-FUSE READY {}", mp.display());
    tracing::info!(
        "mounted at {}; {}",
        mp.display(),
        if can_resend {
            "a crash of the serving process is recovered without ending the connection (FUSE_NOTIFY_RESEND)"
        } else {
            "without FUSE_NOTIFY_RESEND (Linux 6.9+, --resend) a crash of the serving process ends the connection"
        }
    );

    let shutdown = fluid_proto::endpoint::shutdown_signal();
    let gone = unmounted_everywhere(dev);
    tokio::pin!(shutdown, gone);
    let mut quick_deaths = 0;
    let mut serving_since = Instant::now();
    let end = loop {
        tokio::select! {
            _ = &mut shutdown => break End::Stop,
            _ = &mut gone => {
                tracing::warn!("the file system mounted at {} is mounted nowhere any more; exiting", mp.display());
                break End::Gone;
            }
            conn = accept(&listener) => {
                let Some(stream) = conn else { continue };
                match handle_upgrade(stream, &mut serving, &mut worker, &mut generation).await {
                    Ok(()) => serving_since = Instant::now(),
                    Err(why) => break End::Crashed(why),
                }
            }
            status = worker.wait() => {
                let status = match status {
                    Ok(s) if s.success() => break End::Ended,
                    Ok(s) => describe(s),
                    Err(e) => format!("could not be waited for: {e}"),
                };
                if !can_resend {
                    break End::Crashed(format!("the serving process {status}"));
                }
                if serving_since.elapsed() < QUICK_DEATH {
                    quick_deaths += 1;
                } else {
                    quick_deaths = 0;
                }
                match replace(&serving, &mut generation, &mut quick_deaths, &status).await {
                    Ok(w) => {
                        worker = w;
                        serving_since = Instant::now();
                    }
                    Err(why) => break End::Crashed(why),
                }
            }
        }
    };

    let result = match end {
        End::Stop | End::Gone | End::Ended => {
            if let Err(e) = mount.umount() {
                // Busy (a reader still has files open) or already gone: detach it lazily,
                // so no dead mount is left behind. A detached mount with open files keeps
                // its connection, so the serving process is asked to flush and exit; the
                // connection ends with this process (those readers get ENOTCONN).
                tracing::debug!("unmounting {}: {e}; detaching it", mp.display());
                let _ = detach(&mp);
                ask_to_hand_over(&worker);
            }
            // The connection ends with the mount: the serving process sees it and exits.
            if tokio::time::timeout(END_GRACE, worker.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    "the serving process did not end within {END_GRACE:?} of the unmount; killing it"
                );
                let _ = worker.kill().await;
            }
            Ok(())
        }
        End::Crashed(why) => {
            // As before hand-over existed: the connection ends (readers get ENOTCONN) and
            // the dead mount stays for the supervisor to replace.
            mount.forget();
            drop(serving);
            Err(Error::unavailable(
                "fluid-fuse",
                format!("{why}; the FUSE connection at {} ended", mp.display()),
            ))
        }
    };
    if let Some(f) = &args.ready_file {
        let _ = std::fs::remove_file(f);
    }
    if let Some(path) = &args.keeper_socket {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// The next connection to the upgrade socket; never, without one.
async fn accept(listener: &Option<UnixListener>) -> Option<std::os::unix::net::UnixStream> {
    let Some(l) = listener else {
        return std::future::pending().await;
    };
    let (stream, _) = l.accept().await.ok()?;
    // An upgrade runs a binary of the caller's choosing as this process's user: only that
    // user (or root) may ask.
    // SAFETY: geteuid has no preconditions.
    let ours = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(c) if c.uid() == ours || c.uid() == 0 => {}
        other => {
            let uid = other.map(|c| c.uid().to_string()).unwrap_or_default();
            tracing::warn!("refused an upgrade request from uid {uid}");
            return None;
        }
    }
    let stream = stream.into_std().ok()?;
    stream.set_nonblocking(false).ok()?;
    Some(stream)
}

/// Answers one upgrade request. An error is one the mount cannot survive (neither the new
/// nor the old binary serves).
async fn handle_upgrade(
    stream: std::os::unix::net::UnixStream,
    serving: &mut Serving,
    worker: &mut tokio::process::Child,
    generation: &mut u64,
) -> std::result::Result<(), String> {
    let (stream, received) = tokio::task::spawn_blocking(move || {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let r = upgrade::receive(&stream);
        (stream, r)
    })
    .await
    .map_err(|e| format!("reading an upgrade request: {e}"))?;
    let (answer, fatal) = match received {
        Ok((line, binary)) if line == upgrade::REQUEST => {
            match upgrade_serving(serving, worker, generation, binary).await {
                Ok(u) => (upgrade::ok_answer(&u), None),
                Err((why, fatal)) => (upgrade::error_answer(&why), fatal.then_some(why)),
            }
        }
        Ok((line, _)) => (
            upgrade::error_answer(&format!("unknown request {line:?}")),
            None,
        ),
        Err(e) => (
            upgrade::error_answer(&format!("reading the request: {e}")),
            None,
        ),
    };
    let _ = (&stream).write_all(answer.as_bytes());
    match fatal {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// The old serving process flushes its cache index and exits (SIGUSR1); a new one, of
/// `binary` when given, takes over. If the new binary cannot serve, the previous one is
/// started again (the error says so); `true` in the error when that failed too.
async fn upgrade_serving(
    serving: &mut Serving,
    worker: &mut tokio::process::Child,
    generation: &mut u64,
    binary: Option<OwnedFd>,
) -> std::result::Result<Upgraded, (String, bool)> {
    let started = Instant::now();
    ask_to_hand_over(worker);
    match tokio::time::timeout(END_GRACE, worker.wait()).await {
        Ok(Ok(s)) if s.code() == Some(HANDED_OVER) => {}
        Ok(Ok(s)) => tracing::warn!("the old serving process {} during the upgrade", describe(s)),
        _ => {
            tracing::warn!("the old serving process did not stop within {END_GRACE:?}; killing it");
            let _ = worker.kill().await;
        }
    }
    let previous = binary.map(|b| serving.binary.replace(b));
    *generation += 1;
    tracing::info!(
        generation = *generation,
        "upgrade: a new serving process takes over"
    );
    match serving.start(*generation).await {
        Ok((w, _)) => {
            *worker = w;
            let stall_ms = started.elapsed().as_secs_f64() * 1e3;
            tracing::info!(
                generation = *generation,
                "upgrade done; readers waited {stall_ms:.0} ms at most"
            );
            Ok(Upgraded {
                generation: *generation,
                stall_ms,
            })
        }
        Err(e) => {
            if let Some(prev) = previous {
                serving.binary = prev;
            }
            *generation += 1;
            tracing::warn!(
                "upgrade: the new serving process failed ({e}); the previous binary serves again"
            );
            match serving.start(*generation).await {
                Ok((w, _)) => {
                    *worker = w;
                    Err((
                        format!(
                            "the new serving process failed ({e}); the previous binary serves again"
                        ),
                        false,
                    ))
                }
                Err(e2) => Err((
                    format!(
                        "the new serving process failed ({e}), and so did the previous binary ({e2})"
                    ),
                    true,
                )),
            }
        }
    }
}

/// Asks the serving process to flush its cache index and exit (SIGUSR1; status
/// [`HANDED_OVER`]), leaving the connection to whoever holds it next.
fn ask_to_hand_over(worker: &tokio::process::Child) {
    if let Some(pid) = worker.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(pid, libc::SIGUSR1) };
    }
}

/// Starts successors until one serves, unless too many in a row died at once.
async fn replace(
    serving: &Serving,
    generation: &mut u64,
    quick_deaths: &mut u32,
    status: &str,
) -> std::result::Result<tokio::process::Child, String> {
    let mut why = format!("the serving process {status}");
    loop {
        if *quick_deaths >= MAX_QUICK_DEATHS {
            return Err(format!(
                "{why}; {MAX_QUICK_DEATHS} serving processes in a row died within {QUICK_DEATH:?}: giving up"
            ));
        }
        let started = Instant::now();
        *generation += 1;
        tracing::warn!(
            generation = *generation,
            "{why}; a successor takes over the connection"
        );
        match serving.start(*generation).await {
            Ok((w, _)) => {
                tracing::info!(
                    generation = *generation,
                    "the successor serves after {:.0} ms",
                    started.elapsed().as_secs_f64() * 1e3
                );
                return Ok(w);
            }
            Err(e @ Error::Invalid { .. }) => {
                return Err(format!("{why}, and the successor cannot take over: {e}"));
            }
            Err(e) => {
                why = format!("the successor failed: {e}");
                *quick_deaths += 1;
                // A quick failure (a store down for a moment) is retried after a pause.
                tokio::time::sleep(Duration::from_millis(200 * u64::from(*quick_deaths))).await;
            }
        }
    }
}

/// What every serving process is started with.
struct Serving {
    fuse: OwnedFd,
    journal: OwnedFd,
    metrics: Option<std::net::TcpListener>,
    /// The command line after `mount`, passed on to `serve`.
    args: Vec<OsString>,
    /// The binary an upgrade gave; none: the keeper's own.
    binary: Option<OwnedFd>,
}

impl Serving {
    /// Starts a serving process and waits until it answers requests; whether the kernel can
    /// resend requests (so it can be replaced without ending the connection).
    async fn start(&self, generation: u64) -> Result<(tokio::process::Child, bool)> {
        let (ready_r, ready_w) = pipe()?;
        // /proc/self/exe: the binary this keeper runs, even when a newer one replaced its
        // path since; after an upgrade, the descriptor of the binary it was given.
        let program = match &self.binary {
            Some(fd) => format!("/proc/self/fd/{}", fd.as_raw_fd()),
            None => "/proc/self/exe".to_string(),
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg0("fluid-fuse")
            .arg("serve")
            .args(&self.args)
            .args(["--fuse-fd", &FUSE_FD.to_string()])
            .args(["--journal-fd", &JOURNAL_FD.to_string()])
            .args(["--ready-fd", &READY_FD.to_string()])
            .args(["--generation", &generation.to_string()])
            .stdin(Stdio::null());
        // (descriptor here, number in the serving process)
        let mut fds = vec![
            (self.fuse.as_raw_fd(), FUSE_FD),
            (self.journal.as_raw_fd(), JOURNAL_FD),
            (ready_w.as_raw_fd(), READY_FD),
        ];
        if let Some(m) = &self.metrics {
            cmd.args(["--metrics-fd", &METRICS_FD.to_string()]);
            fds.push((m.as_raw_fd(), METRICS_FD));
        }
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close, prctl, getppid,
        // signal) between fork and exec, on descriptors that are open in the parent.
        unsafe {
            let keeper = libc::getpid();
            // The copies above every target number first, so that no dup2 below closes a
            // descriptor still to be moved.
            let mut high = vec![0; fds.len()];
            cmd.pre_exec(move || {
                for (h, (fd, _)) in high.iter_mut().zip(&fds) {
                    *h = libc::fcntl(*fd, libc::F_DUPFD, 10);
                    if *h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (h, (_, target)) in high.iter().zip(&fds) {
                    if libc::dup2(*h, *target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(*h);
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                    || libc::getppid() != keeper
                {
                    return Err(std::io::Error::other("the keeper is gone"));
                }
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io("starting fluid-fuse serve", e))?;
        drop(ready_w);
        let line = tokio::time::timeout(START_TIMEOUT, read_line(ready_r)).await;
        let line = match line {
            Ok(Ok(line)) if line.starts_with(READY) => line,
            other => {
                // A process that closed the pipe is exiting (and printing why): let it.
                if other.is_err() || tokio::time::timeout(END_GRACE, child.wait()).await.is_err() {
                    let _ = child.start_kill();
                }
                let status = child.wait().await;
                if status
                    .as_ref()
                    .is_ok_and(|s| s.code() == Some(CANNOT_TAKE_OVER))
                {
                    return Err(Error::invalid(
                        "the hand-over journal",
                        "incomplete: the connection cannot be taken over",
                    ));
                }
                let status = status.map(describe).unwrap_or_default();
                let why = match other {
                    Err(_) => format!("did not serve within {START_TIMEOUT:?} and was killed"),
                    Ok(Err(_)) => format!("{status} before it served (its error is above)"),
                    Ok(Ok(l)) => format!("said {l:?}; it {status}"),
                };
                return Err(Error::unavailable("the serving process", why));
            }
        };
        let can_resend = line.split_whitespace().any(|w| w == CAN_RESEND);
        Ok((child, can_resend))
    }
}

async fn read_line(fd: OwnedFd) -> std::io::Result<String> {
    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut line = String::new();
    BufReader::new(rx).read_line(&mut line).await?;
    if line.is_empty() {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
    }
    Ok(line.trim_end().to_string())
}

/// A pipe: (read end, non-blocking, for the keeper; write end, for the child).
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just made and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: sets a status flag on our own descriptor.
    unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    Ok((r, w))
}

/// The keeper's command line after the `mount` subcommand.
fn serve_args() -> Vec<OsString> {
    std::env::args_os()
        .skip_while(|a| a != "mount")
        .skip(1)
        .collect()
}

fn describe(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => s.to_string(),
    }
}

/// The kernel caps a FUSE mount's readahead at its block-device default (128 KiB) whatever the
/// daemon asks for at init; raising the mount's bdi setting lets sequential readers send 1 MiB
/// requests. Best effort: without root or sysfs the mount still works, only with smaller reads.
fn raise_kernel_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = std::fs::write(&knob, "1024") {
        tracing::debug!("could not raise readahead at {knob}: {e}");
    }
}

/// The device (`major:minor`, as mountinfo spells it) of the file system mounted at `dir`.
fn mounted_dev(dir: &Path) -> Option<String> {
    fluid_volume::mountinfo::read()
        .ok()?
        .into_iter()
        .rfind(|m| m.mount_point == dir)
        .map(|m| m.dev)
}

/// Resolves once no mount of the file system `dev` is left: it was unmounted by someone else.
/// Not the mount point alone: the node plugin moves a kept volume's mount (a bind to its park
/// folder, then an unmount of the staging path), and the daemon serves on. No `dev` (our mount
/// was gone the moment we looked) resolves at once.
async fn unmounted_everywhere(dev: Option<String>) {
    let Some(dev) = dev else { return };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(mounts) = fluid_volume::mountinfo::read()
            && !mounts.iter().any(|m| m.dev == dev)
        {
            return;
        }
    }
}

/// Lazily detaches whatever is mounted at `dir`; fine when nothing is.
fn detach(dir: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    match std::io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        e => Err(e),
    }
}

/// The mount point must be a directory. A dead FUSE mount left by a crashed daemon answers
/// ENOTCONN: it is detached so the new daemon can mount in its place.
fn check_mountpoint(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::invalid(
            "--mountpoint",
            format!("{} is not a directory", dir.display()),
        )),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!("{} is a dead FUSE mount; detaching it", dir.display());
            detach(dir).map_err(|e| Error::io(format!("detaching {}", dir.display()), e))
        }
        Err(e) => Err(Error::io(format!("--mountpoint {}", dir.display()), e)),
    }
}
