//! This side of a terminal command (`invoke --tty`, and each line of `enter` on a terminal):
//! the local terminal in raw mode while the command runs, its size passed on and followed,
//! what is typed forwarded byte for byte (ssh's `~` escapes at the start of a line are
//! ours), and the terminal always put back as it was, however the command ends.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Result;
use linger::{Bytes, Client, Entry, Event, InvokeOptions, TerminalSpec};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, SetArg, Termios};
use tokio::sync::mpsc;

/// What typed bytes mean once the escapes are taken out.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    /// Bytes for the command.
    Keys(Vec<u8>),
    /// `~.`: leave the command running and go.
    Detach,
    /// `~?`: list the escapes.
    Help,
}

/// ssh's escape character rules: `~` is special only right after the start of a line (the
/// start of input, Enter, or Ctrl-C/Ctrl-D/Ctrl-U, which begin a fresh line too); `~~` sends
/// one `~`; `~` followed by anything else sends both. I/O-free.
#[derive(Debug)]
pub struct Escapes {
    at_line_start: bool,
    tilde_held: bool,
}

impl Default for Escapes {
    fn default() -> Self {
        Escapes {
            at_line_start: true,
            tilde_held: false,
        }
    }
}

pub const ESCAPE_HELP: &str = "Supported escape sequences (at the start of a line):\r\n \
    ~.   detach: leave the command running (`linger enter` or `linger receive` picks it up)\r\n \
    ~?   this message\r\n \
    ~~   send the escape character by typing it twice\r\n";

impl Escapes {
    /// A `~` held back at the start of a line, waiting for the key after it.
    pub fn pending(&self) -> &'static [u8] {
        if self.tilde_held {
            b"~"
        } else {
            b""
        }
    }

    pub fn feed(&mut self, input: &[u8]) -> Vec<Typed> {
        let mut out = Vec::new();
        let mut keys = Vec::new();
        for &b in input {
            if self.tilde_held {
                self.tilde_held = false;
                match b {
                    b'.' => {
                        flush(&mut keys, &mut out);
                        out.push(Typed::Detach);
                        return out;
                    }
                    b'?' => {
                        flush(&mut keys, &mut out);
                        out.push(Typed::Help);
                        continue;
                    }
                    b'~' => {
                        keys.push(b'~');
                        self.at_line_start = false;
                        continue;
                    }
                    _ => keys.push(b'~'),
                }
            } else if b == b'~' && self.at_line_start {
                self.tilde_held = true;
                continue;
            }
            keys.push(b);
            self.at_line_start = matches!(b, b'\r' | b'\n' | 0x03 | 0x04 | 0x15);
        }
        flush(&mut keys, &mut out);
        out
    }
}

fn flush(keys: &mut Vec<u8>, out: &mut Vec<Typed>) {
    if !keys.is_empty() {
        out.push(Typed::Keys(std::mem::take(keys)));
    }
}

/// The window size of the terminal on `fd`, if it is one.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` to the pointer, which is valid.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::TIOCGWINSZ,
            &mut size,
        )
    };
    (r == 0 && size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}

/// Whether both standard input and standard output are terminals (as `ssh -t` requires).
pub fn is_interactive() -> bool {
    nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false)
        && nix::unistd::isatty(std::io::stdout().as_fd()).unwrap_or(false)
}

/// The terminal for a command: this terminal's `$TERM` and size.
pub fn spec() -> TerminalSpec {
    let (rows, cols) = window_size(std::io::stdout().as_fd()).unwrap_or((24, 80));
    TerminalSpec {
        term: std::env::var("TERM")
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "xterm".into()),
        rows,
        cols,
    }
}

/// The local terminal in raw mode, and what the command's output turned on in it (tracked
/// by a terminal emulator fed the same bytes). Dropping it puts everything back: the
/// alternate screen left, the cursor shown, keypad, mouse and paste modes off, and the
/// saved modes (`icanon`, `echo`, …) restored.
pub struct RawTerminal {
    saved: Termios,
    screen: vt100::Parser,
}

impl RawTerminal {
    pub fn enter(rows: u16, cols: u16) -> Result<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())
            .map_err(|e| anyhow::anyhow!("cannot read this terminal's modes: {e}"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw)
            .map_err(|e| anyhow::anyhow!("cannot put this terminal in raw mode: {e}"))?;
        Ok(RawTerminal {
            saved,
            screen: vt100::Parser::new(rows, cols, 0),
        })
    }

    /// Notes what the command's output does to the terminal.
    pub fn saw(&mut self, output: &[u8]) {
        self.screen.process(output);
    }

    pub fn resized(&mut self, rows: u16, cols: u16) {
        self.screen.screen_mut().set_size(rows, cols);
    }

    /// Escape sequences that undo the modes the output left on.
    fn undo(&self) -> Vec<u8> {
        let s = self.screen.screen();
        let mut out = Vec::new();
        if s.mouse_protocol_mode() != vt100::MouseProtocolMode::None {
            out.extend_from_slice(b"\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1005l\x1b[?1006l");
        }
        if s.bracketed_paste() {
            out.extend_from_slice(b"\x1b[?2004l");
        }
        if s.application_keypad() {
            out.extend_from_slice(b"\x1b>");
        }
        if s.application_cursor() {
            out.extend_from_slice(b"\x1b[?1l");
        }
        if s.alternate_screen() {
            out.extend_from_slice(b"\x1b[?1049l");
        }
        if s.hide_cursor() {
            out.extend_from_slice(b"\x1b[?25h");
        }
        out
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let mut undo = Vec::new();
        // Whatever comes next (a prompt, a message) starts on a line of its own.
        let s = self.screen.screen();
        if !s.alternate_screen() && s.cursor_position().1 != 0 {
            undo.extend_from_slice(b"\r\n");
        }
        undo.extend(self.undo());
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(&undo);
        let _ = stdout.flush();
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Standard input, for calls that take a descriptor.
pub fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

/// What is typed, read by a thread of its own that stops when asked (a blocked read of
/// standard input left behind would swallow the next key typed at the prompt).
struct Keyboard {
    wake: OwnedFd,
    _wake_r: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    keys: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl Keyboard {
    fn start() -> std::io::Result<Keyboard> {
        let (wake_r, wake_w) = nix::unistd::pipe()?;
        // Both ends stay open until the keyboard is dropped: waking a reader that already
        // ended must not raise SIGPIPE.
        let wake_r = Arc::new(wake_r);
        let (tx, keys) = mpsc::unbounded_channel();
        let wake = wake_r.clone();
        let thread = std::thread::Builder::new()
            .name("terminal-keys".into())
            .spawn(move || read_keys(&wake, tx))?;
        Ok(Keyboard {
            wake: wake_w,
            _wake_r: wake_r,
            thread: Some(thread),
            keys,
        })
    }

    /// The next bytes typed; `None` once the input has ended.
    async fn next(&mut self) -> Option<Vec<u8>> {
        self.keys.recv().await
    }

    /// Stops reading; returns what was read and not yet taken.
    fn stop(mut self) -> Vec<u8> {
        self.halt();
        let mut rest = Vec::new();
        while let Ok(keys) = self.keys.try_recv() {
            rest.extend_from_slice(&keys);
        }
        rest
    }

    fn halt(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = nix::unistd::write(&self.wake, &[1]);
            let _ = thread.join();
        }
    }
}

impl Drop for Keyboard {
    fn drop(&mut self) {
        self.halt();
    }
}

fn read_keys(wake: &OwnedFd, keys: mpsc::UnboundedSender<Vec<u8>>) {
    read_stdin_until_woken(wake, |typed| keys.send(typed.to_vec()).is_ok());
}

/// Reads standard input as it is typed, handing each read to `take`, until `wake` becomes
/// readable, the input ends or fails, or `take` says to stop. For a thread that must stop
/// when asked rather than stay blocked in a read.
pub fn read_stdin_until_woken(wake: &OwnedFd, mut take: impl FnMut(&[u8]) -> bool) {
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [
            PollFd::new(stdin_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[1]) {
            return;
        }
        if !ready(&fds[0]) {
            continue;
        }
        match nix::unistd::read(stdin_fd(), &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if !take(&buf[..n]) {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
            Err(_) => return,
        }
    }
}

/// How a terminal command ended for this client.
pub enum Ended {
    Finished(i32),
    /// `~.`: the command goes on running.
    Detached,
    /// SIGHUP or SIGTERM reached this client: the command goes on running.
    Signalled(i32),
}

/// Runs `script` on a terminal of its own in `entry`'s session, this terminal raw meanwhile.
pub async fn run(
    client: &Client,
    entry: &Entry,
    script: &str,
    opts: &InvokeOptions,
) -> Result<Ended> {
    let spec = spec();
    let opts = InvokeOptions {
        stdin: true,
        terminal: Some(spec.clone()),
        ..opts.clone()
    };
    let mut stream = client.invoke(entry, script, &opts).await?;
    let raw = RawTerminal::enter(spec.rows, spec.cols)?;
    drive(&mut stream, raw).await
}

/// Relays one started terminal command until it ends or this client leaves it.
pub async fn drive(stream: &mut linger::CommandStream, mut raw: RawTerminal) -> Result<Ended> {
    use tokio::signal::unix::{signal, SignalKind};
    let input = stream.input();
    let resizer = stream.resizer();
    let mut winch = signal(SignalKind::window_change())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut keyboard = Keyboard::start()?;
    let mut stdout = std::io::stdout();
    let mut escapes = Escapes::default();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            event = stream.next() => match event? {
                Some(Event::Output { data, .. }) => {
                    raw.saw(&data);
                    stdout.write_all(&data)?;
                    stdout.flush()?;
                }
                Some(Event::Dropped { bytes }) => {
                    write!(stdout, "\r\nlinger: {bytes} bytes of output were dropped\r\n")?;
                }
                Some(Event::Finished { status, .. }) => {
                    // Keys read here but not yet sent are type-ahead too, after what the
                    // command's terminal held.
                    let mut late = Vec::new();
                    for typed in escapes.feed(&keyboard.stop()) {
                        if let Typed::Keys(keys) = typed {
                            late.extend_from_slice(&keys);
                        }
                    }
                    late.extend_from_slice(escapes.pending());
                    stream.add_unread_input(&late);
                    return Ok(Ended::Finished(status));
                }
                None => {
                    drop(raw);
                    anyhow::bail!("the connection closed before the command ended");
                }
            },
            typed = keyboard.next(), if stdin_open => {
                let Some(typed) = typed else {
                    stdin_open = false;
                    continue;
                };
                for typed in escapes.feed(&typed) {
                    match typed {
                        Typed::Keys(keys) => {
                            if let Some(input) = &input {
                                input.write(Bytes::from(keys)).await;
                            }
                        }
                        Typed::Detach => return Ok(Ended::Detached),
                        Typed::Help => {
                            stdout.write_all(ESCAPE_HELP.as_bytes())?;
                            stdout.flush()?;
                        }
                    }
                }
            }
            _ = winch.recv() => {
                if let Some((rows, cols)) = window_size(std::io::stdout().as_fd()) {
                    raw.resized(rows, cols);
                    let _ = resizer.resize(rows, cols);
                }
            }
            _ = hup.recv() => return Ok(Ended::Signalled(129)),
            _ = term.recv() => return Ok(Ended::Signalled(143)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &[u8]) -> Typed {
        Typed::Keys(s.to_vec())
    }

    #[test]
    fn tilde_dot_at_the_start_of_a_line_detaches() {
        assert_eq!(Escapes::default().feed(b"~."), vec![Typed::Detach]);
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"ls\r~."), vec![keys(b"ls\r"), Typed::Detach]);
    }

    #[test]
    fn tilde_elsewhere_is_a_key() {
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"a~."), vec![keys(b"a~.")]);
    }

    #[test]
    fn an_escape_split_across_reads_still_counts() {
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"\r~"), vec![keys(b"\r")]);
        assert_eq!(e.feed(b"."), vec![Typed::Detach]);
    }

    #[test]
    fn double_tilde_sends_one_and_other_keys_send_both() {
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"~~"), vec![keys(b"~")]);
        // The line no longer starts here: a second `~` is a key.
        assert_eq!(e.feed(b"~."), vec![keys(b"~.")]);
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"~x"), vec![keys(b"~x")]);
    }

    #[test]
    fn help_is_listed_and_typing_goes_on() {
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"~?ab"), vec![Typed::Help, keys(b"ab")]);
    }

    #[test]
    fn ctrl_c_begins_a_fresh_line() {
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"vi\x03~."), vec![keys(b"vi\x03"), Typed::Detach]);
    }
}
