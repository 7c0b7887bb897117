/*
 * linger's command loop, loaded into the session's bash as a loadable builtin
 * (`enable -f`). It replaces a loop written in bash: nothing the user defines in the
 * shell (functions or aliases named like builtins, traps, `set -euo pipefail`, `set -xv`,
 * redirections of the shell's own fds) can reach code that is not bash code.
 *
 * Each command arrives on the command socket (fd 250, or the base the
 * host passes) as one record; the loop runs it in the
 * shell's own context with bash's `parse_and_execute` (what `eval` and `bash -c` use), and
 * catches every jump to the top level bash makes on the way out of a script: errexit,
 * nounset and other fatal expansion errors, `exit`, and Ctrl-C. Those end the command, with
 * its status, and never the shell; only `builtin exit` (and `exec PROGRAM`) end the session.
 * After each command it writes the end markers the host scans for on fds 251 (stdout) and
 * 252 (stderr).
 *
 * Only symbols bash exports for loadable builtins are used; their declarations below are
 * those of bash 5.0 to 5.3, which keep them unchanged.
 *
 * Record: u32 length (little-endian), then u8 kind, u32 argument count, each argument and
 * then the script as u32 length + bytes. Kind 'C' runs a command; its stdin arrives as one
 * descriptor (SCM_RIGHTS) with the record. Kind 'J' starts a background job: the first two
 * arguments are the job's FIFO prefix and its script, the rest its arguments. Kind 'T' runs
 * a command on a terminal: the descriptor is a pseudo-terminal's slave, the first argument
 * the client's $TERM, the rest the command's arguments (see run_on_terminal). The loop
 * writes to the host only its first byte 'R' (running) and, after each terminal command,
 * what was typed there and never read (see send_unread).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

/* ---- bash's own declarations (builtins.h, command.h, bashjmp.h, sig.h, ...) ---- */
typedef struct word_desc { char *word; int flags; } WORD_DESC;
typedef struct word_list { struct word_list *next; WORD_DESC *word; } WORD_LIST;
typedef int sh_builtin_func_t(WORD_LIST *);
typedef void SigHandler(int);
struct builtin {
  char *name;
  sh_builtin_func_t *function;
  int flags;
  char *const *long_doc;
  const char *short_doc;
  char *handle;
};
#define BUILTIN_ENABLED 0x01
#define BUILTIN_DELETED 0x02

#define EXITPROG 3
#define ERREXIT 4
#define EXITBLTIN 6
#define SEVAL_NOHIST 0x004
#define SEVAL_RESETLINE 0x010
#define SUBSHELL_ASYNC 0x01

extern sigjmp_buf top_level;
extern int last_command_exit_value, parse_and_execute_level, running_trap;
extern int loop_level, continuing, breaking, funcnest;
extern int executing_list, comsub_ignore_return, return_catch_flag, wait_intr_flag;
extern volatile int interrupt_state;
extern int subshell_environment, expand_aliases;
extern int read_but_dont_execute, funcnest_max, indirection_level;
extern char *get_string_value(const char *);
/* Only the leading fields are used: a variable's value is its ARRAY, which starts with its
   highest index and its element count. */
typedef struct variable { char *name; char *value; } SHELL_VAR;
typedef struct array { intmax_t max_index, num_elements; } ARRAY;
extern SHELL_VAR *find_variable(const char *);
extern void *array_shift(ARRAY *, int, int);
#define AS_DISPOSE 0x01
extern int parse_and_execute(char *, const char *, int);
extern void parse_and_execute_cleanup(int);
extern void run_trap_cleanup(int);
extern void reset_parser(void);
extern void unlink_fifo_list(void);
extern void begin_unwind_frame(char *);
extern void run_unwind_frame(char *);
extern void restore_sigmask(void);
extern SigHandler *set_signal_handler(int, SigHandler *);
extern void sigint_sighandler(int);
extern int signal_is_trapped(int);
extern int signal_is_ignored(int);
extern void reset_signal_handlers(void);
extern void initialize_terminating_signals(void);
extern volatile sig_atomic_t terminating_signal;
extern void termsig_handler(int);
extern void remember_args(WORD_LIST *, int);
extern WORD_LIST *make_word_list(WORD_DESC *, WORD_LIST *);
extern WORD_DESC *make_bare_word(const char *);
extern void dispose_words(WORD_LIST *);
extern void exit_shell(int);
extern int unbind_variable(const char *);
extern unsigned long rl_readline_state;
extern void (*rl_prep_term_function)(int);
extern void (*rl_deprep_term_function)(void);
#define RL_STATE_TERMPREPPED 0x0000004
extern SHELL_VAR *bind_variable(const char *, char *, int);
extern void set_var_attribute(char *, int, int);
extern void stupidly_hack_special_variables(char *);
#define att_exported 0x0000001
extern struct builtin *shell_builtins;
extern int num_shell_builtins;
/* ---------------------------------------------------------------------------------- */

/* The loop's descriptors: four in a row from the base the host passes as the builtin's
   argument (250 normally; lower under a descriptor limit below 256). */
static int fd_base = 250;
#define CMD_FD (fd_base)
#define OUT_FD (fd_base + 1)
#define ERR_FD (fd_base + 2)
#define SO_FD (fd_base + 3)
#define FRAME "linger-command"
#define DEFAULT_FUNCNEST 1000

static char nonce[64];
static pid_t loop_pid;
static int devnull = -1;

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void markers(int out, int err, int status) {
  char buf[128];
  int n = snprintf(buf, sizeof buf, "%c\001LINGER:%s:%d\001%c", 0, nonce, status, 0);
  write_all(out, buf, (size_t)n);
  n = snprintf(buf, sizeof buf, "%c\001LINGER:%s\001%c", 0, nonce, 0);
  write_all(err, buf, (size_t)n);
}

/* Reads exactly n bytes; the first read also takes up to one passed descriptor. */
static int read_exact(int fd, char *p, size_t n, int *passed) {
  while (n > 0) {
    struct iovec iov = {p, n};
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } c;
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (passed) {
      msg.msg_control = c.buf;
      msg.msg_controllen = sizeof c.buf;
    }
    ssize_t r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (r < 0) {
      /* bash's handlers for SIGHUP and SIGTERM (set up at start, see below) only note the
         signal: act on it here, as bash does at its own safe points, or the host's
         SIGTERM would wait for its SIGKILL while the shell waits for a command. */
      if (errno == EINTR && terminating_signal) termsig_handler(terminating_signal);
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) return -1;
    if (passed) {
      for (struct cmsghdr *h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h))
        if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS)
          memcpy(passed, CMSG_DATA(h), sizeof(int));
      passed = NULL;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

struct record {
  char kind;
  uint32_t nargs;
  char **args; /* nargs + 1 strings: the arguments, then the script */
};

/* Splits a record's payload into NUL-terminated strings (bash strings cannot hold NUL; the
   host refuses such scripts). */
static int parse_record(unsigned char *p, uint32_t len, struct record *r) {
  unsigned char *end = p + len;
  if (len < 5) return -1;
  r->kind = (char)p[0];
  r->nargs = le32(p + 1);
  p += 5;
  if (r->nargs > len) return -1;
  r->args = calloc((size_t)r->nargs + 1, sizeof(char *));
  if (!r->args) return -1;
  for (uint32_t i = 0; i <= r->nargs; i++) {
    if (end - p < 4) return -1;
    uint32_t n = le32(p);
    p += 4;
    if ((uint32_t)(end - p) < n) return -1;
    r->args[i] = malloc((size_t)n + 1);
    if (!r->args[i]) return -1;
    memcpy(r->args[i], p, n);
    r->args[i][n] = 0;
    p += n;
  }
  return 0;
}

static void free_record(struct record *r) {
  if (!r->args) return;
  for (uint32_t i = 0; i <= r->nargs; i++) free(r->args[i]);
  free(r->args);
  r->args = NULL;
}

static void set_positional(char **args, uint32_t n) {
  WORD_LIST *list = NULL;
  for (uint32_t i = n; i > 0; i--) list = make_word_list(make_bare_word(args[i - 1]), list);
  remember_args(list, 1);
  if (list) dispose_words(list);
}

/* `builtin exit` ends the session; a plain `exit` (or `logout`) ends the command, as it
   would end a script. Bash runs both through the same function, so the `builtin` builtin
   is wrapped to note which one it is asked to run. */
static sh_builtin_func_t *real_builtin_builtin, *real_trap_builtin;
static volatile int builtin_exit_called;

static int builtin_builtin_wrapper(WORD_LIST *list) {
  WORD_LIST *w = list;
  if (w && w->word && strcmp(w->word->word, "--") == 0) w = w->next;
  if (w && w->word && strcmp(w->word->word, "exit") == 0) builtin_exit_called = 1;
  return real_builtin_builtin(list);
}

/* Ctrl-C must end the command, not the shell: bash's own interactive handler makes SIGINT
   unwind to the top level (here). A trap the user sets takes precedence; once it is
   removed (`trap - INT`, which in a script would restore death by SIGINT), the handler is
   put back. */
static void keep_sigint_handler(void) {
  if (!signal_is_trapped(SIGINT) && !signal_is_ignored(SIGINT))
    set_signal_handler(SIGINT, sigint_sighandler);
}

static void ignore_quit(int sig) { (void)sig; }

static int trap_builtin_wrapper(WORD_LIST *list) {
  int status = real_trap_builtin(list);
  keep_sigint_handler();
  return status;
}

static void wrap(const char *name, sh_builtin_func_t *wrapper, sh_builtin_func_t **real) {
  for (int i = 0; i < num_shell_builtins; i++)
    if (shell_builtins[i].name && strcmp(shell_builtins[i].name, name) == 0) {
      *real = shell_builtins[i].function;
      shell_builtins[i].function = wrapper;
    }
}

/* Under `set -e` bash reports expansion and syntax errors by calling exit_shell directly:
   there is no jump to catch. The one hook exit_shell offers, before anything else (before
   the EXIT trap runs), is readline's terminal "deprep" function, called when readline's
   state says the terminal is prepped. The loop keeps that state bit set and the hook in
   place; when the shell's own process would exit in the middle of a command, the hook
   jumps back to the loop instead, and the command ends with the status bash chose. Real
   uses of readline (`read -e` on a terminal) are told apart by wrapping its prep function
   too. */
static void (*real_prep)(int);
static void (*real_deprep)(void);
static volatile int readline_prepped, in_command, session_exiting;

static void prep_wrapper(int meta) {
  readline_prepped = 1;
  if (real_prep) real_prep(meta);
}

static void arm_exit_hook(void) { rl_readline_state |= RL_STATE_TERMPREPPED; }

static void deprep_hook(void) {
  if (readline_prepped) {
    readline_prepped = 0;
    if (real_deprep) real_deprep();
    arm_exit_hook();
    return;
  }
  if (in_command && !session_exiting && getpid() == loop_pid)
    siglongjmp(top_level, ERREXIT);
}

static void session_exit(int status) {
  session_exiting = 1;
  exit_shell(status);
}

/* Call-stack arrays: on errexit inside a function bash discards the function's cleanup
   (it is about to exit), so their entries for the abandoned calls are shifted off here. */
static const char *const stack_arrays[] = {"FUNCNAME", "BASH_SOURCE", "BASH_LINENO", "BASH_ARGC",
                                           "BASH_ARGV"};
#define N_STACK_ARRAYS (sizeof stack_arrays / sizeof stack_arrays[0])

static ARRAY *stack_array(const char *name) {
  SHELL_VAR *v = find_variable(name);
  return v && v->value ? (ARRAY *)v->value : NULL;
}

static void stack_depths(intmax_t *depths) {
  for (size_t i = 0; i < N_STACK_ARRAYS; i++) {
    ARRAY *a = stack_array(stack_arrays[i]);
    depths[i] = a ? a->num_elements : 0;
  }
}

static void trim_stack_arrays(const intmax_t *depths) {
  for (size_t i = 0; i < N_STACK_ARRAYS; i++) {
    ARRAY *a = stack_array(stack_arrays[i]);
    if (a && a->num_elements > depths[i]) array_shift(a, (int)(a->num_elements - depths[i]), AS_DISPOSE);
  }
}

/* What throw_to_top_level does before bash's reader loop goes on, but only down to this
   command's frame: the shell below it is ours and stays. */
static void recover(void) {
  while (parse_and_execute_level > 0) parse_and_execute_cleanup(-1);
  if (running_trap > 0) {
    run_trap_cleanup(running_trap - 1);
    running_trap = 0;
  }
  restore_sigmask();
  reset_parser();
  unlink_fifo_list();
  loop_level = continuing = breaking = funcnest = 0;
  executing_list = comsub_ignore_return = return_catch_flag = wait_intr_flag = 0;
  interrupt_state = 0;
}

/* Runs `script` (malloc'd; bash frees it) at the top level of the shell; returns its
   status whatever way it ends. */
static int run_script(char *script, const char *name) {
  sigjmp_buf saved;
  volatile int status = 0;
  int indirection = indirection_level;
  intmax_t depths[N_STACK_ARRAYS];
  stack_depths(depths);
  memcpy(saved, top_level, sizeof saved);
  /* As for `bash -c`: one level of evaluation, so traces start with one `+`. */
  indirection_level = 0;
  keep_sigint_handler();
  interrupt_state = 0;
  builtin_exit_called = 0;
  /* `set -n` would leave a shell that can never run `set +n`: as at an interactive
     prompt, it is ignored between commands. */
  read_but_dont_execute = 0;
  /* Unbounded recursion overflows bash's stack and kills the shell; without a FUNCNEST of
     the user's, recursion stops with bash's own error at this depth. */
  if (!get_string_value("FUNCNEST")) funcnest_max = DEFAULT_FUNCNEST;
  arm_exit_hook();
  in_command = 1;
  begin_unwind_frame(FRAME);
  int code = sigsetjmp(top_level, 0);
  if (code == 0) {
    status = parse_and_execute(script, name, SEVAL_NOHIST | SEVAL_RESETLINE);
  } else {
    status = last_command_exit_value;
    if (getpid() != loop_pid) {
      /* A forked part of the command that never set a top level of its own. */
      exit_shell(status);
    }
    int ends_session = (code == EXITBLTIN || code == EXITPROG) && builtin_exit_called;
    in_command = 0;
    recover();
    trim_stack_arrays(depths);
    if (ends_session) {
      memcpy(top_level, saved, sizeof saved);
      run_unwind_frame(FRAME);
      session_exit(status);
    }
  }
  in_command = 0;
  run_unwind_frame(FRAME);
  memcpy(top_level, saved, sizeof saved);
  indirection_level = indirection;
  return status;
}

/* A background job: a fork of the shell (so it has the session's variables, functions and
   directory) writing to its FIFOs, with its own end markers. */
static void start_job(struct record *r) {
  if (r->nargs < 2) return;
  const char *prefix = r->args[0];
  pid_t pid = fork();
  if (pid < 0) return;
  if (pid == 0) {
    char path[4096];
    loop_pid = getpid();
    subshell_environment |= SUBSHELL_ASYNC;
    reset_signal_handlers();
    snprintf(path, sizeof path, "%s.out", prefix);
    int out = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    snprintf(path, sizeof path, "%s.err", prefix);
    int err = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (out < 0 || err < 0) _exit(127);
    dup2(out, 1);
    dup2(err, 2);
    dup2(devnull, 0);
    dup2(out, OUT_FD);
    dup2(err, ERR_FD);
    close(out);
    close(err);
    close(CMD_FD);
    fcntl(OUT_FD, F_SETFD, FD_CLOEXEC);
    fcntl(ERR_FD, F_SETFD, FD_CLOEXEC);
    set_positional(r->args + 2, r->nargs - 2);
    char *script = strdup(r->args[1]);
    int status = script ? run_script(script, "bash") : 1;
    fflush(stdout);
    fflush(stderr);
    markers(OUT_FD, ERR_FD, status);
    _exit(status & 0xff);
  }
  char path[4096], line[32];
  snprintf(path, sizeof path, "%s.pid", prefix);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd >= 0) {
    int n = snprintf(line, sizeof line, "%d\n", (int)pid);
    write_all(fd, line, (size_t)n);
    close(fd);
  }
}

/* Gives up the shell's controlling terminal without a hangup reaching the shell or
   anything of the session: giving it up signals the terminal's foreground process group,
   so the foreground is first handed to a throwaway process group of one, which takes the
   hangup instead. SIGTTOU is blocked in case the command moved the foreground elsewhere. */
static void release_terminal(int tty) {
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTTOU);
  sigaddset(&block, SIGCHLD);
  sigprocmask(SIG_BLOCK, &block, &old);
  pid_t stand_in = fork();
  if (stand_in == 0) {
    setpgid(0, 0);
    signal(SIGHUP, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (;;) pause();
  }
  if (stand_in > 0) {
    setpgid(stand_in, stand_in);
    tcsetpgrp(tty, stand_in);
  }
  ioctl(tty, TIOCNOTTY);
  if (stand_in > 0) {
    kill(stand_in, SIGKILL);
    waitpid(stand_in, NULL, 0);
  }
  sigprocmask(SIG_SETMASK, &old, NULL);
}

/* What was typed at the terminal and never read (type-ahead for the next command), sent to
   the host on the command socket as 'U', u32 length (little-endian), the bytes: always,
   possibly empty, before the end markers. A partial line becomes readable once the
   terminal leaves canonical mode. */
#define UNREAD_MAX 4096
static void send_unread(int tty) {
  unsigned char buf[5 + UNREAD_MAX];
  size_t n = 0;
  struct termios t;
  if (tcgetattr(tty, &t) == 0) {
    t.c_lflag &= ~(ICANON | ECHO);
    t.c_cc[VMIN] = 0;
    t.c_cc[VTIME] = 0;
    if (tcsetattr(tty, TCSANOW, &t) == 0) {
      ssize_t r;
      while (n < UNREAD_MAX && (r = read(tty, buf + 5 + n, UNREAD_MAX - n)) > 0) n += (size_t)r;
    }
  }
  buf[0] = 'U';
  for (int i = 0; i < 4; i++) buf[1 + i] = (unsigned char)((n >> (8 * i)) & 0xff);
  write_all(CMD_FD, (const char *)buf, n + 5);
}

/* A command on a terminal of its own, in the shell itself (so `cd` and `export` stay): the
   shell is a session leader without a terminal, so it can make this one its controlling
   terminal for the command (whose processes are in the shell's process group, the
   terminal's foreground: Ctrl-C, Ctrl-\ and SIGWINCH reach them), then give it up. The end
   marker goes through the terminal itself, in raw output mode and after the terminal is
   given up, so it comes after everything the command printed there, and the host may
   close the terminal as soon as it sees it. */
static int run_on_terminal(int tty, struct record *r) {
  int status;
  ioctl(tty, TIOCSCTTY, 0);
  dup2(tty, 0);
  dup2(tty, 1);
  dup2(tty, 2);
  if (r->nargs >= 1 && r->args[0][0]) {
    bind_variable("TERM", r->args[0], 0);
    set_var_attribute("TERM", att_exported, 0);
    stupidly_hack_special_variables("TERM");
  }
  set_positional(r->args + 1, r->nargs ? r->nargs - 1 : 0);
  char *script = r->args[r->nargs];
  r->args[r->nargs] = NULL;
  status = run_script(script, "bash");
  fflush(stdout);
  fflush(stderr);
  dup2(OUT_FD, 1);
  dup2(ERR_FD, 2);
  dup2(devnull, 0);
  send_unread(tty);
  release_terminal(tty);
  struct termios t;
  if (tcgetattr(tty, &t) == 0) {
    t.c_oflag &= ~OPOST;
    tcsetattr(tty, TCSANOW, &t);
  }
  tcflow(tty, TCOON);
  markers(tty, ERR_FD, status);
  close(tty);
  return status;
}

/* The configuration's startup script, sourced once before the first command, with its
   output in a log of the session's. */
static void run_startup(void) {
  const char *path = getenv("__LINGER_STARTUP");
  const char *logp = getenv("__LINGER_STARTUP_LOG");
  if (!path || !*path) return;
  char *spath = strdup(path), *slog = strdup(logp ? logp : "/dev/null");
  unbind_variable("__LINGER_STARTUP");
  unbind_variable("__LINGER_STARTUP_LOG");
  if (!spath || !slog) return;
  int log = open(slog, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  int fd = open(spath, O_RDONLY | O_CLOEXEC);
  int status = 1;
  if (log >= 0 && fd >= 0) {
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    ssize_t n;
    while (text && (n = read(fd, text + len, cap - len - 1)) > 0) {
      len += (size_t)n;
      if (cap - len < 2) text = realloc(text, cap *= 2);
    }
    if (text) {
      text[len] = 0;
      int o = dup(1), e = dup(2);
      dup2(log, 1);
      dup2(log, 2);
      status = run_script(text, spath);
      fflush(stdout);
      fflush(stderr);
      dup2(o, 1);
      dup2(e, 2);
      close(o);
      close(e);
    }
    char line[4200];
    int m = snprintf(line, sizeof line, "startup %s exited with status %d\n", spath, status);
    write_all(log, line, (size_t)m);
  }
  if (fd >= 0) close(fd);
  if (log >= 0) close(log);
  free(spath);
  free(slog);
}

static int linger_shell_builtin(WORD_LIST *list) {
  const char *n = getenv("__LINGER_NONCE");
  if (list && list->word && list->word->word) {
    char *end = NULL;
    long base = strtol(list->word->word, &end, 10);
    if (!end || *end || base < 10 || base > 252) return 2;
    fd_base = (int)base;
  }
  if (!n || strlen(n) >= sizeof nonce) return 2;
  strcpy(nonce, n);
  unbind_variable("__LINGER_NONCE");
  loop_pid = getpid();
  close(SO_FD);
  for (int fd = CMD_FD; fd <= ERR_FD; fd++) fcntl(fd, F_SETFD, FD_CLOEXEC);
  devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  /* A shell without job control cannot resume what a Ctrl-Z at a terminal command would
     stop (it would wait for it forever), so stop signals are ignored, by the shell and,
     inherited, by what it runs; a program that wants them sets its own handler. */
  signal(SIGTSTP, SIG_IGN);
  signal(SIGTTIN, SIG_IGN);
  signal(SIGTTOU, SIG_IGN);
  /* Ctrl-\ at a terminal command signals the shell too: a handler (not SIG_IGN, which
     programs would inherit) keeps the shell alive and leaves SIGQUIT's default to them. */
  struct sigaction quit = {0};
  quit.sa_handler = ignore_quit;
  quit.sa_flags = SA_RESTART;
  sigemptyset(&quit.sa_mask);
  sigaction(SIGQUIT, &quit, NULL);
  /* A non-interactive bash sets up its terminating signals the first time `read -s` (or
     `read -e`) reads a terminal, and that includes SIGINT: a Ctrl-C would then kill the
     shell. Setting them up now, once, makes that later call a no-op; SIGINT gets the
     command loop's handler back just below and at every command. */
  initialize_terminating_signals();
  keep_sigint_handler();
  /* Aliases one command defines are used by the next, as at an interactive prompt. */
  expand_aliases = 1;
  wrap("builtin", builtin_builtin_wrapper, &real_builtin_builtin);
  /* The loop's own builtin disappears from `enable -a`, `compgen -b` and lookups. */
  for (int i = 0; i < num_shell_builtins; i++)
    if (shell_builtins[i].function == linger_shell_builtin) {
      shell_builtins[i].flags = BUILTIN_DELETED;
      shell_builtins[i].function = NULL;
    }
  wrap("trap", trap_builtin_wrapper, &real_trap_builtin);
  real_prep = rl_prep_term_function;
  real_deprep = rl_deprep_term_function;
  rl_prep_term_function = prep_wrapper;
  rl_deprep_term_function = deprep_hook;
  /* Tell the host the loop is running; the startup script still runs before the first
     command is read. */
  if (write_all(CMD_FD, "R", 1) < 0) session_exit(1);
  run_startup();

  int status = 0;
  for (;;) {
    unsigned char head[4];
    int passed = -1;
    if (read_exact(CMD_FD, (char *)head, 4, &passed) < 0) session_exit(0);
    uint32_t len = le32(head);
    unsigned char *body = malloc(len ? len : 1);
    if (!body || read_exact(CMD_FD, (char *)body, len, NULL) < 0) session_exit(0);
    struct record r = {0};
    if (parse_record(body, len, &r) < 0) {
      free(body);
      free_record(&r);
      if (passed >= 0) close(passed);
      markers(OUT_FD, ERR_FD, 2);
      continue;
    }
    free(body);
    if (r.kind == 'J') {
      start_job(&r);
      status = 0;
    } else if (r.kind == 'T' && passed >= 0) {
      last_command_exit_value = status;
      status = run_on_terminal(passed, &r);
      free_record(&r);
      continue;
    } else {
      dup2(passed >= 0 ? passed : devnull, 0);
      if (passed >= 0) close(passed);
      set_positional(r.args, r.nargs);
      /* `$?` in a command is the previous command's status, as at a prompt. */
      last_command_exit_value = status;
      char *script = r.args[r.nargs];
      r.args[r.nargs] = NULL;
      status = run_script(script, "bash");
      fflush(stdout);
      fflush(stderr);
      dup2(devnull, 0);
    }
    free_record(&r);
    markers(OUT_FD, ERR_FD, status);
  }
  return 0;
}

static char *linger_shell_doc[] = {"linger's session command loop.", NULL};

struct builtin linger_shell_struct = {
    "linger_shell", linger_shell_builtin, BUILTIN_ENABLED, linger_shell_doc, "linger_shell",
    0};
