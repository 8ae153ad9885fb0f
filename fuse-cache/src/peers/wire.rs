//! A block on the wire between nodes: the request that names it (the object version as the
//! asking node read it), and the chunks it travels in, each with its CRC-32C, so a block that
//! a peer or the network got wrong is caught and never served.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fluid_proto::fluid::{BlockChunk, ReadBlockRequest};

use fluid_source::BlockBuf;
use fluid_source::{Kind, Meta};

/// Bytes per chunk: well under gRPC's 4 MiB message limit, and large enough that the
/// per-message cost does not matter.
pub const CHUNK: usize = 1 << 20;

/// How a chunk (or the block as a whole) was found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bad {
    #[error("a chunk failed its CRC-32C checksum")]
    Checksum,
    #[error("the block is longer than the {0} bytes asked for")]
    TooLong(usize),
    #[error("the block has {got} bytes of the {want} asked for")]
    TooShort { got: usize, want: usize },
}

/// The request for block `index` of the object version `meta` at `path` of the source named
/// `mount`.
pub fn request(
    dataset: &str,
    mount: &str,
    path: &str,
    meta: &Meta,
    index: u64,
    block_size: u64,
) -> ReadBlockRequest {
    let mtime_ns = meta
        .mtime
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    ReadBlockRequest {
        dataset: dataset.to_string(),
        mount: mount.to_string(),
        path: path.to_string(),
        size: meta.size,
        mtime_ns,
        etag: meta.etag.clone().unwrap_or_default(),
        index,
        block_size,
    }
}

/// The object version a request names, as the asking node's [`Meta`] had it (so both nodes
/// name its blocks alike).
pub fn meta_of(req: &ReadBlockRequest) -> Meta {
    Meta {
        kind: Kind::File,
        size: req.size,
        mtime: SystemTime::UNIX_EPOCH + Duration::from_nanos(req.mtime_ns),
        etag: (!req.etag.is_empty()).then(|| req.etag.clone()),
    }
}

/// A block cut into chunks, each with its checksum.
pub fn chunks(block: &Bytes) -> impl Iterator<Item = BlockChunk> + '_ {
    (0..block.len()).step_by(CHUNK).map(move |at| {
        let data = block.slice(at..(at + CHUNK).min(block.len()));
        BlockChunk {
            crc32c: crc32c::crc32c(&data),
            data,
        }
    })
}

/// The message that says "still fetching": no data.
pub fn still_fetching() -> BlockChunk {
    BlockChunk::default()
}

/// Appends a received chunk to `buf` after checking it.
pub fn append(buf: &mut BlockBuf, chunk: &BlockChunk) -> Result<(), Bad> {
    if crc32c::crc32c(&chunk.data) != chunk.crc32c {
        return Err(Bad::Checksum);
    }
    if !buf.push(&chunk.data).is_empty() {
        return Err(Bad::TooLong(buf.capacity()));
    }
    Ok(())
}

/// Checks that `buf` holds the whole block.
pub fn complete(buf: &BlockBuf) -> Result<(), Bad> {
    if buf.filled() < buf.capacity() {
        return Err(Bad::TooShort {
            got: buf.filled(),
            want: buf.capacity(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_goes_through_in_checked_chunks() {
        let block: Bytes = (0..(2 * CHUNK + 1234)).map(|i| (i * 7) as u8).collect();
        let sent: Vec<BlockChunk> = chunks(&block).collect();
        assert_eq!(sent.len(), 3);
        let mut buf = BlockBuf::new(block.len());
        for c in &sent {
            append(&mut buf, c).unwrap();
        }
        assert!(still_fetching().data.is_empty());
        complete(&buf).unwrap();
        assert_eq!(buf.freeze(), block);

        // One flipped byte is caught; so are a block too long and one too short.
        let mut bad = sent[1].clone();
        let mut flipped = bad.data.to_vec();
        flipped[100] ^= 1;
        bad.data = flipped.into();
        let mut buf = BlockBuf::new(block.len());
        append(&mut buf, &sent[0]).unwrap();
        assert_eq!(append(&mut buf, &bad), Err(Bad::Checksum));
        let mut small = BlockBuf::new(10);
        assert_eq!(append(&mut small, &sent[2]), Err(Bad::TooLong(10)));
        let mut short = BlockBuf::new(block.len());
        append(&mut short, &sent[0]).unwrap();
        assert!(matches!(complete(&short), Err(Bad::TooShort { .. })));
    }

    #[test]
    fn the_request_carries_the_version_both_nodes_name_alike() {
        let meta = Meta {
            kind: Kind::File,
            size: 12345,
            mtime: SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            etag: Some("\"abc\"".into()),
        };
        let req = request("ns/d", "s3://b/p", "a/b.bin", &meta, 3, 4 << 20);
        assert_eq!(meta_of(&req), meta);
        assert_eq!(meta_of(&req).version(), meta.version());
        let untagged = Meta { etag: None, ..meta };
        let req = request("", "local:///d", "x", &untagged, 0, 4 << 20);
        assert_eq!(meta_of(&req).version(), untagged.version());
    }
}
