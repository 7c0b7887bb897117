//! A session is a faithful bash: hostile-but-legitimate scripts against a real `lingerd` and
//! a real bash. Each case runs its steps in a fresh session that first sets some state; every
//! step's status, stdout and stderr are checked, and afterwards the session must still run
//! commands with that state intact.

use crate::common;

use common::World;
use linger::{Event, InvokeOptions, NewOptions};

/// What a step's stderr must be.
#[derive(Clone, Copy)]
enum Stderr {
    Exact(&'static str),
    Has(&'static str),
}

struct Step {
    script: &'static str,
    status: i32,
    stdout: &'static str,
    stderr: Stderr,
}

const fn ok(script: &'static str, stdout: &'static str) -> Step {
    Step {
        script,
        status: 0,
        stdout,
        stderr: Stderr::Exact(""),
    }
}

const fn st(script: &'static str, status: i32, stdout: &'static str, stderr: Stderr) -> Step {
    Step {
        script,
        status,
        stdout,
        stderr,
    }
}

struct Case {
    name: &'static str,
    steps: &'static [Step],
    /// The probe that ends every case; `MARK` and the working directory were set before
    /// the case's steps. Some cases leave stdout elsewhere or shadow `echo`.
    probe: (&'static str, &'static str),
}

const PROBE: (&str, &str) = ("echo \"probe $MARK $PWD\"", "probe kept /tmp\n");

use Stderr::{Exact, Has};

const CASES: &[Case] = &[
    Case { name: "nounset ends the command and stays set", probe: PROBE, steps: &[
        st("set -u; echo ok; echo $nope; echo after", 1, "ok\n", Exact("bash: line 1: nope: unbound variable\n")),
        ok("[[ $- == *u* ]] && echo u-kept", "u-kept\n"),
        st("echo ${undefined_again}", 1, "", Has("undefined_again: unbound variable")),
        ok("set +u", ""),
    ]},
    Case { name: "errexit ends the command and stays set", probe: PROBE, steps: &[
        ok("set -e", ""),
        st("false; echo no", 1, "", Exact("")),
        ok("[[ $- == *e* ]] && echo e-kept", "e-kept\n"),
        st("echo one; (exit 4); echo no", 4, "one\n", Exact("")),
        ok("set +e", ""),
    ]},
    Case { name: "set -euo pipefail opens a script", probe: PROBE, steps: &[
        st("set -euo pipefail\ntrue | false | true\necho no", 1, "", Exact("")),
        ok("true | true; echo yes", "yes\n"),
        st("echo $zz", 1, "", Has("zz: unbound variable")),
        ok("set +euo pipefail", ""),
    ]},
    Case { name: "errexit inside a function", probe: PROBE, steps: &[
        st("set -e; f() { false; echo no; }; f; echo no2", 1, "", Exact("")),
        ok("set +e; echo \"[${FUNCNAME[*]}]\"", "[]\n"),
    ]},
    Case { name: "nounset inside a function unwinds its locals", probe: PROBE, steps: &[
        st("f() { local v=1; set -u; echo $zz; }; f; echo no", 1, "", Has("zz: unbound variable")),
        ok("set +u; echo \"${FUNCNAME[*]}-${v-unset}\"", "-unset\n"),
    ]},
    Case { name: "${x?} ends the command", probe: PROBE, steps: &[
        st("echo ${nope?gone}; echo no", 1, "", Exact("bash: line 1: nope: gone\n")),
    ]},
    Case { name: "exit ends the command with its status", probe: PROBE, steps: &[
        st("echo before; exit 5; echo no", 5, "before\n", Exact("")),
        ok("echo $?", "5\n"),
        st("f() { exit 4; }; f; echo no", 4, "", Exact("")),
        ok("(exit 3); echo $?", "3\n"),
        st("logout 2>/dev/null; exit", 1, "", Exact("")),
    ]},
    Case { name: "a syntax error under errexit ends only that command", probe: PROBE, steps: &[
        ok("set -e", ""),
        st("echo one\nif", 2, "one\n", Has("syntax error: unexpected end of file")),
        st("echo 'unclosed", 2, "", Has("unexpected EOF")),
        ok("shopt -s extglob\ncase ab in @(ab|cd)) echo glob;; esac", "glob\n"),
        ok("set +e", ""),
    ]},
    Case { name: "return at the top level", probe: PROBE, steps: &[
        ok("return 7 2>/dev/null; echo $?", "2\n"),
        ok("break 2>/dev/null; continue 2>/dev/null; echo went-on", "went-on\n"),
    ]},
    Case { name: "ERR trap", probe: PROBE, steps: &[
        ok("trap 'echo E' ERR; false; echo after", "E\nafter\n"),
        ok("false; trap - ERR", "E\n"),
    ]},
    Case { name: "ERR trap and errexit in one command", probe: PROBE, steps: &[
        st("trap 'echo E' ERR; set -e; false; echo no", 1, "E\n", Exact("")),
        ok("set +e; trap - ERR; echo alive", "alive\n"),
    ]},
    Case { name: "DEBUG trap sees only the user's commands", probe: PROBE, steps: &[
        ok("trap 'echo \"D:$BASH_COMMAND\"' DEBUG; echo x; trap - DEBUG", "D:echo x\nx\nD:trap - DEBUG\n"),
        ok("echo after", "after\n"),
    ]},
    Case { name: "RETURN trap", probe: PROBE, steps: &[
        ok("f() { trap 'echo R' RETURN; }; f; trap - RETURN; echo done", "R\ndone\n"),
    ]},
    Case { name: "EXIT trap waits for the shell's end", probe: PROBE, steps: &[
        ok("trap 'echo bye' EXIT", ""),
        ok("echo hi", "hi\n"),
        ok("trap -p EXIT", "trap -- 'echo bye' EXIT\n"),
    ]},
    Case { name: "INT trap and Ctrl-C without one", probe: PROBE, steps: &[
        ok("trap 'echo int' INT; kill -INT $$; echo after", "int\nafter\n"),
        st("trap - INT; kill -INT $$; echo no", 130, "", Exact("")),
        st("kill -INT $$; echo no", 130, "", Exact("")),
        st("while :; do kill -INT $$; done", 130, "", Exact("")),
    ]},
    Case { name: "shopt failglob, nullglob, extglob, dotglob", probe: PROBE, steps: &[
        st("shopt -s failglob; echo /nonexistent*; echo after", 1, "", Exact("bash: line 1: no match: /nonexistent*\n")),
        ok("shopt -u failglob; shopt -s nullglob; echo x /nonexistent*", "x\n"),
        ok("shopt -s extglob dotglob", ""),
        ok("cd / && echo @(etc|nosuch)", "etc\n"),
        ok("cd /tmp; shopt -u extglob nullglob dotglob", ""),
    ]},
    Case { name: "noclobber", probe: PROBE, steps: &[
        st("set -o noclobber; f=$(mktemp); echo a >|\"$f\"; echo b >\"$f\"; echo $?; cat \"$f\"; rm -f \"$f\"", 0, "1\na\n", Has("cannot overwrite existing file")),
        ok("set +o noclobber", ""),
    ]},
    Case { name: "posix mode", probe: PROBE, steps: &[
        ok("set -o posix", ""),
        ok("[[ :$SHELLOPTS: == *:posix:* ]] && echo posix-kept", "posix-kept\n"),
        st("foo", 127, "", Has("foo: command not found")),
        ok("set +o posix", ""),
    ]},
    Case { name: "IFS", probe: PROBE, steps: &[
        ok("IFS=:; x='a:b'; echo $x", "a b\n"),
        ok("echo \"$IFS\"", ":\n"),
        ok("unset IFS; y='c d'; echo $y", "c d\n"),
    ]},
    Case { name: "PATH emptied", probe: PROBE, steps: &[
        ok("OLD=$PATH; PATH=/nonexistent", ""),
        st("ls", 127, "", Exact("bash: line 1: ls: command not found\n")),
        ok("PATH=$OLD; echo back", "back\n"),
    ]},
    Case { name: "umask", probe: PROBE, steps: &[
        ok("umask 777", ""),
        ok("umask", "0777\n"),
        ok("umask 022", ""),
    ]},
    Case { name: "ulimit", probe: PROBE, steps: &[
        ok("ulimit -n 64; ulimit -n", "64\n"),
        ok("ulimit -f 0; echo to-a-pipe", "to-a-pipe\n"),
        ok("ulimit -c 0; ulimit -c", "0\n"),
    ]},
    Case { name: "functions named like builtins", probe: PROBE, steps: &[
        ok("printf() { :; }; read() { :; }; source() { :; }; .() { :; }; eval() { :; }; \
            builtin() { :; }; command() { :; }; trap() { :; }; set() { :; }; exit() { :; }; \
            return() { :; }; unset() { :; }; enable() { :; }; shopt() { :; }; local() { :; }; \
            declare() { :; }; test() { :; }; [() { :; }; true() { x=1; }; false() { x=1; }; \
            :() { x=1; }; exec() { :; }; wait() { :; }; kill() { :; }; mapfile() { :; }; \
            type() { :; }; alias() { :; }; hash() { :; }; export() { :; }; cd() { :; }", ""),
        ok("echo still-works; printf x; read y; exit 3", "still-works\n"),
    ]},
    Case { name: "echo shadowed by a function", probe: ("printf 'probe %s\\n' \"$MARK\"", "probe kept\n"), steps: &[
        ok("echo() { builtin printf 'FN:%s\\n' \"$*\"; }", ""),
        ok("echo hi", "FN:hi\n"),
    ]},
    Case { name: "aliases named like builtins and keywords", probe: ("\\echo \"probe $MARK\"", "probe kept\n"), steps: &[
        ok("alias echo='printf X'; alias builtin=echo; alias exit=true; alias if='echo IF'; alias while=for; alias source=:", ""),
        ok("echo hi", "X"),
        ok("exit 4", ""),
        ok("unalias -a", ""),
    ]},
    Case { name: "set -x traces only the user's commands", probe: PROBE, steps: &[
        st("set -x; echo traced", 0, "traced\n", Exact("+ echo traced\n")),
        st("echo again", 0, "again\n", Exact("+ echo again\n")),
        st("false", 1, "", Exact("+ false\n")),
        st("set +x", 0, "", Exact("+ set +x\n")),
    ]},
    Case { name: "set -x to BASH_XTRACEFD", probe: PROBE, steps: &[
        ok("exec 7>/dev/null; BASH_XTRACEFD=7; set -x; echo t", "t\n"),
        ok("echo u; set +x", "u\n"),
    ]},
    Case { name: "set -v echoes only the user's lines", probe: PROBE, steps: &[
        ok("set -v", ""),
        st("echo v", 0, "v\n", Exact("echo v\n")),
        st("set +v", 0, "", Exact("set +v\n")),
    ]},
    Case { name: "set -n is ignored between commands", probe: PROBE, steps: &[
        ok("set -n; echo not-run", ""),
        ok("echo run", "run\n"),
    ]},
    Case { name: "exec >FILE sends later output there", probe: ("exec 1>&5; cat \"$F\"", "one\nprobe kept /tmp\n"), steps: &[
        ok("F=$(mktemp); exec 5>&1 >\"$F\"", ""),
        ok("echo one", ""),
        ok("echo \"probe $MARK $PWD\"", ""),
        st("cat \"$F\" >&2", 0, "", Exact("one\nprobe kept /tmp\n")),
    ]},
    Case { name: "exec 2>/dev/null", probe: PROBE, steps: &[
        ok("exec 6>&2 2>/dev/null", ""),
        st("ls /nonexistent", 2, "", Exact("")),
        st("foo", 127, "", Exact("")),
        st("exec 2>&6 6>&-; foo", 127, "", Has("foo: command not found")),
    ]},
    Case { name: "exec 1>&- closes stdout", probe: ("echo \"probe $MARK $PWD\" >&5", "probe kept /tmp\n"), steps: &[
        ok("exec 5>&1 1>&-", ""),
        st("echo x", 1, "", Has("write error")),
    ]},
    Case { name: "exec <FILE", probe: PROBE, steps: &[
        ok("exec </etc/hostname", ""),
        ok("echo ok", "ok\n"),
    ]},
    Case { name: "exec of high descriptors", probe: PROBE, steps: &[
        ok("exec 9>/dev/null 10</dev/null {fd}>/dev/null; echo $((fd >= 10))", "1\n"),
        ok("exec 9>&- 10<&-", ""),
    ]},
    Case { name: "messages read as bash's own", probe: PROBE, steps: &[
        st("foo", 127, "", Exact("bash: line 1: foo: command not found\n")),
        st("echo a\nfoo", 127, "a\n", Exact("bash: line 2: foo: command not found\n")),
        st("cd /nonexistent", 1, "", Exact("bash: line 1: cd: /nonexistent: No such file or directory\n")),
    ]},
    Case { name: "nothing of linger in $0, BASH_SOURCE, FUNCNAME, LINENO", probe: PROBE, steps: &[
        ok("echo \"$0|${BASH_SOURCE[*]}|${FUNCNAME[*]}|$LINENO\"", "bash|||1\n"),
        ok("echo\necho $LINENO", "\n2\n"),
        ok("f() { echo \"${FUNCNAME[*]}|${BASH_SOURCE[*]}\"; }; f", "f|main\n"),
    ]},
    Case { name: "nothing of linger in ps, functions, variables or the environment", probe: PROBE, steps: &[
        ok("ps -o args= -p $$", "bash --noprofile --norc\n"),
        ok("declare -F | grep -ci linger; compgen -v | grep -c '^_*linger\\|^__LINGER'; env | grep -c '^_*linger\\|^__LINGER'; \
            compgen -b | grep -ci linger; enable -a | grep -ci linger; alias | grep -ci linger; true", "0\n0\n0\n0\n0\n0\n"),
        ok("trap -p", ""),
    ]},
    Case { name: "readonly variables", probe: PROBE, steps: &[
        ok("readonly RO=1", ""),
        st("RO=2; echo no", 1, "", Exact("bash: line 1: RO: readonly variable\n")),
    ]},
    Case { name: "enable -n", probe: PROBE, steps: &[
        ok("enable -n echo; type -t echo", "file\n"),
        ok("enable echo; type -t echo", "builtin\n"),
    ]},
    Case { name: "errexit through shopt -o", probe: PROBE, steps: &[
        ok("shopt -so errexit", ""),
        st("false; echo no", 1, "", Exact("")),
        ok("shopt -uo errexit", ""),
    ]},
    Case { name: "background jobs, wait and coproc", probe: PROBE, steps: &[
        ok("sleep 0.1 & wait; echo done", "done\n"),
        ok("coproc cat; echo hi >&${COPROC[1]}; read -r l <&${COPROC[0]}; echo $l; kill $COPROC_PID; wait 2>/dev/null; true", "hi\n"),
    ]},
    Case { name: "here documents and $? across commands", probe: PROBE, steps: &[
        ok("cat <<EOF\na $((1+1))\nEOF", "a 2\n"),
        st("false", 1, "", Exact("")),
        ok("echo $?", "1\n"),
    ]},
    Case { name: "unset of the shell's special variables", probe: PROBE, steps: &[
        ok("OLDP=$PATH; unset HOME PS4 PROMPT_COMMAND BASH_ENV; PROMPT_COMMAND='echo PC'", ""),
        ok("echo ok", "ok\n"),
    ]},
    Case { name: "arithmetic and expansion errors", probe: PROBE, steps: &[
        st("echo $((1/0)); echo no", 1, "", Has("division by 0")),
        st("x=(a); echo ${x[bad subscript]}; echo no", 1, "", Has("bad")),
        st("x=abc; echo ${x: -1:-5}; echo no", 1, "", Has("substring expression < 0")),
    ]},
    Case { name: "runaway recursion", probe: PROBE, steps: &[
        st("FUNCNEST=50; f() { f; }; f; echo no", 1, "", Has("maximum function nesting level exceeded (50)")),
        ok("unset FUNCNEST; echo \"[${FUNCNAME[*]}]\"", "[]\n"),
        st("g() { g; }; g; echo no", 1, "", Has("maximum function nesting level exceeded")),
        ok("h() { (( $1 )) && h $(( $1 - 1 )); echo -n .; }; h 20", ".....................") ,
    ]},
];

async fn run(
    client: &linger::Client,
    entry: &linger::Entry,
    script: &str,
) -> (i32, String, String) {
    let (out, err, status) = common::run_api(client, entry, script).await;
    (
        status,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

#[tokio::test]
async fn hostile_but_legitimate_scripts_end_at_worst_their_command() {
    assert!(CASES.len() >= 40, "the suite keeps at least 40 cases");
    let mut w = World::new();
    w.start_daemon();
    let client = w.client("homeA");
    let mut failures = Vec::new();
    for case in CASES {
        let s = client
            .new_session("localhost", &NewOptions::default())
            .await
            .expect("new");
        let setup = run(&client, &s.entry, "MARK=kept; cd /tmp").await;
        assert_eq!(
            setup,
            (0, String::new(), String::new()),
            "{}: setup",
            case.name
        );
        for step in case.steps {
            let (status, out, err) = run(&client, &s.entry, step.script).await;
            let err_ok = match step.stderr {
                Exact(e) => err == e,
                Has(e) => err.contains(e),
            };
            if status != step.status || out != step.stdout || !err_ok {
                failures.push(format!(
                    "{}: {:?}\n  got status {status}, stdout {out:?}, stderr {err:?}\n  want status {}, stdout {:?}, stderr {}",
                    case.name,
                    step.script,
                    step.status,
                    step.stdout,
                    match step.stderr {
                        Exact(e) => format!("{e:?}"),
                        Has(e) => format!("containing {e:?}"),
                    }
                ));
            }
        }
        let (status, out, _) = run(&client, &s.entry, case.probe.0).await;
        if status != 0 || out != case.probe.1 {
            failures.push(format!(
                "{}: the session lost its state: probe gave {status} {out:?}",
                case.name
            ));
        }
        client.remove(&s.entry).await.expect("remove");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Only `builtin exit` and `exec PROGRAM` end the session, which then says why.
#[tokio::test]
async fn builtin_exit_and_exec_end_the_session_with_a_reason() {
    let mut w = World::new();
    w.start_daemon();
    let client = w.client("homeA");
    for (script, status, reason) in [
        ("exit 3; echo no", None, ""),
        ("builtin exit 9", Some(9), "its shell exited with status 9"),
        ("exec true", Some(0), "its shell exited with status 0"),
        (
            "exec sh -c 'kill -KILL $$'",
            Some(137),
            "its shell was killed by SIGKILL",
        ),
    ] {
        let s = client
            .new_session("localhost", &NewOptions::default())
            .await
            .expect("new");
        let got = run(&client, &s.entry, script).await;
        let Some(want) = status else {
            assert_eq!(got.0, 3, "{script}");
            assert_eq!(run(&client, &s.entry, "echo alive").await.1, "alive\n");
            continue;
        };
        assert_eq!(got.0, want, "{script}: {got:?}");
        // The daemon learns of the shell's end just after the command's status: a command
        // sent in between is refused as "ended" (on its stream), and the reason follows.
        let mut err = refusal(&client, &s.entry, script).await;
        for _ in 0..50 {
            if err.contains("closed") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            err = refusal(&client, &s.entry, script).await;
        }
        assert!(
            err.contains("closed") && err.contains(reason),
            "{script}: {err}"
        );
    }
}

/// The error a command sent to an ended session gets, at its start or on its stream.
async fn refusal(client: &linger::Client, entry: &linger::Entry, script: &str) -> String {
    match client
        .invoke(entry, "echo no", &InvokeOptions::default())
        .await
    {
        Ok(mut cmd) => loop {
            match cmd.next().await {
                Ok(Some(Event::Output { data, .. })) => {
                    panic!("{script}: the session still runs commands: {data:?}")
                }
                Ok(Some(Event::Finished { status, .. })) => {
                    panic!("{script}: the session still runs commands (status {status})")
                }
                Ok(Some(Event::Dropped { .. })) => {}
                Ok(None) => panic!("{script}: the stream ended without a reason"),
                Err(e) => break e.to_string(),
            }
        },
        Err(e) => e.to_string(),
    }
}

/// Background jobs and the configuration's startup script run in the same loop, so the
/// user's own shell state cannot break them either.
#[test]
fn jobs_and_startup_survive_hostile_state() {
    let mut w = World::new();
    let startup = w.path("startup.sh");
    std::fs::write(&startup, "set -euo pipefail\nprintf() { :; }\nGREETING=hi\necho $unset_in_startup\necho not-reached\n").expect("startup");
    w.write_config(&format!(
        "[[configuration]]\nname = \"hostile\"\nstartup = {:?}\n",
        startup.display().to_string()
    ));
    w.start_daemon();
    w.ok(&[
        "new",
        "localhost",
        "--name",
        "h",
        "--configuration",
        "hostile",
    ]);
    let out = w.ok(&[
        "invoke",
        "h",
        "--",
        "echo \"$GREETING\"; [[ $- == *e* ]] && echo e-on; set +euo pipefail",
    ]);
    assert_eq!(out, "hi\ne-on\n");
    w.ok(&[
        "invoke",
        "h",
        "--",
        "set -u; read() { :; }; source() { :; }; trap 'echo E' ERR",
    ]);
    w.ok(&["job", "start", "h", "--", "echo job-$GREETING; exit 4"]);
    common::eventually("the job ends", || w.ok(&["job", "list"]).contains("Failed"));
    let got = w.run(&["job", "receive", "1"]);
    assert_eq!(common::stdout(&got), "job-hi\n", "{}", common::stderr(&got));
    w.ok(&["job", "start", "h", "--", "echo $nope_in_job"]);
    common::eventually("the second job ends", || {
        w.ok(&["job", "list"]).matches("Failed").count() == 2
    });
    let got = w.run(&["job", "receive", "2"]);
    assert!(
        common::stderr(&got).contains("nope_in_job: unbound variable"),
        "{}",
        common::stderr(&got)
    );
    assert_eq!(w.ok(&["invoke", "h", "--", "echo alive"]), "alive\n");
}

/// Removing a session ends its shell with SIGHUP and SIGTERM, which the shell obeys while it
/// waits for a command: its EXIT trap runs (a shell left for the SIGKILL that follows the
/// grace period could not run it), as when a terminal closes on an interactive bash.
#[test]
fn removing_a_session_runs_its_exit_trap() {
    let w = World::new();
    w.ok(&["new", "localhost", "--name", "s"]);
    let mark = w.path("trap-ran");
    w.ok(&[
        "invoke",
        "s",
        "--",
        &format!("trap 'echo ran > \"{}\"' EXIT", mark.display()),
    ]);
    w.ok(&["remove", "s"]);
    common::eventually("the EXIT trap to have run", || mark.exists());
    assert_eq!(std::fs::read_to_string(&mark).expect("mark"), "ran\n");
}
