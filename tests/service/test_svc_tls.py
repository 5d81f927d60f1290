"""``serve --tls-certificate-key-file`` puts every port behind TLS: the wire port (pymongo
and real mongosh, pinned and newest, with ``--tls --tlsCAFile``), ``--metrics-port`` and
the console. A plain-TCP client gets nothing and cannot stall the service; with
``--tls-ca-file`` a client without a certificate that CA signed is refused. Certificates
are made for each test by the ``openssl`` command line."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pymongo
import pytest
from svc_secure import ROOT, command, connect, serve_args, write_connections

from tests.service.svc_helpers import Service, free_port, mongosh_path, start_service

USERS = "alice:s3cret-Pa55\n"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, both
    signed by the CA; ``server``/``client`` are PEM files holding certificate and key."""
    d = tmp_path / "certs"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mqlflow test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name, ext in [("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")]:
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)
        (d / f"{name}.pem").write_text((d / f"{name}.crt").read_text() + (d / f"{name}.key").read_text())
    return {"ca": d / "ca.pem", "server": d / "server.pem", "client": d / "client.pem"}


def _tls_client(port: int, ca: Path, **kw: Any) -> pymongo.MongoClient[dict[str, Any]]:
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    return pymongo.MongoClient(
        f"mongodb://127.0.0.1:{port}/", tls=True, tlsCAFile=str(ca), directConnection=True,
        username="alice", password="s3cret-Pa55", **kw,
    )


def _start(tmp: Path, certs: dict[str, Path], *extra: str) -> Service:
    users = tmp / "users.txt"
    users.write_text(USERS)
    return start_service(tmp, "--users", str(users), "--tls-certificate-key-file", str(certs["server"]), *extra)


def test_every_port_speaks_tls(tmp_path: Path, certs: dict[str, Path]) -> None:
    mport = free_port()
    svc = _start(tmp_path, certs, "--metrics-port", str(mport), "--http-port", "0")
    try:
        with _tls_client(svc.port, certs["ca"]) as c:
            assert c.admin.command({"listStreamProcessors": 1})["streamProcessors"] == []

        # Plain TCP: the TLS handshake fails, the client gets no reply, the service goes on.
        sock = connect(svc.port, timeout=5)
        try:
            with pytest.raises((ConnectionError, TimeoutError, OSError)):
                command(sock, {"hello": 1})
        finally:
            sock.close()
        plain: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            f"mongodb://127.0.0.1:{svc.port}/", directConnection=True, serverSelectionTimeoutMS=1500)
        with plain, pytest.raises(pymongo.errors.ServerSelectionTimeoutError):
            plain.admin.command("ping")

        # mongosh, pinned and newest, with the shell's own TLS options.
        for which in ("pinned", "newest"):
            r = subprocess.run(
                [mongosh_path(which), f"mongodb://127.0.0.1:{svc.port}/", "--quiet", "--norc", "--tls",
                 "--tlsCAFile", str(certs["ca"]), "-u", "alice", "-p", "s3cret-Pa55",
                 "--eval", "print(db.adminCommand({listStreamProcessors: 1}).streamProcessors.length)"],
                capture_output=True, text=True, timeout=120, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
            )
            assert (r.returncode, r.stdout, r.stderr) == (0, "0\n", ""), which

        # The metrics endpoint over HTTPS, with its login; plain HTTP gets no answer.
        ctx = ssl.create_default_context(cafile=str(certs["ca"]))
        req = urllib.request.Request(f"https://127.0.0.1:{mport}/metrics")
        req.add_header("Authorization", "Basic " + base64.b64encode(b"alice:s3cret-Pa55").decode())
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            assert resp.status == 200
            assert b"# TYPE mqlflow_processor_running gauge" in resp.read()
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5)

        # The console over HTTPS.
        assert svc.console_url is not None and svc.console_url.startswith("https://")
        with urllib.request.urlopen(svc.console_url + "login", timeout=10, context=ctx) as resp:
            assert resp.status == 200

        # After all that, the wire port still answers.
        with _tls_client(svc.port, certs["ca"]) as c:
            assert c.admin.command("ping") == {"ok": 1.0}
        assert "(TLS)" in svc.log.read_text()
    finally:
        svc.stop()


def test_tls_ca_file_requires_a_client_certificate(tmp_path: Path, certs: dict[str, Path]) -> None:
    svc = _start(tmp_path, certs, "--tls-ca-file", str(certs["ca"]))
    try:
        with _tls_client(svc.port, certs["ca"], serverSelectionTimeoutMS=2000) as c, pytest.raises(
            pymongo.errors.ServerSelectionTimeoutError
        ):
            c.admin.command("ping")
        with _tls_client(svc.port, certs["ca"], tlsCertificateKeyFile=str(certs["client"])) as c:
            assert c.admin.command({"listStreamProcessors": 1})["streamProcessors"] == []
    finally:
        svc.stop()


def test_a_stalled_tls_handshake_is_closed_after_the_prelogin_idle_timeout(tmp_path: Path, certs: dict[str, Path]) -> None:
    svc = _start(tmp_path, certs, "--prelogin-idle-timeout", "2")
    try:
        stalled = socket.create_connection(("127.0.0.1", svc.port), timeout=15)
        stalled.settimeout(15)
        try:
            assert stalled.recv(1) == b""  # closed by the service, not by us
        finally:
            stalled.close()
        with _tls_client(svc.port, certs["ca"]) as c:
            assert c.admin.command("ping") == {"ok": 1.0}
    finally:
        svc.stop()


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing", "mqlflow: --tls-certificate-key-file {path}: cannot load a certificate and its private key from it "
                    "(FileNotFoundError: [Errno 2] No such file or directory); it must be one PEM file holding both\n"),
        ("cert-only", "mqlflow: --tls-certificate-key-file {path}: cannot load a certificate and its private key from it "),
    ],
)
def test_unusable_tls_files_stop_the_start(tmp_path: Path, certs: dict[str, Path], which: str, message: str) -> None:
    path = tmp_path / "nope.pem" if which == "missing" else certs["ca"]
    r = subprocess.run(serve_args(tmp_path / "state", write_connections(tmp_path), "--tls-certificate-key-file", str(path)),
                       capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith(message.format(path=path)), r.stderr
