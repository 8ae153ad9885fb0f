//! The keeper's upgrade socket (`fluid-fuse mount --keeper-socket`): a request asks the
//! keeper of a mount to replace its serving process, optionally with another `fluid-fuse`
//! binary passed as an open descriptor (SCM_RIGHTS), so the binary need not be reachable by
//! path from the keeper's mount namespace (a node plugin of a newer image upgrading the
//! daemons an older one started). One request per connection: the line `upgrade`, then the
//! keeper's answer, `ok <generation> <stall ms>` or `error <message>`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

pub const REQUEST: &str = "upgrade";

/// What a done upgrade reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Upgraded {
    /// The new serving process's generation.
    pub generation: u64,
    /// From the old serving process's last request to the new one's first, in ms.
    pub stall_ms: f64,
}

/// Asks the keeper listening at `socket` to replace its serving process with `binary` (or
/// the keeper's own when `None`) and waits for the answer (at most `timeout`).
pub fn request(
    socket: &Path,
    binary: Option<&std::fs::File>,
    timeout: Duration,
) -> Result<Upgraded> {
    let what = format!("the keeper socket {}", socket.display());
    let stream = UnixStream::connect(socket).map_err(|e| Error::io(&what, e))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| Error::io(&what, e))?;
    send_with_fd(
        &stream,
        format!("{REQUEST}\n").as_bytes(),
        binary.map(|b| b.as_raw_fd()),
    )
    .map_err(|e| Error::io(&what, e))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| Error::io(format!("the answer of {what}"), e))?;
    parse_answer(line.trim_end())
}

fn parse_answer(line: &str) -> Result<Upgraded> {
    let mut words = line.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("ok"), Some(g), Some(ms)) => Ok(Upgraded {
            generation: g
                .parse()
                .map_err(|_| Error::invalid("the keeper's answer", line))?,
            stall_ms: ms
                .parse()
                .map_err(|_| Error::invalid("the keeper's answer", line))?,
        }),
        (Some("error"), ..) => Err(Error::invalid(
            "upgrade",
            line.trim_start_matches("error ").to_string(),
        )),
        _ => Err(Error::invalid("the keeper's answer", format!("{line:?}"))),
    }
}

/// The answer line for a done upgrade.
pub fn ok_answer(u: &Upgraded) -> String {
    format!("ok {} {:.1}\n", u.generation, u.stall_ms)
}

/// The answer line for a failed one.
pub fn error_answer(message: &str) -> String {
    format!("error {}\n", message.replace('\n', " "))
}

/// Reads a request: its line and the descriptor sent with it, if any.
pub fn receive(stream: &UnixStream) -> std::io::Result<(String, Option<OwnedFd>)> {
    let mut data = [0u8; 256];
    // Room for one descriptor's control message.
    let mut control = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; its pointers are set to live buffers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    // SAFETY: recvmsg writes at most the buffers' lengths into them.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fd = None;
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled, within its length.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let raw: RawFd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let line = String::from_utf8_lossy(&data[..n as usize])
        .trim_end()
        .to_string();
    Ok((line, fd))
}

/// Sends `data` with descriptor `fd` attached (SCM_RIGHTS), or without.
fn send_with_fd(stream: &UnixStream, data: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
    let Some(fd) = fd else {
        return (&*stream).write_all(data);
    };
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = [0u8; 64];
    // SAFETY: a zeroed msghdr is valid; the control buffer holds one descriptor's message
    // (CMSG_SPACE of an int is far below 64 bytes), written through the CMSG macros.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), fd);
        if libc::sendmsg(stream.as_raw_fd(), &msg, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_request_carries_its_descriptor_and_answers_parse() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        (&file).write_all(b"new binary").unwrap();
        send_with_fd(&a, b"upgrade\n", Some(file.as_raw_fd())).unwrap();
        let (line, fd) = receive(&b).unwrap();
        assert_eq!(line, REQUEST);
        let mut got = std::fs::File::from(fd.expect("a descriptor"));
        let mut text = String::new();
        use std::io::Seek;
        got.seek(std::io::SeekFrom::Start(0)).unwrap();
        got.read_to_string(&mut text).unwrap();
        assert_eq!(text, "new binary");

        send_with_fd(&a, b"upgrade\n", None).unwrap();
        assert_eq!(receive(&b).unwrap().1.map(|_| ()), None);

        let u = Upgraded {
            generation: 3,
            stall_ms: 12.5,
        };
        assert_eq!(parse_answer(ok_answer(&u).trim_end()).unwrap(), u);
        let err = parse_answer(error_answer("the new binary\nfailed").trim_end()).unwrap_err();
        assert!(err.to_string().contains("the new binary failed"), "{err}");
        assert!(parse_answer("what").is_err());
    }
}
