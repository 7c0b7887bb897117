//! The pseudo-terminal of one terminal command (`invoke --tty`): made here, its slave goes to
//! the shell's loop with the command's record (the loop makes it the shell's controlling
//! terminal for that command), its master stays here. What the command prints is read from
//! the master; what is typed is written to it; a resize is `TIOCSWINSZ` on it, and the kernel
//! sends SIGWINCH to the terminal's foreground process group. A terminal emulator (vt100)
//! fed the same output keeps the command's screen, so a client entering later sees it
//! redrawn, as tmux does.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use bytes::{Bytes, BytesMut};
use linger_proto::types::TerminalSpec;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::pty::{openpty, Winsize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// One read takes at most this much (a terminal's writes are small; a flood is read in
/// pieces of this size).
const READ_SIZE: usize = 64 * 1024;

pub struct Pty {
    master: AsyncFd<OwnedFd>,
}

/// A terminal command's terminal: the pseudo-terminal, and its screen as drawn so far.
pub struct Terminal {
    pub pty: Pty,
    screen: std::sync::Mutex<vt100::Parser>,
}

impl Terminal {
    pub fn new(pty: Pty, spec: &TerminalSpec) -> Terminal {
        let size = winsize(spec.rows, spec.cols);
        Terminal {
            pty,
            screen: std::sync::Mutex::new(vt100::Parser::new(size.ws_row, size.ws_col, 0)),
        }
    }

    fn screen(&self) -> std::sync::MutexGuard<'_, vt100::Parser> {
        self.screen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The command printed `data`.
    pub fn drew(&self, data: &[u8]) {
        self.screen().process(data);
    }

    /// Escape sequences that draw the screen as it is now on a blank terminal of its size:
    /// the alternate screen if the program is on it, the contents with their attributes, the
    /// cursor, and the input modes (keypad, cursor keys, paste, mouse).
    pub fn snapshot(&self) -> Bytes {
        let screen = self.screen();
        let s = screen.screen();
        let mut out = Vec::new();
        if s.alternate_screen() {
            out.extend_from_slice(b"\x1b[?1049h");
        }
        out.extend_from_slice(b"\x1b[H\x1b[2J");
        out.extend(s.state_formatted());
        Bytes::from(out)
    }

    /// A new window size: the terminal's (SIGWINCH follows) and the screen's.
    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        let size = winsize(rows, cols);
        self.screen()
            .screen_mut()
            .set_size(size.ws_row, size.ws_col);
        self.pty.resize(rows, cols)
    }
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        // A zero size makes full-screen programs misdraw: 24x80 is every terminal's default.
        ws_row: if rows == 0 { 24 } else { rows },
        ws_col: if cols == 0 { 80 } else { cols },
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Pty {
    /// Makes the terminal at the client's size; returns it and the slave for the loop.
    pub fn open(spec: &TerminalSpec) -> std::io::Result<(Pty, OwnedFd)> {
        let pair = openpty(Some(&winsize(spec.rows, spec.cols)), None)?;
        for fd in [&pair.master, &pair.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        }
        let flags = OFlag::from_bits_truncate(fcntl(&pair.master, FcntlArg::F_GETFL)?);
        fcntl(&pair.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: the master is an `OwnedFd` that only this `AsyncFd` holds, so it is neither
        // closed nor replaced while registered.
        let master = unsafe {
            AsyncFd::register_with_interest(pair.master, Interest::READABLE | Interest::WRITABLE)?
        };
        Ok((Pty { master }, pair.slave))
    }

    /// The next bytes the command printed; `None` once no process holds the slave (EIO).
    pub async fn read(&self, buf: &mut BytesMut) -> std::io::Result<Option<Bytes>> {
        if buf.capacity() < READ_SIZE / 4 {
            *buf = BytesMut::with_capacity(READ_SIZE);
        }
        loop {
            let mut guard = self.master.readable().await?;
            let spare = buf.spare_capacity_mut();
            let room = spare.len().min(READ_SIZE);
            let fd = self.master.get_ref().as_raw_fd();
            // SAFETY: `read` writes at most `room` bytes into the spare capacity, which is
            // that long; they are marked initialised only as far as it wrote.
            let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), room) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        guard.clear_ready();
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    // Every holder of the slave has closed it.
                    Some(libc::EIO) => return Ok(None),
                    _ => return Err(e),
                }
            }
            if n == 0 {
                return Ok(None);
            }
            // SAFETY: the kernel initialised the first `n` bytes.
            unsafe { buf.set_len(buf.len() + n as usize) };
            return Ok(Some(buf.split().freeze()));
        }
    }

    /// Writes what it can of `data` (what was typed), waiting while the terminal's input
    /// is full; returns how much it wrote.
    pub async fn write_some(&self, data: &[u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.master.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from))
            {
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(result) => return result,
                Err(_would_block) => {}
            }
        }
    }

    /// Writes all of `data`.
    #[cfg(test)]
    pub async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let n = self.write_some(data).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Takes what was typed and is still waiting in the terminal's input, up to `max` bytes
    /// in `into`: once the command has ended, what its loop did not read in time (the host
    /// may have written more after the loop looked). The slave is opened from the master
    /// (`TIOCGPTPEER`), read without waiting, and closed.
    pub fn take_typed(&self, into: &mut Vec<u8>, max: usize) -> std::io::Result<()> {
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: TIOCGPTPEER takes the open flags as its argument and returns a new fd.
        let fd =
            unsafe { libc::ioctl(self.master.get_ref().as_raw_fd(), libc::TIOCGPTPEER, flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the ioctl returned a fresh descriptor that nothing else owns.
        let slave = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut modes = nix::sys::termios::tcgetattr(&slave)?;
        modes
            .local_flags
            .remove(nix::sys::termios::LocalFlags::ICANON | nix::sys::termios::LocalFlags::ECHO);
        use nix::sys::termios::SpecialCharacterIndices::{VMIN, VTIME};
        modes.control_chars[VMIN as usize] = 0;
        modes.control_chars[VTIME as usize] = 0;
        nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &modes)?;
        let mut buf = [0u8; 1024];
        while into.len() < max {
            let room = (max - into.len()).min(buf.len());
            match nix::unistd::read(&slave, &mut buf[..room]) {
                Ok(0) | Err(nix::errno::Errno::EAGAIN) => break,
                Ok(n) => into.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The client's window changed.
    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        let size = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid.
        let r = unsafe {
            libc::ioctl(
                self.master.get_ref().as_raw_fd(),
                libc::TIOCSWINSZ,
                &size as *const Winsize,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn spec() -> TerminalSpec {
        TerminalSpec {
            term: "xterm".into(),
            rows: 30,
            cols: 100,
        }
    }

    fn slave_size(slave: &OwnedFd) -> (u16, u16) {
        let mut size = winsize(1, 1);
        // SAFETY: TIOCGWINSZ writes one `winsize` to the pointer, which is valid.
        let r = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!(r, 0);
        (size.ws_row, size.ws_col)
    }

    /// The screen drawn for a client entering later: the alternate screen if the program
    /// is on it, what it shows, and the input modes it set.
    #[tokio::test]
    async fn the_snapshot_draws_the_screen_as_the_program_left_it() {
        let (pty, _slave) = Pty::open(&spec()).unwrap();
        let t = Terminal::new(pty, &spec());
        t.drew(b"\x1b[?1049h\x1b[?2004hedited text");
        let snap = t.snapshot();
        let mut fresh = vt100::Parser::new(30, 100, 0);
        fresh.process(&snap);
        let s = fresh.screen();
        assert!(s.alternate_screen());
        assert!(s.bracketed_paste());
        assert!(s.contents().contains("edited text"), "{:?}", s.contents());
        assert_eq!(s.cursor_position(), (0, 11));
    }

    /// What was typed after the command's loop looked for type-ahead is taken back from the
    /// terminal, a partial line included.
    #[tokio::test]
    async fn typed_input_nobody_read_is_taken_back() {
        let (pty, slave) = Pty::open(&spec()).unwrap();
        pty.write_all(b"exit\rls -l").await.unwrap();
        let mut got = b"earlier ".to_vec();
        pty.take_typed(&mut got, 4096).unwrap();
        assert_eq!(got, b"earlier exit\nls -l");
        // Nothing is left for the next reader, and the cap holds.
        pty.write_all(b"abcdef").await.unwrap();
        let mut capped = Vec::new();
        pty.take_typed(&mut capped, 3).unwrap();
        assert_eq!(capped, b"abc");
        drop(slave);
    }

    #[tokio::test]
    async fn what_the_slave_writes_is_read_and_what_is_typed_reaches_it() {
        let (pty, slave) = Pty::open(&spec()).unwrap();
        assert_eq!(slave_size(&slave), (30, 100));
        let mut file = std::fs::File::from(slave.try_clone().unwrap());
        file.write_all(b"hello\n").unwrap();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") {
            got.extend_from_slice(&pty.read(&mut buf).await.unwrap().unwrap());
        }
        // The line discipline's output processing (ONLCR) is a real terminal's.
        assert_eq!(got, b"hello\r\n");
        pty.write_all(b"typed\n").await.unwrap();
        let mut line = [0u8; 6];
        file.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"typed\n");
        pty.resize(50, 132).unwrap();
        assert_eq!(slave_size(&slave), (50, 132));
        drop((file, slave));
        // Echo of what was typed may come first; then the end.
        while pty.read(&mut buf).await.unwrap().is_some() {}
    }
}
