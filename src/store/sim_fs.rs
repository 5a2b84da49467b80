//! A simulated file system for power-cut tests (in the spirit of SQLite's crash tests and
//! TigerBeetle's simulator): everything the store does to its own files happens in memory, counted
//! operation by operation; at a chosen operation the power goes (that operation and every later one
//! fail), and [`SimFs::power_cut`] then keeps only what was made durable:
//! - a file's contents as of its last `sync_data`, plus a random prefix of the writes (and length
//!   changes) made since, in order, the last of them torn at a random byte;
//! - directory entries (creations, renames, deletions) as of the directory's last `sync_dir`: a file
//!   created, renamed or removed without a directory fsync afterwards is back where it was.
//!
//! Directories themselves are durable when created (the store creates `wal/` once, at its first
//! open, and fsyncs its parent; modelling that is not worth the code).
//!
//! sled does its own I/O, on the real disk (a temp dir). It is modelled as "keeps only what sled
//! flushed": sled runs without its flush timer (in production too: flash wear),
//! so its files change on disk only as its buffers fill or when the store flushes it; after each
//! successful explicit flush the store calls [`Fs::sled_flushed`], which copies sled's directory, and
//! a power cut puts that copy back. (What sled wrote after its last flush is lost, as with a real
//! power cut; writes torn *inside* sled's files are not modelled: sled's own recovery is not what is
//! under test.) The snapshot is itself an operation, so a cut can fall between sled's flush and what
//! the store does next.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::fs::{FileRef, Fs, FsFile};

/// Files by path (relative to a directory) and contents.
type Files = Vec<(PathBuf, Vec<u8>)>;

/// The directory that holds `path`.
fn parent(path: &Path) -> PathBuf {
    path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[derive(Debug, Clone)]
enum Pending {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug, Default, Clone)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
    /// What happened since the last `sync_data`, in order.
    pending: Vec<Pending>,
}

fn apply(data: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write(off, bytes) => {
            let off = *off as usize;
            if data.len() < off + bytes.len() {
                data.resize(off + bytes.len(), 0);
            }
            data[off..off + bytes.len()].copy_from_slice(bytes);
        }
        Pending::SetLen(len) => data.resize(*len as usize, 0),
    }
}

#[derive(Debug, Default)]
struct Sim {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// Directory entries as the running process sees them, and as they are on disk.
    live: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Mutating operations since the last power cut (or since the start).
    ops: u64,
    cut_at: Option<u64>,
    crashed: bool,
    /// sled's directory and its files as of its last flush.
    sled: Option<(PathBuf, Files)>,
    /// Treat `sync_dir` as a no-op (to show what the directory fsyncs are for).
    ignore_dir_sync: bool,
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power cut")
}

impl Sim {
    /// Counts a mutating operation; fails it (and every later one) at the cut point.
    fn step(&mut self) -> io::Result<()> {
        if self.crashed {
            return Err(power_lost());
        }
        self.ops += 1;
        if self.cut_at == Some(self.ops) {
            self.crashed = true;
            return Err(power_lost());
        }
        Ok(())
    }
    fn alive(&self) -> io::Result<()> {
        if self.crashed {
            Err(power_lost())
        } else {
            Ok(())
        }
    }
    fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "stale file handle"))
    }
    fn new_file(&mut self, path: &Path) -> io::Result<u64> {
        if !self.dirs.contains(&parent(path)) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no directory for {}", path.display())));
        }
        self.next_ino += 1;
        let ino = self.next_ino;
        self.inodes.insert(ino, Inode::default());
        self.live.insert(path.to_path_buf(), ino);
        Ok(ino)
    }
}

/// The simulated file system; clones share it.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    s: Arc<Mutex<Sim>>,
}

#[derive(Debug)]
struct SimFile {
    s: Arc<Mutex<Sim>>,
    ino: u64,
}

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }
    fn lock(&self) -> MutexGuard<'_, Sim> {
        self.s.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn file(&self, ino: u64) -> FileRef {
        Arc::new(SimFile { s: self.s.clone(), ino })
    }
    /// The power goes at the `n`-th mutating operation from now (1 = the next one).
    pub fn cut_after(&self, n: u64) {
        let mut s = self.lock();
        s.cut_at = Some(s.ops + n.max(1));
    }
    /// Whether the power has gone.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }
    pub fn set_ignore_dir_sync(&self, on: bool) {
        self.lock().ignore_dir_sync = on;
    }
    /// Cuts the power now (if it has not gone yet) and comes back up with what was durable.
    /// `rand(n)` returns a number below `n`. `sled_dir` is where sled's real files are: they are put
    /// back as of sled's last flush. Every handle from before stops working.
    pub fn power_cut(&self, sled_dir: &Path, rand: &mut dyn FnMut(u64) -> u64) -> io::Result<()> {
        let mut s = self.lock();
        let durable = s.durable.clone();
        let referenced: BTreeSet<u64> = durable.values().copied().collect();
        let mut inodes = HashMap::new();
        for ino in referenced {
            let Some(node) = s.inodes.get(&ino) else { continue };
            let mut data = node.synced.clone();
            let n = node.pending.len() as u64;
            let keep = rand(n + 1) as usize;
            for p in &node.pending[..keep] {
                apply(&mut data, p);
            }
            if let Some(p) = node.pending.get(keep) {
                // The next one is torn: a prefix of a write, or a length change or not.
                match p {
                    Pending::Write(off, bytes) => {
                        let cut = rand(bytes.len() as u64 + 1) as usize;
                        apply(&mut data, &Pending::Write(*off, bytes[..cut].to_vec()));
                    }
                    Pending::SetLen(_) => {
                        if rand(2) == 1 {
                            apply(&mut data, p);
                        }
                    }
                }
            }
            // New inode numbers: handles from before the cut must not reach the new state.
            inodes.insert(ino, Inode { data: data.clone(), synced: data, pending: Vec::new() });
        }
        let base = s.next_ino + 1;
        s.next_ino += inodes.len() as u64 + 1;
        let renumber: HashMap<u64, u64> = inodes.keys().enumerate().map(|(i, ino)| (*ino, base + i as u64)).collect();
        s.inodes = inodes.into_iter().map(|(ino, node)| (renumber[&ino], node)).collect();
        s.durable = durable.into_iter().map(|(p, ino)| (p, renumber[&ino])).collect();
        s.live = s.durable.clone();
        s.crashed = false;
        s.cut_at = None;
        s.ops = 0;
        // sled: back to its last flush.
        if sled_dir.exists() {
            std::fs::remove_dir_all(sled_dir)?;
        }
        std::fs::create_dir_all(sled_dir)?;
        if let Some((dir, files)) = &s.sled {
            if dir == sled_dir {
                for (rel, bytes) in files {
                    let p = sled_dir.join(rel);
                    std::fs::create_dir_all(parent(&p))?;
                    std::fs::write(p, bytes)?;
                }
            }
        }
        Ok(())
    }
}

fn copy_tree(root: &Path, dir: &Path, out: &mut Files) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            copy_tree(root, &p, out)?;
        } else {
            let rel = p.strip_prefix(root).map_err(io::Error::other)?.to_path_buf();
            out.push((rel, std::fs::read(&p)?));
        }
    }
    Ok(())
}

impl FsFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.read_at(buf, offset)? < buf.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        Ok(())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        // Reads work after the cut too (the dead process's view): the test looks at what the store
        // did before the power went.
        let mut s = self.s.lock().unwrap_or_else(|p| p.into_inner());
        let node = s.inode(self.ino)?;
        let off = (offset as usize).min(node.data.len());
        let n = buf.len().min(node.data.len() - off);
        buf[..n].copy_from_slice(&node.data[off..off + n]);
        Ok(n)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.s.lock().unwrap_or_else(|p| p.into_inner());
        s.step()?;
        let node = s.inode(self.ino)?;
        let p = Pending::Write(offset, buf.to_vec());
        apply(&mut node.data, &p);
        node.pending.push(p);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.s.lock().unwrap_or_else(|p| p.into_inner());
        s.step()?;
        let node = s.inode(self.ino)?;
        let p = Pending::SetLen(len);
        apply(&mut node.data, &p);
        node.pending.push(p);
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        let mut s = self.s.lock().unwrap_or_else(|p| p.into_inner());
        s.alive()?;
        Ok(s.inode(self.ino)?.data.len() as u64)
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.s.lock().unwrap_or_else(|p| p.into_inner());
        s.step()?;
        let node = s.inode(self.ino)?;
        node.synced = node.data.clone();
        node.pending.clear();
        Ok(())
    }
    /// A length change to zeros, durable like any other at the next `sync_data`.
    fn preallocate(&self, len: u64) -> io::Result<bool> {
        if self.size()? >= len {
            return Ok(false);
        }
        self.set_len(len).map(|()| true)
    }
}

impl Fs for SimFs {
    fn create(&self, path: &Path) -> io::Result<FileRef> {
        let mut s = self.lock();
        s.step()?;
        let ino = match s.live.get(path).copied() {
            Some(ino) => {
                let node = s.inode(ino)?;
                node.data.clear();
                node.pending.push(Pending::SetLen(0));
                ino
            }
            None => s.new_file(path)?,
        };
        drop(s);
        Ok(self.file(ino))
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        let mut s = self.lock();
        s.alive()?;
        let ino = match s.live.get(path).copied() {
            Some(ino) => ino,
            None if create => {
                s.step()?;
                s.new_file(path)?
            }
            None => return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))),
        };
        drop(s);
        Ok(self.file(ino))
    }
    fn exists(&self, path: &Path) -> bool {
        let s = self.lock();
        s.live.contains_key(path) || s.dirs.contains(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.step()?;
        let ino = s.live.remove(from).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "rename: no such file"))?;
        s.live.insert(to.to_path_buf(), ino);
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.step()?;
        s.live.remove(path).map(|_| ()).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "remove: no such file"))
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        s.alive()?;
        if !s.dirs.contains(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        let files = s.live.keys().chain(s.dirs.iter()).filter(|p| p.parent() == Some(path));
        Ok(files.filter_map(|p| p.file_name()?.to_str().map(str::to_string)).collect())
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.alive()?;
        let mut p = Some(path);
        while let Some(d) = p {
            s.dirs.insert(d.to_path_buf());
            p = d.parent();
        }
        Ok(())
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.step()?;
        if s.ignore_dir_sync {
            return Ok(());
        }
        let in_dir = |p: &Path| p.parent() == Some(path);
        s.durable.retain(|p, _| !in_dir(p));
        let now: Vec<(PathBuf, u64)> = s.live.iter().filter(|(p, _)| in_dir(p)).map(|(p, i)| (p.clone(), *i)).collect();
        s.durable.extend(now);
        Ok(())
    }
    fn rename_dir(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.step()?;
        // sled's real files move too.
        std::fs::rename(from, to)?;
        let moved = |m: &BTreeMap<PathBuf, u64>| -> BTreeMap<PathBuf, u64> {
            m.iter()
                .map(|(p, i)| match p.strip_prefix(from) {
                    Ok(rest) => (to.join(rest), *i),
                    Err(_) => (p.clone(), *i),
                })
                .collect()
        };
        s.live = moved(&s.live);
        s.durable = moved(&s.durable);
        let dirs: Vec<PathBuf> = s.dirs.iter().filter_map(|d| Some(to.join(d.strip_prefix(from).ok()?))).collect();
        s.dirs.extend(dirs);
        Ok(())
    }
    fn sled_flushed(&self, dir: &Path) {
        let mut s = self.lock();
        if s.step().is_err() {
            return;
        }
        let mut files = Vec::new();
        match copy_tree(dir, dir, &mut files) {
            Ok(()) => s.sled = Some((dir.to_path_buf(), files)),
            // A copy that failed halfway is no snapshot: keep the previous one (it is older: safe
            // for the model only in that the test fails loudly rather than passes wrongly).
            Err(e) => panic!("snapshotting sled's files failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_power_cut_keeps_only_what_was_synced() {
        let sled = tempfile::tempdir().unwrap();
        let fs = SimFs::new();
        let d = Path::new("/s");
        fs.create_dir_all(d).unwrap();
        // Synced contents and a synced directory entry survive; the unsynced write is torn.
        let a = fs.create(&d.join("a")).unwrap();
        a.write_all_at(b"hello", 0).unwrap();
        a.sync_data().unwrap();
        fs.sync_dir(d).unwrap();
        a.write_all_at(b" world", 5).unwrap();
        // A file whose contents are synced but whose directory entry is not is gone.
        let b = fs.create(&d.join("b")).unwrap();
        b.write_all_at(b"x", 0).unwrap();
        b.sync_data().unwrap();
        // A rename without a directory fsync is undone.
        fs.rename(&d.join("a"), &d.join("c")).unwrap();
        fs.cut_after(1);
        assert!(fs.remove_file(&d.join("c")).is_err(), "the power is gone");
        let mut n = 0;
        fs.power_cut(sled.path(), &mut |m| {
            n += 1;
            m - 1
        })
        .unwrap();
        assert_eq!(fs.read(&d.join("a")).unwrap(), b"hello world", "all of the unsynced write kept here");
        assert!(!fs.exists(&d.join("b")) && !fs.exists(&d.join("c")));
        fs.power_cut(sled.path(), &mut |_| 0).unwrap();
        assert_eq!(fs.read(&d.join("a")).unwrap(), b"hello world", "what survived a cut is durable");
    }
}
