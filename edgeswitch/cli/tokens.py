"""`edgeswitch tokens`: the device token file `serve-cloud --token-file` reads (only hashes in
it; a new token is printed once). The server picks up a change within a second, no restart."""

from __future__ import annotations

import sys


def cmd_tokens_add(args) -> int:
    from edgeswitch.serving.credentials import add_device

    token = add_device(args.file, args.name)
    print(f"added device {args.name} to {args.file}; its token (shown once, give it to the "
          "device's --token-file):", file=sys.stderr)
    print(token)
    return 0


def cmd_tokens_revoke(args) -> int:
    from edgeswitch.serving.credentials import revoke_device

    revoke_device(args.file, args.name)
    print(f"revoked device {args.name} in {args.file}", file=sys.stderr)
    return 0


def cmd_tokens_list(args) -> int:
    from edgeswitch.serving.credentials import list_devices

    for name, created in list_devices(args.file).items():
        print(f"{name}\t{created}")
    return 0


def add_parsers(sub, add_common) -> None:
    p = sub.add_parser(
        "tokens", help="per-device bearer tokens for serve-cloud --token-file",
        description="Manage a device token file: one named token per device, stored as a "
        "SHA-256 hash. `add` prints the new token once (stdout); `revoke` removes a device. "
        "A running serve-cloud re-reads the file within a second (or on SIGHUP).")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, func, what in (("add", cmd_tokens_add, "issue a token for a new device"),
                             ("revoke", cmd_tokens_revoke, "remove a device's token"),
                             ("list", cmd_tokens_list, "the devices and when they were added")):
        a = actions.add_parser(name, help=what, description=what)
        if name != "list":
            a.add_argument("name", help="device name (letters, digits, '.', '_', '-')")
        a.add_argument("--file", required=True, help="the device token file")
        a.set_defaults(func=func)
