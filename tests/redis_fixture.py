"""Real `redis-server` processes for tests: a standalone server, a 3-node cluster on loopback,
and a TLS-only server (`TlsRedisServer`, certificates from a throwaway CA made with the
`openssl` command line).

`make test` installs Debian's redis-server when it is missing; never a mock of Redis.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode


def free_port(max_port: int = 65535) -> int:
    """A free loopback port; cluster nodes need port + 10000 (their bus port) to be valid too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port <= max_port:
            return port


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"redis-server did not start on port {port}")


@dataclass
class RedisServer:
    """One redis-server on 127.0.0.1; `stop()` and `start()` to simulate an outage."""

    port: int = field(default_factory=free_port)
    cluster: bool = False
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="modelyard-redis-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        args = [exe, *self._listen_args(), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--protected-mode", "no"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file",
                     str(self.dir / f"nodes-{self.port}.conf"), "--cluster-node-timeout", "2000"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _listen_args(self) -> list[str]:
        return ["--port", str(self.port)]

    def _cli_args(self) -> list[str]:
        return ["-p", str(self.port)]

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", *self._cli_args(), *args], capture_output=True,
                             text=True, timeout=30, check=False)
        return out.stdout.strip()


@dataclass
class RedisCluster:
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0?cluster=1"

    def start(self, n: int = 3) -> "RedisCluster":
        self.nodes = [RedisServer(port=free_port(55535), cluster=True).start() for _ in range(n)]
        addrs = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if "cluster_state:ok" in self.nodes[0].cli("cluster", "info"):
                return self
            time.sleep(0.05)
        raise RuntimeError("redis cluster did not become ready")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# ----------------------------------------------------------------------------- TLS


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if not exe:
        raise RuntimeError("the TLS Redis tests need the openssl command (Debian: openssl)")
    out = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {out.stderr.strip()}")


@dataclass(frozen=True)
class TestCA:
    """A throwaway certificate authority: its certificate and private key (PEM files)."""

    __test__ = False  # not a pytest test class

    cert: Path
    key: Path

    @classmethod
    def create(cls, where: Path, name: str) -> TestCA:
        """A self-signed CA valid for two days, `name`.crt and `name`.key in `where`."""
        cert, key = where / f"{name}.crt", where / f"{name}.key"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
                 "-subj", f"/CN=Modelyard test CA {name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-addext", "subjectKeyIdentifier=hash", cwd=where)
        return cls(cert, key)

    def issue_server(self, where: Path, name: str = "server",
                     san: str = "IP:127.0.0.1,IP:::1,DNS:localhost") -> tuple[Path, Path]:
        """A server certificate for the names of `san` (subjectAltName) signed by this CA:
        (certificate, key)."""
        return self._issue(where, name, f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")

    def issue_client(self, where: Path, name: str = "client") -> tuple[Path, Path]:
        """A client certificate (mutual TLS) signed by this CA: (certificate, key)."""
        return self._issue(where, name, "extendedKeyUsage=clientAuth\n")

    def _issue(self, where: Path, name: str, extensions: str) -> tuple[Path, Path]:
        cert, key, csr = where / f"{name}.crt", where / f"{name}.key", where / f"{name}.csr"
        ext = where / f"{name}.ext"
        ext.write_text("basicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\n"
                       "subjectKeyIdentifier=hash\n"
                       "authorityKeyIdentifier=keyid,issuer\n" + extensions)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
                 cwd=where)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
                 cwd=where)
        return cert, key


@dataclass
class TlsRedisServer(RedisServer):
    """A redis-server that speaks TLS only (`--port 0 --tls-port PORT`), with a certificate for
    `san` (default 127.0.0.1, ::1 and localhost) from a throwaway `TestCA` made in its
    directory, optionally `requirepass`, and with `auth_clients` a client certificate from
    that CA required of every client (`client_cert`, `client_key`: one for the tests).

    `url` is the `rediss://` URL a client that trusts that CA uses (`?ssl_ca_certs=`)."""

    password: str | None = None
    san: str = "IP:127.0.0.1,IP:::1,DNS:localhost"
    auth_clients: bool = False
    ca: TestCA | None = None
    cert: Path | None = None
    key: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def __post_init__(self) -> None:
        self.ca = TestCA.create(self.dir, "ca")
        self.cert, self.key = self.ca.issue_server(self.dir, san=self.san)
        if self.auth_clients:
            self.client_cert, self.client_key = self.ca.issue_client(self.dir)

    def url_with(self, ca_certs: Path | None = None, **query: str) -> str:
        """The `rediss://` URL, trusting `ca_certs` (default: this server's CA)."""
        assert self.ca is not None
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        params = {"ssl_ca_certs": str(ca_certs or self.ca.cert), **query}
        return f"rediss://{auth}127.0.0.1:{self.port}/0?{urlencode(params)}"

    @property
    def url(self) -> str:
        return self.url_with()

    def _listen_args(self) -> list[str]:
        assert self.ca is not None
        args = ["--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
                "--tls-ca-cert-file", str(self.ca.cert),
                "--tls-auth-clients", "yes" if self.auth_clients else "no"]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def _cli_args(self) -> list[str]:
        assert self.ca is not None
        args = ["-p", str(self.port), "--tls", "--cacert", str(self.ca.cert)]
        if self.client_cert and self.client_key:
            args += ["--cert", str(self.client_cert), "--key", str(self.client_key)]
        if self.password:
            args += ["--no-auth-warning", "-a", self.password]
        return args


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")
