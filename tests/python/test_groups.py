"""Process groups served by the cluster's head. Several processes send concurrently and the tests
check the properties, not examples: one identical order of agreed and safe messages at every
member, fifo per sender, causal order (a reply after its question), views at the same position
for every survivor, and a member killed mid-stream giving a disconnect view with no message lost
by one survivor and not the other."""
import json
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

import tether
from clusters import own_cluster
from tether._private import cluster_state

TIMEOUT = 60


@pytest.fixture(scope="module")
def cluster():
    yield from own_cluster(num_cpus=1)


@pytest.fixture
def name(cluster):
    return f"g{uuid.uuid4().hex[:8]}"


def receive_until(group, done, limit=10_000):
    """Items from the group until `done(items)` is true."""
    items = []
    while not done(items):
        items.append(group.receive(timeout=TIMEOUT))
        assert len(items) < limit
    return items


# A member process: joins, waits for a view of `size` members, sends `count` messages (questions
# from member 0 are answered by member 1), receives until it has every message, prints its stream.
MEMBER = textwrap.dedent("""
    import json, sys, tether
    address, secret, name, index, size, count = sys.argv[1:7]
    index, size, count = int(index), int(size), int(count)
    tether.init(address=address, secret=secret)
    group = tether.Group(name)
    stream, messages = [], 0
    def take():
        global messages
        item = group.receive(timeout=60)
        if isinstance(item, tether.View):
            stream.append(["view", item.id, list(item.members)])
        else:
            messages += 1
            stream.append(["message", item.sender, item.data, item.order])
            if index == 1 and item.data[0] == "question":
                group.send(["reply", item.data[1]], order="causal")
    while not any(e[0] == "view" and len(e[2]) == size for e in stream):
        take()
    for i in range(count):
        group.send(["question" if index == 0 else "note", i], order="safe" if i % 3 == 0 else "agreed")
    total = size * count + count  # every note and question, and member 1's replies
    while messages < total:
        take()
    print(json.dumps({"me": group.private_name, "stream": stream}), flush=True)
    group.leave()
    tether.shutdown()
""")


def run_members(name, size, count):
    info = cluster_state.info()
    processes = [subprocess.Popen([sys.executable, "-c", MEMBER, info["address"], info["secret"], name, str(i),
                                   str(size), str(count)], stdout=subprocess.PIPE, text=True)
                 for i in range(size)]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def messages_of(stream):
    return [tuple(e[1:]) for e in stream if e[0] == "message"]


def test_concurrent_senders_agree_on_one_order_fifo_and_causal(name):
    results = run_members(name, size=3, count=60)
    orders = [messages_of(r["stream"]) for r in results]
    assert len(orders[0]) == 3 * 60 + 60
    assert orders[0] == orders[1] == orders[2]  # agreed and safe: one order everywhere
    for sender in {m[0] for m in orders[0]}:
        sent = [m[1][1] for m in orders[0] if m[0] == sender and m[1][0] in ("note", "question")]
        assert sent == sorted(sent)  # fifo per sender
    position = {(m[1][0], m[1][1]): i for i, m in enumerate(orders[0])}
    for i in range(60):
        assert position[("question", i)] < position[("reply", i)]  # causal: never a reply first


def test_views_come_at_the_same_position_for_every_member(name):
    results = run_members(name, size=3, count=20)
    # From the view with all three on, every member's stream (views and messages) is the same.
    def from_full_view(stream):
        start = next(i for i, e in enumerate(stream) if e[0] == "view" and len(e[2]) == 3)
        return [e[:2] if e[0] == "view" else e for e in stream[start:]]

    streams = [from_full_view(r["stream"]) for r in results]
    shortest = min(len(s) for s in streams)
    assert shortest >= 1 + 3 * 20 + 20
    assert streams[0][:shortest] == streams[1][:shortest] == streams[2][:shortest]


SENDER = textwrap.dedent("""
    import sys, tether
    address, secret, name = sys.argv[1:4]
    tether.init(address=address, secret=secret)
    group = tether.Group(name)
    i = 0
    while True:
        group.send(i, order="agreed")
        i += 1
""")


def test_a_killed_member_leaves_with_disconnect_and_survivors_lost_nothing(name):
    a, b = tether.Group(name), tether.Group(name)
    info = cluster_state.info()
    doomed = subprocess.Popen([sys.executable, "-c", SENDER, info["address"], info["secret"], name])
    try:
        def heard_fifty(items):
            return sum(isinstance(i, tether.Message) for i in items) >= 50

        first = receive_until(a, heard_fifty)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=TIMEOUT)

        def saw_it_leave(items):
            return any(isinstance(i, tether.View) and i.left for i in items)

        rest_a = first + receive_until(a, saw_it_leave)
        rest_b = receive_until(b, lambda items: saw_it_leave(items) and len(items) > 0)
        sender = next(m.sender for m in rest_a if isinstance(m, tether.Message))
        leave_a = next(i for i in rest_a if isinstance(i, tether.View) and i.left)
        assert leave_a.left == ((sender, "disconnect"),)
        # b joined a view before the sender joined: compare what both got from the sender.
        from_sender_a = [m.data for m in rest_a if isinstance(m, tether.Message)]
        from_sender_b = [m.data for m in rest_b if isinstance(m, tether.Message)]
        assert from_sender_a == from_sender_b == list(range(len(from_sender_a)))
        views_b = [i for i in rest_b if isinstance(i, tether.View)]
        assert views_b[-1] == leave_a  # the same view, the same members, in the same place
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()
        a.leave()
        b.leave()


def test_a_silent_member_is_removed_after_its_failure_timeout(name):
    watcher = tether.Group(name)
    info = cluster_state.info()
    frozen = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time, tether
        tether.init(address={info['address']!r}, secret={info['secret']!r})
        group = tether.Group({name!r}, failure_timeout=1.0)
        print("joined", flush=True)
        try:
            while True:
                group.receive(timeout=60)
        except tether.ConnectionClosedError as exc:
            print("told:", exc, flush=True)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert frozen.stdout.readline().strip() == "joined"
        frozen.send_signal(signal.SIGSTOP)
        items = receive_until(watcher, lambda got: any(isinstance(i, tether.View) and i.left for i in got))
        view = [i for i in items if isinstance(i, tether.View)][-1]
        assert view.left[0][1] == "disconnect" and view.members == (watcher.private_name,)
        frozen.send_signal(signal.SIGCONT)  # it resumes, and learns it is out instead of waiting
        assert "was removed from group" in frozen.stdout.readline()
    finally:
        frozen.send_signal(signal.SIGCONT)
        frozen.kill()
        frozen.wait()
        watcher.leave()


def test_private_names_self_discard_and_leave(name):
    with tether.Group(name) as a, tether.Group(name) as b:
        receive_until(a, lambda items: any(isinstance(i, tether.View) and len(i.members) == 2 for i in items))
        receive_until(b, lambda items: any(isinstance(i, tether.View) and len(i.members) == 2 for i in items))
        a.send("for b only", to=b.private_name)
        a.send("not to myself", self_discard=True)
        b.send("to everyone")
        assert [b.receive(timeout=TIMEOUT).data for _ in range(3)] == ["for b only", "not to myself", "to everyone"]
        assert a.receive(timeout=TIMEOUT).data == "to everyone"
        b.leave()
        assert a.receive(timeout=TIMEOUT).left == ((b.private_name, "leave"),)
        with pytest.raises(ValueError, match="send after leave"):
            b.send("too late")


def test_bad_input_is_refused_and_the_group_goes_on(name):
    with tether.Group(name) as group:
        group.receive(timeout=TIMEOUT)
        with pytest.raises(ValueError, match="unknown order"):
            group.send("x", order="total")
        with pytest.raises(ValueError, match="larger than the limit"):
            group.send(b"x" * (2 << 20))
        with pytest.raises(ValueError, match="no member named"):
            group.send("x", to="nobody#1")
        with pytest.raises(ValueError, match="group name"):
            tether.Group("bad#name")
        with pytest.raises(ValueError, match="failure_timeout"):
            tether.Group(name, failure_timeout=0)
        group.send("still here")
        assert group.receive(timeout=TIMEOUT).data == "still here"


@tether.remote
def member_in_a_task(name):
    """A plain (not async) task joins a group and waits for a message: the worker serves the
    group's events while the task waits."""
    with tether.Group(name) as group:
        while len(group.members) < 2:
            group.receive(timeout=TIMEOUT)
        group.send("from the task")
        while True:
            item = group.receive(timeout=TIMEOUT)
            if isinstance(item, tether.Message) and item.data == "from the driver":
                return "heard the driver"


def test_a_plain_task_can_be_a_member(name):
    with tether.Group(name) as group:
        ref = member_in_a_task.remote(name)
        receive_until(group, lambda items: any(isinstance(i, tether.Message) for i in items))
        group.send("from the driver")
        assert tether.get(ref, timeout=TIMEOUT) == "heard the driver"


def test_when_the_head_goes_receive_raises_instead_of_waiting(tmp_path):
    """A group served by a standalone `tether services`: killing it ends every member's stream
    with ConnectionClosedError (found by the member's heartbeat), and send raises too."""
    import os
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, TETHER_SECRET="group-secret")
    server = subprocess.Popen([sys.executable, "-m", "tether", "services", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert "listening on" in server.stdout.readline()
        group = tether.Group("lonely", address=f"127.0.0.1:{port}", secret="group-secret", failure_timeout=1.0)
        assert isinstance(group.receive(timeout=TIMEOUT), tether.View)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=TIMEOUT)
        with pytest.raises(tether.ConnectionClosedError):
            group.receive(timeout=TIMEOUT)
        with pytest.raises(ValueError, match="send after leave"):
            group.send("nobody hears this")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
