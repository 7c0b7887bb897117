//! A PTY harness: `linger` on a pseudo-terminal of its own, typed into and read like a
//! user's terminal, with a terminal emulator (vt100) to judge what the screen shows and the
//! terminal's modes to judge what linger left behind.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use super::{eventually, World};

/// `linger` on a pseudo-terminal of its own (its controlling terminal, so that Ctrl-C
/// written to the master raises SIGINT), with everything it writes collected.
pub struct Term {
    child: Child,
    master: std::fs::File,
    screen: Arc<Mutex<Vec<u8>>>,
    /// How far `expect` has read.
    pub seen: usize,
}

impl Term {
    pub fn spawn(w: &World, args: &[&str]) -> Term {
        Term::spawn_cmd(w.linger(args))
    }

    /// `cmd` (a `linger` command made by the world) on the terminal.
    pub fn spawn_cmd(mut cmd: std::process::Command) -> Term {
        let size = nix::pty::Winsize {
            ws_row: 40,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        cmd.env("TERM", "xterm")
            .stdin(Stdio::from(pty.slave.try_clone().expect("dup")))
            .stdout(Stdio::from(pty.slave.try_clone().expect("dup")))
            .stderr(Stdio::from(pty.slave));
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start linger on a terminal");
        // The child holds the terminal now; our copies of it go with `cmd`.
        drop(cmd);
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("dup the master");
        let collected = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the terminal's last user is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                collected.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Term {
            child,
            master,
            screen,
            seen: 0,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Types `keys`.
    pub fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("type");
        self.master.flush().expect("type");
    }

    /// Waits until `what` appears after what was expected before; reads past it.
    pub fn expect(&mut self, what: &str) {
        let mut found = None;
        let seen = self.seen;
        let screen = self.screen.clone();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually(&format!("{what:?} on the terminal"), || {
                let s = screen.lock().unwrap();
                found = find(&s[seen.min(s.len())..], what.as_bytes()).map(|i| seen + i);
                found.is_some()
            })
        }));
        if outcome.is_err() {
            panic!(
                "{what:?} never appeared; the terminal shows:\n{}",
                self.text()
            );
        }
        self.seen = found.expect("found") + what.len();
    }

    /// What appeared since the last `expect`.
    pub fn since(&self, from: usize) -> String {
        let s = self.screen.lock().unwrap();
        String::from_utf8_lossy(&s[from.min(s.len())..]).into_owned()
    }

    /// Waits for linger to end.
    pub fn wait(&mut self) -> ExitStatus {
        let mut status = None;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually("linger enter to end", || {
                status = self.child.try_wait().expect("try_wait");
                status.is_some()
            })
        }));
        if outcome.is_err() {
            panic!(
                "linger enter did not end; the terminal shows:\n{}",
                self.text()
            );
        }
        status.expect("status")
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Term {
    /// The window changes size (the kernel sends linger SIGWINCH).
    pub fn resize(&mut self, rows: u16, cols: u16) {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid.
        let r = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&self.master),
                libc::TIOCSWINSZ,
                &size as *const nix::pty::Winsize,
            )
        };
        assert_eq!(r, 0, "resize the terminal");
    }

    /// The terminal's modes now (those linger set, or left).
    pub fn modes(&self) -> nix::sys::termios::Termios {
        nix::sys::termios::tcgetattr(&self.master).expect("the terminal's modes")
    }

    /// Asserts that the terminal is as a shell leaves it: line editing and echo on, and
    /// the screen a terminal emulator fed everything shows out of the alternate screen with
    /// the cursor visible.
    pub fn assert_restored(&self) {
        use nix::sys::termios::LocalFlags;
        let modes = self.modes();
        assert!(
            modes
                .local_flags
                .contains(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG),
            "the terminal was left without icanon/echo/isig: {:?}\n{}",
            modes.local_flags,
            self.text()
        );
        let screen = self.screen();
        assert!(
            !screen.screen().alternate_screen(),
            "left on the alternate screen"
        );
        assert!(
            !screen.screen().hide_cursor(),
            "left with the cursor hidden"
        );
    }

    /// Everything written so far, through a terminal emulator of the terminal's size.
    pub fn screen(&self) -> vt100::Parser {
        let mut p = vt100::Parser::new(40, 200, 0);
        p.process(&self.screen.lock().unwrap());
        p
    }
}
