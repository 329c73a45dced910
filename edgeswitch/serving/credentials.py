"""Which device a bearer token belongs to: the server's credential store.

A device token file holds one JSON object per line, `{"device": NAME, "sha256": HEX}` (plus a
`created` time), under a header comment; `edgeswitch tokens add NAME --file F` writes an entry
and prints the new token once, `tokens revoke NAME --file F` removes it. Only hashes are stored.
SHA-256 (not scrypt) because the tokens are 256-bit random strings made by `tokens add`: no
dictionary attack can reach them, and a slow hash on every request would hand anyone who can
reach the server a cheap way to burn its CPU.

A plain token file (one word on its first line, what the edge's `--token-file` reads) or
`$EDGESWITCH_TOKEN` is one device named `default`, so a single shared token keeps working.

A store made from a file re-reads it when its mtime, size or inode changes (looked at no more
often than every `POLL_S` seconds, on the request path) or after `SIGHUP`; a file that no longer
parses keeps the last good set (and says so on stderr), so a bad edit never opens the server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeswitch.cloud.tokens import resolve_token
from edgeswitch.errors import EdgeSwitchError

HEADER = ("# edgeswitch device tokens: one JSON object per line (device, sha256 of its token);"
          " edit with `edgeswitch tokens add/revoke`")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED = frozenset({"other", "unauthenticated"})  # labels the metrics use themselves
DEFAULT_DEVICE = "default"
POLL_S = 0.5
log = logging.getLogger("edgeswitch.serving")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME.fullmatch(name) or name in RESERVED:
        raise EdgeSwitchError(f"bad device name {name!r}: 1-64 letters, digits, '.', '_' or "
                              f"'-', starting with a letter or digit, not {sorted(RESERVED)}")
    return name


def is_device_file(text: str) -> bool:
    """A device token file starts with its header or a JSON object; anything else is a plain
    token file (the token on its first line)."""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return first.startswith(("{", HEADER[:26]))


def parse_devices(text: str, where: str) -> dict[str, str]:
    """device name -> sha256 hex, from a device token file's text."""
    devices: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = json.loads(line)
            name, hexdigest = entry["device"], entry["sha256"]
        except (ValueError, KeyError, TypeError):
            raise EdgeSwitchError(f"{where} line {n}: not a device entry "
                                  '{"device": NAME, "sha256": HEX}') from None
        if not isinstance(name, str) or not isinstance(hexdigest, str) \
                or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
            raise EdgeSwitchError(f"{where} line {n}: sha256 must be 64 lower-case hex digits")
        try:
            check_name(name)
        except EdgeSwitchError as exc:
            raise EdgeSwitchError(f"{where} line {n}: {exc}") from None
        if name in devices:
            raise EdgeSwitchError(f"{where} line {n}: device {name!r} is listed twice")
        if hexdigest in devices.values():
            raise EdgeSwitchError(f"{where} line {n}: device {name!r} has the same token as "
                                  "another device")
        devices[name] = hexdigest
    return devices


def read_devices(path: str | Path) -> dict[str, str]:
    """The devices of a token file of either kind (a plain one: the device `default`)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise EdgeSwitchError(f"cannot read token file {path}: {exc.strerror}") from None
    if is_device_file(text):
        return parse_devices(text, f"token file {path}")
    return {DEFAULT_DEVICE: digest(resolve_token(path))}


@dataclass
class Credentials:
    """Device name by token digest; `device(token)` is the name or None. Picklable (Ray Serve
    replicas get a copy, each polling the file itself)."""

    devices: dict[str, str] = field(default_factory=dict)  # name -> sha256 hex
    path: str | None = None       # the file to re-read when it changes
    _stamp: tuple | None = None
    _checked: float = 0.0
    _stale: bool = False

    @classmethod
    def single(cls, token: str) -> Credentials:
        """One shared token: the device `default`."""
        return cls({DEFAULT_DEVICE: digest(token)})

    @classmethod
    def from_file(cls, path: str | Path) -> Credentials:
        creds = cls(path=str(path))
        creds._stamp = creds._stat()
        creds.devices = read_devices(path)
        return creds

    def device(self, token: str) -> str | None:
        """The device `token` belongs to, or None. Every entry is compared, in constant time
        (hmac.compare_digest), whether or not an earlier one matched."""
        self.refresh()
        presented = digest(token).encode()
        found = None
        for name, hexdigest in self.devices.items():
            if hmac.compare_digest(presented, hexdigest.encode()):
                found = name
        return found

    def names(self) -> list[str]:
        return list(self.devices)

    def mark_stale(self, *_signal) -> None:
        """Re-read the file on the next request (the SIGHUP handler)."""
        self._stale = True

    def refresh(self, now: float | None = None) -> None:
        """Re-read the file if it changed (looked at every POLL_S at most) or after SIGHUP."""
        if self.path is None:
            return
        now = time.monotonic() if now is None else now
        if not self._stale and now - self._checked < POLL_S:
            return
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp and not self._stale:
            return
        self._stale, self._stamp = False, stamp
        try:
            devices = read_devices(self.path)
        except EdgeSwitchError as exc:  # keep serving the last good set, and say so
            log.warning("edgeswitch: %s; keeping the %d devices loaded before", exc,
                        len(self.devices))
            return
        added, removed = devices.keys() - self.devices.keys(), self.devices.keys() - devices.keys()
        changed = {n for n in devices.keys() & self.devices.keys() if devices[n] != self.devices[n]}
        self.devices = devices
        log.warning("edgeswitch: reloaded %s: %d devices (added %s, revoked %s, new token %s)",
                    self.path, len(devices), sorted(added) or "none", sorted(removed) or "none",
                    sorted(changed) or "none")

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def __getstate__(self) -> dict:
        return {"devices": self.devices, "path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["devices"], state["path"])
        self._stamp = self._stat()


def resolve_credentials(token_file: str | None) -> Credentials | None:
    """The server's credentials: a token file of either kind, else `$EDGESWITCH_TOKEN` (one
    device), else None (no auth)."""
    if token_file is not None:
        return Credentials.from_file(token_file)
    token = resolve_token(None)
    return None if token is None else Credentials.single(token)


# --- editing a device token file (`edgeswitch tokens`) ---

def _write(path: Path, devices: dict[str, str], created: dict[str, str]) -> None:
    """The whole file, replaced atomically (a reader sees the old or the new, never half),
    readable by its owner only."""
    lines = [HEADER] + [json.dumps({"device": n, "sha256": h, "created": created.get(n, "")})
                        for n, h in devices.items()]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _load_for_edit(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    if not path.exists():
        return {}, {}
    text = path.read_text()
    if text.strip() and not is_device_file(text):
        raise EdgeSwitchError(f"{path} holds a plain token, not device tokens; start a new file")
    devices = parse_devices(text, f"token file {path}")
    created = {}
    for line in text.splitlines():
        if line.strip().startswith("{"):
            entry = json.loads(line)
            created[entry["device"]] = str(entry.get("created", ""))
    return devices, created


def add_device(path: str | Path, name: str) -> str:
    """A new device's token (shown once; only its hash is written)."""
    path = Path(path)
    devices, created = _load_for_edit(path)
    check_name(name)
    if name in devices:
        raise EdgeSwitchError(f"device {name!r} already has a token in {path}; revoke it first "
                              "to issue a new one")
    token = secrets.token_urlsafe(32)
    devices[name] = digest(token)
    created[name] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write(path, devices, created)
    return token


def revoke_device(path: str | Path, name: str) -> None:
    path = Path(path)
    if not path.exists():
        raise EdgeSwitchError(f"token file not found: {path}")
    devices, created = _load_for_edit(path)
    if name not in devices:
        raise EdgeSwitchError(f"no device {name!r} in {path}; it has {sorted(devices)}")
    del devices[name]
    _write(path, devices, created)


def list_devices(path: str | Path) -> dict[str, str]:
    """device -> when its token was created."""
    path = Path(path)
    if not path.exists():
        raise EdgeSwitchError(f"token file not found: {path}")
    devices, created = _load_for_edit(path)
    return {n: created.get(n, "") for n in devices}
