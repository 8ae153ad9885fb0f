//! The dataset's tree: mounts unioned at their paths, stable inode numbers, attributes and
//! entries cached with TTLs (negative entries too), and directory listings that stream page
//! by page from the source.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::handover::journal::{Journal, NodeLocation, NodeRecord, Record};
use fluid_source::{Entry, Kind, Meta, Source};
use fluid_volume::dataset::Mount;

pub const ROOT: u64 = 1;

/// Negative entries kept before the expired ones are swept.
const MAX_NEGATIVE_ENTRIES: usize = 100_000;

/// Where a node's data lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory that exists only because mounts sit below it (e.g. `/meta` for `/meta/x`).
    Virtual,
    /// `path` (relative, "" = mount root) inside mount number `mount`.
    InMount { mount: usize, path: String },
}

#[derive(Clone, Debug)]
pub struct Node {
    pub ino: u64,
    pub parent: u64,
    pub name: String,
    pub location: Location,
    pub meta: Meta,
    fresh_until: Instant,
    /// Lookups the kernel holds (entries replied minus those it forgot): a node stays while
    /// the kernel may name it.
    lookups: u64,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.meta.kind == Kind::Dir
    }
}

/// A listing cached whole, reused by later opendirs until its TTL passes.
struct Listing {
    entries: Arc<Vec<(String, u64)>>,
    fresh_until: Instant,
}

struct Table {
    nodes: HashMap<u64, Node>,
    children: HashMap<(u64, String), u64>,
    /// Names known absent, until the instant given.
    negative: HashMap<(u64, String), Instant>,
    listings: HashMap<u64, Listing>,
    /// Directories not listed for lookups until the instant given: more than
    /// [`LIST_FOR_LOOKUP_MAX`] entries, or slow to list for the entry TTL.
    too_big: HashMap<u64, Instant>,
    next_ino: u64,
    /// Nodes the kernel holds (lookups above 0); the rest are swept (see `Namespace::forget`).
    held: usize,
}

/// The lookups of an adopted node: a predecessor's, not journaled. The kernel forgets an
/// inode with its whole count when it evicts it, so the first FORGET drops such a node.
const UNKNOWN_LOOKUPS: u64 = u64::MAX;

/// Nodes the kernel does not hold (made by listings it never looked up, or by the control
/// service) kept before a sweep drops the unused ones.
const UNHELD_BEFORE_SWEEP: usize = 100_000;

/// TTLs for attribute and entry caching.
#[derive(Clone, Copy, Debug)]
pub struct Ttl {
    pub attr: Duration,
    pub entry: Duration,
    pub negative: Duration,
}

impl Default for Ttl {
    fn default() -> Self {
        Ttl {
            attr: Duration::from_secs(60),
            entry: Duration::from_secs(60),
            negative: Duration::from_secs(5),
        }
    }
}

pub struct Namespace {
    mounts: Vec<(Mount, Arc<dyn Source>)>,
    table: Mutex<Table>,
    pub ttl: Ttl,
    started: SystemTime,
    /// One listing at a time per directory for lookups (see [`Namespace::list_for_lookup`]).
    lookup_listings: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// Where new node ids are written before the kernel learns them.
    journal: Option<Arc<Journal>>,
}

/// A lookup of an unknown name lists its directory whole when it has at most this many
/// entries: one LIST answers every later lookup there, and names it lacks are known absent,
/// where a stat costs a HEAD (and a LIST when the name is missing) per name. Bigger
/// directories are stat'ed name by name.
pub const LIST_FOR_LOOKUP_MAX: usize = 10_000;

/// An open directory being streamed: entries fetched so far and where the source resumes.
pub struct DirStream {
    ino: u64,
    /// (name, ino) in the order returned; index + 1 is the readdir offset.
    pub entries: Vec<(String, u64)>,
    next: Option<Option<String>>,
    /// Child names of a virtual directory or of a mount root's parent that come from mount paths.
    seen: BTreeSet<String>,
}

impl DirStream {
    pub fn is_complete(&self) -> bool {
        self.next.is_none()
    }
}

impl Namespace {
    pub fn new(mounts: Vec<(Mount, Arc<dyn Source>)>, ttl: Ttl) -> Self {
        let started = SystemTime::now();
        let root_location = match mounts.iter().position(|(m, _)| m.path == "/") {
            Some(i) => Location::InMount {
                mount: i,
                path: String::new(),
            },
            None => Location::Virtual,
        };
        let root = Node {
            ino: ROOT,
            parent: ROOT,
            name: String::new(),
            location: root_location,
            meta: Meta::dir(started),
            fresh_until: Instant::now(),
            lookups: 0,
        };
        let table = Table {
            nodes: HashMap::from([(ROOT, root)]),
            children: HashMap::new(),
            negative: HashMap::new(),
            listings: HashMap::new(),
            too_big: HashMap::new(),
            next_ino: ROOT + 1,
            held: 0,
        };
        Namespace {
            mounts,
            table: Mutex::new(table),
            ttl,
            started,
            lookup_listings: Mutex::new(HashMap::new()),
            journal: None,
        }
    }

    /// Writes every new node id to `journal` from now on.
    pub fn with_journal(mut self, journal: Arc<Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Takes over the node ids a previous serving process handed to the kernel: same ids,
    /// same places. Their attributes count as expired, so each is asked of the source again
    /// when next used. Returns how many were adopted; a record whose parent is unknown (it
    /// cannot be placed) is skipped.
    pub fn adopt(&self, nodes: &[NodeRecord]) -> usize {
        let now = Instant::now();
        let mut t = self.table();
        let mut adopted = 0;
        for n in nodes {
            if n.ino == ROOT {
                continue;
            }
            let Some(parent) = t.nodes.get(&n.parent) else {
                continue;
            };
            let location = match &n.location {
                NodeLocation::Virtual => Location::Virtual,
                NodeLocation::InMount { mount, path } => Location::InMount {
                    mount: *mount as usize,
                    path: path.clone(),
                },
                NodeLocation::BelowParent => match &parent.location {
                    Location::InMount { mount, path } => Location::InMount {
                        mount: *mount,
                        path: fluid_source::join(path, &n.name),
                    },
                    Location::Virtual => continue,
                },
            };
            t.children.insert((n.parent, n.name.clone()), n.ino);
            t.nodes.insert(
                n.ino,
                Node {
                    ino: n.ino,
                    parent: n.parent,
                    name: n.name.clone(),
                    location,
                    meta: n.meta.clone(),
                    fresh_until: now,
                    lookups: UNKNOWN_LOOKUPS,
                },
            );
            t.held += 1;
            t.next_ino = t.next_ino.max(n.ino + 1);
            adopted += 1;
        }
        adopted
    }

    pub fn mounts(&self) -> impl Iterator<Item = &Mount> {
        self.mounts.iter().map(|(m, _)| m)
    }

    pub fn source(&self, mount: usize) -> Option<&Arc<dyn Source>> {
        self.mounts.get(mount).map(|(_, s)| s)
    }

    /// The source whose name (its mount point URL) is `name`.
    pub fn source_named(&self, name: &str) -> Option<&Arc<dyn Source>> {
        self.mounts
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name() == name)
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the table consistent (each update is one insert).
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node(&self, ino: u64) -> Result<Node> {
        self.table()
            .nodes
            .get(&ino)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("inode {ino}")))
    }

    /// The dataset path of a node, for messages and the control service.
    pub fn path_of(&self, ino: u64) -> String {
        let t = self.table();
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            match t.nodes.get(&cur) {
                Some(n) => {
                    parts.push(n.name.clone());
                    cur = n.parent;
                }
                None => break,
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// Mount paths directly below the dataset path `dir_path`, as (name, mount index or None
    /// for a further virtual level).
    fn mount_children(&self, dir_path: &str) -> Vec<(String, Option<usize>)> {
        let prefix = if dir_path == "/" {
            "/".to_string()
        } else {
            format!("{dir_path}/")
        };
        let mut out: Vec<(String, Option<usize>)> = Vec::new();
        for (i, (m, _)) in self.mounts.iter().enumerate() {
            if let Some(rest) = m.path.strip_prefix(&prefix).filter(|r| !r.is_empty()) {
                let (first, deeper) = match rest.split_once('/') {
                    Some((f, _)) => (f, true),
                    None => (rest, false),
                };
                if !out.iter().any(|(n, _)| n == first) {
                    out.push((first.to_string(), if deeper { None } else { Some(i) }));
                }
            }
        }
        out
    }

    fn insert_child(
        &self,
        t: &mut Table,
        parent: u64,
        name: &str,
        location: Location,
        meta: Meta,
        ttl: Duration,
    ) -> Node {
        let key = (parent, name.to_string());
        t.negative.remove(&key);
        let fresh_until = Instant::now() + ttl;
        if let Some(&ino) = t.children.get(&key)
            && let Some(node) = t.nodes.get_mut(&ino)
        {
            node.meta = meta;
            node.location = location;
            node.fresh_until = fresh_until;
            return node.clone();
        }
        let ino = t.next_ino;
        t.next_ino += 1;
        let node = Node {
            ino,
            parent,
            name: name.to_string(),
            location,
            meta,
            fresh_until,
            lookups: 0,
        };
        if let Some(j) = &self.journal {
            let below = t.nodes.get(&parent).map(|p| &p.location);
            j.append(&[Record::Node(node_record(&node, below))]);
        }
        t.nodes.insert(ino, node.clone());
        t.children.insert(key, ino);
        node
    }

    /// The kernel was given `ino` in an entry (a lookup or readdirplus reply).
    pub fn looked_up(&self, ino: u64) {
        let mut t = self.table();
        let Some(n) = t.nodes.get_mut(&ino) else {
            return;
        };
        if n.lookups == UNKNOWN_LOOKUPS {
            return;
        }
        n.lookups += 1;
        if n.lookups == 1 {
            t.held += 1;
        }
    }

    /// The kernel forgot `(ino, count)` lookups: a node it no longer holds is dropped, with
    /// its entry and its parent's cached listing (which names it), and written to the
    /// journal as forgotten. When many nodes are held by nobody (listed, never looked up),
    /// the unused ones are swept too. Returns the nodes dropped.
    pub fn forget(&self, forgets: &[(u64, u64)]) -> Vec<u64> {
        let mut t = self.table();
        let mut gone = Vec::new();
        for &(ino, count) in forgets {
            if ino == ROOT {
                continue;
            }
            let Some(n) = t.nodes.get_mut(&ino) else {
                continue;
            };
            let before = n.lookups;
            n.lookups = if before == UNKNOWN_LOOKUPS {
                0
            } else {
                before.saturating_sub(count)
            };
            if before > 0 && n.lookups == 0 {
                t.held -= 1;
                gone.push(ino);
            }
        }
        for ino in &gone {
            Self::drop_node(&mut t, *ino);
        }
        if t.nodes.len() > t.held * 2 + UNHELD_BEFORE_SWEEP {
            gone.extend(Self::sweep(&mut t));
        }
        if !gone.is_empty()
            && let Some(j) = &self.journal
        {
            let records: Vec<Record> = gone.iter().map(|ino| Record::Forget(*ino)).collect();
            j.append(&records);
        }
        if t.nodes.capacity() > 4 * t.nodes.len() + 1024 {
            t.nodes.shrink_to_fit();
            t.children.shrink_to_fit();
            t.listings.shrink_to_fit();
        }
        gone
    }

    fn drop_node(t: &mut Table, ino: u64) {
        let Some(n) = t.nodes.remove(&ino) else {
            return;
        };
        let key = (n.parent, n.name);
        if t.children.get(&key) == Some(&ino) {
            t.children.remove(&key);
        }
        t.listings.remove(&n.parent);
        t.listings.remove(&ino);
        t.too_big.remove(&ino);
    }

    /// Drops the nodes nobody holds: not the kernel, not a fresh cached listing, not mount
    /// roots or virtual levels (few, and they never change), and none whose entry is still
    /// fresh (a listing being read names it, see `fs::walk_dir`).
    fn sweep(t: &mut Table) -> Vec<u64> {
        let now = Instant::now();
        t.listings.retain(|_, l| l.fresh_until > now);
        let listed: std::collections::HashSet<u64> = t
            .listings
            .values()
            .flat_map(|l| l.entries.iter().map(|(_, ino)| *ino))
            .collect();
        let unused: Vec<u64> = t
            .nodes
            .values()
            .filter(|n| {
                n.ino != ROOT
                    && n.lookups == 0
                    && n.fresh_until <= now
                    && !listed.contains(&n.ino)
                    && matches!(&n.location, Location::InMount { path, .. } if !path.is_empty())
            })
            .map(|n| n.ino)
            .collect();
        for ino in &unused {
            Self::drop_node(t, *ino);
        }
        unused
    }

    /// Calls `f` with the journal records of every node but the root, parents before
    /// children (a parent's id is always the smaller), made one by one as `f` takes them,
    /// while no node can be made or dropped.
    pub fn with_node_records<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = Record>) -> R) -> R {
        let t = self.table();
        let mut nodes: Vec<&Node> = t.nodes.values().filter(|n| n.ino != ROOT).collect();
        nodes.sort_unstable_by_key(|n| n.ino);
        let mut records = nodes
            .into_iter()
            .map(|n| Record::Node(node_record(n, t.nodes.get(&n.parent).map(|p| &p.location))));
        f(&mut records)
    }

    /// Nodes held now (the root, the kernel's, and those only listings hold).
    pub fn node_count(&self) -> usize {
        self.table().nodes.len()
    }

    /// Looks `name` up in directory `parent`.
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Node> {
        if name.contains('/') || name == "." || name == ".." {
            return Err(Error::invalid("name", format!("{name:?}")));
        }
        let dir = self.node(parent)?;
        if !dir.is_dir() {
            return Err(Error::NotADirectory(self.path_of(parent)));
        }
        let key = (parent, name.to_string());
        {
            let t = self.table();
            if let Some(until) = t.negative.get(&key)
                && *until > Instant::now()
            {
                return Err(Error::NotFound(name.to_string()));
            }
            if let Some(node) = t.children.get(&key).and_then(|i| t.nodes.get(i))
                && node.fresh_until > Instant::now()
            {
                return Ok(node.clone());
            }
        }
        // Mount paths shadow what the parent's source holds under the same name.
        let dir_path = self.path_of(parent);
        if let Some((_, mount)) = self
            .mount_children(&dir_path)
            .into_iter()
            .find(|(n, _)| n == name)
        {
            let location = match mount {
                Some(i) => Location::InMount {
                    mount: i,
                    path: String::new(),
                },
                None => Location::Virtual,
            };
            let mut t = self.table();
            // Mount roots and virtual levels never change while mounted: cache them for good.
            return Ok(self.insert_child(
                &mut t,
                parent,
                name,
                location,
                Meta::dir(self.started),
                Duration::from_secs(u32::MAX as u64),
            ));
        }
        let Location::InMount { mount, path } = &dir.location else {
            self.remember_absent(key);
            return Err(Error::NotFound(format!("{dir_path}/{name}")));
        };
        let child_path = fluid_source::join(path, name);
        let Some(src) = self.source(*mount) else {
            return Err(Error::NotFound(child_path));
        };
        if self.list_for_lookup(parent).await? {
            let t = self.table();
            if let Some(node) = t.children.get(&key).and_then(|i| t.nodes.get(i))
                && node.fresh_until > Instant::now()
            {
                return Ok(node.clone());
            }
            drop(t);
            self.remember_absent(key);
            return Err(Error::NotFound(format!("{dir_path}/{name}")));
        }
        match src.stat(&child_path).await? {
            Some(meta) => {
                let mut t = self.table();
                let location = Location::InMount {
                    mount: *mount,
                    path: child_path,
                };
                Ok(self.insert_child(&mut t, parent, name, location, meta, self.ttl.entry))
            }
            None => {
                self.remember_absent(key);
                Err(Error::NotFound(format!("{dir_path}/{name}")))
            }
        }
    }

    /// Makes sure directory `dir` has a fresh complete listing, listing it now (once, however
    /// many lookups ask at the same time) unless it has more than [`LIST_FOR_LOOKUP_MAX`]
    /// entries. Returns whether the listing is there.
    async fn list_for_lookup(&self, dir: u64) -> Result<bool> {
        let fresh = |t: &Table| {
            t.listings
                .get(&dir)
                .is_some_and(|l| l.fresh_until > Instant::now())
        };
        if fresh(&self.table()) {
            return Ok(true);
        }
        let gate = self
            .lookup_listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(dir)
            .or_default()
            .clone();
        let _one_at_a_time = gate.lock().await;
        if fresh(&self.table()) {
            return Ok(true);
        }
        // A directory found too big is not listed again until its entries would expire.
        if self
            .table()
            .too_big
            .get(&dir)
            .is_some_and(|until| *until > Instant::now())
        {
            return Ok(false);
        }
        let started = Instant::now();
        let mut stream = self.open_dir(dir)?;
        self.fill(&mut stream, LIST_FOR_LOOKUP_MAX).await?;
        let complete = stream.next.is_none();
        // A listing that takes half the entry TTL or more (a slow store, a short TTL) would
        // have to be made again almost at once: name by name is cheaper there.
        if !complete || started.elapsed() * 2 >= self.ttl.entry {
            let until = Instant::now() + self.ttl.entry;
            self.table().too_big.insert(dir, until);
        }
        Ok(complete)
    }

    fn remember_absent(&self, key: (u64, String)) {
        if self.ttl.negative.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut t = self.table();
        // Expired entries are dropped in bulk once there are many, so a scan of missing names
        // cannot grow the map without bound.
        if t.negative.len() >= MAX_NEGATIVE_ENTRIES {
            t.negative.retain(|_, until| *until > now);
        }
        t.negative.insert(key, now + self.ttl.negative);
    }

    /// Attributes of `ino`, refreshed from the source once their TTL has passed.
    pub async fn getattr(&self, ino: u64) -> Result<Node> {
        let node = self.node(ino)?;
        if node.fresh_until > Instant::now() {
            return Ok(node);
        }
        let Location::InMount { mount, path } = &node.location else {
            return Ok(node);
        };
        let Some(src) = self.source(*mount) else {
            return Ok(node);
        };
        match src.stat(path).await? {
            Some(meta) => {
                let mut t = self.table();
                let changed = t.nodes.get(&ino).map(|n| n.meta != meta);
                if changed == Some(true) {
                    // A changed directory's cached listing is stale too.
                    t.listings.remove(&ino);
                }
                let n = t
                    .nodes
                    .get_mut(&ino)
                    .ok_or_else(|| Error::NotFound(format!("inode {ino}")))?;
                n.meta = meta;
                n.fresh_until = Instant::now() + self.ttl.attr;
                Ok(n.clone())
            }
            None => Err(Error::NotFound(self.path_of(ino))),
        }
    }

    /// Starts streaming directory `ino`; a fresh cached listing is reused whole.
    pub fn open_dir(&self, ino: u64) -> Result<DirStream> {
        let node = self.node(ino)?;
        if !node.is_dir() {
            return Err(Error::NotADirectory(self.path_of(ino)));
        }
        if let Some(l) = self
            .table()
            .listings
            .get(&ino)
            .filter(|l| l.fresh_until > Instant::now())
        {
            return Ok(DirStream {
                ino,
                entries: l.entries.as_ref().clone(),
                next: None,
                seen: BTreeSet::new(),
            });
        }
        let mut stream = DirStream {
            ino,
            entries: Vec::new(),
            next: Some(None),
            seen: BTreeSet::new(),
        };
        // Mount points and virtual levels come first, then the source's own entries.
        let dir_path = self.path_of(ino);
        let mut t = self.table();
        for (name, mount) in self.mount_children(&dir_path) {
            let location = match mount {
                Some(i) => Location::InMount {
                    mount: i,
                    path: String::new(),
                },
                None => Location::Virtual,
            };
            let child = self.insert_child(
                &mut t,
                ino,
                &name,
                location,
                Meta::dir(self.started),
                Duration::from_secs(u32::MAX as u64),
            );
            stream.seen.insert(name.clone());
            stream.entries.push((name, child.ino));
        }
        if node.location == Location::Virtual {
            stream.next = None;
        }
        Ok(stream)
    }

    /// Makes sure `stream` holds more than `have` entries, fetching pages as needed. Returns
    /// false at the end of the directory.
    pub async fn fill(&self, stream: &mut DirStream, have: usize) -> Result<bool> {
        while stream.entries.len() <= have {
            let Some(token) = stream.next.take() else {
                return Ok(false);
            };
            let node = self.node(stream.ino)?;
            let Location::InMount { mount, path } = &node.location else {
                return Ok(false);
            };
            let Some(src) = self.source(*mount) else {
                return Ok(false);
            };
            let page = src.list(path, token).await?;
            stream.next = page.next.map(Some);
            let mut t = self.table();
            for Entry { name, meta } in page.entries {
                if name.is_empty() || name.contains('/') || !stream.seen.insert(name.clone()) {
                    continue;
                }
                let location = Location::InMount {
                    mount: *mount,
                    path: fluid_source::join(path, &name),
                };
                let child =
                    self.insert_child(&mut t, stream.ino, &name, location, meta, self.ttl.entry);
                stream.entries.push((name, child.ino));
            }
            if stream.next.is_none() {
                // Only a complete listing is cached, so a reader never sees half a directory.
                // Its entries are as fresh as it is: a slow listing of many pages must not
                // leave its first entries expiring before the listing itself.
                let fresh_until = Instant::now() + self.ttl.entry;
                for (_, ino) in &stream.entries {
                    if let Some(n) = t.nodes.get_mut(ino)
                        && n.fresh_until < fresh_until
                    {
                        n.fresh_until = fresh_until;
                    }
                }
                let entries = Arc::new(stream.entries.clone());
                t.listings.insert(
                    stream.ino,
                    Listing {
                        entries,
                        fresh_until,
                    },
                );
            }
        }
        Ok(true)
    }

    /// The dataset path split into (mount index, path inside the mount), for the control
    /// service; `None` when the path is only a virtual directory.
    pub async fn resolve_path(&self, path: &str) -> Result<Node> {
        let mut cur = self.node(ROOT)?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = self.lookup(cur.ino, part).await?;
        }
        Ok(cur)
    }
}

/// The journal's record of `node`, whose parent lies at `parent`.
fn node_record(node: &Node, parent: Option<&Location>) -> NodeRecord {
    let location = match (&node.location, parent) {
        (Location::Virtual, _) => NodeLocation::Virtual,
        (
            Location::InMount { mount, path },
            Some(Location::InMount {
                mount: pm,
                path: pp,
            }),
        ) if mount == pm && *path == fluid_source::join(pp, &node.name) => {
            NodeLocation::BelowParent
        }
        (Location::InMount { mount, path }, _) => NodeLocation::InMount {
            mount: *mount as u32,
            path: path.clone(),
        },
    };
    NodeRecord {
        ino: node.ino,
        parent: node.parent,
        name: node.name.clone(),
        location,
        meta: node.meta.clone(),
    }
}

#[cfg(test)]
mod tests;
