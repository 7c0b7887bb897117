# linger session bootstrap: runs at the top level of the session's bash.
# Commands arrive on fd 250 as NUL-terminated fields: the number of arguments, each
# argument, then the script. Each script is sourced (so `return` and the unwinding below
# work) with stdin from /dev/null; afterwards an end marker carrying a per-session nonce
# and the status goes to the original stdout (fd 251) and stderr (fd 252).
__linger_nonce=$__LINGER_NONCE
unset __LINGER_NONCE
__linger_pid=$$
exec 251>&1 252>&2
# Aliases defined by one command are used by the next, as in an interactive shell.
shopt -s expand_aliases

# Unwinding: `exit` and Ctrl-C must end the whole command but not the shell. In extdebug
# mode a DEBUG trap returning 2 makes the current function or sourced file return, so
# arming one unwinds every frame up to the loop below.
__linger_unwind() { __linger_unwinding=1; shopt -s extdebug; trap '__linger_dbg' DEBUG; }
__linger_dbg() { (( ${#FUNCNAME[@]} > 1 )) && return 2; return 0; }
exit() {
  local __linger_x=${1-$?}
  # In a subshell (`( … )`, `$( … )`, a pipeline part) exit means leave that subshell.
  if [[ $BASHPID != "$__linger_pid" ]]; then builtin exit "$__linger_x"; fi
  __linger_rc=$__linger_x
  __linger_unwind
  return "$__linger_x"
}
logout() { exit "$@"; }
__linger_prev() { return "$1"; }
trap '__linger_rc=130; __linger_unwind' INT

# The configuration's startup script, sourced once before the first command (so what it
# defines stays); its output goes to a log in the session's directory.
if [[ -n ${__LINGER_STARTUP-} ]]; then
  __linger_s=$__LINGER_STARTUP __linger_l=${__LINGER_STARTUP_LOG:-/dev/null}
  unset __LINGER_STARTUP __LINGER_STARTUP_LOG
  source "$__linger_s" </dev/null >>"$__linger_l" 2>&1
  printf 'startup %s exited with status %d\n' "$__linger_s" "$?" >>"$__linger_l"
  unset __linger_s __linger_l __linger_rc __linger_unwinding
  shopt -u extdebug
  trap - DEBUG
fi

# A background job (`linger job start`): $1 the prefix of its FIFOs, $2 its script, the rest
# its arguments. A background subshell inherits the session's variables, functions and
# directory; the inner subshell lets `exit` end the job's script while the outer one still
# writes the end markers. The host's fds are closed in it, so the job holds only its FIFOs.
__linger_job() {
  local __linger_p=$1 __linger_s=$2
  shift 2
  {
    ( source /dev/fd/249 249<<<"$__linger_s" ) </dev/null
    __linger_st=$?
    printf '\0\1LINGER:%s:%d\1\0' "$__linger_nonce" "$__linger_st"
    printf '\0\1LINGER:%s\1\0' "$__linger_nonce" >&2
  } >"$__linger_p.out" 2>"$__linger_p.err" 250<&- 251>&- 252>&- &
  printf '%s\n' "$!" >"$__linger_p.pid"
}

while :; do
  IFS= read -r -d '' -u 250 __linger_n || builtin exit 0
  __linger_args=()
  while (( ${#__linger_args[@]} < __linger_n )); do
    IFS= read -r -d '' -u 250 __linger_a || builtin exit 0
    __linger_args+=("$__linger_a")
  done
  IFS= read -r -d '' -u 250 __linger_script || builtin exit 0
  unset __linger_a __linger_n
  __linger_rc=
  set -- "${__linger_args[@]}"
  # `$?` in a command is the previous command's status, as at an interactive prompt.
  __linger_prev "${__linger_st:-0}"
  source /dev/fd/249 249<<<"$__linger_script" </dev/null
  __linger_st=$?
  if [[ $__linger_unwinding ]]; then
    trap - DEBUG
    shopt -u extdebug
    __linger_unwinding=
    __linger_st=$__linger_rc
  fi
  printf '\0\1LINGER:%s:%d\1\0' "$__linger_nonce" "$__linger_st" >&251
  printf '\0\1LINGER:%s\1\0' "$__linger_nonce" >&252
done
