"""Tests for the cluster's conveniences: the Executor (PEP 3148), tether.call/map, ObjectRef
futures, the command line (start/status/stop/run), and a function the workers cannot import."""
import concurrent.futures
import os
import subprocess
import sys
import textwrap
import time

import pytest

import tether
from clusters import own_cluster

TIMEOUT = 60


@pytest.fixture(scope="module")
def cluster():
    yield from own_cluster(num_cpus=2)


def slow_square(x):
    return x * x


def fail_on(x, bad):
    if x == bad:
        raise KeyError(x)
    return x


@tether.remote
def plus_one(x):
    return x + 1


def test_executor_submit_and_as_completed(cluster):
    """Executor.submit gives concurrent.futures.Futures that as_completed and wait understand."""
    with tether.Executor() as pool:
        futures = [pool.submit(slow_square, i) for i in range(20)]
        assert all(isinstance(f, concurrent.futures.Future) for f in futures)
        assert sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=TIMEOUT)) == \
            sorted(i * i for i in range(20))
        done, not_done = concurrent.futures.wait(futures, timeout=TIMEOUT)
        assert len(done) == 20 and not not_done


def test_executor_map_keeps_order_with_and_without_chunks(cluster):
    """Executor.map returns results in input order, for chunksize 1 and larger chunks alike."""
    with tether.Executor() as pool:
        assert list(pool.map(slow_square, range(10), timeout=TIMEOUT)) == [i * i for i in range(10)]
        assert list(pool.map(pow, range(7), [2] * 7, chunksize=3, timeout=TIMEOUT)) == [i ** 2 for i in range(7)]


def test_executor_future_carries_the_exception(cluster):
    """An exception in a submitted call is the future's exception, and map raises it in order."""
    with tether.Executor() as pool:
        error = pool.submit(fail_on, 3, 3).exception(timeout=TIMEOUT)
        assert isinstance(error, KeyError)
        results = pool.map(fail_on, [1, 2, 3], [3, 3, 3], timeout=TIMEOUT)
        assert next(results) == 1 and next(results) == 2
        with pytest.raises(KeyError):
            next(results)


def test_executor_refuses_work_after_shutdown(cluster):
    """A shut-down Executor refuses new submissions, like every PEP 3148 executor."""
    pool = tether.Executor()
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(slow_square, 1)


def test_call_and_map(cluster):
    """tether.call runs one call as a task; tether.map runs one task per item, results in order."""
    assert tether.call(sum, [1, 2, 3]) == 6
    assert tether.map(pow, [2, 3, 4], [3, 3, 3]) == [8, 27, 64]


def test_objectref_future_and_await(cluster):
    """ObjectRef.future() is a concurrent.futures.Future of the value; an ObjectRef is awaitable."""
    import asyncio

    ref = plus_one.remote(41)
    assert ref.future().result(timeout=TIMEOUT) == 42

    async def main():
        return await plus_one.remote(1), await tether.put("x")

    assert asyncio.run(main()) == (2, "x")


def test_function_the_workers_cannot_import(cluster, tmp_path):
    """A function pickled by reference to a module only the driver has fails with the import error,
    and the cluster goes on running other tasks."""
    (tmp_path / "driver_only_module.py").write_text("def triple(x):\n    return 3 * x\n")
    sys.path.insert(0, str(tmp_path))  # after init: the workers' path does not have it
    try:
        import driver_only_module

        ref = tether.remote(driver_only_module.triple).remote(2)
        with pytest.raises(ModuleNotFoundError) as caught:
            tether.get(ref, timeout=TIMEOUT)
        assert isinstance(caught.value, tether.TaskError)
        assert "driver_only_module" in str(caught.value)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("driver_only_module", None)
    assert tether.get(plus_one.remote(1), timeout=TIMEOUT) == 2


def _tether(args, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "tether", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_start_status_stop(tmp_path):
    """tether start --head runs a daemon that tether status describes, a driver joins with
    address="auto", and tether stop ends it."""
    env = dict(os.environ, TETHER_STATE_DIR=str(tmp_path))
    env.pop("TETHER_ADDRESS", None)
    started = _tether(["start", "--head", "--port", "0", "--num-cpus", "1", "--resources", '{"gpu": 1}'], env)
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.split("daemon pid ")[1].split(",")[0])
    try:
        again = _tether(["start", "--head", "--port", "0"], env)
        assert again.returncode == 1 and "already running" in again.stderr
        status = _tether(["status"], env)
        assert status.returncode == 0, status.stderr
        assert "gpu 1/1 free" in status.stdout and "CPU 1/1 free" in status.stdout
        driver = textwrap.dedent("""
            import tether
            tether.init(address="auto")
            @tether.remote(resources={"gpu": 1})
            def where():
                return "gpu task ran"
            print(tether.get(where.remote(), timeout=60))
            tether.shutdown()
        """)
        joined = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=90)
        assert joined.returncode == 0, joined.stderr
        assert "gpu task ran" in joined.stdout
    finally:
        stopped = _tether(["stop"], env)
    assert stopped.returncode == 0, stopped.stderr
    assert _gone(pid), f"the daemon (pid {pid}) still runs after tether stop"
    assert _tether(["status"], env).returncode == 1


def _gone(pid, limit=10.0):
    """Whether `pid` has ended (or is a zombie waiting for its parent) within `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_start_address_joins_a_second_node(tmp_path):
    """tether start --address joins the recorded head as node 2 (its secret comes from the record
    on the head's machine); status lists both; stopping the head stops the joined node too."""
    env = dict(os.environ, TETHER_STATE_DIR=str(tmp_path))
    env.pop("TETHER_ADDRESS", None)
    env.pop("TETHER_SECRET", None)
    started = _tether(["start", "--head", "--port", "0", "--num-cpus", "1"], env)
    assert started.returncode == 0, started.stderr
    head_address = started.stdout.split("started at ")[1].split()[0]
    try:
        joined = _tether(["start", "--address", head_address, "--num-cpus", "1", "--resources", '{"disk": 3}'], env)
        assert joined.returncode == 0, joined.stderr
        assert "tether node 2 joined" in joined.stdout
        node_pid = int(joined.stdout.split("daemon pid ")[1].split(",")[0])
        deadline = time.monotonic() + 30
        while True:
            status = _tether(["status"], env)
            if "disk 3/3 free" in status.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status.returncode == 0, status.stderr
        assert "node 2 at 127.0.0.1:" in status.stdout and "disk 3/3 free" in status.stdout
    finally:
        stopped = _tether(["stop"], env)
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(node_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the joined node did not stop with its head")


def test_start_needs_a_role_and_joining_needs_the_secret(tmp_path):
    env = dict(os.environ, TETHER_STATE_DIR=str(tmp_path))
    env.pop("TETHER_SECRET", None)
    neither = _tether(["start"], env)
    assert neither.returncode == 2 and "--head" in neither.stderr
    no_secret = _tether(["start", "--address", "127.0.0.1:1"], env)
    assert no_secret.returncode == 2 and "TETHER_SECRET" in no_secret.stderr
    unreachable = _tether(["start", "--address", "127.0.0.1:1"], dict(env, TETHER_SECRET="s"))
    assert unreachable.returncode == 1 and "cannot join the cluster at 127.0.0.1:1" in unreachable.stderr


def test_run_runs_a_script_on_a_local_cluster(tmp_path):
    """tether run -n N script.py gives the script a cluster of N CPUs that tether.init() joins."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import sys
        import tether
        tether.init()
        @tether.remote
        def double(x):
            return 2 * x
        print("result", tether.get([double.remote(i) for i in range(4)]), tether.cluster_resources()["CPU"])
        sys.exit(3)
    """))
    env = dict(os.environ)
    env.pop("TETHER_ADDRESS", None)
    ran = _tether(["run", "-n", "3", str(script)], env, timeout=120)
    assert ran.returncode == 3, ran.stderr
    assert "result [0, 2, 4, 6] 3.0" in ran.stdout


@tether.expose
class _Greeter:
    def hi(self):
        return "hi"


def test_the_cluster_serves_the_name_server(monkeypatch):
    """The head daemon serves tether.ns: locate_ns(cluster address) registers, looks up, lists,
    filters by tags and removes, and its sweep drops entries whose servers are gone."""
    monkeypatch.setenv("TETHER_NS_SWEEP_INTERVAL", "0.2")
    if tether.is_initialized():
        tether.shutdown()
    info = tether.init(num_cpus=1)
    server = tether.Server()
    try:
        uri = server.register(_Greeter(), "greeter")
        ns = tether.locate_ns(tether.cluster_address(), secret=info["secret"])
        ns.register("app.greeter", uri, metadata={"blue", "fast"})
        ns.register("app.gone", "tether://127.0.0.1:1/nobody", metadata=["blue"])
        assert ns.lookup("app.greeter") == uri
        assert ns.metadata("app.greeter") == ["blue", "fast"]
        assert ns.lookup_by_metadata(["fast"]) == {"app.greeter": uri}
        assert tether.Proxy(ns.lookup("app.greeter")).hi() == "hi"
        with pytest.raises(KeyError):
            ns.lookup("app.missing")
        with pytest.raises(ValueError):
            ns.register("app.bad", "http://example.invalid/")
        deadline = time.monotonic() + 30
        while "app.gone" in ns.list(prefix="app.") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ns.list(prefix="app.") == {"app.greeter": uri}  # the dead entry was swept, the live one kept
        assert ns.remove("app.greeter") is True and ns.remove("app.greeter") is False
        ns.close()
    finally:
        server.close()
        tether.shutdown()
