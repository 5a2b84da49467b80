//! The store's file I/O behind a small trait: the real file system ([`RealFs`], the default), and in
//! tests a simulated one (`sim_fs::SimFs`) that can cut the power at any operation and keeps only what
//! was made durable. Everything the store does to its own files goes through here: the log segments,
//! `seq.floor`, the marker, and the directory operations. sled does its own I/O (see `sim_fs.rs` for
//! how the simulation models it).

use std::fmt::Debug;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// An open file (read and write).
pub trait FsFile: Send + Sync + Debug {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's length.
    fn size(&self) -> io::Result<u64>;
    /// `fdatasync`: the contents (not the directory entry) are durable when this returns.
    fn sync_data(&self) -> io::Result<()>;
    /// Reserves the file's first `len` bytes without writing them: its length becomes `len` and the new
    /// part reads as zeros. Returns whether it did (not on a file system that cannot, nor when the
    /// disk is nearly full). Once the length is durable, an `fdatasync` of later writes inside it
    /// carries no file-size change (see `segment.rs`).
    fn preallocate(&self, len: u64) -> io::Result<bool>;
}

/// A file handle as the store keeps it.
pub type FileRef = Arc<dyn FsFile>;

/// The file system operations the store uses.
pub trait Fs: Send + Sync + Debug {
    /// Creates (or truncates) a file, for reading and writing.
    fn create(&self, path: &Path) -> io::Result<FileRef>;
    /// Opens an existing file for reading and writing; with `create`, creates it if it is missing
    /// (never truncates).
    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef>;
    fn exists(&self, path: &Path) -> bool;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of a directory.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, deletions in it) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Moves a whole store directory aside (after damage); durable when it returns.
    fn rename_dir(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Called after each successful explicit flush of sled in `dir` (the simulation snapshots it).
    fn sled_flushed(&self, _dir: &Path) {}

    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open(path, false)?;
        let len = usize::try_from(f.size()?).map_err(io::Error::other)?;
        let mut buf = vec![0; len];
        f.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// The real file system (std::fs).
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(std::fs::File);

impl FsFile for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(&self.0, buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn preallocate(&self, len: u64) -> io::Result<bool> {
        use nix::fcntl::{fallocate, FallocateFlags};
        use std::os::fd::AsRawFd;
        if self.size()? >= len {
            return Ok(false);
        }
        // A reservation must not be what fills the disk: then sled and the next segment would fail
        // where appending a little at a time would have gone on for a while.
        let vfs = nix::sys::statvfs::fstatvfs(&self.0).map_err(io::Error::from)?;
        // 32 bits on armhf, 64 elsewhere.
        #[allow(clippy::useless_conversion)]
        let free = u64::from(vfs.blocks_available()).saturating_mul(u64::from(vfs.fragment_size()));
        if free < len.saturating_mul(MIN_FREE_SEGMENTS) {
            return Ok(false);
        }
        // off_t: 32 bits on armhf.
        let n = nix::libc::off_t::try_from(len).map_err(io::Error::other)?;
        match fallocate(self.0.as_raw_fd(), FallocateFlags::empty(), 0, n) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::EOPNOTSUPP) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Segments are reserved ahead only while the disk has room for this many more.
const MIN_FREE_SEGMENTS: u64 = 4;

impl Fs for RealFs {
    fn create(&self, path: &Path) -> io::Result<FileRef> {
        let f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path)?;
        Ok(Arc::new(RealFile(f)))
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        let f = std::fs::OpenOptions::new().create(create).truncate(false).read(true).write(true).open(path)?;
        Ok(Arc::new(RealFile(f)))
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        Ok(std::fs::read_dir(path)?.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect())
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }
    fn rename_dir(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)?;
        if let Some(parent) = to.parent() {
            self.sync_dir(parent)?;
        }
        Ok(())
    }
}
