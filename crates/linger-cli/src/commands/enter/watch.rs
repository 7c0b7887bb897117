//! The terminal while a command runs: keys are read as they are typed (no echo, no line
//! buffering, no signals from the keyboard), as ssh does, so that Ctrl-C stops the remote
//! command and `~.` at the start of a line detaches at once. Whatever else is typed is kept
//! and becomes the next input, as a shell's type-ahead does.
//!
//! Ctrl-C is read as a key rather than caught as SIGINT: the line editor owns SIGINT's
//! handler while it exists, and a key cannot be lost between two handlers.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};
use tokio::sync::mpsc;

use crate::terminal::stdin_fd as stdin;

/// A key that means something while a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// Ctrl-C (the terminal's interrupt character).
    Interrupt,
    /// `~.` at the start of a line.
    Detach,
}

/// Standard input as a terminal, with the modes it had when `enter` began.
pub struct Tty {
    original: Termios,
}

impl Tty {
    /// The terminal on standard input, if it is one.
    pub fn stdin() -> Option<Tty> {
        termios::tcgetattr(stdin())
            .ok()
            .map(|original| Tty { original })
    }

    /// Puts the terminal back as `enter` found it (line editing leaves it so too).
    pub fn restore(&self) {
        let _ = termios::tcsetattr(stdin(), SetArg::TCSANOW, &self.original);
    }

    /// Starts watching the keyboard until [`Watcher::stop`].
    pub fn watch(&self) -> std::io::Result<Watcher> {
        let mut keys = self.original.clone();
        keys.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ECHONL | LocalFlags::ISIG);
        keys.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        keys.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        let intr = self.original.control_chars[SpecialCharacterIndices::VINTR as usize];
        termios::tcsetattr(stdin(), SetArg::TCSANOW, &keys)?;
        let (wake_r, wake_w) = nix::unistd::pipe()?;
        // Both ends stay open until the watcher is dropped: waking a reader that already
        // ended must not raise SIGPIPE.
        let wake_r = Arc::new(wake_r);
        let ahead = Arc::new(Mutex::new(Typeahead {
            // 0 is _POSIX_VDISABLE: no interrupt character.
            intr: (intr != 0).then_some(intr),
            ..Typeahead::default()
        }));
        let (keys_tx, keys_rx) = mpsc::unbounded_channel();
        let (shared, wake) = (ahead.clone(), wake_r.clone());
        let thread = std::thread::Builder::new()
            .name("enter-keys".into())
            .spawn(move || read_keys(&wake, shared, keys_tx));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                self.restore();
                return Err(e);
            }
        };
        Ok(Watcher {
            wake: wake_w,
            _wake_r: wake_r,
            thread: Some(thread),
            ahead,
            keys: keys_rx,
            original: self.original.clone(),
        })
    }
}

/// Reads keys while a command runs.
pub struct Watcher {
    wake: OwnedFd,
    _wake_r: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    ahead: Arc<Mutex<Typeahead>>,
    keys: mpsc::UnboundedReceiver<Key>,
    original: Termios,
}

impl Watcher {
    /// The next Ctrl-C or `~.`; never, once the input has ended.
    pub async fn key(&mut self) -> Key {
        match self.keys.recv().await {
            Some(key) => key,
            None => std::future::pending().await,
        }
    }

    /// Stops reading, puts the terminal back, and returns what was typed meanwhile.
    pub fn stop(mut self) -> Typed {
        self.finish();
        std::mem::take(&mut *lock(&self.ahead)).into_typed()
    }

    fn finish(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = nix::unistd::write(&self.wake, &[1]);
            let _ = thread.join();
        }
        let _ = termios::tcsetattr(stdin(), SetArg::TCSANOW, &self.original);
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.finish();
    }
}

fn lock(m: &Mutex<Typeahead>) -> std::sync::MutexGuard<'_, Typeahead> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_keys(wake: &OwnedFd, ahead: Arc<Mutex<Typeahead>>, keys: mpsc::UnboundedSender<Key>) {
    crate::terminal::read_stdin_until_woken(wake, |typed| {
        let mut ahead = lock(&ahead);
        for &b in typed {
            match ahead.feed(b) {
                None => {}
                Some(Key::Detach) => {
                    let _ = keys.send(Key::Detach);
                    return false;
                }
                Some(Key::Interrupt) => {
                    let _ = keys.send(Key::Interrupt);
                }
            }
        }
        true
    });
}

/// Type-ahead a terminal command left unread (its terminal had already echoed and
/// line-edited it), as lines to run next and the start of the line after them.
pub fn unread(bytes: &[u8]) -> Typed {
    let mut t = Typeahead::default();
    for &b in bytes {
        // `~.` cannot be in it: the keyboard's escapes were taken out before it was sent.
        let _ = t.feed(b);
    }
    t.into_typed()
}

/// What was typed while a command ran.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Typed {
    /// Complete lines, to run next.
    pub lines: Vec<String>,
    /// The start of the line after them, to edit at the next prompt.
    pub partial: String,
}

/// Type-ahead being decoded: printable text, Enter, Backspace and Ctrl-U are kept as a line
/// editor would take them; other control keys and escape sequences (arrows…) are dropped.
/// The interrupt character drops everything typed ahead, as a terminal flushes its input.
#[derive(Debug, Default)]
struct Typeahead {
    intr: Option<u8>,
    lines: Vec<String>,
    current: Vec<u8>,
    /// A `~` at the start of a line, waiting for the key after it.
    tilde: bool,
    escape: Escape,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Started,
    /// Inside `ESC [ …` until its final byte.
    Csi,
    /// After `ESC O`: one more byte.
    Ss3,
}

impl Typeahead {
    /// Takes one byte; says when it is Ctrl-C or completes the `~.` escape.
    fn feed(&mut self, b: u8) -> Option<Key> {
        if Some(b) == self.intr {
            *self = Typeahead {
                intr: self.intr,
                ..Typeahead::default()
            };
            return Some(Key::Interrupt);
        }
        match self.escape {
            Escape::Started => {
                self.escape = match b {
                    b'[' => Escape::Csi,
                    b'O' => Escape::Ss3,
                    _ => Escape::None,
                };
                return None;
            }
            Escape::Csi => {
                if (0x40..=0x7e).contains(&b) {
                    self.escape = Escape::None;
                }
                return None;
            }
            Escape::Ss3 => {
                self.escape = Escape::None;
                return None;
            }
            Escape::None => {}
        }
        if self.tilde {
            self.tilde = false;
            match b {
                b'.' => return Some(Key::Detach),
                // `~~` types one `~`, as in ssh.
                b'~' => {
                    self.current.push(b'~');
                    return None;
                }
                _ => self.current.push(b'~'),
            }
        }
        match b {
            b'~' if self.current.is_empty() => self.tilde = true,
            b'\r' | b'\n' => {
                let line = std::mem::take(&mut self.current);
                self.lines.push(String::from_utf8_lossy(&line).into_owned());
            }
            0x7f | 0x08 => {
                // One character back, UTF-8 continuation bytes included.
                while let Some(last) = self.current.pop() {
                    if last & 0xc0 != 0x80 {
                        break;
                    }
                }
            }
            0x15 => self.current.clear(),
            0x1b => self.escape = Escape::Started,
            b'\t' => self.current.push(b),
            b if b < 0x20 => {}
            b => self.current.push(b),
        }
        None
    }

    fn into_typed(mut self) -> Typed {
        if self.tilde {
            self.current.push(b'~');
        }
        Typed {
            lines: self.lines,
            partial: String::from_utf8_lossy(&self.current).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_terminal_input_becomes_lines_and_a_partial_one() {
        assert_eq!(
            unread(b"echo a\necho b\nech"),
            Typed {
                lines: vec!["echo a".into(), "echo b".into()],
                partial: "ech".into(),
            }
        );
        assert_eq!(unread(b""), Typed::default());
    }

    fn typed(keys: &[u8]) -> (bool, Typed) {
        let mut t = Typeahead {
            intr: Some(3),
            ..Typeahead::default()
        };
        for &b in keys {
            if t.feed(b) == Some(Key::Detach) {
                return (true, t.into_typed());
            }
        }
        (false, t.into_typed())
    }

    #[test]
    fn tilde_dot_at_line_start_detaches() {
        assert!(typed(b"~.").0);
        assert!(typed(b"ls\r~.").0);
        assert!(typed(b"ab\x7f\x7f~.").0);
        assert!(!typed(b"a~.").0);
        assert!(!typed(b"~~.").0);
    }

    #[test]
    fn typeahead_becomes_lines_and_a_partial_line() {
        let (d, t) = typed(b"echo one\rech\x7fho tw\x1b[Do");
        assert!(!d);
        assert_eq!(t.lines, vec!["echo one".to_string()]);
        assert_eq!(t.partial, "echo two");
        let (_, t) = typed(b"~~/x\r~/y\x15z~");
        assert_eq!(t.lines, vec!["~/x".to_string()]);
        assert_eq!(t.partial, "z~");
        let (_, t) = typed("é\x7fa\x04\x1bOAb~".as_bytes());
        assert_eq!(t.partial, "ab~");
        let (_, t) = typed(b"~");
        assert_eq!(t.partial, "~");
    }

    #[test]
    fn ctrl_c_is_a_key_that_drops_the_typeahead() {
        let mut t = Typeahead {
            intr: Some(3),
            ..Typeahead::default()
        };
        for &b in b"ls\rpw" {
            assert_eq!(t.feed(b), None);
        }
        assert_eq!(t.feed(3), Some(Key::Interrupt));
        assert_eq!(t.feed(b'~'), None);
        assert_eq!(t.feed(b'.'), Some(Key::Detach));
        let (d, t) = typed(b"ls\r\x03x");
        assert!(!d);
        assert_eq!(
            t,
            Typed {
                lines: vec![],
                partial: "x".into()
            }
        );
    }
}
