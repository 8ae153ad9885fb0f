//! A TCP proxy in front of a real server that a test can cut and restore, to see how the
//! data path behaves when its source goes away mid-read; or one that flips a byte of what the
//! server sends, to see that corruption on the wire is caught.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

pub struct CuttableProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl CuttableProxy {
    pub fn start(target: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(target, None)
    }

    /// A proxy that inverts the byte at offset `at` of every connection's server-to-client
    /// stream (deep enough to be block data rather than protocol framing).
    pub fn corrupting(target: SocketAddr, at: u64) -> std::io::Result<Self> {
        Self::start_with(target, Some(at))
    }

    fn start_with(target: SocketAddr, flip_at: Option<u64>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, open2) = (up.clone(), open.clone());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut open = open2.lock().unwrap_or_else(|p| p.into_inner());
                for s in [&client, &server] {
                    if let Ok(c) = s.try_clone() {
                        open.push(c);
                    }
                }
                pipe(&client, &server, None);
                pipe(&server, &client, flip_at);
            }
        });
        Ok(CuttableProxy { addr, up, open })
    }

    /// Drops every open connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn pipe(from: &TcpStream, to: &TcpStream, flip_at: Option<u64>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        match flip_at {
            None => {
                let _ = std::io::copy(&mut from, &mut to);
            }
            Some(at) => {
                let _ = copy_flipping(&mut from, &mut to, at);
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

fn copy_flipping(from: &mut TcpStream, to: &mut TcpStream, at: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    let mut offset = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if (offset..offset + n as u64).contains(&at) {
            buf[(at - offset) as usize] ^= 0xff;
        }
        offset += n as u64;
        to.write_all(&buf[..n])?;
    }
}
