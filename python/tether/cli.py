"""The `tether` command line."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time


def _tls_from(args):
    """The tether.TLSConfig that --tls-cert/--tls-key/--tls-ca/--tls-mutual describe, or None."""
    from .security import TLSConfig

    if not (args.tls_cert or args.tls_key or args.tls_ca):
        return None
    return TLSConfig(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca, mutual=args.tls_mutual)


def _add_tls_options(parser, role: str) -> None:
    parser.add_argument("--tls-cert", default=None, help=f"PEM certificate of this {role} (serves TLS)")
    parser.add_argument("--tls-key", default=None, help="PEM private key of that certificate")
    parser.add_argument("--tls-ca", default=None, help="PEM CA that signs the peers' certificates")
    parser.add_argument("--tls-mutual", action="store_true", help="refuse clients without a certificate the CA signed")


def _certs(args) -> int:
    from .security import make_certificates

    hosts = args.host or ["localhost", "127.0.0.1", "::1"]
    names = args.name or ["server", "client"]
    try:
        make_certificates(args.directory, names=names, hosts=hosts, days=args.days)
    except Exception as exc:
        print(f"tether certs: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {os.path.join(args.directory, 'ca.pem')} and, for {', '.join(names)}, NAME.pem and NAME.key "
          f"(valid for {', '.join(hosts)}, {args.days} days)")
    return 0


def _ns(args) -> int:
    from .naming import NameServer

    ns = NameServer(args.host, args.port, secret=args.secret, sweep_interval=args.sweep_interval,
                    coordination=not args.no_coordination, tls=_tls_from(args))
    served = "" if args.no_coordination else " (and tuple spaces, topics, groups)"
    print(f"tether name server{served} listening on {ns.address}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    ns.close()
    return 0


def _services(args) -> int:
    """tetherd --services-only in the foreground: the name server, tuple spaces, topics and groups."""
    from ._private import launcher

    secret = args.secret or os.environ.get("TETHER_SECRET")
    if not secret:
        print("tether services: give --secret or set TETHER_SECRET (clients authenticate with it)", file=sys.stderr)
        return 2
    # The daemon watches our end of its stdin: it stops with this process, however that ends.
    command = [launcher.tetherd_path(), "--services-only", "--host", args.host, "--port", str(args.port), "--watch-stdin",
               *launcher.tls_arguments(_tls_from(args)), *(["--state-dir", args.state_dir] if args.state_dir else [])]
    daemon = subprocess.Popen(command, env=dict(os.environ, TETHER_SECRET=secret), stdout=subprocess.PIPE,
                              stdin=subprocess.PIPE)
    ready = daemon.stdout.readline().decode()
    if not ready.startswith("TETHERD READY"):
        return daemon.wait() or 1
    address = launcher.parse_ready(ready)["address"]
    print(f"tether services (name server, tuple spaces, topics, groups) listening on {address}", flush=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: daemon.terminate())
    return daemon.wait()


def _start(args) -> int:
    from ._private import launcher

    if args.head == bool(args.address):
        print("tether start: give --head (start a cluster) or --address HOST:PORT (join one)", file=sys.stderr)
        return 2
    record = launcher.read_record()
    secret = os.environ.get("TETHER_SECRET")
    if args.address and not secret:
        # On the head's machine the record has the secret; elsewhere TETHER_SECRET must.
        secret = (record or {}).get("secret") if (record or {}).get("address") == args.address else None
        if not secret:
            print("tether start: joining a cluster needs its secret in TETHER_SECRET", file=sys.stderr)
            return 2
    if args.state_dir and args.address:
        print("tether start: --state-dir is for the head (--head), which keeps the cluster's state", file=sys.stderr)
        return 2
    if args.head and record and _alive(record.get("pid")):
        print(f"tether start: a cluster is already running at {record['address']} (tether stop first)", file=sys.stderr)
        return 1
    try:
        resources = json.loads(args.resources) if args.resources else None
        if resources is not None and not isinstance(resources, dict):
            raise ValueError("--resources must be a JSON object such as '{\"gpu\": 2}'")
        port = args.port if args.port is not None else (0 if args.address else 6380)
        info = launcher.start_detached(args.host, port, args.num_cpus, resources, args.object_store_memory,
                                       secret=secret, join=args.address, tls=_tls_from(args),
                                       state_dir=args.state_dir)
    except (ValueError, RuntimeError) as exc:
        print(f"tether start: {exc}", file=sys.stderr)
        return 1
    if args.address:
        print(f"tether node {info['node_id']} joined the cluster at {args.address}: listening at {info['address']} "
              f"(daemon pid {info['pid']}, log {info['log']}); it stops when the head stops")
        return 0
    print(f"tether cluster started at {info['address']} (daemon pid {info['pid']}, log {info['log']})")
    print("join it with tether.init(address=\"auto\") on this machine, or elsewhere with")
    print(f"  tether.init(address=\"{info['address']}\") and TETHER_SECRET set to the secret in {launcher.record_path()}")
    return 0


def _alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _connect(args):
    from ._private import launcher
    from ._private.cluster_client import ClusterClient

    record = launcher.read_record()
    address = args.address or (record or {}).get("address")
    secret = os.environ.get("TETHER_SECRET") or (record or {}).get("secret")
    if not address or not secret:
        raise ConnectionError("no cluster is recorded on this machine; give --address and set TETHER_SECRET")
    tls = launcher.tls_config(record["tls"]) if (record or {}).get("tls") and not args.address else None
    client = ClusterClient(f"tether://{address}/node", secret.encode(), tls=tls)
    client.hello()
    return client, record


def _connected(args, command):
    """(client, record) for the cluster the command names, or None after saying why not."""
    try:
        return _connect(args)
    except Exception as exc:
        print(f"tether {command}: {exc}", file=sys.stderr)
        return None


def _status(args) -> int:
    connected = _connected(args, "status")
    if connected is None:
        return 1
    client, _record = connected
    status = client.call("status")
    client.close()
    if args.json:
        print(json.dumps(status, indent=2, default=repr))
        return 0
    print(f"node {status['node_id']}: {status['clients']} clients")
    for node_id, address, total, available in status.get("nodes", []):
        print(f"  node {node_id} at {address}: " + ", ".join(f"{k} {available.get(k, 0):g}/{v:g} free" for k, v in total.items()))
    print("resources: " + ", ".join(f"{k} {status['available'].get(k, 0):g}/{v:g} free" for k, v in status["resources"].items()))
    states = {}
    for worker in status["workers"]:
        states[worker["state"]] = states.get(worker["state"], 0) + 1
    print("workers: " + (", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"))
    objects = status["objects"]
    print(f"objects: {objects['count']}, store {objects['store_used']:,} of {objects['store_capacity']:,} bytes, "
          f"{objects['spilled']} spilled")
    print("actors: " + (", ".join(f"{a['class']}{' ' + a['name'] if a['name'] else ''} ({a['state']})"
                                  for a in status["actors"]) or "none"))
    return 0


def _stop(args) -> int:
    from ._private import launcher

    connected = _connected(args, "stop")
    if connected is None:
        return 1
    client, record = connected
    try:
        client.call("shutdown", timeout=10)
    finally:
        client.close()
    pid = (record or {}).get("pid") if not args.address else None
    deadline = time.monotonic() + 10
    while pid and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not args.address:
        launcher.forget_record()
    print("tether cluster stopped")
    return 0


def _run(args) -> int:
    """SCOOP's launcher: a local cluster of N workers, the script as its driver, then stop."""
    from ._private import launcher

    daemon, info = launcher.start_embedded(args.n, None, None)
    # The workers' output reaches this terminal through the daemon's, which this process prints:
    # the script's driver does not ask for it again.
    env = dict(os.environ, TETHER_ADDRESS=info["address"], TETHER_SECRET=info["secret"], TETHER_LOG_TO_DRIVER="0")
    try:
        return subprocess.call([sys.executable, args.script, *args.args], env=env)
    finally:
        daemon.stdin.close()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tether", description="tether: distributed programming for Python")
    commands = parser.add_subparsers(dest="command", required=True)
    ns = commands.add_parser("ns", help="run a name server")
    ns.add_argument("--host", default="127.0.0.1")
    ns.add_argument("--port", type=int, default=9090)
    ns.add_argument("--secret", default=None, help="shared secret (default: $TETHER_SECRET)")
    ns.add_argument("--sweep-interval", type=float, default=10.0, help="seconds between liveness checks")
    ns.add_argument("--no-coordination", action="store_true", help="serve names only, not tuple spaces, topics and groups")
    _add_tls_options(ns, "name server")
    ns.set_defaults(run=_ns)

    certs = commands.add_parser("certs", help="create a private CA and certificates for a test cluster")
    certs.add_argument("directory", help="where ca.pem, ca.key and NAME.pem / NAME.key go (an existing CA is reused)")
    certs.add_argument("--name", action="append", help="a certificate to make (repeatable; default: server, client)")
    certs.add_argument("--host", action="append", help="a DNS name or IP the certificates are valid for "
                                                          "(repeatable; default: localhost, 127.0.0.1, ::1)")
    certs.add_argument("--days", type=int, default=365)
    certs.set_defaults(run=_certs)

    services = commands.add_parser("services", help="serve the name server, tuple spaces, topics and groups, without a cluster")
    services.add_argument("--host", default="127.0.0.1")
    services.add_argument("--port", type=int, default=9091)
    services.add_argument("--secret", default=None, help="shared secret (default: $TETHER_SECRET)")
    services.add_argument("--state-dir", default=None, help="keep names, tuple spaces and retained values here")
    _add_tls_options(services, "server")
    services.set_defaults(run=_services)

    start = commands.add_parser("start", help="start a cluster node daemon (tetherd) in the background")
    start.add_argument("--head", action="store_true", help="start a new cluster")
    start.add_argument("--address", default=None, help="join the cluster whose head is at HOST:PORT")
    start.add_argument("--host", default="127.0.0.1", help="address to listen on (and that other nodes reach)")
    start.add_argument("--port", type=int, default=None, help="port (default: 6380 for a head, any free one to join)")
    start.add_argument("--num-cpus", type=int, default=None)
    start.add_argument("--resources", default=None, help='custom resources as JSON, e.g. \'{"gpu": 1}\'')
    start.add_argument("--object-store-memory", type=int, default=None, help="bytes of shared memory for objects")
    start.add_argument("--state-dir", default=None,
                       help="keep the head's names, tuple spaces and retained topic values here, across restarts")
    _add_tls_options(start, "node")
    start.set_defaults(run=_start)

    for name, run, text in (("status", _status, "show the cluster's nodes, resources, workers, objects, actors"),
                            ("stop", _stop, "stop the cluster started with tether start")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--address", default=None, help="HOST:PORT (default: the recorded cluster)")
        if name == "status":
            command.add_argument("--json", action="store_true", help="print the raw status as JSON")
        command.set_defaults(run=run)

    run = commands.add_parser("run", help="run a script as the driver of a new local cluster of N CPUs")
    run.add_argument("-n", type=int, default=None, help="number of CPUs (workers) of the cluster")
    run.add_argument("script")
    run.add_argument("args", nargs=argparse.REMAINDER)
    run.set_defaults(run=_run)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
