"""Several nodes on one machine: a head (started by tether.init) and other tetherd daemons that
join it with --address, each with its own port and its own shared memory. Tasks spread over the
nodes, custom resources route a task to the node that has them, objects made on one node are
read on another, actors are called from any node, and a node whose daemon is killed takes only
its own objects with it: its running tasks are retried elsewhere.

Tasks that must stay running wait for a gate file the test creates, so no test depends on timing."""
import os
import signal
import subprocess
import textwrap
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tether
from clusters import Node
from polling import eventually
from tether._private import cluster_state, launcher
from tether._private.cluster_client import ClusterClient

TIMEOUT = 60


@pytest.fixture(scope="module")
def two_nodes():
    """A head of 1 CPU and a second node of 1 CPU with the custom resource "special"."""
    if tether.is_initialized():
        tether.shutdown()
    # A node silent for 3 s counts as gone (test_silent_node_is_dropped); every daemon gets it.
    os.environ["TETHER_NODE_TIMEOUT"] = "3"
    tether.init(num_cpus=1)
    second = Node(1, {"special": 1})
    yield second
    second.stop()
    tether.shutdown()
    del os.environ["TETHER_NODE_TIMEOUT"]


@pytest.fixture
def gates(tmp_path):
    made = []

    def new():
        path = tmp_path / f"gate-{len(made)}"
        made.append(path)
        return str(path)

    yield new
    for path in made:
        path.touch()


# ---- remote functions ----


@tether.remote
def node_of_worker(gate=None, started=None):
    """The node socket its worker talks to (which node ran it), after `gate` exists if given."""
    if started:
        Path(started).write_text(str(os.getpid()))
    deadline = time.monotonic() + TIMEOUT
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.environ["TETHER_NODE_URI"]


@tether.remote(resources={"special": 1})
def special_node():
    return os.environ["TETHER_NODE_URI"]


@tether.remote(resources={"special": 1})
def make_array(n):
    return np.arange(n, dtype=np.float64)


@tether.remote(resources={"special": 1})
def total(array):
    return float(array.sum()), os.environ["TETHER_NODE_URI"]


@tether.remote(resources={"special": 1})
def put_there(n):
    """Puts a large object in its own node's store and returns the ObjectRef inside a list."""
    return [tether.put(np.full(n, 7.0))]


@tether.remote(resources={"special": 1})
def count_with(counter, times):
    return tether.get([counter.incr.remote() for _ in range(times)], timeout=TIMEOUT)


@tether.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n


def head_uri() -> str:
    return launcher.unix_uri(cluster_state.info()["node_socket"])


def objects_of(node) -> int:
    """How many objects the node's daemon has in its table."""
    client = ClusterClient(f"tether://{node.info['address']}/node", cluster_state.info()["secret"].encode())
    client.hello()
    try:
        return client.call("status")["objects"]["count"]
    finally:
        client.close()


# ---- the directory ----


def test_nodes_lists_both_with_their_resources(two_nodes):
    """tether.nodes() lists the head and the joined node; cluster_resources() adds them up."""
    listed = {n["node_id"]: n for n in tether.nodes()}
    assert set(listed) == {1, two_nodes.id}
    assert listed[two_nodes.id]["resources"] == {"CPU": 1.0, "special": 1.0}
    assert listed[two_nodes.id]["address"] == two_nodes.info["address"]
    assert tether.cluster_resources() == {"CPU": 2.0, "special": 1.0}


def test_status_command_shows_both_nodes(two_nodes):
    head = cluster_state.info()
    env = dict(os.environ, TETHER_SECRET=head["secret"])
    status = subprocess.run([sys.executable, "-m", "tether", "status", "--address", head["address"]], env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert f"node {two_nodes.id} at {two_nodes.info['address']}" in status.stdout
    assert "special 1/1 free" in status.stdout


# ---- tasks ----


def test_tasks_spread_over_both_nodes(two_nodes, gates, tmp_path):
    """Two tasks that stay running at once need both nodes' CPUs: one runs on each."""
    gate = gates()
    started = [str(tmp_path / f"started-{i}") for i in range(2)]
    refs = [node_of_worker.remote(gate, marker) for marker in started]
    assert eventually(lambda: all(os.path.exists(m) for m in started)), "both tasks should run at once"
    Path(gate).touch()
    assert sorted(tether.get(refs, timeout=TIMEOUT)) == sorted([head_uri(), two_nodes.uri_of_its_workers()])


def test_custom_resource_routes_task_to_the_node_that_has_it(two_nodes):
    assert {tether.get(special_node.remote(), timeout=TIMEOUT) for _ in range(3)} == {two_nodes.uri_of_its_workers()}


def test_resource_no_node_has_is_refused_naming_the_nodes(two_nodes):
    with pytest.raises(tether.ResourceUnavailableError, match=r"no node has that.*node 2 has"):
        tether.get(special_node.options(resources={"special": 2}).remote(), timeout=TIMEOUT)


# ---- objects across nodes ----


def test_large_object_made_on_other_node_is_read_here(two_nodes):
    """A 24 MB return stays in the other node's store until the driver reads it: then it is
    fetched into the head's store in chunks and comes back exact."""
    array = tether.get(make_array.remote(3_000_000), timeout=TIMEOUT)
    assert array.shape == (3_000_000,) and array[0] == 0 and array[-1] == 2_999_999
    assert float(array.sum()) == float(np.arange(3_000_000, dtype=np.float64).sum())


def test_driver_objects_are_read_by_a_task_on_the_other_node(two_nodes):
    """A large put (shared memory on the head) and a small one (inline) both reach the task."""
    large = tether.put(np.ones(2_000_000))
    small = tether.put(np.ones(10))
    (large_sum, where), (small_sum, _) = tether.get([total.remote(large), total.remote(small)], timeout=TIMEOUT)
    assert (large_sum, small_sum, where) == (2_000_000.0, 10.0, two_nodes.uri_of_its_workers())


def test_ref_to_object_put_on_other_node_outlives_its_task(two_nodes):
    """A task on node 2 puts an object and returns its ObjectRef: the driver, on the head,
    holds it through the owner (node 2) and reads it after the task ended."""
    [inner] = tether.get(put_there.remote(1_000_000), timeout=TIMEOUT)
    assert inner.hex()[:8] == f"{two_nodes.id:08x}"  # owned by the node where it was put
    value = tether.get(inner, timeout=TIMEOUT)
    assert value.shape == (1_000_000,) and float(value.sum()) == 7_000_000.0


def test_objects_of_other_nodes_are_freed_when_unreferenced(two_nodes):
    """Returns kept in node 2's store for the head are released when the driver drops them."""
    before = objects_of(two_nodes)
    refs = [make_array.remote(200_000) for _ in range(5)]
    tether.get(refs, timeout=TIMEOUT)
    assert objects_of(two_nodes) >= 5
    del refs
    assert eventually(lambda: objects_of(two_nodes) <= before), "node 2 kept objects nobody references"


# ---- actors ----


def test_actor_on_head_is_called_from_a_task_on_the_other_node(two_nodes):
    counter = Counter.remote()
    assert tether.get(count_with.remote(counter, 3), timeout=TIMEOUT) == [1, 2, 3]
    assert tether.get(counter.incr.remote(), timeout=TIMEOUT) == 4
    tether.kill(counter)


# ---- a node that dies ----


@tether.remote(max_retries=2)
def survive(gate, started):
    Path(started).write_text(os.environ["TETHER_NODE_URI"])
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"


@tether.remote(resources={"doomed": 1})
def store_on_doomed(n):
    return np.zeros(n)


def test_killed_node_tasks_are_retried_and_its_objects_are_lost(two_nodes, gates, tmp_path):
    """A third node is killed (SIGKILL) while a task runs there: the task runs again on another
    node and the driver gets its result; an object only that node had raises ObjectLostError;
    the rest of the cluster goes on."""
    # Fill the head's and node 2's CPUs first, so the task below can only run on the doomed node.
    hold = gates()
    holders = [node_of_worker.remote(hold, str(tmp_path / f"holder-{i}")) for i in range(2)]
    assert eventually(lambda: all((tmp_path / f"holder-{i}").exists() for i in range(2)))
    doomed = Node(1, {"doomed": 1})
    try:
        lost = store_on_doomed.remote(500_000)
        tether.wait([lost], timeout=TIMEOUT)
        gate = gates()
        marker = tmp_path / "survivor"
        ref = survive.remote(gate, str(marker))
        assert eventually(lambda: marker.exists() and marker.read_text()), "the task never started"
        assert marker.read_text() == doomed.uri_of_its_workers()
        marker.unlink()
        doomed.kill()
        Path(hold).touch()  # room on the other nodes for the retry
        assert eventually(lambda: marker.exists() and marker.read_text()), "the task was not retried"
        assert marker.read_text() in (head_uri(), two_nodes.uri_of_its_workers())
        Path(gate).touch()
        assert tether.get(ref, timeout=TIMEOUT) == "done"
        assert len(tether.get(holders, timeout=TIMEOUT)) == 2
        with pytest.raises(tether.ObjectLostError, match="left the cluster"):
            tether.get(lost, timeout=TIMEOUT)
        assert eventually(lambda: doomed.id not in {n["node_id"] for n in tether.nodes()})
        assert tether.get(special_node.remote(), timeout=TIMEOUT) == two_nodes.uri_of_its_workers()
    finally:
        doomed.stop()
    assert not [name for name in os.listdir("/dev/shm") if name.startswith(f"tether-{doomed.info['session']}-")]


@tether.remote(resources={"pair": 1}, max_retries=2)
def filled_after(gate, started, n):
    """Runs on a node with "pair"; returns n threes once `gate` exists."""
    Path(started).write_text(os.environ["TETHER_NODE_URI"])
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return np.full(n, 3.0)


@tether.remote(resources={"reader": 1})
def total_of_first(refs, started):
    Path(started).write_text(os.environ["TETHER_NODE_URI"])
    return float(tether.get(refs[0], timeout=TIMEOUT).sum())


def test_task_retried_onto_a_node_that_waits_for_its_result_runs_there(two_nodes, gates, tmp_path):
    """A task's node is killed and the only node left with room already waits for the task's
    return (a task there holds a ref to it): the retry runs there, fills that node's wait, and
    the node frees the object once nobody holds it."""
    doomed = Node(1, {"pair": 1})
    reader = None
    try:
        gate, first_start = gates(), tmp_path / "first"
        ref = filled_after.remote(gate, str(first_start), 300_000)
        assert eventually(lambda: first_start.exists() and first_start.read_text()), "the task never started"
        assert first_start.read_text() == doomed.uri_of_its_workers()
        reader = Node(2, {"pair": 1, "reader": 1})
        reader_start = tmp_path / "reader"
        summed = total_of_first.remote([ref], str(reader_start))  # the ref inside a list: no wait for it
        assert eventually(lambda: reader_start.exists()), "the reading task never started"
        doomed.kill()
        assert eventually(lambda: doomed.id not in {n["node_id"] for n in tether.nodes()})
        Path(gate).touch()
        assert tether.get(summed, timeout=TIMEOUT) == 900_000.0
        assert float(tether.get(ref, timeout=TIMEOUT).sum()) == 900_000.0
        assert first_start.read_text() == reader.uri_of_its_workers()
        del ref, summed
        assert eventually(lambda: objects_of(reader) == 0), "the node kept the retried task's return"
    finally:
        doomed.stop()
        if reader:
            reader.stop()


# ---- actors placed by their resources, and names across nodes ----


@tether.remote
class Where:
    def __init__(self):
        self.calls = 0

    def node(self):
        self.calls += 1
        return os.environ["TETHER_NODE_URI"], self.calls


@tether.remote(resources={"special": 1})
def make_named(name):
    """Creates a named actor from a task on node 2 (so node 2 asks the head for the name)."""
    Where.options(name=name, lifetime="detached").remote()
    return name


def test_actor_needing_a_resource_of_the_other_node_lives_there(two_nodes):
    """The head has no "special": the actor starts on node 2, and the head forwards its calls
    there in order; kill reaches it there."""
    actor = Where.options(resources={"special": 1}).remote()
    answers = tether.get([actor.node.remote() for _ in range(5)], timeout=TIMEOUT)
    assert answers == [(two_nodes.uri_of_its_workers(), n) for n in range(1, 6)]
    tether.kill(actor)
    with pytest.raises(tether.ActorDiedError):
        tether.get(actor.node.remote(), timeout=TIMEOUT)
    assert tether.get(special_node.remote(), timeout=TIMEOUT) == two_nodes.uri_of_its_workers()  # its resource is free again


def test_named_actor_placed_on_other_node_gives_its_name_back_when_killed(two_nodes):
    """The head's stand-in for an actor on node 2 learns of its death, so the name is free again."""
    actor = Where.options(name="placed", resources={"special": 1}).remote()
    assert tether.get(actor.node.remote(), timeout=TIMEOUT)[0] == two_nodes.uri_of_its_workers()
    tether.kill(actor)
    assert eventually(lambda: _name_is_free("placed")), "the stand-in kept the name of a dead actor"
    again = Where.options(name="placed").remote()
    assert tether.get(again.node.remote(), timeout=TIMEOUT) == (head_uri(), 1)
    tether.kill(again)


def test_names_of_actors_are_the_clusters(two_nodes):
    """A name given on node 2 is found from the head, and cannot be given again from the head."""
    assert tether.get(make_named.remote("made-on-node-2"), timeout=TIMEOUT) == "made-on-node-2"
    found = tether.get_actor("made-on-node-2")
    assert tether.get(found.node.remote(), timeout=TIMEOUT) == (two_nodes.uri_of_its_workers(), 1)
    with pytest.raises(ValueError, match="exists already"):
        Where.options(name="made-on-node-2").remote()
    tether.kill(found)
    assert eventually(lambda: _name_is_free("made-on-node-2")), "the name was not given back"


def _name_is_free(name) -> bool:
    try:
        tether.get_actor(name)
    except ValueError:
        return True
    return False


def test_silent_node_is_dropped_and_stops(two_nodes):
    """A node that stops reporting (its daemon frozen with SIGSTOP, as a machine cut off) is
    dropped by the head after the node timeout; once it runs again it finds itself cut off from
    the head and stops by itself."""
    frozen = Node(1, {"frozen": 1})
    try:
        frozen.process.send_signal(signal.SIGSTOP)
        assert eventually(lambda: frozen.id not in {n["node_id"] for n in tether.nodes()}), "the head kept a silent node"
        with pytest.raises(tether.ResourceUnavailableError):
            tether.get(special_node.options(resources={"frozen": 1}).remote(), timeout=TIMEOUT)
        frozen.process.send_signal(signal.SIGCONT)
        frozen.process.wait(timeout=TIMEOUT)
    finally:
        frozen.process.send_signal(signal.SIGCONT)
        frozen.stop()
    assert tether.get(special_node.remote(), timeout=TIMEOUT) == two_nodes.uri_of_its_workers()


# ---- workers' output ----


@tether.remote(resources={"special": 1})
def shout(text):
    print(text, flush=True)
    return True


def test_output_of_a_worker_on_the_other_node_reaches_this_driver(two_nodes, capsys):
    """Node 2 sends its workers' lines to the head, whose output this driver prints, prefixed
    with the node and the worker."""
    marker = f"marker-{os.getpid()}-{time.monotonic_ns()}"
    assert tether.get(shout.remote(marker), timeout=TIMEOUT)
    printed = []

    def seen():
        printed.append(capsys.readouterr().out)
        return [line for line in "".join(printed).splitlines() if line.endswith(marker)]

    lines = eventually(seen)
    assert lines and lines[0].startswith(f"[node {two_nodes.id}] (worker ")


def test_a_driver_that_joined_by_address_gets_every_workers_output(two_nodes):
    """A driver in another process, joined by address, is sent the lines of workers on the head
    and on node 2; with log_to_driver=False it gets none."""
    head = cluster_state.info()
    script = textwrap.dedent(f"""
        import sys, time, tether
        tether.init(address={head['address']!r}, secret={head['secret']!r}, log_to_driver=sys.argv[1] == "yes")

        @tether.remote
        def here(text):
            print(text, flush=True)

        @tether.remote(resources={{"special": 1}})
        def there(text):
            print(text, flush=True)

        tether.get([here.remote("from-the-head"), there.remote("from-node-2")], timeout=60)
        time.sleep(1.0)  # lines travel as oneway messages: give them time before leaving
        tether.shutdown()
    """)
    for wanted in ("yes", "no"):
        ran = subprocess.run([sys.executable, "-c", script, wanted], capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
        lines = ran.stdout.splitlines()
        from_head = [line for line in lines if line.endswith("from-the-head")]
        from_node2 = [line for line in lines if line.endswith("from-node-2")]
        if wanted == "yes":
            assert from_head and from_head[0].startswith("(worker "), ran.stdout
            assert from_node2 and from_node2[0].startswith(f"[node {two_nodes.id}] (worker "), ran.stdout
        else:
            assert not from_head and not from_node2, ran.stdout
