//! The block file: a self-describing header, the data, zero padding to [`FILE_ALIGN`] (see the
//! tier's module comment for the layout), written whole through a temp file.

use super::*;

pub(super) const BLOCK_MAGIC: [u8; 4] = *b"FLBK";
pub(super) const BLOCK_VERSION: u16 = 1;
/// Header bytes besides the object name.
pub(super) const FIXED: usize = 32;
pub(super) const HEADER_OVERHEAD: usize = FIXED + 4;
/// Longer object names are refused when reading headers (they would be a damaged header).
pub(super) const MAX_OBJECT_LEN: usize = 1 << 16;

pub(super) fn header_len(key: &BlockKey) -> usize {
    HEADER_OVERHEAD + key.object.len()
}

/// Block files are padded to this, the `O_DIRECT` alignment of common file systems.
pub(crate) const FILE_ALIGN: usize = 4096;

/// The size of a block's file: header and data, padded to [`FILE_ALIGN`].
pub(super) fn file_len(key: &BlockKey, data_len: usize) -> u64 {
    (header_len(key) + data_len).next_multiple_of(FILE_ALIGN) as u64
}

/// Whether a file of `file_len` bytes fits a header of `header` bytes and `data` bytes of data:
/// exactly, or padded to [`FILE_ALIGN`].
pub(super) fn fits(file_len: u64, header: usize, data: u64) -> bool {
    let body = header as u64 + data;
    file_len == body || file_len == body.next_multiple_of(FILE_ALIGN as u64)
}

thread_local! {
    /// The writer's reusable buffer: fresh 4 MiB buffers cost page faults and zeroing per block.
    pub(super) static WRITE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The whole file of a block (header, data, zero padding) in `buf`, at an address aligned for
/// `O_DIRECT`.
pub(super) fn block_image<'a>(buf: &'a mut Vec<u8>, key: &BlockKey, data: &[u8]) -> &'a [u8] {
    let header = encode_header(key, data);
    let len = file_len(key, data.len()) as usize;
    if buf.len() < len + FILE_ALIGN {
        buf.resize(len + FILE_ALIGN, 0);
    }
    let start = buf.as_ptr().align_offset(FILE_ALIGN).min(FILE_ALIGN);
    let image = &mut buf[start..start + len];
    image[..header.len()].copy_from_slice(&header);
    image[header.len()..header.len() + data.len()].copy_from_slice(data);
    image[header.len() + data.len()..].fill(0);
    image
}

/// Blocks from this size up are written with `O_DIRECT`. A smaller block costs little to copy
/// into the page cache, while waiting for the device on each one (writes are one at a time)
/// held a cold read of many small files to the disk's pace: epoch 1 of the bench, 20,000
/// files of 50-200 KiB, ran at 1000 files/s with the disk tier against 1200 without.
pub(super) const DIRECT_FROM: usize = 1 << 20;

/// Creates a block's temp file for writing, with `O_DIRECT` when `direct` and the file system
/// takes it.
pub(super) fn create_block_file(path: &Path, direct: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |flags| {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            // Cached blocks are tenant data: not for other users of the node.
            .mode(0o600)
            .custom_flags(flags)
            .open(path)
    };
    if !direct {
        return open(0);
    }
    match open(libc::O_DIRECT) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(0),
        other => other,
    }
}

pub(super) fn encode_header(key: &BlockKey, data: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(header_len(key));
    h.extend_from_slice(&BLOCK_MAGIC);
    h.extend_from_slice(&BLOCK_VERSION.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&(key.object.len() as u32).to_le_bytes());
    h.extend_from_slice(&key.index.to_le_bytes());
    h.extend_from_slice(&(data.len() as u64).to_le_bytes());
    h.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    h.extend_from_slice(key.object.as_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) object: String,
    pub(super) index: u64,
    pub(super) data_len: u64,
    pub(super) data_crc: u32,
    /// Header bytes, where the data starts.
    pub(super) len: usize,
}

/// The object length a header announces, once its fixed part is there.
pub(super) fn header_object_len(fixed: &[u8]) -> std::result::Result<usize, String> {
    if fixed.len() < FIXED {
        return Err("shorter than a block header".into());
    }
    if fixed[..4] != BLOCK_MAGIC {
        return Err("not a block file (bad magic)".into());
    }
    let version = u16::from_le_bytes([fixed[4], fixed[5]]);
    if version != BLOCK_VERSION {
        return Err(format!(
            "block format version {version}, expected {BLOCK_VERSION}"
        ));
    }
    let n = u32::from_le_bytes(fixed[8..12].try_into().unwrap_or_default()) as usize;
    if n > MAX_OBJECT_LEN {
        return Err(format!("object name of {n} bytes"));
    }
    Ok(n)
}

pub(super) fn decode_header(buf: &[u8]) -> std::result::Result<Header, String> {
    let n = header_object_len(buf)?;
    let len = HEADER_OVERHEAD + n;
    if buf.len() < len {
        return Err("shorter than its header".into());
    }
    let crc = u32::from_le_bytes(buf[len - 4..len].try_into().unwrap_or_default());
    if crc32c::crc32c(&buf[..len - 4]) != crc {
        return Err("header checksum mismatch".into());
    }
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or_default());
    let object = std::str::from_utf8(&buf[FIXED..FIXED + n])
        .map_err(|_| "object name is not UTF-8")?
        .to_string();
    Ok(Header {
        object,
        index: u64_at(12),
        data_len: u64_at(20),
        data_crc: u32::from_le_bytes(buf[28..32].try_into().unwrap_or_default()),
        len,
    })
}

/// Reads a whole block file, checking it is `key`'s, `file_len` long and whole.
pub(super) fn read_block(
    path: &Path,
    key: &BlockKey,
    file_len: u64,
) -> std::result::Result<Bytes, ReadError> {
    let mut file = File::open(path).map_err(ReadError::Io)?;
    let mut buf = Vec::with_capacity(file_len as usize);
    file.read_to_end(&mut buf).map_err(ReadError::Io)?;
    let h = decode_header(&buf).map_err(ReadError::Corrupt)?;
    if *h.object != *key.object || h.index != key.index {
        return Err(ReadError::Corrupt(format!(
            "holds block {}#{}",
            h.object, h.index
        )));
    }
    if buf.len() as u64 != file_len || !fits(file_len, h.len, h.data_len) {
        return Err(ReadError::Corrupt(format!(
            "{} bytes, expected {file_len} ({} of header, {} of data)",
            buf.len(),
            h.len,
            h.data_len
        )));
    }
    let end = h.len + h.data_len as usize;
    if crc32c::crc32c(&buf[h.len..end]) != h.data_crc {
        return Err(ReadError::Corrupt("data checksum mismatch".into()));
    }
    // The padding is part of the file too: a flipped bit there is damage all the same.
    if buf[end..].iter().any(|b| *b != 0) {
        return Err(ReadError::Corrupt(
            "padding after the data is not zero".into(),
        ));
    }
    Ok(Bytes::from(buf).slice(h.len..end))
}

/// Reads just the header of a block file.
pub(super) fn read_header(path: &Path) -> std::result::Result<Header, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; FIXED];
    file.read_exact(&mut buf)
        .map_err(|_| "shorter than a block header".to_string())?;
    let n = header_object_len(&buf)?;
    buf.resize(HEADER_OVERHEAD + n, 0);
    file.read_exact(&mut buf[FIXED..])
        .map_err(|_| "shorter than its header".to_string())?;
    decode_header(&buf)
}
