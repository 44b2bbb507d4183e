"""Chaos in the cluster: while thousands of tasks and a few actors run, worker processes, actor
processes, the daemons of non-head nodes and a driver are killed with SIGKILL at random. The
workload's results must still be exactly right, every failure must be the one docs/cluster.md
("What happens on failures") promises for that fault, and afterwards nothing of the cluster is
left: no process and no shared-memory segment.

Each test draws its workload and its schedule of kills from one seeded generator and prints the
seed; TETHER_CHAOS_SEED=<seed> replays them (which task a killed process was running still depends
on timing, so a replay repeats the faults, not the exact interleaving). Tasks write to a log, one
file per worker process, when an attempt starts and when it ends, so the test knows which attempts
a kill cut short without relying on timing. Only processes of the test's own cluster are killed: a
victim must be a child of one of the daemons the test started."""

import collections
import contextlib
import gc
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tether
from clusters import Node
from polling import eventually
from tether._private import cluster_state
from tether._private.cluster_client import ClusterClient

TIMEOUT = 60  # bounds every wait: a hang fails the test
WORKER_KILLS = 20
RETRIES = WORKER_KILLS  # a kill cuts one attempt short at most, so no task can run out of retries
BIG = 20_000  # int64 elements: 160 KB, a value that lives in shared memory


# ---- the seed ----


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("TETHER_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"chaos seed {seed}: replay with TETHER_CHAOS_SEED={seed} pytest '{request.node.nodeid}'")
    return random.Random(seed)


# ---- processes and shared memory of the test's clusters ----


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first), or [] if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_alive(pid: int, started=None) -> bool:
    """True if `pid` runs and is not a zombie (and, given its start time, is still that process)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z" and (started is None or fields[19] == started)


def children_of(pid: int) -> set[int]:
    children = set()
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for thread in threads:
        try:
            children.update(int(c) for c in Path(f"/proc/{pid}/task/{thread}/children").read_text().split())
        except OSError:
            pass
    return children


def processes_of(session: str) -> list[int]:
    """Live processes whose environment names the session: a daemon's workers carry its socket path."""
    marker = f"tether-{session}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ and process_alive(int(entry)):
            found.append(int(entry))
    return found


def segments_of(session: str) -> list[str]:
    return sorted(name for name in os.listdir("/dev/shm") if name.startswith(f"tether-{session}-"))


def kill_child(daemon_pid: int, pid: int) -> bool:
    """SIGKILL for `pid` if it is a child of `daemon_pid`, a daemon of the test's cluster."""
    if pid not in children_of(daemon_pid):
        return False
    os.kill(pid, signal.SIGKILL)
    return True


class Leftovers:
    """The daemons and workers of the test's clusters, to check that none remains after them."""

    def __init__(self):
        self.started: dict[int, str] = {}  # pid -> its start time, so a reused pid is not mistaken for it
        self.sessions: set[str] = set()

    def note_daemon(self, pid: int, session: str) -> None:
        self.sessions.add(session)
        self._note(pid)
        self.note_children(pid)

    def note_children(self, daemon_pid: int) -> set[int]:
        children = children_of(daemon_pid)
        for pid in children:
            self._note(pid)
        return children

    def _note(self, pid: int) -> None:
        fields = _stat(pid)
        if fields:
            self.started.setdefault(pid, fields[19])

    def remaining(self) -> dict:
        found = {"processes": sorted(p for p, started in self.started.items() if process_alive(p, started))}
        for session in sorted(self.sessions):
            found[f"processes of {session}"] = processes_of(session)
            found[f"segments of {session}"] = segments_of(session)
        return {what: items for what, items in found.items() if items}

    def assert_none(self) -> None:
        assert eventually(lambda: not self.remaining(), timeout=30), f"left behind: {self.remaining()}"


def node_status() -> dict:
    return cluster_state.client().call("status")


@pytest.fixture
def single_node():
    """A cluster of one node with 2 CPUs for the test alone (the test shuts it down itself, to
    check what it leaves; this is the fallback when the test fails)."""
    if tether.is_initialized():
        tether.shutdown()
    info = tether.init(num_cpus=2)
    leftovers = Leftovers()
    leftovers.note_daemon(cluster_state._daemon.pid, info["session"])
    yield info, cluster_state._daemon.pid, leftovers
    if tether.is_initialized():
        tether.shutdown()


# ---- the attempt log ----


def _note(tag, event: str) -> None:
    directory, name = tag
    node = re.search(r"tether-([0-9a-f]+)", os.environ["TETHER_NODE_URI"]).group(1)  # the node's session
    with open(os.path.join(directory, f"{os.getpid()}-{node}"), "a") as log:
        log.write(f"{event} {name}\n")


@contextlib.contextmanager
def attempt(tag):
    """Logs that an attempt at the task `tag` names started and, unless its process is killed first,
    that it ended. A worker runs one task at a time, so its file alternates start and end."""
    _note(tag, "start")
    yield
    _note(tag, "end")


Attempt = collections.namedtuple("Attempt", "pid node ended")


class AttemptLog:
    """The attempts of the tasks, as the tasks logged them in a directory: one file per worker
    process, named by its pid and its node's session."""

    def __init__(self, directory: Path):
        self.directory = str(directory)

    def tag(self, name: str):
        return (self.directory, name)

    def attempts(self) -> tuple[dict[str, list[Attempt]], dict[int, str]]:
        """Per task name, its attempts (in no particular order); and the node of each worker pid."""
        found, nodes = collections.defaultdict(list), {}
        for path in Path(self.directory).iterdir():
            pid_text, node = path.name.split("-")
            pid, started = int(pid_text), None
            nodes[pid] = node
            for line in path.read_text().splitlines():
                event, name = line.split(" ", 1)
                if event == "start":
                    found[name].append(Attempt(pid, node, False))
                    started = name
                else:
                    assert started == name, f"{path}: {line} without its start"
                    found[name][-1] = Attempt(pid, node, True)
                    started = None
        return found, nodes


def submitter(name: str):
    """The pid of the process that submitted a fan_out's subtask (named parent.pid.index)."""
    parts = name.split(".")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def check_attempts(log: AttemptLog, killed_pids=frozenset(), killed_nodes=frozenset(), fragile=frozenset(),
                   crashed=frozenset()) -> int:
    """The promises of max_retries, read from the attempt log, after workers (`killed_pids`) or
    whole nodes (the sessions in `killed_nodes`) were killed. Returns how many attempts kills cut
    short.

    Only a killed process leaves an attempt unfinished. A task with retries that lost an attempt
    ran again to its end, unless it was a subtask submitted from a node that was killed (that node
    owned it, and it went with the node). A task with max_retries=0 (`fragile`) ran once, and
    failed with WorkerCrashedError (`crashed`) exactly when its one attempt was cut short (or its
    process was killed just after it)."""
    found, nodes = log.attempts()

    def killed(a: Attempt) -> bool:
        return a.pid in killed_pids or a.node in killed_nodes

    cut = 0
    for name, attempts in found.items():
        unfinished = [a for a in attempts if not a.ended]
        assert all(map(killed, unfinished)), f"{name}: {attempts} did not end, in processes not killed"
        cut += len(unfinished)
        if name in fragile:
            assert len(attempts) == 1, f"{name} (max_retries=0) ran {len(attempts)} times"
            if unfinished:
                assert name in crashed, f"{name} lost its only attempt but did not fail"
            if name in crashed:
                assert killed(attempts[0]), f"{name} failed though its worker was not killed"
        else:
            assert len(attempts) <= 1 + RETRIES, f"{name} ran {len(attempts)} times"
            owned_by_killed_node = nodes.get(submitter(name)) in killed_nodes
            if unfinished and not owned_by_killed_node:
                assert any(a.ended for a in attempts), f"{name}: an attempt was cut short and none ran to its end"
    return cut


# ---- remote functions and actors ----


@tether.remote(max_retries=RETRIES)
def square(x, tag):
    with attempt(tag):
        time.sleep(0.002)  # long enough that a kill often finds a task running
        return x * x


@tether.remote(max_retries=0)
def fragile_square(x, tag):
    with attempt(tag):
        time.sleep(0.002)
        return x * x


@tether.remote(max_retries=RETRIES)
def add(a, b, tag):
    with attempt(tag):
        return a + b


@tether.remote(max_retries=RETRIES)
def total_of(refs, tag):
    """Gets the ObjectRefs nested in its argument itself."""
    with attempt(tag):
        return sum(tether.get(list(refs), timeout=TIMEOUT))


@tether.remote(max_retries=RETRIES)
def fan_out(xs, tag):
    """Submits a task per x and adds their results; each attempt names its subtasks apart."""
    with attempt(tag):
        directory, name = tag
        refs = [square.remote(x, (directory, f"{name}.{os.getpid()}.{i}")) for i, x in enumerate(xs)]
        return sum(tether.get(refs, timeout=TIMEOUT))


@tether.remote(max_retries=RETRIES)
def block_of(x, tag):
    with attempt(tag):
        return np.full(BIG, x, dtype=np.int64)


@tether.remote(max_retries=RETRIES)
def block_total(block, tag):
    with attempt(tag):
        return int(block.sum())


@tether.remote
class Tally:
    """A running total whose state the test accounts for: each answer names the incarnation
    (process) and how many calls it ran; a new incarnation starts from zero."""

    def __init__(self, pid_file):
        with open(pid_file, "a") as f:
            f.write(f"{os.getpid()}\n")
        self.calls = 0
        self.total = 0

    def add(self, seq, x):
        self.calls += 1
        self.total += x
        time.sleep(0.002)
        return os.getpid(), seq, self.calls, self.total


@tether.remote
class Squarer:
    """Stateless, so a call that failed with ActorDiedError may simply be made again."""

    def __init__(self, pid_file):
        with open(pid_file, "a") as f:
            f.write(f"{os.getpid()}\n")

    def square(self, x):
        time.sleep(0.002)
        return x * x


# ---- the task workload ----


UNIT_KINDS = {"leaf": 4, "chain": 2, "nested": 1, "fan_out": 1, "big": 1, "fragile": 1}


def plan_units(rng, count, kinds):
    """The workload: `count` units, each a small task graph of one kind, with its arguments."""
    names, weights = zip(*kinds.items())
    return [(kind, [rng.randrange(1, 10**6) for _ in range(4)]) for kind in rng.choices(names, weights, k=count)]


def submit_unit(index, kind, xs, log: AttemptLog):
    """Submits one unit; returns (name, kind, ObjectRef of its result, the exact result)."""
    name = f"u{index}"
    a, b, c, d = xs
    if kind == "leaf":
        return name, kind, square.remote(a, log.tag(name)), a * a
    if kind == "chain":  # ObjectRefs at the top level: dependencies
        ref = add.remote(square.remote(a, log.tag(f"{name}.a")), square.remote(b, log.tag(f"{name}.b")), log.tag(name))
        return name, kind, ref, a * a + b * b
    if kind == "nested":  # ObjectRefs inside an argument, one of them put by the driver
        refs = [square.remote(a, log.tag(f"{name}.a")), tether.put(b)]
        return name, kind, total_of.remote(refs, log.tag(name)), a * a + b
    if kind == "fan_out":  # a task that submits tasks and waits for them
        return name, kind, fan_out.remote(xs, log.tag(name)), a * a + b * b + c * c + d * d
    if kind == "big":  # a value in shared memory passed to another task
        return name, kind, block_total.remote(block_of.remote(a, log.tag(f"{name}.block")), log.tag(name)), a * BIG
    if kind == "fragile":  # max_retries=0 for the first task: its error passes on to the second
        ref = add.remote(fragile_square.remote(a, log.tag(f"{name}.fragile")), 1, log.tag(name))
        return name, kind, ref, a * a + 1
    raise ValueError(kind)


def outcome(ref, deadline: float):
    """The value of `ref`, or the error its get raised (without the traceback, whose frames would
    keep `ref`, and so its object, alive)."""
    try:
        return tether.get(ref, timeout=max(0.1, deadline - time.monotonic()))
    except tether.TetherError as error:
        error.__context__ = None
        return error.with_traceback(None)


def run_in_chunks(units, log, chunks: int, window: int, between_chunks):
    """Submits the units in `chunks` parts, keeping `window` parts in flight, and calls
    `between_chunks(i)` after submitting part i (where faults are injected). Returns
    (name, kind, expected, outcome) per unit; every ObjectRef is dropped by then."""
    deadline = time.monotonic() + 3 * TIMEOUT
    size = -(-len(units) // chunks)
    in_flight = collections.deque()
    results = []

    def collect():
        for name, kind, ref, expected in in_flight.popleft():
            results.append((name, kind, expected, outcome(ref, deadline)))

    for i in range(chunks):
        part = units[i * size:(i + 1) * size]
        in_flight.append([submit_unit(i * size + j, kind, xs, log) for j, (kind, xs) in enumerate(part)])
        between_chunks(i)
        while len(in_flight) > window:
            collect()
    while in_flight:
        collect()
    return results


def workers_settled() -> bool:
    """No task runs any more on the node (tasks whose submitter died run to their end as well)."""
    return all(w["state"] in ("idle", "actor") for w in node_status()["workers"])


# ---- 1. killed workers ----


def test_tasks_are_exact_while_workers_are_killed(single_node, rng, tmp_path):
    """Thousands of tasks (task graphs passing ObjectRefs, nested ObjectRefs, tasks submitting
    tasks, values in shared memory) run while 20 task workers are killed. Every result is exact;
    a task whose worker was killed ran again (max_retries); a task with max_retries=0 that lost its
    worker failed with WorkerCrashedError, and a task depending on it with the same error; the node
    forgets the killed workers, frees every object once the driver drops its ObjectRefs, and
    nothing of the cluster is left after shutdown."""
    info, daemon_pid, leftovers = single_node
    log = AttemptLog(tmp_path)
    units = plan_units(rng, 1500, UNIT_KINDS)
    chunks = 40
    kills_after = collections.Counter(rng.randrange(chunks) for _ in range(WORKER_KILLS))
    victims = random.Random(rng.random())  # which worker is busy depends on timing: a generator of its own
    baseline = node_status()["objects"]["count"]
    killed: set[int] = set()

    def busy_workers():
        leftovers.note_children(daemon_pid)
        workers = node_status()["workers"]
        return sorted(w["pid"] for w in workers if w["state"] == "busy" and w["pid"] not in killed)

    def kill_busy_workers(chunk):
        for _ in range(kills_after[chunk]):
            time.sleep(victims.uniform(0, 0.03))
            while True:  # until one is killed: a chosen worker may have ended meanwhile (it was killed)
                candidates = eventually(busy_workers, timeout=TIMEOUT, interval=0.005)
                assert candidates, "no task worker was busy to be killed"
                pid = victims.choice(candidates)
                if kill_child(daemon_pid, pid):
                    killed.add(pid)
                    break

    results = run_in_chunks(units, log, chunks, window=3, between_chunks=kill_busy_workers)

    fragile = {f"{name}.fragile" for name, kind, _, _ in results if kind == "fragile"}
    crashed = {f"{name}.fragile" for name, kind, _, got in results if kind == "fragile" and not isinstance(got, int)}
    wrong = [(name, kind, expected, got) for name, kind, expected, got in results
             if got != expected and not (kind == "fragile" and isinstance(got, tether.WorkerCrashedError))]
    assert not wrong, f"{len(wrong)} wrong results, for example {wrong[:5]}"
    assert len(killed) == WORKER_KILLS
    assert eventually(workers_settled, timeout=TIMEOUT), node_status()["workers"]
    cut = check_attempts(log, killed_pids=killed, fragile=fragile, crashed=crashed)
    assert cut > 0, "no kill found a task running"
    print(f"{len(results)} units, {len(killed)} workers killed, {cut} attempts cut short, "
          f"{len(crashed)} tasks with max_retries=0 failed")

    assert eventually(lambda: not any(process_alive(pid) for pid in killed)), "a killed worker still runs"
    assert not killed & {w["pid"] for w in node_status()["workers"]}, "the node still lists a killed worker"
    del results
    gc.collect()
    assert eventually(lambda: node_status()["objects"]["count"] <= baseline), node_status()["objects"]
    assert eventually(lambda: not segments_of(info["session"])), segments_of(info["session"])
    assert tether.get([square.remote(i, log.tag(f"after.{i}")) for i in range(4)], timeout=TIMEOUT) == [0, 1, 4, 9]

    leftovers.note_children(daemon_pid)
    tether.shutdown()
    leftovers.assert_none()


# ---- 2. killed actors ----


class ActorUnderFire:
    """An actor, the file its incarnations write their pid to, the kills it received and every
    call made to it: (seq, argument, outcome)."""

    def __init__(self, name, cls, max_restarts, kills, tmp_path):
        self.name, self.kills_planned, self.max_restarts = name, kills, max_restarts
        self.pid_file = tmp_path / f"{name}.pids"
        self.handle = cls.options(max_restarts=max_restarts).remote(str(self.pid_file))
        self.killed: list[int] = []
        self.calls: list[tuple] = []
        self.seq = 0

    def incarnations(self) -> list[int]:
        return [int(p) for p in self.pid_file.read_text().split()] if self.pid_file.exists() else []

    def kill(self, daemon_pid: int) -> None:
        """Kills its current process: the newest incarnation, once it has started."""
        def newest_alive():
            pids = self.incarnations()
            return pids and pids[-1] not in self.killed and process_alive(pids[-1]) and pids[-1]

        pid = eventually(newest_alive, timeout=TIMEOUT)
        assert pid, f"{self.name} never started again after {self.killed}"
        assert kill_child(daemon_pid, pid), f"{pid} is not a process of the test's cluster"
        self.killed.append(pid)


def check_tally(actor: ActorUnderFire, calls, explained) -> None:
    """The accounting of a Tally under kills. Every call either answered from one incarnation or
    raised ActorDiedError whose text `explained` accepts; calls ran in the order they
    were made, each incarnation starting from zero: in seq order, the answers of one incarnation are
    its calls 1, 2, 3... with the running total of their arguments, and failures only come between
    incarnations (the calls passed to a process that was killed), never between two answers of
    the same one."""
    incarnations = actor.incarnations()
    blocks, previous = [], None  # the runs of calls, in seq order, that answered from one incarnation
    for seq, x, got in sorted(calls):
        if isinstance(got, tether.TetherError):
            assert isinstance(got, tether.ActorDiedError), f"{actor.name} call {seq}: {got!r}"
            assert explained(str(got)), f"{actor.name} call {seq}: {got}"
            previous = None
            continue
        pid, answered_seq, count, total = got
        assert answered_seq == seq and pid in incarnations, (actor.name, seq, got, incarnations)
        if previous != pid:
            assert not blocks or incarnations.index(pid) > incarnations.index(blocks[-1][0]), \
                f"{actor.name}: incarnation {pid} answered again after a failure or a later incarnation"
            blocks.append((pid, []))
        blocks[-1][1].append((x, count, total))
        previous = pid
    for pid, answers in blocks:
        running = 0
        for k, (x, count, total) in enumerate(answers, 1):
            running += x
            assert (count, total) == (k, running), f"{actor.name} incarnation {pid}: answer {k} was {(count, total)}"


def test_actors_account_for_their_state_while_their_processes_are_killed(single_node, rng, tmp_path):
    """Actors with max_restarts are killed (SIGKILL) at random while the driver calls them. Each
    kill within max_restarts restarts the actor with its constructor, so its state starts over;
    the calls passed to the killed process raise ActorDiedError, the others run on the new
    incarnation in the order they were made; a stateless actor's failed calls made again give
    exact results. An actor killed once more than max_restarts is dead: its calls raise
    ActorDiedError from then on. Nothing of the cluster is left after shutdown."""
    info, daemon_pid, leftovers = single_node
    rounds = 40
    tallies = [ActorUnderFire(f"tally{i}", Tally, 3, rng.randint(1, 3), tmp_path) for i in range(3)]
    squarer = ActorUnderFire("squarer", Squarer, 3, rng.randint(1, 3), tmp_path)
    mortal = ActorUnderFire("mortal", Tally, 1, 2, tmp_path)
    actors = tallies + [squarer, mortal]
    schedule = collections.defaultdict(list)
    for actor in actors:
        for when in rng.sample(range(2, rounds - 5), actor.kills_planned):
            schedule[when].append(actor)
    squares = [rng.randrange(1, 10**6) for _ in range(300)]
    squares_wanted = collections.deque(range(len(squares)))  # indices into squares, made again after a failure
    squares_done: dict[int, int] = {}
    squarer_failures = []
    in_flight = collections.deque()
    deadline = time.monotonic() + 3 * TIMEOUT

    def collect():
        for actor, seq, x, ref in in_flight.popleft():
            got = outcome(ref, deadline)
            if actor is squarer:  # seq is the index into squares
                if isinstance(got, tether.TetherError):
                    squarer_failures.append(got)
                    squares_wanted.append(seq)  # stateless: made again in a later round
                else:
                    squares_done[seq] = got
            else:
                actor.calls.append((seq, x, got))

    for r in range(rounds):
        made = []
        for actor in tallies + [mortal]:
            for _ in range(rng.randint(1, 6)):
                actor.seq += 1
                x = rng.randrange(1, 1000)
                made.append((actor, actor.seq, x, actor.handle.add.remote(actor.seq, x)))
        for _ in range(min(len(squares_wanted), rng.randint(5, 12))):
            i = squares_wanted.popleft()
            made.append((squarer, i, squares[i], squarer.handle.square.remote(squares[i])))
        in_flight.append(made)
        time.sleep(rng.uniform(0, 0.02))
        for actor in schedule[r]:
            leftovers.note_children(daemon_pid)
            actor.kill(daemon_pid)
        while len(in_flight) > 2:
            collect()
    while squares_wanted or in_flight:
        if squares_wanted:
            in_flight.append([(squarer, i, squares[i], squarer.handle.square.remote(squares[i]))
                              for i in squares_wanted])
            squares_wanted.clear()
        collect()
        assert time.monotonic() < deadline, "the stateless actor's calls never all succeeded"

    for actor in actors:
        assert len(actor.killed) == actor.kills_planned
    for actor in tallies + [mortal]:
        # A call passed to a killed process fails naming the actor and that process.
        check_tally(actor, actor.calls,
                    lambda text, a=actor: "Tally" in text and any(f"pid {p}" in text for p in a.killed))
    assert all(isinstance(e, tether.ActorDiedError) and "Squarer" in str(e) for e in squarer_failures), squarer_failures
    assert squares_done == {i: x * x for i, x in enumerate(squares)}

    # After the chaos: each restarted actor answers from its newest incarnation, which has run exactly
    # the calls the accounting gave it; the actor killed beyond max_restarts is dead for good.
    for actor in tallies:
        newest = actor.incarnations()[-1]
        answered = [got for _, _, got in sorted(actor.calls) if isinstance(got, tuple) and got[0] == newest]
        calls, total = (answered[-1][2], answered[-1][3]) if answered else (0, 0)
        assert tether.get(actor.handle.add.remote(-1, 5), timeout=TIMEOUT) == (newest, -1, calls + 1, total + 5)
        assert len(actor.incarnations()) == 1 + len(actor.killed)
    with pytest.raises(tether.ActorDiedError, match="is dead"):
        tether.get(mortal.handle.add.remote(-1, 1), timeout=TIMEOUT)
    assert len(mortal.incarnations()) == 2
    # A kill after the stateless actor's last call leaves it restarting for a moment: nothing waits
    # on it, so its new process may still be starting.
    def settled():
        return collections.Counter(a["state"] for a in node_status()["actors"]) == {"alive": 4, "dead": 1}
    assert eventually(settled), node_status()["actors"]
    print(f"kills per actor: {[(a.name, len(a.killed)) for a in actors]}, "
          f"failed calls: {sum(isinstance(g, tether.TetherError) for a in actors for _, _, g in a.calls)}"
          f" + {len(squarer_failures)} of the stateless actor")

    leftovers.note_children(daemon_pid)
    tether.shutdown()  # with restartable actors alive: shutting down must not leave a restarted one
    leftovers.assert_none()


# ---- 3. a killed driver ----


DRIVER = """
import os, sys, time
import numpy as np
import tether

tether.init(address=sys.argv[1], secret=sys.argv[2])

@tether.remote
class Keeper:
    def __init__(self, pid_file):
        with open(pid_file, "a") as f:
            f.write(f"{os.getpid()}\\n")

    def pid(self):
        return os.getpid()

@tether.remote
def square(x):
    time.sleep(0.005)
    return x * x

keepers = [Keeper.options(max_restarts=r).remote(f"{sys.argv[3]}/keeper{r}.pids") for r in (0, 2)]
pids = tether.get([k.pid.remote() for k in keepers], timeout=60)
large, small = tether.put(np.ones(100_000)), tether.put("small")
refs = [square.remote(i) for i in range(300)]
print(*pids, flush=True)
time.sleep(60)
"""


def test_a_killed_driver_takes_its_actors_and_objects_with_it(single_node, tmp_path):
    """A driver that joined the cluster is killed (SIGKILL) while it holds actors (one of them
    with max_restarts left), objects (one in shared memory) and hundreds of submitted tasks. Its
    actors die with it, restarts or not: their processes end and are not started again; its tasks
    run to their end and everything it held is freed; the cluster goes on."""
    info, daemon_pid, leftovers = single_node
    baseline = node_status()["objects"]["count"]
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, tether.cluster_address(), info["secret"], str(tmp_path)],
                              stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        actor_pids = [int(p) for p in driver.stdout.readline().split()]
        assert len(actor_pids) == 2, "the driver did not start its actors"
        assert segments_of(info["session"]), "its large put should be in shared memory"
        leftovers.note_children(daemon_pid)
        driver.kill()
    finally:
        driver.kill()
        driver.wait(timeout=TIMEOUT)
    # Its large object is freed when the node lets go of what the driver held: by then the node
    # has also ended the driver's actors.
    assert eventually(lambda: not segments_of(info["session"])), segments_of(info["session"])
    leftovers.note_children(daemon_pid)
    assert [a["state"] for a in node_status()["actors"]] == ["dead", "dead"], node_status()["actors"]
    assert eventually(lambda: not any(process_alive(pid) for pid in actor_pids)), "an actor outlived its creator"
    assert eventually(workers_settled, timeout=TIMEOUT), node_status()["workers"]
    assert [w for w in node_status()["workers"] if w["state"] == "actor"] == [], "an actor of the killed driver runs"
    assert [len((tmp_path / f"keeper{r}.pids").read_text().split()) for r in (0, 2)] == [1, 1], "an actor was restarted"
    assert eventually(lambda: node_status()["objects"]["count"] <= baseline), node_status()["objects"]
    log = AttemptLog(tmp_path)
    assert tether.get([square.remote(i, log.tag(f"after.{i}")) for i in range(4)], timeout=TIMEOUT) == [0, 1, 4, 9]

    tether.shutdown()
    leftovers.assert_none()


# ---- 4. killed nodes ----


NODE_UNIT_KINDS = {"leaf": 4, "chain": 2, "nested": 1, "fan_out": 1, "big": 1}


def objects_of(node: Node) -> int:
    """How many objects another node's store holds, as its own status says."""
    client = ClusterClient(node.uri_of_its_workers(), cluster_state.info()["secret"].encode())
    try:
        client.hello()
        return client.call("status")["objects"]["count"]
    finally:
        client.close()


class ChaosNode:
    """A non-head node, the actor placed on it by a resource only it has, and the calls to that actor."""

    def __init__(self, number, tmp_path, leftovers: Leftovers):
        self.node = Node(1, {f"slot{number}": 1})
        leftovers.note_daemon(self.node.process.pid, self.node.session)
        self.actor = ActorUnderFire(f"node{number}-tally", Tally.options(resources={f"slot{number}": 1}), 2, 0,
                                    tmp_path)
        self.killed = False

    def kill(self, leftovers: Leftovers) -> list[str]:
        """SIGKILL for its daemon; its workers die with it (parent-death signal). Returns its
        segments left behind, which the test, as the daemon's starter, then removes."""
        leftovers.note_children(self.node.process.pid)
        self.node.kill()
        self.killed = True
        session = self.node.session
        assert eventually(lambda: not processes_of(session), timeout=TIMEOUT), processes_of(session)
        left = segments_of(session)
        self.node.remove_leftovers()
        assert not segments_of(session)
        return left


def test_tasks_are_exact_while_nodes_are_killed(rng, tmp_path):
    """A head and two other nodes run nearly two thousand tasks; three times, the daemon of a
    non-head node is killed (SIGKILL) and a new node joins. Tasks that were running or waiting on
    a killed node run again elsewhere (max_retries), so every result is exact, except that a value of a task
    that lived only in a killed node's shared memory may raise ObjectLostError (never a wrong
    value). The actor placed on a killed node is gone, restarts or not: its calls answered before
    the kill are accounted for, the others raise ActorDiedError, and so does every call once the
    head has dropped the node. The killed daemons' workers die with them; once the driver drops
    its ObjectRefs, no store of a node that is left holds an object; and after the cluster stops
    no process and no shared-memory segment of any of its nodes is left."""
    if tether.is_initialized():
        tether.shutdown()
    log = AttemptLog(tmp_path / "log")
    (tmp_path / "log").mkdir()
    leftovers = Leftovers()
    nodes: list[ChaosNode] = []
    try:
        info = tether.init(num_cpus=1)
        head_pid = cluster_state._daemon.pid
        leftovers.note_daemon(head_pid, info["session"])
        nodes += [ChaosNode(1, tmp_path, leftovers), ChaosNode(2, tmp_path, leftovers)]
        units = plan_units(rng, 900, NODE_UNIT_KINDS)
        chunks = 30
        kill_after = set(rng.sample(range(1, chunks - 4), 3))
        victims = random.Random(rng.random())
        left_by_killed = {}

        def chaos(chunk):
            live = [n for n in nodes if not n.killed]
            for n in live:
                for _ in range(victims.randint(0, 3)):
                    n.actor.seq += 1
                    x = victims.randrange(1, 1000)
                    n.actor.calls.append((n.actor.seq, x, n.actor.handle.add.remote(n.actor.seq, x)))
            if chunk in kill_after:
                time.sleep(victims.uniform(0, 0.1))
                doomed = victims.choice(live)
                left_by_killed[doomed.node.id] = doomed.kill(leftovers)
                nodes.append(ChaosNode(len(nodes) + 1, tmp_path, leftovers))

        results = run_in_chunks(units, log, chunks, window=3, between_chunks=chaos)

        wrong = [(name, kind, expected, got) for name, kind, expected, got in results
                 if got != expected and not (kind == "big" and isinstance(got, tether.ObjectLostError))]
        assert not wrong, f"{len(wrong)} wrong results, for example {wrong[:5]}"
        lost = sum(isinstance(got, tether.ObjectLostError) for _, _, _, got in results)
        cut = check_attempts(log, killed_nodes={n.node.session for n in nodes if n.killed})
        print(f"{len(results)} units, nodes killed: {sorted(left_by_killed)}, {cut} attempts cut short, "
              f"{lost} values lost with their node, segments the killed daemons left: "
              f"{sum(len(v) for v in left_by_killed.values())}")

        deadline = time.monotonic() + TIMEOUT
        for n in nodes:
            n.actor.calls = [(seq, x, outcome(ref, deadline)) for seq, x, ref in n.actor.calls]
            check_tally(n.actor, n.actor.calls, lambda text, n=n: f"node {n.node.id} " in text)
            assert len(n.actor.incarnations()) <= 1, f"{n.actor.name} was restarted: {n.actor.incarnations()}"
        listed = {entry["node_id"] for entry in tether.nodes()}
        for n in nodes:
            if n.killed:
                assert eventually(lambda: n.node.id not in {e["node_id"] for e in tether.nodes()}), \
                    f"the head still lists killed node {n.node.id}"
                with pytest.raises(tether.ActorDiedError):
                    tether.get(n.actor.handle.add.remote(-1, 1), timeout=TIMEOUT)
            else:
                assert n.node.id in listed
                pid = tether.get(n.actor.handle.add.remote(-1, 1), timeout=TIMEOUT)[0]
                assert [pid] == n.actor.incarnations()
        assert tether.get([square.remote(i, log.tag(f"after.{i}")) for i in range(4)], timeout=TIMEOUT) == [0, 1, 4, 9]
        del results
        gc.collect()
        live = [n.node for n in nodes if not n.killed]

        def stores():
            return {node.id: objects_of(node) for node in live} | {1: node_status()["objects"]["count"]}

        assert eventually(lambda: not any(stores().values())), f"objects nobody holds: {stores()}"
        assert not any(segments_of(s) for s in [info["session"]] + [node.session for node in live])

        for n in nodes:
            if not n.killed:  # a node stopped as its starter stops it removes its own segments
                leftovers.note_children(n.node.process.pid)
                n.node.stop(remove_leftovers=False)
                assert not segments_of(n.node.session), segments_of(n.node.session)
        leftovers.note_children(head_pid)
        tether.shutdown()
        leftovers.assert_none()
    finally:
        for n in nodes:
            n.node.stop()
        if tether.is_initialized():
            tether.shutdown()
