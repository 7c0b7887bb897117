# Copyright: the linger project
# MIT OR Apache-2.0
"""Ansible connection plugin ``linger.linger.linger``: every task of a host runs in one
persistent linger session on that host, reached with the ``linger_client`` library over
TLS (SSH-key login) or the local socket."""

from __future__ import annotations

DOCUMENTATION = r"""
name: linger
short_description: Run tasks in persistent linger sessions
description:
  - Runs each task's commands in a persistent bash session kept by C(lingerd) on the target,
    the same session for every task of the host, so shell state (C(export), C(cd), functions)
    set by one task through M(ansible.builtin.raw) is seen by the commands of later tasks, and
    modules run with the session's environment.
  - The session outlives the controller. If C(ansible-playbook) dies during a task, the task's
    command goes on running in the session; a later run with the same O(session) name attaches
    the same session again, waits for that command to end and receives its output first.
  - Files are transferred over the command's forwarded standard input and its output, byte
    for byte (binary safe), into a temporary name that is renamed over the destination.
  - Speaks linger's protocol itself through the C(linger-client) Python package, which must be
    installed in the controller's Python. Nothing but C(lingerd) is needed on the target.
author: linger project
version_added: "0.1.0"
requirements:
  - linger-client (Python package, on the controller)
  - lingerd on the target, listening for TLS (C(lingerd --listen ADDR:PORT)), or the local user's daemon
extends_documentation_fragment:
  - connection_pipelining
options:
  computer:
    description:
      - The lingerd to reach, as the C(linger) CLI writes computers
        (C(localhost) for the local user's daemon on its Unix socket, else C([tls://][user@]host[:port])).
      - Defaults to the inventory host's address.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_linger_computer
    env:
      - name: ANSIBLE_LINGER_COMPUTER
  port:
    description:
      - The TLS port of lingerd, when O(computer) names none (lingerd's default is 5990).
    type: int
    vars:
      - name: ansible_port
      - name: ansible_linger_port
    env:
      - name: ANSIBLE_LINGER_PORT
  remote_user:
    description:
      - Whom the TLS login asks to act as (a system lingerd runs the session as this Unix user).
        Defaults to the local user. Ignored by a per-user lingerd, whose keys decide.
    type: str
    vars:
      - name: ansible_user
      - name: ansible_linger_user
    env:
      - name: ANSIBLE_REMOTE_USER
    ini:
      - section: defaults
        key: remote_user
    keyword:
      - name: remote_user
  identity:
    description:
      - The SSH private key to log in with. Without it, the keys of C(ssh-agent) (C(SSH_AUTH_SOCK)),
        then C(~/.ssh/id_ed25519), C(id_ecdsa), C(id_rsa), as for the linger CLI. An encrypted key
        is used through ssh-agent.
    type: path
    vars:
      - name: ansible_linger_identity
      - name: ansible_private_key_file
    env:
      - name: ANSIBLE_LINGER_IDENTITY
    ini:
      - section: linger_connection
        key: identity
  host_key_checking:
    description:
      - What to do with a server whose identity is not yet pinned in the client's C(known_hosts)
        (the file the linger CLI uses). C(accept-new) pins it, C(strict) refuses it. A changed
        identity is always refused. Defaults to the client's C(options.toml), else C(strict).
    type: str
    choices: [accept-new, strict]
    vars:
      - name: ansible_linger_host_key_checking
    env:
      - name: ANSIBLE_LINGER_HOST_KEY_CHECKING
    ini:
      - section: linger_connection
        key: host_key_checking
  configuration:
    description:
      - The session configuration of lingerd to create the session from (C(default) if unset).
        Only used when the session is created.
    type: str
    vars:
      - name: ansible_linger_configuration
    env:
      - name: ANSIBLE_LINGER_CONFIGURATION
  session:
    description:
      - The name of the persistent session. Every task (and every later run) using the same name
        on the same computer shares the session. Defaults to C(ansible-) and the inventory name.
    type: str
    vars:
      - name: ansible_linger_session
    env:
      - name: ANSIBLE_LINGER_SESSION
  inventory_name:
    description:
      - The inventory name of the host, for the default O(session) name. Not meant to be set.
    type: str
    vars:
      - name: inventory_hostname
  idle_timeout:
    description:
      - Seconds a session without any client is kept before lingerd removes it, set when the
        session is created (lingerd's configuration decides if unset, 2 h by default).
    type: int
    vars:
      - name: ansible_linger_idle_timeout
    env:
      - name: ANSIBLE_LINGER_IDLE_TIMEOUT
  linger_home:
    description:
      - The client home (identity, known_hosts, options.toml), as C(LINGER_HOME) sets it for the CLI.
        Defaults to C(LINGER_HOME), else the XDG directories.
    type: path
    vars:
      - name: ansible_linger_home
    env:
      - name: LINGER_HOME
  connect_timeout:
    description:
      - Seconds to connect and log in (also how long a become prompt may take to show).
    type: int
    default: 30
    vars:
      - name: ansible_linger_connect_timeout
    env:
      - name: ANSIBLE_LINGER_CONNECT_TIMEOUT
  busy_wait:
    description:
      - Seconds a command waits for the session to be free (a command from a controller that died
        may still be running in it) before the task fails as busy.
    type: int
    default: 600
    vars:
      - name: ansible_linger_busy_wait
    env:
      - name: ANSIBLE_LINGER_BUSY_WAIT
notes:
  - M(ansible.builtin.raw) commands run at the top level of the session's bash, so C(export) and
    C(cd) in them persist for the host's later tasks; modules run as children of that bash and see
    its environment, but what a module changes does not persist (as with any Ansible connection).
  - Become works when it needs no password, and with a password for methods that read it from
    standard input (C(sudo) does, with C(-S)). Methods that need a terminal are refused.
  - M(ansible.builtin.meta) C(reset_connection) removes the session (ending its processes); the
    next task starts a new one.
"""

EXAMPLES = r"""
# inventory.yml
all:
  hosts:
    web01:
      ansible_host: 10.0.0.5
      ansible_port: 5990
  vars:
    ansible_connection: linger.linger.linger
    ansible_linger_identity: ~/.ssh/id_ed25519
    ansible_linger_host_key_checking: accept-new
    ansible_linger_session: deploy

# playbook.yml
- hosts: all
  tasks:
    - ansible.builtin.raw: export RELEASE=42; cd /srv/app
    - ansible.builtin.shell: echo "deploying $RELEASE"     # sees RELEASE
"""

import os
import re
import sys
import time

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

try:
    import linger_client
    from linger_client import (
        AuthenticationError,
        BusyError,
        ClosedError,
        LingerConnectionError,
        LingerError,
        NotFoundError,
    )
    HAS_LINGER_CLIENT = True
    IMPORT_ERROR = None
except ImportError as e:  # reported when a task uses the connection
    HAS_LINGER_CLIENT = False
    IMPORT_ERROR = e

display = Display()

#: What a session name may not contain (PROTOCOL §6 NewSession).
_BAD_NAME = re.compile(r"[\s*?\[\]/,@\x00-\x1f\x7f]")

# Run in a subshell of the session's bash so nothing (variables, options) leaks into the
# session; `command` so a function or alias named like the tool cannot interfere.
_PUT_SCRIPT = (
    '( t="$1.linger-tmp.$$"; '
    'if command cat > "$t" && command mv -f -- "$t" "$1"; then exit 0; fi; '
    'rc=$?; command rm -f -- "$t"; exit $rc )'
)
_FETCH_SCRIPT = '( command cat -- "$1" )'


def default_session_name(inventory_name):
    """``ansible-NAME`` with what a session name may not hold replaced by ``-``."""
    name = "ansible-" + _BAD_NAME.sub("-", inventory_name or "host")
    return name[:64]


def build_computer(computer, port, user):
    """The linger computer for an inventory host: ``localhost`` stays the local socket;
    anything else is TLS, with the port and the login user added unless already given."""
    if computer in ("localhost", ".") and port is None:
        return "localhost"
    rest = computer[len("tls://"):] if computer.startswith("tls://") else computer
    userpart, at, hostport = rest.rpartition("@")
    if not at:
        userpart, hostport = "", rest
    if user and not userpart:
        userpart = user
    if hostport.startswith("["):
        has_port = "]:" in hostport
    elif hostport.count(":") > 1:  # a bare IPv6 address
        hostport = "[%s]" % hostport
        has_port = False
    else:
        has_port = ":" in hostport
    if port is not None and not has_port:
        hostport = "%s:%d" % (hostport, int(port))
    return "tls://" + (userpart + "@" if userpart else "") + hostport


class Connection(ConnectionBase):
    """Runs a host's tasks in its persistent linger session."""

    transport = "linger.linger.linger"
    has_pipelining = True
    # Commands get pipes, not a terminal: Ansible itself refuses become plugins that need one.
    has_tty = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._client = None
        self._session = None
        self._computer = None

    # --- connecting --------------------------------------------------------------------

    def _connect(self):
        if self._connected:
            return self
        if not HAS_LINGER_CLIENT:
            raise AnsibleError(
                "the linger connection needs the Python package linger-client in the controller's "
                "Python (%s): %s" % (sys.executable, to_native(IMPORT_ERROR))
            )
        self._computer = build_computer(
            self.get_option("computer"), self.get_option("port"), self.get_option("remote_user")
        )
        home = self.get_option("linger_home")
        try:
            self._client = linger_client.Client(
                self._computer,
                home=linger_client.ClientHome.at(home) if home else None,
                identity_file=self.get_option("identity"),
                host_key_checking=self.get_option("host_key_checking"),
                open_timeout=self._connect_timeout(),
                client_name="ansible linger connection %s" % linger_client.__version__,
            )
            display.vvv("ESTABLISH LINGER CONNECTION TO %s" % self._computer, host=self._computer)
            self._session = self._open_session()
        except LingerError as e:
            self._fail(e, "cannot open the session")
        self._connected = True
        return self

    def _connect_timeout(self):
        value = self.get_option("connect_timeout")
        return value if value and value > 0 else 30

    def _session_name(self):
        return self.get_option("session") or default_session_name(self.get_option("inventory_name"))

    def _open_session(self):
        """The host's session: attached again if it exists, created otherwise."""
        name = self._session_name()
        c = self._client
        for _attempt in range(3):
            found = [s for s in c.sessions() if s.name == name]
            if found and found[0].state == "Closed":
                # Its shell ended (an `exec`, say): start afresh under the same name.
                display.vvv("linger session %s had closed (%s); replacing it" % (name, found[0].closed_reason))
                c.remove_session(found[0])
                found = []
            if found:
                s = found[0]
                if s.attachment != "you":
                    s = c.connect_session(s)
                display.vvv("ATTACHED linger session %s (%s)" % (name, s.instance_id), host=self._computer)
                return s
            try:
                s = c.new_session(
                    name,
                    configuration=self.get_option("configuration"),
                    idle_timeout=self.get_option("idle_timeout"),
                )
                display.vvv("CREATED linger session %s (%s)" % (name, s.instance_id), host=self._computer)
                return s
            except linger_client.ExistsError:
                continue  # made meanwhile by another worker: attach it
        raise AnsibleConnectionFailure("linger: cannot create or find session %s on %s" % (name, self._computer))

    def _fail(self, e, what):
        """Raises the Ansible error for a linger error: connection and login failures make
        the host unreachable; anything else fails the task."""
        msg = "linger (%s, session %s): %s: %s" % (self._computer, self._session_name(), what, to_native(e))
        if isinstance(e, BusyError):
            msg += (" (another client holds the session, or a command still runs in it: wait, or use"
                    " another ansible_linger_session)")
        if isinstance(e, (LingerConnectionError, AuthenticationError)):
            raise AnsibleConnectionFailure(msg)
        raise AnsibleError(msg)

    # --- commands ----------------------------------------------------------------------

    def exec_command(self, cmd, in_data=None, sudoable=True):
        """Runs ``cmd`` at the top level of the session's bash; ``in_data`` (pipelining)
        becomes its standard input."""
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv("EXEC %s" % to_text(cmd), host=self._computer)
        try:
            if sudoable and self.become and self.become.expect_prompt():
                return self._exec_with_password(to_text(cmd), in_data)
            result = self._client.run(self._session, to_text(cmd), stdin=in_data,
                                      wait=self.get_option("busy_wait"))
        except ClosedError as e:
            self._fail(e, "the session ended (its shell exited); the next task starts a new one")
        except LingerError as e:
            self._fail(e, "cannot run the command")
        return result.status, result.stdout, result.stderr

    def _exec_with_password(self, cmd, in_data):
        """Become with a password: the become program's prompt is answered on the command's
        standard input once it shows, then the pipelined module (if any) follows."""
        name = getattr(self.become, "name", "")
        if name.split(".")[-1] == "su":
            raise AnsibleError(
                "linger: become_method su reads its password from a terminal, and linger commands "
                "have pipes: use sudo (which reads it from standard input), or passwordless become"
            )
        stream = self._client.invoke(self._session, cmd, stdin=True, wait=self.get_option("busy_wait"))
        # Until become has succeeded, silence means a prompt nobody can answer.
        stream.timeout = self._connect_timeout()
        out, err = bytearray(), bytearray()
        sent = False
        succeeded = False
        deadline = time.monotonic() + self._connect_timeout()
        for ev in stream:
            if isinstance(ev, linger_client.Output) and ev.command_id == stream.command_id:
                (out if ev.stream == "stdout" else err).extend(ev.data)
            if not succeeded and self.become.check_success(bytes(out)):
                succeeded = True
                stream.timeout = None
                if in_data:
                    stream.stdin.write(in_data)
                stream.stdin.close()
            elif not succeeded and not sent and (
                self.become.check_password_prompt(bytes(out)) or self.become.check_password_prompt(bytes(err))
            ):
                stream.stdin.write(to_bytes(self.become.get_option("become_pass") or "") + b"\n")
                sent = True
            if not succeeded and time.monotonic() > deadline:
                stream.cancel()
                raise AnsibleConnectionFailure(
                    "linger: timed out waiting for become success or a password prompt:\n%s%s"
                    % (to_text(bytes(out)), to_text(bytes(err)))
                )
        status = stream.status if stream.status is not None else 1
        return status, self.become.strip_become_prompt(bytes(out)), bytes(err)

    # --- files -------------------------------------------------------------------------

    def put_file(self, in_path, out_path):
        """Copies a local file to the host over the command's standard input."""
        super().put_file(in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self._computer)
        b_in = to_bytes(in_path, errors="surrogate_or_strict")
        if not os.path.exists(b_in):
            raise AnsibleFileNotFound("file or module does not exist: %s" % to_native(in_path))
        try:
            with open(b_in, "rb") as f:
                result = self._client.run(self._session, _PUT_SCRIPT, [to_text(out_path)], stdin=f,
                                          wait=self.get_option("busy_wait"))
        except LingerError as e:
            self._fail(e, "cannot transfer %s to %s" % (in_path, out_path))
        if result.status != 0:
            raise AnsibleError(
                "linger: failed to transfer %s to %s (status %d): %s"
                % (in_path, out_path, result.status, to_native(result.stderr.strip()))
            )

    def fetch_file(self, in_path, out_path):
        """Copies a file of the host to the controller from the command's output, into a
        temporary name renamed over ``out_path`` once complete."""
        super().fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self._computer)
        b_out = to_bytes(out_path, errors="surrogate_or_strict")
        tmp = b_out + b".linger-tmp"
        err = bytearray()
        try:
            stream = self._client.invoke(self._session, _FETCH_SCRIPT, [to_text(in_path)],
                                         wait=self.get_option("busy_wait"))
            with open(tmp, "wb") as f:
                for ev in stream:
                    if isinstance(ev, linger_client.Output) and ev.command_id == stream.command_id:
                        if ev.stream == "stdout":
                            f.write(ev.data)
                        else:
                            err.extend(ev.data)
        except LingerError as e:
            _remove(tmp)
            self._fail(e, "cannot fetch %s" % in_path)
        except OSError as e:
            _remove(tmp)
            raise AnsibleError("linger: cannot write %s: %s" % (out_path, to_native(e)))
        if stream.status != 0:
            _remove(tmp)
            raise AnsibleError(
                "linger: failed to fetch %s (status %s): %s"
                % (in_path, stream.status, to_native(bytes(err).strip()))
            )
        os.replace(tmp, b_out)

    # --- lifetime ----------------------------------------------------------------------

    def reset(self):
        """``meta: reset_connection``: removes the session (its processes end); the next
        task creates a new one."""
        try:
            self._connect()
            self._client.remove_session(self._session)
            display.vvv("REMOVED linger session %s" % self._session_name(), host=self._computer)
        except LingerError as e:
            if not isinstance(e, NotFoundError):
                self._fail(e, "cannot reset the session")
        finally:
            self.close()

    def close(self):
        """Ends this task's connection; the session stays (and stays attached to this client)."""
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
        self._client = None
        self._connected = False


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass
