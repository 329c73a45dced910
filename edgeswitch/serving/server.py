"""Run the cloud app under uvicorn, in this process (`serve`) or as a child (`ServerProcess`).

`ServerProcess` is what `edgeswitch demo`, the tests and the load benchmark use: a real server
in its own process on a free loopback port, which a test can SIGKILL and restart on the same
port. The token goes to the child in a 0600 file, never on its command line (visible in `ps`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from edgeswitch.cloud.tokens import TOKEN_ENV
from edgeswitch.config import ServeConfig
from edgeswitch.errors import EdgeSwitchError


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it each small response waits ~40 ms for a delayed ACK (Nagle)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart on the same port
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EdgeSwitchError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def serve(app, host: str = "127.0.0.1", port: int = 8000, ssl_certfile: str | None = None,
          ssl_keyfile: str | None = None, ready_file: str | None = None,
          log_level: str = "warning", ssl_ca_certs: str | None = None) -> None:
    """Serve `app` until SIGINT/SIGTERM. `port=0` picks a free port; `ready_file` receives it.
    `ssl_ca_certs`: mutual TLS, every client must show a certificate that CA signed (the
    handshake fails otherwise, before any HTTP)."""
    import uvicorn

    check_tls(ssl_certfile, ssl_keyfile, ssl_ca_certs)
    sock = bind_socket(host, port)
    tls = {"ssl_ca_certs": ssl_ca_certs, "ssl_cert_reqs": ssl.CERT_REQUIRED} if ssl_ca_certs \
        else {}
    config = uvicorn.Config(app, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                            log_level=log_level, access_log=False, timeout_graceful_shutdown=2,
                            **tls)
    server = uvicorn.Server(config)
    if ready_file:
        tmp = Path(ready_file).with_suffix(".tmp")
        tmp.write_text(json.dumps({"port": sock.getsockname()[1], "pid": os.getpid()}))
        tmp.replace(ready_file)
    server.run(sockets=[sock])


def check_tls(certfile: str | None, keyfile: str | None, ca_certs: str | None = None) -> None:
    """The TLS files make sense together and exist (a clear error, not uvicorn's traceback)."""
    if bool(certfile) != bool(keyfile):
        raise EdgeSwitchError("TLS needs both --ssl-certfile and --ssl-keyfile")
    if ca_certs and not certfile:
        raise EdgeSwitchError("--tls-ca (client certificates) needs TLS: give --ssl-certfile "
                              "and --ssl-keyfile too")
    for f in (certfile, keyfile, ca_certs):
        if f and not Path(f).is_file():
            raise EdgeSwitchError(f"TLS file not found: {f}")
    if ca_certs:
        try:
            ssl.create_default_context(cafile=ca_certs)
        except ssl.SSLError as exc:
            raise EdgeSwitchError(f"--tls-ca {ca_certs} is not a PEM certificate: {exc}") \
                from None


class ServerProcess:
    """`edgeswitch serve-cloud` as a child process on loopback; a context manager."""

    def __init__(self, model_path: str | Path, cfg: ServeConfig | None = None,
                 token: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 faults: tuple[str, ...] = (), tls: tuple[str, str] | None = None,
                 start_timeout_s: float = 120.0, server: str | None = None,
                 extra_args: tuple[str, ...] = (), token_file: str | Path | None = None,
                 tls_ca: str | None = None,
                 client_cert: tuple[str, str] | None = None) -> None:
        self.model_path = str(model_path)
        self.cfg = cfg or ServeConfig()
        if server is not None:  # a shorthand for cfg.server
            self.cfg = replace(self.cfg, server=server)
        self.token, self.host, self.port = token, host, port
        self.faults, self.tls = tuple(faults), tls
        self.start_timeout_s = start_timeout_s
        self.extra_args = tuple(extra_args)  # flags after the config's, e.g. --log-level info
        # a device token file (serving.credentials) instead of one `token`; `tls_ca`: mutual
        # TLS, with `client_cert` (cert, key) the certificate this object's own checks show
        self.token_file, self.tls_ca, self.client_cert = token_file, tls_ca, client_cert
        self.proc: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="edgeswitch-serve-")

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def command(self, ready: Path) -> list[str]:
        cmd = [sys.executable, "-m", "edgeswitch", "serve-cloud", "--cloud", self.model_path,
               "--host", self.host, "--port", str(self.port), "--ready-file", str(ready)]
        for key, value in asdict(self.cfg).items():
            if isinstance(value, list):  # a list flag takes its items (none: left out)
                cmd += [f"--{key.replace('_', '-')}", *map(str, value)] if value else []
            else:
                cmd += [f"--{key.replace('_', '-')}", str(value)]
        if self.token is not None:
            tf = Path(self._dir.name) / "token"
            tf.write_text(self.token)
            tf.chmod(0o600)
            cmd += ["--token-file", str(tf)]
        elif self.token_file is not None:
            cmd += ["--token-file", str(self.token_file)]
        for f in self.faults:
            cmd += ["--fault", f]
        if self.tls:
            cmd += ["--ssl-certfile", self.tls[0], "--ssl-keyfile", self.tls[1]]
        if self.tls_ca:
            cmd += ["--tls-ca", self.tls_ca]
        return cmd + list(self.extra_args)

    def start(self) -> ServerProcess:
        import httpx

        ready = Path(self._dir.name) / "ready.json"
        ready.unlink(missing_ok=True)
        log = open(Path(self._dir.name) / "server.log", "ab")  # noqa: SIM115 - child owns it
        # the child must not pick up a token from this shell when none was given
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV} | {"PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.command(ready), stdout=log, stderr=subprocess.STDOUT,
                                     env=env)
        log.close()
        t_end = time.monotonic() + self.start_timeout_s
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise EdgeSwitchError(f"cloud server exited with code {self.proc.returncode}:\n"
                                      + self.log()[-2000:])
            if ready.exists():
                self.port = json.loads(ready.read_text())["port"]
                try:
                    verify = self.verify()
                    if httpx.get(self.url + "/healthz", timeout=1, verify=verify).is_success:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise EdgeSwitchError(f"cloud server did not start within {self.start_timeout_s:.0f} s:\n"
                              + self.log()[-2000:])

    def verify(self) -> ssl.SSLContext | bool:
        """How a client of this server trusts it (and shows its client certificate)."""
        if not self.tls:
            return True
        ctx = ssl.create_default_context(cafile=self.tls[0])
        if self.client_cert:
            ctx.load_cert_chain(*self.client_cert)
        return ctx

    def log(self) -> str:
        path = Path(self._dir.name) / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the process dies mid-request, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._dir.cleanup()
