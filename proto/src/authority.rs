//! Lets gRPC clients that name a unix socket's path as the HTTP/2 `:authority` reach our tonic
//! servers.
//!
//! grpc-go dialled with a bare socket path (the kubelet's plugin-registration client does), grpc-java
//! and grpcurl send `:authority: /var/lib/kubelet/plugins_registry/….sock`. That is not an
//! authority, and the `h2` crate under tonic refuses the stream (RST_STREAM PROTOCOL_ERROR)
//! before any handler runs, so the kubelet never registers the driver. Between each accepted
//! unix connection and the server sits this pump: it forwards every frame unchanged except
//! header blocks, which it decodes (tracking the client's HPACK dynamic table), gives
//! `localhost` for an `:authority` that does not parse, and re-encodes as literals that never
//! enter the server's dynamic table (so the server's table stays empty and both stay in step).
//! Replies flow back untouched.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may announce (RFC 9113 §4.2); re-encoded header
/// blocks are cut into frames of at most this.
const MIN_MAX_FRAME: usize = 16_384;
/// A client header block larger than this is refused rather than buffered.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// What replaces a socket path.
const LOCALHOST: &[u8] = b"localhost";

/// Serves one accepted connection through the pump: returns the end the gRPC server reads, and
/// spawns the task that copies between it and `client`.
pub fn fronted(client: UnixStream) -> io::Result<UnixStream> {
    let (ours, server) = UnixStream::pair()?;
    tokio::spawn(async move {
        if let Err(e) = pump(client, ours).await {
            tracing::debug!("unix gRPC connection closed: {e}");
        }
    });
    Ok(server)
}

async fn pump(client: UnixStream, server: UnixStream) -> io::Result<()> {
    let (client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, server_tx) = server.into_split();
    let upstream = forward_requests(client_rx, server_tx);
    let downstream = async move {
        let r = tokio::io::copy(&mut server_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
        r.map(|_| ())
    };
    let (up, down) = tokio::join!(upstream, downstream);
    up.and(down)
}

/// Copies the client's frames to the server, rewriting header blocks.
async fn forward_requests<R, W>(mut from: R, mut to: W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    if &preface != PREFACE {
        // Not HTTP/2 with prior knowledge: nothing to rewrite; the server will refuse it.
        tokio::io::copy(&mut from, &mut to).await?;
        return to.shutdown().await;
    }
    let mut decoder = hpack::Decoder::new();
    loop {
        let Some((header, payload)) = read_frame(&mut from).await? else {
            return to.shutdown().await;
        };
        if header.kind != HEADERS {
            to.write_all(&header.bytes).await?;
            to.write_all(&payload).await?;
            continue;
        }
        let mut block = header_fragment(&header, payload)?;
        let mut end_headers = header.flags & END_HEADERS != 0;
        while !end_headers {
            let (next, more) = read_frame(&mut from)
                .await?
                .ok_or_else(|| bad("connection closed inside a header block"))?;
            if next.kind != CONTINUATION || next.stream != header.stream {
                return Err(bad("a header block not followed by its CONTINUATION"));
            }
            if block.len() + more.len() > MAX_HEADER_BLOCK {
                return Err(bad("header block too large"));
            }
            block.extend_from_slice(&more);
            end_headers = next.flags & END_HEADERS != 0;
        }
        let fields = decoder
            .decode(&block)
            .map_err(|e| bad(&format!("undecodable header block: {e:?}")))?;
        let encoded = encode_literals(&fields);
        write_header_block(&mut to, header.stream, header.flags & END_STREAM, &encoded).await?;
    }
}

struct FrameHeader {
    bytes: [u8; FRAME_HEADER],
    kind: u8,
    flags: u8,
    stream: u32,
}

/// The next frame, or None at a clean end of the stream between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    from: &mut R,
) -> io::Result<Option<(FrameHeader, Vec<u8>)>> {
    let mut bytes = [0u8; FRAME_HEADER];
    match from.read_exact(&mut bytes).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
    if len > MAX_HEADER_BLOCK {
        return Err(bad("frame too large"));
    }
    let header = FrameHeader {
        bytes,
        kind: bytes[3],
        flags: bytes[4],
        stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
    };
    let mut payload = vec![0u8; len];
    from.read_exact(&mut payload).await?;
    Ok(Some((header, payload)))
}

/// The header block fragment of a HEADERS frame: without its padding and priority fields.
fn header_fragment(header: &FrameHeader, mut payload: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut start = 0;
    let mut end = payload.len();
    if header.flags & PADDED != 0 {
        let pad = *payload.first().ok_or_else(|| bad("empty padded HEADERS"))? as usize;
        start = 1;
        end = end
            .checked_sub(pad)
            .filter(|&e| e >= start)
            .ok_or_else(|| bad("HEADERS padding longer than the frame"))?;
    }
    if header.flags & PRIORITY != 0 {
        start += 5;
        if start > end {
            return Err(bad("HEADERS too short for its priority"));
        }
    }
    payload.truncate(end);
    payload.drain(..start);
    Ok(payload)
}

/// HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2) for every field,
/// with an `:authority` that is not one replaced by `localhost`.
fn encode_literals(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        let value: &[u8] = if name == b":authority" && !is_authority(value) {
            LOCALHOST
        } else {
            value
        };
        out.push(0);
        encode_string(&mut out, name);
        encode_string(&mut out, value);
    }
    out
}

fn is_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// A string literal without Huffman coding: a 7-bit-prefix length, then the bytes.
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// RFC 7541 §5.1 integer with an N-bit prefix, the prefix byte's high bits set to `flags`.
fn encode_integer(out: &mut Vec<u8>, mut n: usize, prefix_bits: u8, flags: u8) {
    let max = (1usize << prefix_bits) - 1;
    if n < max {
        out.push(flags | n as u8);
        return;
    }
    out.push(flags | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// One HEADERS frame and as many CONTINUATION frames as the block needs.
async fn write_header_block<W: AsyncWrite + Unpin>(
    to: &mut W,
    stream: u32,
    end_stream: u8,
    block: &[u8],
) -> io::Result<()> {
    let mut chunks = block.chunks(MIN_MAX_FRAME).peekable();
    let mut kind = HEADERS;
    let mut flags = end_stream;
    if chunks.peek().is_none() {
        return write_frame(to, kind, flags | END_HEADERS, stream, &[]).await;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        write_frame(
            to,
            kind,
            if last { flags | END_HEADERS } else { flags },
            stream,
            chunk,
        )
        .await?;
        kind = CONTINUATION;
        flags = 0;
    }
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(
    to: &mut W,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> io::Result<()> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut header = [0u8; FRAME_HEADER];
    header[..3].copy_from_slice(&len[1..]);
    header[3] = kind;
    header[4] = flags;
    header[5..].copy_from_slice(&stream.to_be_bytes());
    to.write_all(&header).await?;
    to.write_all(payload).await
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_become_localhost_and_real_authorities_stay() {
        let fields = vec![
            (
                b":authority".to_vec(),
                b"/var/lib/kubelet/plugins_registry/x.sock".to_vec(),
            ),
            (
                b":path".to_vec(),
                b"/pluginregistration.Registration/GetInfo".to_vec(),
            ),
        ];
        let block = encode_literals(&fields);
        let decoded = hpack::Decoder::new().decode(&block).unwrap();
        assert_eq!(decoded[0], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(decoded[1], fields[1]);

        let kept = vec![(b":authority".to_vec(), b"10.0.0.1:443".to_vec())];
        assert_eq!(
            hpack::Decoder::new()
                .decode(&encode_literals(&kept))
                .unwrap(),
            kept
        );
    }

    #[test]
    fn long_strings_use_the_integer_continuation() {
        let long = vec![b'a'; 300];
        let fields = vec![(b"x-long".to_vec(), long)];
        let block = encode_literals(&fields);
        assert_eq!(hpack::Decoder::new().decode(&block).unwrap(), fields);
    }

    #[test]
    fn padding_and_priority_are_stripped_from_a_fragment() {
        let header = FrameHeader {
            bytes: [0; FRAME_HEADER],
            kind: HEADERS,
            flags: PADDED | PRIORITY | END_HEADERS,
            stream: 1,
        };
        // pad length 2, 5 priority bytes, fragment "ab", 2 pad bytes
        let payload = vec![2, 0, 0, 0, 0, 16, b'a', b'b', 0, 0];
        assert_eq!(header_fragment(&header, payload).unwrap(), b"ab");
        let too_padded = vec![9, b'a'];
        assert!(header_fragment(&header, too_padded).is_err());
    }
}
