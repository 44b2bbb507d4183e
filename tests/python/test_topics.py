"""Topics served by the cluster's head: wildcards, the last-value cache, order, presence that
follows a process's life, subscribers in other processes, and bad input."""
import signal
import subprocess
import sys
import textwrap
import threading
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
def root(cluster):
    """A subject prefix of this test's own, so tests do not hear each other's retained values."""
    return f"t{uuid.uuid4().hex[:8]}"


def drain(subscription, count):
    return [subscription.get(timeout=TIMEOUT) for _ in range(count)]


def test_wildcards_choose_the_subjects(root):
    with tether.subscribe(f"{root}.*.temp") as one_level, tether.subscribe(f"{root}.#") as every:
        tether.publish(f"{root}.kitchen.temp", 21.5, retain=False)
        tether.publish(f"{root}.kitchen.oven.temp", 180.0, retain=False)
        tether.publish(f"{root}.hall.humidity", 0.4, retain=False)
        tether.publish(f"{root}.hall.temp", 19.0, retain=False)
        assert drain(one_level, 2) == [(f"{root}.kitchen.temp", 21.5), (f"{root}.hall.temp", 19.0)]
        assert [s for s, _ in drain(every, 4)] == [f"{root}.kitchen.temp", f"{root}.kitchen.oven.temp",
                                                   f"{root}.hall.humidity", f"{root}.hall.temp"]
        with pytest.raises(TimeoutError):
            one_level.get(timeout=0.2)  # the oven and the humidity were not for it


def test_a_new_subscriber_gets_the_last_retained_value_at_once(root):
    tether.publish(f"{root}.price", 10)
    tether.publish(f"{root}.price", 11)
    tether.publish(f"{root}.news", "not kept", retain=False)
    with tether.subscribe(f"{root}.*") as late:
        assert late.get(timeout=TIMEOUT) == (f"{root}.price", 11)
        tether.publish(f"{root}.price", 12)
        assert late.get(timeout=TIMEOUT) == (f"{root}.price", 12)
    assert tether.retained(f"{root}.#") == {f"{root}.price": 12}


def test_values_keep_their_types(root):
    values = [1, 1.0, True, None, "text", b"\x00raw", (1, (2, "x")), [1, 2], {"a": [1.5]}, b"z" * 200_000]
    with tether.subscribe(f"{root}.v") as subscription:
        for value in values:
            tether.publish(f"{root}.v", value, retain=False)
        got = [value for _, value in drain(subscription, len(values))]
    assert got == values
    assert [type(v) for v in got] == [type(v) for v in values]


def test_a_callback_sees_every_message_in_publish_order(root):
    seen, done = [], threading.Event()

    def on_message(subject, value):
        seen.append(value)
        if len(seen) == 500:
            done.set()

    subscription = tether.subscribe(f"{root}.seq", on_message)
    for i in range(500):
        tether.publish(f"{root}.seq", i, retain=False)
    assert done.wait(TIMEOUT)
    subscription.close()
    assert seen == list(range(500))


def test_a_subscriber_in_another_process_hears_publishers_in_order(root):
    info = cluster_state.info()
    listener = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import tether
        tether.init(address={info['address']!r}, secret={info['secret']!r})
        with tether.subscribe("{root}.feed") as feed:
            tether.publish("{root}.ready", True)
            values = [feed.get(timeout=60)[1] for _ in range(100)]
        tether.publish("{root}.result", values == list(range(100)))
        tether.shutdown()
    """)])
    try:
        with tether.subscribe(f"{root}.ready") as ready:
            ready.get(timeout=TIMEOUT)
        with tether.subscribe(f"{root}.result") as result:
            for i in range(100):
                tether.publish(f"{root}.feed", i, retain=False)
            assert result.get(timeout=TIMEOUT) == (f"{root}.result", True)
    finally:
        assert listener.wait(timeout=TIMEOUT) == 0


def test_presence_follows_a_services_life(root):
    """A subscriber hears a service appear, and disappear when its process is killed."""
    info = cluster_state.info()
    with tether.subscribe(f"$presence.{root}.#") as presence:
        service = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import time, tether
            tether.init(address={info['address']!r}, secret={info['secret']!r})
            tether.announce("{root}.printer")
            time.sleep(120)
        """)])
        try:
            assert presence.get(timeout=TIMEOUT) == (f"$presence.{root}.printer", {"present": True})
            assert tether.retained(f"$presence.{root}.#") == {f"$presence.{root}.printer": {"present": True}}
            service.send_signal(signal.SIGKILL)
            assert presence.get(timeout=TIMEOUT) == (f"$presence.{root}.printer", {"present": False})
            assert tether.retained(f"$presence.{root}.#") == {}
        finally:
            if service.poll() is None:
                service.kill()
            service.wait()


def test_withdraw_ends_presence_and_unsubscribe_ends_messages(root):
    with tether.subscribe(f"$presence.{root}.*") as presence:
        with tether.announce(f"{root}.svc"):
            assert presence.get(timeout=TIMEOUT)[1] == {"present": True}
        assert presence.get(timeout=TIMEOUT)[1] == {"present": False}
    subscription = tether.subscribe(f"{root}.x")
    subscription.close()
    tether.publish(f"{root}.x", 1, retain=False)
    assert list(subscription) == []


def test_bad_input_is_refused_and_topics_go_on(root):
    for subject in ("", "a..b", ".a", "a."):
        with pytest.raises(ValueError, match="is not a subject"):
            tether.publish(subject, 1)
    with pytest.raises(ValueError, match="no wildcards"):
        tether.publish(f"{root}.*", 1)
    with pytest.raises(ValueError, match="announced, not published"):
        tether.publish(f"$presence.{root}", 1)
    with pytest.raises(ValueError, match="larger than the limit"):
        tether.publish(f"{root}.big", b"x" * (2 << 20))
    with pytest.raises(ValueError, match="is not a subject"):
        tether.subscribe(f"{root}..x")
    with tether.subscribe(f"{root}.ok") as fine:
        tether.publish(f"{root}.ok", "still serving", retain=False)
        assert fine.get(timeout=TIMEOUT) == (f"{root}.ok", "still serving")


def test_large_bytes_inside_a_tuple_or_a_set_reach_subscribers_and_the_cache(root):
    """Bytes of 64 KiB and more travel out of band: inside a tuple they must still arrive."""
    value = (b"a" * 100_000, (1, b"b" * 70_000), frozenset({b"c" * 65_536}))
    with tether.subscribe(f"{root}.big") as subscription:
        tether.publish(f"{root}.big", value)
        assert subscription.get(timeout=TIMEOUT) == (f"{root}.big", value)
    assert tether.retained(f"{root}.big") == {f"{root}.big": value}


def test_async_iteration_ends_when_the_subscription_closes(root):
    import asyncio

    async def collect():
        subscription = tether.subscribe(f"{root}.a")
        tether.publish(f"{root}.a", 1, retain=False)
        got = []
        async for subject, value in subscription:
            got.append(value)
            subscription.close()
        return got

    assert asyncio.run(asyncio.wait_for(collect(), TIMEOUT)) == [1]
