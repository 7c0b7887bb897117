"""The client against a real ``lingerd --listen`` on loopback: SSH-key logins (key files of
each kind, a real ssh-agent), the server's identity pinned in the CLI's known_hosts, and
the refusals: unknown or changed host keys, keys the server does not know, keys the
client may not use."""

from __future__ import annotations

import os
import subprocess

import pytest

from linger_client import AuthenticationError, Client, ClientHome, HostKeyError, UsageError, local_user
from linger_client.keys import FileSigner, SIGNATURE_NAMESPACE, from_file
from linger_world import linger_bin


def fingerprint_of(pub_file) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub_file)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


@pytest.fixture
def tls(world):
    """A TLS daemon that admits key ``k``; returns (daemon, address, key path)."""
    key, pub = world.keygen("k")
    d = world.daemon()
    d.authorize([pub])
    addr = d.start(listen="127.0.0.1:0")
    return d, addr, key


def tls_client(world, addr, home="homeA", **kw) -> Client:
    return Client(addr, home=ClientHome.at(world.path(home)), **kw)


def test_login_with_a_key_file_pins_the_server_in_the_clis_known_hosts(world, tls):
    d, addr, key = tls
    port = addr.rsplit(":", 1)[1]
    with tls_client(world, addr, identity_file=key, host_key_checking="accept-new") as c:
        assert c.welcome.principal == local_user()  # a key without principal= acts as the daemon's user
        s = c.new_session("remote")
        c.run(s, "cd /tmp; export V=over-tls")
        assert c.run(s, 'echo "$V $PWD"').stdout == b"over-tls /tmp\n"
        assert c.run(s, "exit 3").status == 3
    pins = world.path("homeA/known_hosts").read_text()
    host_pub = (d.state_dir / "identity/host_ed25519.pub").read_text().split()
    assert pins == f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n"
    # Pinned: strict now accepts it, and so does the CLI with the same home.
    with tls_client(world, addr, identity_file=key, host_key_checking="strict") as c:
        assert [s.name for s in c.sessions()] == ["remote"]
    env = dict(os.environ, LINGER_HOME=str(world.path("homeA")), HOME=str(world.dir))
    env.pop("SSH_AUTH_SOCK", None)
    cli = subprocess.run([str(linger_bin()), "--identity", str(key), "get", "--computer", addr],
                         env=env, capture_output=True, text=True)
    assert cli.returncode == 0 and "remote" in cli.stdout, cli.stderr


def test_an_unknown_server_is_refused_under_strict(world, tls):
    d, addr, key = tls
    with pytest.raises(HostKeyError) as e:
        tls_client(world, addr, identity_file=key, host_key_checking="strict").sessions()
    fp = fingerprint_of(d.state_dir / "identity/host_ed25519.pub")
    assert "is not known" in str(e.value) and fp in str(e.value)
    assert e.value.exit_code == 5
    assert not world.path("homeA/known_hosts").exists()
    # Without a terminal the default is strict too.
    with pytest.raises(HostKeyError):
        tls_client(world, addr, identity_file=key).sessions()


def test_a_changed_host_key_is_refused_with_both_fingerprints(world, tls):
    d, addr, key = tls
    other, other_pub = world.keygen("impostor")
    port = addr.rsplit(":", 1)[1]
    kh = world.path("homeA/known_hosts")
    kh.write_text(f"# pinned earlier\n[127.0.0.1]:{port} {other_pub}\n")
    with pytest.raises(HostKeyError) as e:
        tls_client(world, addr, identity_file=key, host_key_checking="accept-new").sessions()
    text = str(e.value)
    assert "has changed" in text
    assert fingerprint_of(world.path("impostor.pub")) in text
    assert fingerprint_of(d.state_dir / "identity/host_ed25519.pub") in text
    assert "delete line 2" in text
    assert kh.read_text().count("\n") == 2  # nothing appended
    # A revoked key is refused even where it is also pinned.
    host_pub = (d.state_dir / "identity/host_ed25519.pub").read_text().split()
    kh.write_text(f"@revoked * {host_pub[0]} {host_pub[1]}\n[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    with pytest.raises(HostKeyError) as e:
        tls_client(world, addr, identity_file=key, host_key_checking="accept-new").sessions()
    assert "is revoked" in str(e.value)


def test_hashed_and_wildcard_pins_are_read_as_ssh_reads_them(world, tls):
    d, addr, key = tls
    port = addr.rsplit(":", 1)[1]
    host_pub = (d.state_dir / "identity/host_ed25519.pub").read_text().split()
    kh = world.path("homeA/known_hosts")
    # ssh-keygen -H hashes the names of a known_hosts file.
    kh.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert kh.read_text().startswith("|1|")
    with tls_client(world, addr, identity_file=key, host_key_checking="strict") as c:
        c.sessions()
    kh.write_text(f"[127.0.0.?]:*,!bad {host_pub[0]} {host_pub[1]}\n")
    with tls_client(world, addr, identity_file=key, host_key_checking="strict") as c:
        c.sessions()


def test_a_key_the_server_does_not_know_is_refused(world, tls):
    d, addr, key = tls
    stranger, _ = world.keygen("stranger")
    with pytest.raises(AuthenticationError) as e:
        tls_client(world, addr, identity_file=stranger, host_key_checking="accept-new").sessions()
    assert "accepted none of the keys offered" in str(e.value) and str(stranger) in str(e.value)
    assert type(e.value) is AuthenticationError


def test_keys_the_client_may_not_use(world, tls):
    d, addr, key = tls
    os.chmod(key, 0o644)
    with pytest.raises(AuthenticationError) as e:
        tls_client(world, addr, identity_file=key, host_key_checking="accept-new").sessions()
    assert "has mode 644, open to others" in str(e.value)
    enc, enc_pub = world.keygen("enc", passphrase="s3cret")
    with pytest.raises(AuthenticationError) as e:
        tls_client(world, addr, identity_file=enc, host_key_checking="accept-new").sessions()
    assert "protected by a passphrase and ssh-agent does not hold it" in str(e.value)
    assert "ssh-add" in str(e.value)
    # No key at all: nothing in HOME/.ssh and no agent.
    with pytest.raises(AuthenticationError) as e:
        tls_client(world, addr, host_key_checking="accept-new", ssh_agent=str(world.path("no-agent"))).sessions()
    assert "no SSH key to authenticate with" in str(e.value)


def test_login_with_ssh_agent(world, monkeypatch):
    enc, enc_pub = world.keygen("agentkey", passphrase="s3cret")
    d = world.daemon()
    d.authorize([enc_pub])
    addr = d.start(listen="127.0.0.1:0")
    agent = world.start_agent()
    world.ssh_add(agent, enc, passphrase="s3cret")
    monkeypatch.setenv("SSH_AUTH_SOCK", agent)
    monkeypatch.setenv("HOME", str(world.dir))  # no ~/.ssh keys: only the agent can sign
    with tls_client(world, addr, host_key_checking="accept-new") as c:
        s = c.new_session("via-agent")
        assert c.run(s, "echo agent ok").stdout == b"agent ok\n"
    # The encrypted identity file itself works too: the agent holds its key.
    with tls_client(world, addr, identity_file=enc, host_key_checking="strict") as c:
        assert [s.name for s in c.sessions()] == ["via-agent"]
    audit = (d.state_dir / "audit.log").read_text()
    assert fingerprint_of(world.path("agentkey.pub")) in audit


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_rsa_and_ecdsa_keys_log_in(world, kind):
    key, pub = world.keygen(f"k{kind}", kind=kind)
    d = world.daemon()
    d.authorize([pub])
    addr = d.start(listen="127.0.0.1:0")
    with tls_client(world, addr, identity_file=key, host_key_checking="accept-new") as c:
        assert c.run(c.new_session(kind), f"echo {kind}").stdout == f"{kind}\n".encode()


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
def test_signatures_verify_with_ssh_keygen(world, kind):
    """The SshSig this client writes is what `ssh-keygen -Y check-novalidate` accepts."""
    key, pub = world.keygen(f"s{kind}", kind=kind)
    signer = from_file(key, [])
    assert isinstance(signer, FileSigner)
    msg = b"linger-auth-v1\0" + os.urandom(96) + b"root"
    sig = world.path(f"s{kind}.sig")
    sig.write_text(signer.sign(msg))
    check = subprocess.run(["ssh-keygen", "-Y", "check-novalidate", "-n", SIGNATURE_NAMESPACE, "-s", str(sig)],
                           input=msg, capture_output=True)
    assert check.returncode == 0, check.stderr
    assert signer.public_key_line.split()[1] == pub.split()[1]


def test_principals_from_authorized_keys(world):
    alice, alice_pub = world.keygen("alice")
    bob, bob_pub = world.keygen("bob")
    d = world.daemon()
    d.authorize([f'principal="alice" {alice_pub}', f'principal="bob" {bob_pub}'])
    addr = d.start(listen="127.0.0.1:0")
    a = tls_client(world, addr, identity_file=alice, host_key_checking="accept-new")
    b = tls_client(world, addr, home="homeB", identity_file=bob, host_key_checking="accept-new")
    try:
        assert a.welcome.principal == "alice" and b.welcome.principal == "bob"
        mine = a.new_session("mine")
        assert [s.name for s in b.sessions()] == []
        from linger_client import NotFoundError

        with pytest.raises(NotFoundError):
            b.connect_session(mine.instance_id)
        a.remove_session(mine)
    finally:
        a.close()
        b.close()


def test_computer_names_are_parsed_as_the_cli_parses_them(world):
    home = ClientHome.at(world.path("homeA"))
    c = Client("tls://ops@[::1]:7000", home=home)
    assert (c.target.host, c.target.port, c.user) == ("::1", 7000, "ops")
    assert Client("web01", home=home).target.port == 5990
    for bad in ("web01:0", "web01:x", "-oops", "a b", "@h", "ssh://h"):
        with pytest.raises(UsageError):
            Client(bad, home=home)


def test_the_clis_options_file_supplies_key_and_checking(world, tls):
    """The same options.toml the CLI reads (SPEC §11): identity_file, host_key_checking."""
    d, addr, key = tls
    world.path("homeA/options.toml").write_text(
        f'identity_file = "{key}"\nhost_key_checking = "accept-new"\noperation_timeout = "90s"\n'
    )
    with tls_client(world, addr) as c:
        assert c.operation_timeout == 90
        assert c.run(c.new_session("opts"), "echo from-options").stdout == b"from-options\n"
    world.path("homeA/options.toml").write_text("host_key_checking = \"sometimes\"\n")
    with pytest.raises(UsageError):
        tls_client(world, addr)
