//! Pseudo-terminals for the scripted serial devices (LoRa modules, wM-Bus sticks) of tests and the
//! demo: a pty in raw mode whose slave is reached through a symlink (like /dev/serial/by-id/...), so a
//! device can be "unplugged" (pty closed, link removed) and "plugged in again" behind the same path;
//! and writing to the non-blocking master side.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// The two ends of a linked pty.
pub struct LinkedPty {
    /// Non-blocking: the scripted device's side.
    pub master: OwnedFd,
    /// Kept open so the line stays up while the host side reopens it.
    pub slave: OwnedFd,
}

/// Creates a raw-mode pty and points `link` at its slave.
pub fn open_linked(link: &Path) -> std::io::Result<LinkedPty> {
    use nix::sys::termios;
    let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
    // Raw mode on the line discipline: no echo, no CR/LF translation.
    let mut t = termios::tcgetattr(&pty.slave).map_err(std::io::Error::from)?;
    termios::cfmakeraw(&mut t);
    termios::tcsetattr(&pty.slave, termios::SetArg::TCSANOW, &t).map_err(std::io::Error::from)?;
    let slave_path = nix::unistd::ttyname(&pty.slave).map_err(std::io::Error::from)?;
    let flags =
        nix::fcntl::fcntl(pty.master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(pty.master.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(std::io::Error::from)?;
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&slave_path, link)?;
    Ok(LinkedPty { master: pty.master, slave: pty.slave })
}

/// Writes `data` to the non-blocking master; a pty buffer holds kilobytes, so this gives up rather
/// than spin on a full one.
pub fn write_master(master: &OwnedFd, data: &[u8]) {
    let mut off = 0;
    for _ in 0..100 {
        match nix::unistd::write(master, data.get(off..).unwrap_or(&[])) {
            Ok(n) => {
                off += n;
                if off >= data.len() {
                    return;
                }
            }
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => return,
        }
    }
}

/// Reads what is there from the non-blocking master (empty: nothing yet, or no slave open).
pub fn read_master(master: &OwnedFd, buf: &mut [u8]) -> usize {
    nix::unistd::read(master.as_raw_fd(), buf).unwrap_or_default()
}
