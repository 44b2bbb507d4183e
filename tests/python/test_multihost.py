"""Several hosts on one machine: each host is a Linux network namespace with its own address on
10.77.1.0/24, cabled to a bridge in a "switch" namespace of its own, so the machine's own network
is never touched. Daemons and drivers run inside the hosts (`ip netns exec`); the test process
stays outside, where it cannot reach 10.77.1.x, so it only starts them, reads the JSON lines the
drivers print and asserts on them. A host is cut off by taking its cable down at the switch end:
its packets go nowhere and nothing closes its connections, as when a machine's network fails.

Needs root and iproute2's `ip`; without them every test is skipped with the reason. Waits poll with
generous deadlines; no timing decides a test."""
import hashlib
import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import uuid
from unittest import mock

import numpy as np
import pytest

import tether
from clusters import stop_daemon
from conftest import Child, child_env
from polling import eventually
from tether._private import launcher

TIMEOUT = 60
SUBNET = "10.77.1"  # host N is SUBNET.N/24; every run has namespaces of its own, so runs never clash
ARRAY_LENGTH = 1_500_000  # float64: 12 MB, several 4 MiB pieces when copied between hosts
NODE_TIMEOUT = "3"  # tetherd --node-timeout for the cut-off tests: the head drops a silent node after 3 s


class Hosts:
    """Network namespaces HOST1..HOSTn, each with `eth0` at SUBNET.N cabled to a bridge in a switch
    namespace, named after this process so that concurrent runs never share one. `close` deletes
    them; construction undoes what it made before raising."""

    def __init__(self, count: int):
        self.prefix = f"tmh{os.getpid()}"
        self.switch = f"{self.prefix}-sw"
        self.names = {n: f"{self.prefix}-h{n}" for n in range(1, count + 1)}
        self.made: list[str] = []
        try:
            self._add(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for n, name in self.names.items():
                self._add(name)
                # Both ends are made from inside the switch: the veth never passes through the root namespace.
                _ip("-n", self.switch, "link", "add", f"cable{n}", "type", "veth",
                    "peer", "name", "eth0", "netns", name)
                _ip("-n", self.switch, "link", "set", f"cable{n}", "master", "br0", "up")
                _ip("-n", name, "addr", "add", f"{self.address(n)}/24", "dev", "eth0")
                _ip("-n", name, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise

    def _add(self, name):
        _ip("netns", "add", name)
        self.made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def address(self, n: int) -> str:
        return f"{SUBNET}.{n}"

    def netns(self, n: int) -> str:
        """What os.readlink("/proc/self/ns/net") says in host n."""
        return f"net:[{os.stat(f'/run/netns/{self.names[n]}').st_ino}]"

    def command(self, n: int, argv: list) -> list:
        return ["ip", "netns", "exec", self.names[n], *argv]

    def cut(self, n: int):
        """Unplugs host n at the switch: its packets go nowhere, and nothing closes its connections."""
        _ip("-n", self.switch, "link", "set", f"cable{n}", "down")

    def reconnect(self, n: int):
        _ip("-n", self.switch, "link", "set", f"cable{n}", "up")

    def close(self):
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        self.made = []


def _ip(*args):
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit status {done.returncode}'}")


@pytest.fixture(scope="module")
def hosts():
    if os.geteuid() != 0:
        pytest.skip("several hosts need network namespaces, which only root can make (`ip netns add`)")
    if shutil.which("ip") is None:
        pytest.skip("several hosts need network namespaces: the `ip` command (iproute2) is not installed")
    try:
        made = Hosts(3)
    except OSError as exc:
        pytest.skip(f"several hosts need network namespaces, and they cannot be made here: {exc}")
    try:
        yield made
    finally:
        made.close()


class Daemon:
    """tetherd in host n: the head, or with `join` a node joining it. It watches its stdin, so it
    also stops when this process ends. Its stderr lines are kept and passed on, prefixed with the host."""

    def __init__(self, hosts, n, secret, resources, join=None, tls=None, node_timeout=None, session_dir=None):
        self.host = n
        self.session_dir = session_dir
        # TETHER_NODE_TIMEOUT, as for `tether start`, becomes --node-timeout (the default is 10 s).
        with mock.patch.dict(os.environ, {"TETHER_NODE_TIMEOUT": node_timeout} if node_timeout else {}):
            command = launcher.daemon_command(1, resources, None, host=hosts.address(n), port=0, join=join, tls=tls)
        if session_dir:
            command += ["--session-dir", session_dir]
        env = dict(os.environ, TETHER_SECRET=secret, PYTHONPATH=launcher.worker_pythonpath(),
                   **launcher.tls_environment(tls))
        self.process = subprocess.Popen(hosts.command(n, command + ["--watch-stdin"]), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                        start_new_session=True)
        self.errors: list[str] = []
        self.info = {}
        passing_on = threading.Thread(target=self._pass_on_errors, daemon=True)
        passing_on.start()
        ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT)
        self.ready_line = self.process.stdout.readline().decode() if ready else ""
        if not self.ready_line.startswith("TETHERD READY"):
            self.stop()
            passing_on.join(timeout=TIMEOUT)
            raise RuntimeError(f"tetherd in host {n} did not start: {''.join(self.errors).strip()}")
        self.info = launcher.parse_ready(self.ready_line)
        # Its workers' lines would fill the pipe: they are read and dropped (the drivers print their own).
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def _pass_on_errors(self):
        for line in self.process.stderr:
            text = line.decode(errors="replace")
            self.errors.append(text)
            os.write(2, f"[host{self.host}] {text}".encode())

    @property
    def address(self) -> str:
        return self.info["address"]

    def stop(self):
        stop_daemon(self.process)
        launcher.remove_leftovers(self.info)
        if self.session_dir:
            shutil.rmtree(self.session_dir, ignore_errors=True)


class Lab:
    """What a test starts in the hosts: daemons and programs, each ended by its PID afterwards if it
    has not ended by itself."""

    def __init__(self, hosts):
        self.hosts = hosts
        self.daemons: list[Daemon] = []
        self.programs: list[Child] = []

    def cluster(self, resources: dict, tls=None, node_timeout=None):
        """A head in host 1 and a node joining it in each other host of `resources` ({host: {...}})."""
        secret = secrets.token_hex(32)
        head = None
        for n, amounts in sorted(resources.items()):
            daemon = self.daemon(n, secret, amounts, join=head and head.address, tls=tls and tls(n),
                                 node_timeout=node_timeout)
            head = head or daemon
        return secret, {daemon.host: daemon for daemon in self.daemons[-len(resources):]}

    def daemon(self, n, secret, resources, **options) -> Daemon:
        daemon = Daemon(self.hosts, n, secret, resources, **options)
        self.daemons.append(daemon)
        return daemon

    def program(self, n, script, *args, **env) -> Child:
        """`python -c script args...` in host n; its stdout lines are read with a timeout."""
        child = Child(["netns", "exec", self.hosts.names[n], sys.executable, "-c", script, *args], child_env(**env),
                      program="ip")
        self.programs.append(child)
        return child

    def close(self):
        for child in self.programs:
            child.end(timeout=10)
        for daemon in reversed(self.daemons):
            daemon.stop()


@pytest.fixture
def lab(hosts):
    started = Lab(hosts)
    try:
        yield started
    finally:
        started.close()


def read_json(child: Child, timeout=TIMEOUT * 2) -> dict:
    """The next JSON line the program prints (other lines, if any, are skipped)."""
    while True:
        line = child.readline(timeout=timeout)
        if line.startswith("{"):
            return json.loads(line)


def ask(child: Child, command: str, timeout=TIMEOUT * 2) -> dict:
    child.proc.stdin.write(command + "\n")
    child.proc.stdin.flush()
    return read_json(child, timeout)


# ---- a cluster across hosts ----

# A driver in host 1: joins the head by its address, runs tasks placed on each host by its custom
# resource, and moves objects between hosts; prints one JSON line of what it saw.
TASKS_DRIVER = textwrap.dedent("""
    import hashlib, json, os, sys, time
    import numpy as np
    import tether

    address, length, certs, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    tls = tether.TLSConfig.from_directory(certs, name) if certs else None
    tether.init(address=address, tls=tls, log_to_driver=False)
    deadline = time.monotonic() + 60
    while len(tether.nodes()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)

    def netns():
        return os.readlink("/proc/self/ns/net")

    def on(host):
        return {"resources": {f"host{host}": 1}}

    @tether.remote
    def square(x):
        return x * x, netns()

    @tether.remote
    def digest(array):
        return hashlib.sha256(array.tobytes()).hexdigest(), len(array), netns()

    @tether.remote
    def arange(n):
        return np.arange(n, dtype=np.float64)

    @tether.remote
    def pattern(repeats):
        return bytes(range(256)) * repeats, netns()

    squares = tether.get([square.options(**on(h)).remote(h) for h in (1, 2, 3)], timeout=60)
    put_here = tether.put(np.arange(length, dtype=np.float64))
    put_here_read_on_3 = tether.get(digest.options(**on(3)).remote(put_here), timeout=60)
    made_on_2 = arange.options(**on(2)).remote(length)
    made_on_2_read_on_3 = tether.get(digest.options(**on(3)).remote(made_on_2), timeout=60)
    array = tether.get(made_on_2, timeout=60)
    data, made_in = tether.get(pattern.options(**on(2)).remote(8192), timeout=60)
    print(json.dumps({
        "driver": netns(),
        "nodes": sorted([n["node_id"], n["address"]] for n in tether.nodes()),
        "squares": squares,
        "put_here_read_on_3": put_here_read_on_3,
        "made_on_2_read_on_3": made_on_2_read_on_3,
        "made_on_2_read_here": [hashlib.sha256(array.tobytes()).hexdigest(), len(array)],
        "bytes_from_2": [hashlib.sha256(data).hexdigest(), len(data), made_in],
    }), flush=True)
    tether.shutdown()
""")


def host_resources():
    """Each host's node has the custom resource hostN, so a task can be sent to the host it names."""
    return {n: {f"host{n}": 1} for n in (1, 2, 3)}


def assert_tasks_ran_where_they_were_sent(result, hosts, daemons):
    netns = {n: hosts.netns(n) for n in (1, 2, 3)}
    assert len(set(netns.values())) == 3
    assert result["driver"] == netns[1]
    assert result["nodes"] == [[1, daemons[1].address], [2, daemons[2].address], [3, daemons[3].address]]
    assert [address.split(":")[0] for _, address in result["nodes"]] == [hosts.address(n) for n in (1, 2, 3)]
    assert result["squares"] == [[1, netns[1]], [4, netns[2]], [9, netns[3]]]
    array = hashlib.sha256(np.arange(ARRAY_LENGTH, dtype=np.float64).tobytes()).hexdigest()
    assert result["put_here_read_on_3"] == [array, ARRAY_LENGTH, netns[3]]
    assert result["made_on_2_read_on_3"] == [array, ARRAY_LENGTH, netns[3]]
    assert result["made_on_2_read_here"] == [array, ARRAY_LENGTH]
    data = bytes(range(256)) * 8192  # 2 MiB
    assert result["bytes_from_2"] == [hashlib.sha256(data).hexdigest(), len(data), netns[2]]


def test_tasks_and_objects_cross_hosts(hosts, lab):
    """A head in host 1 and nodes in hosts 2 and 3 that joined it by its 10.77 address: a driver in
    host 1 runs a task in each host (placed by custom resources; each reports the network namespace
    it ran in), its 12 MB put is read by a task in host 3, an array made in host 2 is read in host 3
    and by the driver, and 2 MiB of bytes come back from host 2, all intact."""
    secret, daemons = lab.cluster(host_resources())
    driver = lab.program(1, TASKS_DRIVER, daemons[1].address, str(ARRAY_LENGTH), "", "", TETHER_SECRET=secret)
    assert_tasks_ran_where_they_were_sent(read_json(driver), hosts, daemons)
    assert driver.proc.wait(timeout=TIMEOUT) == 0, driver.stderr_text()


# ---- TLS across hosts ----

# A driver that tries to join with `tls` made from argv: it prints what refused it.
REFUSED_DRIVER = textwrap.dedent("""
    import json, sys
    import tether

    address, ca, cert, key = sys.argv[1:5]
    try:
        tether.init(address=address, tls=tether.TLSConfig(ca=ca, cert=cert or None, key=key or None))
        tether.nodes()
        print(json.dumps({"joined": True}), flush=True)
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "authentication": isinstance(exc, tether.AuthenticationError),
                          "message": str(exc)}), flush=True)
""")


def test_tls_cluster_across_hosts(hosts, lab, tmp_path):
    """Certificates from `tether certs` for the hosts' addresses; every daemon runs mutual TLS, so
    node-to-node and driver links are TLS between hosts. The tasks and objects of the first test
    work unchanged. A driver without a certificate, or with one from another CA, is refused, and so
    is a node without TLS or with a certificate from another CA."""
    certs = tmp_path / "certs"
    made = subprocess.run([sys.executable, "-m", "tether", "certs", str(certs), "--name", "head", "--name", "node2",
                           "--name", "node3", "--name", "driver",
                           *[arg for n in (1, 2, 3) for arg in ("--host", hosts.address(n))]],
                          env=child_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert made.returncode == 0, made.stderr
    tether.make_certificates(tmp_path / "other", names=("driver",), hosts=[hosts.address(1)])  # an unknown CA
    names = {1: "head", 2: "node2", 3: "node3"}
    secret, daemons = lab.cluster(host_resources(),
                                  tls=lambda n: tether.TLSConfig.from_directory(str(certs), names[n], mutual=True))
    assert all(" tls=1" in daemon.ready_line for daemon in daemons.values())
    driver = lab.program(1, TASKS_DRIVER, daemons[1].address, str(ARRAY_LENGTH), str(certs), "driver",
                         TETHER_SECRET=secret)
    assert_tasks_ran_where_they_were_sent(read_json(driver), hosts, daemons)
    assert driver.proc.wait(timeout=TIMEOUT) == 0, driver.stderr_text()

    without = lab.program(1, REFUSED_DRIVER, daemons[1].address, str(certs / "ca.pem"), "", "", TETHER_SECRET=secret)
    refused = read_json(without)
    assert refused["authentication"] and "certificate required" in refused["message"], refused
    other_ca = lab.program(1, REFUSED_DRIVER, daemons[1].address, str(certs / "ca.pem"),
                           str(tmp_path / "other" / "driver.pem"), str(tmp_path / "other" / "driver.key"),
                           TETHER_SECRET=secret)
    refused = read_json(other_ca)
    assert refused["authentication"] and "unknown ca" in refused["message"], refused  # the head's TLS alert

    # A node must be a TLS node with a certificate of the cluster's CA to join. (A tetherd that
    # fails to start leaves its own session directory behind, so these get one that Daemon removes.)
    foreign = tether.TLSConfig(cert=str(tmp_path / "other" / "driver.pem"), key=str(tmp_path / "other" / "driver.key"),
                               ca=str(certs / "ca.pem"), mutual=True)
    for tls, why in ((None, "closed by the peer during the handshake"), (foreign, "unknown ca")):
        with pytest.raises(RuntimeError, match=f"cannot join the cluster at {daemons[1].address}: .*{why}"):
            lab.daemon(3, secret, {"host3": 1}, join=daemons[1].address, tls=tls,
                       session_dir=tempfile.mkdtemp(prefix="tether-multihost-"))


# ---- a host cut off ----

# A member of a group in some host: prints each view it installs, and how its stream ended; leaves
# when its stdin closes.
MEMBER = textwrap.dedent("""
    import json, os, sys, threading
    import tether

    address, name, failure_timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    group = tether.Group(name, address=address, failure_timeout=failure_timeout)
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    while not stdin_closed.is_set():
        try:
            item = group.receive(timeout=0.1)
        except TimeoutError:
            continue
        except tether.ConnectionClosedError as exc:
            print(json.dumps({"ended": type(exc).__name__, "message": str(exc)}), flush=True)
            break
        if isinstance(item, tether.View):
            print(json.dumps({"me": group.private_name, "netns": os.readlink("/proc/self/ns/net"), "id": item.id,
                              "members": item.members, "left": item.left}), flush=True)
    group.leave()
""")


@pytest.fixture
def cut_host(hosts):
    """Cuts a host off (`cut_host(n)`); it is cabled again after the test whatever happened."""
    cut = []

    def cut_off(n):
        cut.append(n)
        hosts.cut(n)

    yield cut_off
    for n in cut:
        hosts.reconnect(n)


def next_view(member: Child, wanted) -> dict:
    while True:
        view = read_json(member)
        assert "ended" not in view, view
        if wanted(view):
            return view


def test_members_on_a_cut_off_host_leave_the_group_with_disconnect(hosts, lab, cut_host):
    """Members in hosts 1, 2 and 3 of a group on the head (host 1); host 3 is cut off. Failure
    detection removes its member: the members in hosts 1 and 2 install the same view, without it,
    whose `left` is (its name, "disconnect") as docs/groups.md says. When host 3 is cabled again,
    its member, whose connection held, is told it was removed (receive raises ConnectionClosedError)."""
    secret, daemons = lab.cluster({1: {}})
    name = f"g{uuid.uuid4().hex[:8]}"
    members, names = {}, {}
    for n in (1, 2, 3):
        # Host 3's member is removed after 2 s of silence; the others keep the default, 5 s.
        members[n] = lab.program(n, MEMBER, daemons[1].address, name, "2.0" if n == 3 else "5.0",
                                 TETHER_SECRET=secret)
        first = read_json(members[n])
        assert first["netns"] == hosts.netns(n) and first["members"][-1] == first["me"]
        names[n] = first["me"]
    for n in (1, 2):
        assert next_view(members[n], lambda v: len(v["members"]) == 3)["members"] == [names[1], names[2], names[3]]

    cut_host(3)
    after = {n: next_view(members[n], lambda v: len(v["members"]) < 3) for n in (1, 2)}
    for n in (1, 2):
        assert after[n]["members"] == [names[1], names[2]]
        assert after[n]["left"] == [[names[3], "disconnect"]]
    assert after[1]["id"] == after[2]["id"]

    hosts.reconnect(3)
    told = read_json(members[3])
    assert told["ended"] == "ConnectionClosedError" and "was removed from group" in told["message"], told
    assert members[3].proc.wait(timeout=TIMEOUT) == 0, members[3].stderr_text()
    for n in (1, 2):
        assert members[n].close_stdin_and_wait(timeout=TIMEOUT) == 0, members[n].stderr_text()


# A driver in host 1 for a workload of slow tasks that each need one "work", which hosts 2 and 3
# have one of each. Commands on stdin, one JSON answer a line.
WORKLOAD_DRIVER = textwrap.dedent("""
    import json, os, sys, time
    import tether

    address, gate, log = sys.argv[1:4]
    tether.init(address=address, log_to_driver=False)

    @tether.remote(resources={"work": 1}, max_retries=2)
    def slow(i, gate, log):
        # Each attempt leaves a mark saying where it ran, then waits for the test to let it finish.
        where = os.readlink("/proc/self/ns/net")
        with open(os.path.join(log, f"{i}-{time.monotonic_ns()}"), "w") as out:
            out.write(where)
        deadline = time.monotonic() + 120
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        return i * i, where

    def free_work():
        return sum(node["available"].get("work", 0) for node in tether.nodes())

    def until(predicate):
        deadline = time.monotonic() + 60
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.05)
        return predicate()

    refs = []  # a global until exit: a driver whose first ObjectRef was dropped there used to hang
    for line in sys.stdin:
        command, *args = line.split()
        if command == "submit":
            count = int(args[0])
            assert until(lambda: free_work() == 2), "the nodes never reported their work"
            # One task at a time until both hosts run one, so the head places the second one on
            # the host whose "work" is still free; the rest wait at the head for room.
            for i in range(count):
                refs.append(slow.remote(i, gate, log))
                if i < 2:
                    assert until(lambda: free_work() == 1 - i), "the task did not start"
            print(json.dumps({"submitted": len(refs)}), flush=True)
        elif command == "gone":
            node = int(args[0])
            until(lambda: node not in [n["node_id"] for n in tether.nodes()])
            print(json.dumps({"nodes": [n["node_id"] for n in tether.nodes()]}), flush=True)
        elif command == "results":
            print(json.dumps({"results": tether.get(refs, timeout=120)}), flush=True)
    tether.shutdown()
""")


def test_tasks_of_a_cut_off_host_run_again_on_another(hosts, lab, cut_host, tmp_path):
    """Slow tasks need a "work" that only hosts 2 and 3 have; one runs in each host, the others
    wait. Host 3 is cut off while its task runs: the head drops node 3 after the node timeout,
    node 3 finds itself cut off and stops by itself, and its task runs again in host 2 (max_retries
    2). Every task's result is right and comes from host 2; no task other than host 3's ran twice."""
    secret, daemons = lab.cluster({1: {}, 2: {"work": 1}, 3: {"work": 1}}, node_timeout=NODE_TIMEOUT)
    gate, log = tmp_path / "gate", tmp_path / "log"
    log.mkdir()
    driver = lab.program(1, WORKLOAD_DRIVER, daemons[1].address, str(gate), str(log), TETHER_SECRET=secret)
    count = 5
    assert ask(driver, f"submit {count}") == {"submitted": count}

    def attempts():
        """Where each task's attempts ran, in the order they started."""
        marks = sorted((int(p.name.split("-")[1]), int(p.name.split("-")[0]), p) for p in log.iterdir())
        ran: dict = {}
        for _, task, path in marks:
            ran.setdefault(task, []).append(eventually(path.read_text))  # written just after it was made
        return ran

    netns = {n: hosts.netns(n) for n in (1, 2, 3)}
    assert eventually(lambda: len(attempts()) == 2)
    running = attempts()
    assert sorted(where for [where] in running.values()) == sorted([netns[2], netns[3]])
    victim = next(task for task, [where] in running.items() if where == netns[3])

    cut_host(3)
    node3 = daemons[3].info["node_id"]
    assert node3 not in ask(driver, f"gone {node3}")["nodes"], "the head kept a node that fell silent"
    assert eventually(lambda: daemons[3].process.poll() is not None), "node 3, cut off from its head, ran on"
    gate.touch()

    assert ask(driver, "results") == {"results": [[i * i, netns[2]] for i in range(count)]}
    ran = attempts()
    assert ran[victim] == [netns[3], netns[2]]
    assert all(ran[task] == [netns[2]] for task in range(count) if task != victim)
    driver.proc.stdin.close()
    assert driver.proc.wait(timeout=TIMEOUT) == 0, driver.stderr_text()
