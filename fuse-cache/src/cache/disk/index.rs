//! The tier's index (blocks in LRU order with their file sizes) and the recovery that rebuilds
//! the tier's state from the index and the block files after a restart or a crash.

use super::*;

pub(super) const INDEX_MAGIC: [u8; 8] = *b"FLUIDIDX";
pub(super) const INDEX_VERSION: u32 = 1;

pub(super) fn encode_index(entries: &[(BlockKey, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        24 + entries
            .iter()
            .map(|(k, _)| 20 + k.object.len())
            .sum::<usize>(),
    );
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (key, len) in entries {
        out.extend_from_slice(&(key.object.len() as u32).to_le_bytes());
        out.extend_from_slice(key.object.as_bytes());
        out.extend_from_slice(&key.index.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// (object, index, file length) in LRU order, oldest first.
pub(super) fn decode_index(buf: &[u8]) -> std::result::Result<Vec<(String, u64, u64)>, String> {
    if buf.len() < 24 || buf[..8] != INDEX_MAGIC {
        return Err("not an index file".into());
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().unwrap_or_default()) {
        return Err("checksum mismatch".into());
    }
    let version = u32::from_le_bytes(body[8..12].try_into().unwrap_or_default());
    if version != INDEX_VERSION {
        return Err(format!("version {version}, expected {INDEX_VERSION}"));
    }
    let count = u64::from_le_bytes(body[12..20].try_into().unwrap_or_default());
    let mut at = 20;
    let mut take = |n: usize| -> std::result::Result<&[u8], String> {
        let s = body.get(at..at + n).ok_or("truncated")?;
        at += n;
        Ok(s)
    };
    let mut out = Vec::new();
    for _ in 0..count {
        let n = u32::from_le_bytes(take(4)?.try_into().unwrap_or_default()) as usize;
        let object = std::str::from_utf8(take(n)?)
            .map_err(|_| "object name is not UTF-8")?
            .to_string();
        let index = u64::from_le_bytes(take(8)?.try_into().unwrap_or_default());
        let len = u64::from_le_bytes(take(8)?.try_into().unwrap_or_default());
        out.push((object, index, len));
    }
    if at != body.len() {
        return Err("trailing bytes".into());
    }
    Ok(out)
}

pub(super) struct Found {
    pub(super) path: PathBuf,
    pub(super) len: u64,
    pub(super) mtime: SystemTime,
}

/// Makes `root` a tier of blocks of `block_size` bytes: blocks cut at another size, or at a
/// size not recorded, are deleted with the index, and the size is recorded before any block of
/// it is written. Returns how many block files were deleted.
pub(super) fn claim_block_size(root: &Path, block_size: u64) -> Result<u64> {
    let marker = root.join(BLOCK_SIZE_FILE);
    let recorded = match fs::read_to_string(&marker) {
        Ok(text) => text.trim().parse::<u64>().ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(format!("reading {}", marker.display()), e)),
    };
    if recorded == Some(block_size) {
        return Ok(0);
    }
    let mut dropped = 0;
    let listing = |dir: &Path| {
        fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))
    };
    for entry in listing(root)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() == 2 && is_hex(&name) && entry.path().is_dir() {
            dropped += listing(&entry.path())?.flatten().count() as u64;
            fs::remove_dir_all(entry.path())
                .map_err(|e| Error::io(format!("removing {}", entry.path().display()), e))?;
        }
    }
    remove_quietly(&root.join(INDEX));
    if dropped > 0 {
        let was = recorded.map_or("an unrecorded size".to_string(), |b| format!("{b} bytes"));
        tracing::warn!(
            dir = %root.display(),
            "dropping {dropped} cached blocks cut at {was}: this tier now holds blocks of {block_size} bytes"
        );
    }
    fluid_volume::atomic::write(&marker, format!("{block_size}\n").as_bytes(), 0o600)
        .map_err(|e| Error::io(format!("writing {}", marker.display()), e))?;
    Ok(dropped)
}

/// Builds the tier's state from the index and the files; see the module comment.
pub(super) fn load(
    root: &Path,
    high_bytes: u64,
    low_bytes: u64,
    block_size: u64,
) -> Result<(State, OpenReport)> {
    let mut report = OpenReport {
        other_block_size: claim_block_size(root, block_size)?,
        ..OpenReport::default()
    };
    let index_path = root.join(INDEX);
    let listed = match fs::read(&index_path) {
        Ok(buf) => match decode_index(&buf) {
            Ok(entries) => {
                report.index_loaded = true;
                entries
            }
            Err(why) => {
                tracing::warn!(path = %index_path.display(), "ignoring the cache index ({why}); rebuilding from block headers");
                Vec::new()
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::warn!(path = %index_path.display(), "ignoring the cache index ({e}); rebuilding from block headers");
            Vec::new()
        }
    };

    // Every block file there is, by name; everything else goes.
    let mut files: HashMap<String, Found> = HashMap::new();
    let read_dir = |dir: &Path| {
        fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))
    };
    for entry in read_dir(root)? {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", root.display()), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && name.len() == 2 && is_hex(&name) {
            for sub in read_dir(&path)? {
                let sub = sub.map_err(|e| Error::io(format!("listing {}", path.display()), e))?;
                let file_name = sub.file_name().to_string_lossy().into_owned();
                let file_path = sub.path();
                let meta = match sub.metadata() {
                    Ok(m) if m.is_file() => m,
                    _ => continue,
                };
                if file_name.len() == 32 && is_hex(&file_name) && file_name.starts_with(&name) {
                    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    files.insert(
                        file_name,
                        Found {
                            path: file_path,
                            len: meta.len(),
                            mtime,
                        },
                    );
                } else {
                    remove_quietly(&file_path);
                    report.removed += 1;
                }
            }
        } else if name.ends_with(".tmp") || name.starts_with(&format!("{INDEX}.tmp.")) {
            // A write of the index or the size marker that a crash cut short (`index.tmp.PID`
            // is the name earlier builds used).
            remove_quietly(&path);
        }
    }

    let mut state = State {
        lru: LruCache::unbounded(),
        used: 0,
        next_gen: 0,
    };
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    let mut intern = |s: String| -> Arc<str> {
        names
            .entry(s)
            .or_insert_with_key(|s| Arc::from(s.as_str()))
            .clone()
    };
    for (object, index, len) in listed {
        let key = BlockKey {
            object: intern(object),
            index,
        };
        let hex = key.hash_hex();
        if files.get(&hex).is_some_and(|f| f.len == len) && !state.lru.contains(&key) {
            files.remove(&hex);
            state.add(key, len);
            report.from_index += 1;
        } else {
            report.stale += 1;
        }
    }

    // Block files the index does not list: from their headers, oldest first, so that the
    // newest end up most recently used.
    let mut rest: Vec<(String, Found)> = files.into_iter().collect();
    rest.sort_by_key(|(_, f)| f.mtime);
    for (name, found) in rest {
        let valid = read_header(&found.path).and_then(|h| {
            let key = BlockKey {
                object: intern(h.object),
                index: h.index,
            };
            if key.hash_hex() != name {
                return Err(format!("holds block {key}, which is not named so"));
            }
            if !fits(found.len, h.len, h.data_len) {
                return Err(format!(
                    "{} bytes, its header says {}",
                    found.len,
                    h.len as u64 + h.data_len
                ));
            }
            Ok(key)
        });
        match valid {
            Ok(key) => {
                state.add(key, found.len);
                report.from_headers += 1;
            }
            Err(why) => {
                tracing::info!(path = %found.path.display(), "removing a damaged cache file: {why}");
                remove_quietly(&found.path);
                report.removed += 1;
            }
        }
    }

    // A smaller quota than last time.
    if state.used > high_bytes {
        while state.used > low_bytes {
            let Some((key, e)) = state.lru.pop_lru() else {
                break;
            };
            state.used -= e.len;
            remove_quietly(&block_path(root, &key));
            report.evicted += 1;
        }
    }
    Ok((state, report))
}

pub(super) fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
