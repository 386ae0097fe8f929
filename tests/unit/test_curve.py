"""shared.wire.curve against raw zmq sockets over tcp://127.0.0.1: who gets through, who is
refused, what is logged (never a key), and what a bad keys directory says."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import zmq
import zmq.auth

from shared.runtime.config import ConfigError
from shared.wire import curve
from shared.wire.keys import create_pairs
from tests.support.waiting import wait_until

NAMES = ["primary", "s1", "s2"]


@pytest.fixture
def keys(tmp_path) -> Path:
    create_pairs(tmp_path, NAMES)
    return tmp_path


def pair(keys: Path, name: str) -> tuple[bytes, bytes]:
    return zmq.auth.load_certificate(keys / f"{name}.key_secret")


def every_key(keys: Path) -> list[bytes]:
    return [key for name in NAMES for key in pair(keys, name)]


@pytest.fixture
def server(ctx, keys):
    """s1's ROUTER, a started CurveServer, bound on 127.0.0.1."""
    channel = curve.load_server(str(keys), "s1", "primary")
    channel.start(ctx)
    router = ctx.socket(zmq.ROUTER)
    channel.secure(router)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    yield router, f"tcp://127.0.0.1:{port}"
    router.close()
    channel.stop()


def dealer(ctx, endpoint: str, public=None, secret=None, server_key=None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    if public is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_key
    sock.connect(endpoint)
    sock.send(b"hello")
    return sock


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name in ("shared.curve.refused", "shared.curve.handshake")
            and r.levelno == logging.WARNING]


def test_the_primary_s_key_gets_through(ctx, keys, server):
    router, endpoint = server
    public, secret = pair(keys, "primary")
    client = dealer(ctx, endpoint, public, secret, pair(keys, "s1")[0])
    assert router.poll(5000), "the primary's frame should arrive"
    assert router.recv_multipart()[1] == b"hello"
    client.close()


@pytest.mark.parametrize("who", ["no key", "a random key", "s2's own key", "s1's own key"])
def test_any_other_client_is_refused_with_its_address_and_no_key_in_the_log(
    ctx, keys, server, caplog, who
):
    caplog.set_level(logging.DEBUG)
    router, endpoint = server
    s1_public = pair(keys, "s1")[0]
    if who == "no key":
        client = dealer(ctx, endpoint)
    else:
        public, secret = {
            "a random key": zmq.curve_keypair(),
            "s2's own key": pair(keys, "s2"),
            "s1's own key": pair(keys, "s1"),
        }[who]
        client = dealer(ctx, endpoint, public, secret, s1_public)
    lines = wait_until(lambda: warnings(caplog), 5, what="the refusal to be logged")
    assert not router.poll(1000), "a refused peer's frame must never reach the ROUTER"
    if who == "no key":
        assert "does not use CURVE" in lines[0]
    else:
        assert "refused a replication peer at 127.0.0.1" in lines[0]
        assert "primary.key" in lines[0]
    assert not any(key.decode() in caplog.text for key in every_key(keys))
    client.close()


def test_a_client_expecting_another_server_key_is_refused_and_the_client_says_so(
    ctx, keys, server, caplog
):
    router, endpoint = server
    primary = curve.load_client(str(keys), "primary", ["s1"])
    # The primary holds s2's public key where s1's should be.
    wrong = curve.CurveClient(keys, "primary", *pair(keys, "primary"), {"s1": pair(keys, "s2")[0]})
    wrong.start(ctx)
    sock = ctx.socket(zmq.DEALER)
    wrong.secure(sock, "s1")
    sock.connect(endpoint)
    sock.send(b"hello")

    def both_sides_logged():
        lines = warnings(caplog)
        server_side = [line for line in lines if "not for this node's key (s1.key)" in line]
        client_side = [line for line in lines if "no CURVE handshake with s1" in line]
        return server_side and client_side

    wait_until(both_sides_logged, 5, what="both ends to log the failed handshake")
    assert not router.poll(1000)
    assert not any(key.decode() in caplog.text for key in every_key(keys))
    sock.close()
    wrong.stop()
    assert repr(primary) == f"CurveClient({keys}, primary)"  # no key in its repr either


def test_refusals_are_rate_limited(ctx, keys, caplog, monkeypatch):
    monkeypatch.setattr(curve, "REFUSAL_LOG_INTERVAL_S", 0.3)
    channel = curve.load_server(str(keys), "s2", "primary")
    channel.start(ctx)
    router = ctx.socket(zmq.ROUTER)
    channel.secure(router)
    endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    # This client retries its failing handshake every 100 ms.
    public, secret = pair(keys, "primary")
    client = dealer(ctx, endpoint, public, secret, pair(keys, "s1")[0])
    wait_until(lambda: any("similar lines suppressed" in line for line in warnings(caplog)), 10,
               what="a line that counts the suppressed ones")
    client.close()
    router.close()
    channel.stop()


def test_a_client_channel_secures_a_dealer_the_real_secondary_admits(ctx, keys, server):
    router, endpoint = server
    channel = curve.load_client(str(keys), "primary", ["s1", "s2"])
    channel.start(ctx)
    sock = ctx.socket(zmq.DEALER)
    channel.secure(sock, "s1")
    sock.connect(endpoint)
    sock.send(b"through")
    assert router.poll(5000)
    identity, frame = router.recv_multipart()
    router.send_multipart([identity, b"back"])
    assert sock.poll(5000) and sock.recv() == b"back"
    sock.close()
    channel.stop()


def test_without_a_directory_the_channel_is_plain_and_says_so_once(ctx, caplog):
    channel = curve.load_server("", "s1", "primary")
    assert channel is curve.PLAIN and curve.load_client(None, "primary", ["s1"]) is curve.PLAIN
    channel.start(ctx)
    lines = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and "unauthenticated" in lines[0].getMessage()


def config_error(load) -> str:
    with pytest.raises(ConfigError) as error:
        load()
    message = str(error.value)
    assert message.startswith("REPLICATION_KEYS_DIR") and "\n" not in message
    return message


def test_a_missing_own_secret_key_names_the_file(keys):
    (keys / "s1.key_secret").unlink()
    message = config_error(lambda: curve.load_server(str(keys), "s1", "primary"))
    assert f"{keys / 's1.key_secret'} is missing" in message


def test_a_missing_peer_key_names_the_file(keys):
    (keys / "s2.key").unlink()
    message = config_error(lambda: curve.load_client(str(keys), "primary", ["s1", "s2"]))
    assert f"{keys / 's2.key'} is missing" in message


def test_each_role_reads_only_its_own_secret_and_its_peers_public_files(keys):
    for name in NAMES:
        if name != "s1":
            (keys / f"{name}.key_secret").unlink()
    (keys / "s2.key").unlink()
    curve.load_server(str(keys), "s1", "primary")  # s1.key_secret and primary.key suffice


@pytest.mark.parametrize("content, complaint", [
    ("not a certificate\n", "no zmq certificate"),
    ('curve\n    public-key = "short"\n', "no valid public key"),
])
def test_a_malformed_public_file_is_named(keys, content, complaint):
    (keys / "primary.key").write_text(content)
    message = config_error(lambda: curve.load_server(str(keys), "s1", "primary"))
    assert str(keys / "primary.key") in message and complaint in message


def test_a_secret_file_without_a_secret_key_or_with_a_foreign_one_is_named(keys):
    secret_path = keys / "s1.key_secret"
    (keys / "s1.key").replace(secret_path)  # the public file where the secret one belongs
    assert "holds no valid secret key" in config_error(lambda: curve.load_server(str(keys), "s1", "primary"))
    secret_path.write_text((keys / "s2.key_secret").read_text().replace(
        pair(keys, "s2")[0].decode(), pair(keys, "primary")[0].decode()))
    assert "no pair" in config_error(lambda: curve.load_server(str(keys), "s1", "primary"))


def test_a_directory_that_is_no_directory_is_named(tmp_path):
    message = config_error(lambda: curve.load_server(str(tmp_path / "nowhere"), "s1", "primary"))
    assert "is not a directory" in message


def test_curve_missing_from_libzmq_is_named(keys, monkeypatch):
    monkeypatch.setattr(zmq, "has", lambda capability: capability != "curve")
    message = config_error(lambda: curve.load_server(str(keys), "s1", "primary"))
    assert "without CURVE support" in message
