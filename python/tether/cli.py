"""The `tether` command line."""
from __future__ import annotations

import argparse
import signal
import sys
import threading


def _ns(args) -> int:
    from .naming import NameServer

    ns = NameServer(args.host, args.port, secret=args.secret, sweep_interval=args.sweep_interval)
    print(f"tether name server listening on {ns.address}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    ns.close()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tether", description="tether: distributed programming for Python")
    commands = parser.add_subparsers(dest="command", required=True)
    ns = commands.add_parser("ns", help="run a name server")
    ns.add_argument("--host", default="127.0.0.1")
    ns.add_argument("--port", type=int, default=9090)
    ns.add_argument("--secret", default=None, help="shared secret (default: $TETHER_SECRET)")
    ns.add_argument("--sweep-interval", type=float, default=10.0, help="seconds between liveness checks")
    ns.set_defaults(run=_ns)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
