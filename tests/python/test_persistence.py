"""--state-dir: the head keeps its names, tuple spaces and retained topic values in SQLite, and a
head killed with SIGKILL mid-workload comes back with every tuple whose write was acknowledged."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import tether
from tether._private import launcher

TIMEOUT = 30
SECRET = "persistence-secret"

# A writer in its own process: writes ("job", i, payload) and prints i once out() returned, until
# its connection breaks. Every printed i was acknowledged by the head.
WRITER = """
import sys, tether
space = tether.TupleSpace("jobs", address=sys.argv[1], secret=sys.argv[2])
i = 0
try:
    while True:
        space.out(("job", i, "x" * (i % 50)))
        print(i, flush=True)
        i += 1
except tether.TetherError:
    pass
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Head:
    """A head daemon with --state-dir on a fixed port, started again on the same port."""

    def __init__(self, state_dir, port):
        self.state_dir, self.port, self.process, self.info = str(state_dir), port, None, None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        command = [launcher.tetherd_path(), "--head", "--host", "127.0.0.1", "--port", str(self.port), "--num-cpus", "1",
                   "--python", sys.executable, "--state-dir", self.state_dir, "--ns-sweep-interval", "600"]
        env = dict(os.environ, TETHER_SECRET=SECRET, PYTHONPATH=launcher.worker_pythonpath())
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        self.info = launcher.parse_ready(self.process.stdout.readline().decode())

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=TIMEOUT)
        launcher.remove_leftovers(self.info)  # what a killed daemon could not remove

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=TIMEOUT)
            launcher.remove_leftovers(self.info)


@pytest.fixture
def head(tmp_path):
    head = Head(tmp_path / "state", free_port())
    head.start()
    yield head
    head.stop()


def test_every_acknowledged_tuple_survives_a_sigkill_of_the_head(head):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, head.address, SECRET], stdout=subprocess.PIPE, text=True)
    acknowledged = []
    for line in writer.stdout:  # mid-workload: the writer is writing as fast as it can
        acknowledged.append(int(line))
        if len(acknowledged) == 3000:
            break
    head.kill()
    acknowledged += [int(line) for line in writer.stdout]  # answers that arrived before the kill
    writer.wait(timeout=TIMEOUT)
    head.start()
    space = tether.TupleSpace("jobs", address=head.address, secret=SECRET)
    found = set()
    while (item := space.inp(("job", int, str))) is not None:
        found.add(item[1])
        assert item[2] == "x" * (item[1] % 50)  # whole, as written
    missing = set(acknowledged) - found
    assert not missing, f"{len(missing)} acknowledged tuples lost, e.g. {sorted(missing)[:5]}"
    assert found <= set(range(max(acknowledged) + 2))  # at most the one in flight at the kill beyond them


def test_names_retained_values_and_leases_come_back(head):
    space = tether.TupleSpace("leases", address=head.address, secret=SECRET)
    space.out(("short",), lease=0.5)
    space.out(("long",), lease=3600)
    space.out(("forever", 1.5, b"\x00bytes", (1, (2, None))))
    taken = ("taken", 1)
    space.out(taken)
    assert space.inp(taken) == taken  # taken before the kill: gone after it too
    tether.publish("config.mode", {"fast": True}, address=head.address, secret=SECRET)
    tether.publish("config.transient", 1, retain=False, address=head.address, secret=SECRET)
    with tether.locate_ns(head.address, secret=SECRET) as names:
        names.register("service.a", "tether://127.0.0.1:1/a", metadata=["blue"])
        names.register("service.b", "tether://127.0.0.1:1/b")
        assert names.remove("service.b")
    head.kill()
    time.sleep(0.6)  # the short lease ends while the head is down
    head.start()
    space = tether.TupleSpace("leases", address=head.address, secret=SECRET)
    assert space.rdp(("short",)) is None
    assert space.rdp(("long",)) == ("long",)
    assert space.rdp(("forever", float, bytes, tuple)) == ("forever", 1.5, b"\x00bytes", (1, (2, None)))
    assert space.rdp(taken) is None
    assert space.count() == 2
    assert tether.retained("config.#", address=head.address, secret=SECRET) == {"config.mode": {"fast": True}}
    with tether.locate_ns(head.address, secret=SECRET) as names:
        assert names.lookup("service.a") == "tether://127.0.0.1:1/a"
        assert names.lookup_by_metadata(["blue"]) == {"service.a": "tether://127.0.0.1:1/a"}
        with pytest.raises(KeyError):
            names.lookup("service.b")
    space.out(("after", 1))  # new tuples after a restart are numbered after the old ones
    assert space.inp(("forever", float, bytes, tuple)) is not None
    assert space.inp(("after", int)) == ("after", 1)


# Drivers of the detached-actor test, each a process of its own that joins the head and leaves.
ACTORS_BEFORE = """
import sys, tether
tether.init(address=sys.argv[1], secret=sys.argv[2], log_to_driver=False)

@tether.remote
class Counter:
    def __init__(self, start):
        self.value = start
    def add(self, n):
        self.value += n
        return self.value

kept = Counter.options(name="kept", lifetime="detached").remote(100)
assert tether.get(kept.add.remote(5)) == 105
Counter.options(name="temporary").remote(0)  # dies with this driver
dropped = Counter.options(name="killed", lifetime="detached").remote(0)
tether.get(dropped.add.remote(1))
tether.kill(dropped)
Counter.options(name="with_ref", lifetime="detached").remote(tether.put(7))  # its argument is not kept
print(tether.get(tether.get_actor("with_ref").add.remote(1)), flush=True)
tether.shutdown()
"""

ACTORS_AFTER = """
import sys, tether
tether.init(address=sys.argv[1], secret=sys.argv[2], log_to_driver=False)
kept = tether.get_actor("kept")
print("kept", tether.get(kept.add.remote(1)), flush=True)  # made again: its constructor ran anew
for name in ("temporary", "killed", "with_ref"):
    try:
        tether.get_actor(name)
        print(name, "alive", flush=True)
    except ValueError:
        print(name, "gone", flush=True)

@tether.remote
class Fresh:
    def ping(self):
        return "pong"

fresh = Fresh.options(name="fresh-" + sys.argv[3], lifetime="detached").remote()  # new ids do not repeat kept ones
print("fresh", tether.get(fresh.ping.remote()), flush=True)
tether.shutdown()
"""


def run_driver(program, *args):
    out = subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=launcher.worker_pythonpath()))
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")


def test_detached_actors_are_made_again_after_the_head_restarts(head):
    assert run_driver(ACTORS_BEFORE, head.address, SECRET)[0] == "8"
    head.kill()
    head.start()
    after = run_driver(ACTORS_AFTER, head.address, SECRET, "1")
    assert after[:5] == ["kept 101", "temporary gone", "killed gone", "with_ref gone", "fresh pong"]
    head.stop()  # a daemon that stops (SIGTERM) keeps its detached actors too
    head.start()
    after = run_driver(ACTORS_AFTER, head.address, SECRET, "2")
    assert after[:5] == ["kept 101", "temporary gone", "killed gone", "with_ref gone", "fresh pong"]


def test_state_dir_is_only_for_the_head(tmp_path):
    out = subprocess.run([launcher.tetherd_path(), "--address", "127.0.0.1:1", "--state-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode != 0 and "--state-dir is for the head" in out.stderr
