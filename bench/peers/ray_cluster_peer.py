"""Ray peer of bench/cluster_bench.py: the cases of _cluster_common on the `ray` module.

ray.init() with its defaults, except three settings that keep the run on this machine and leave
nothing behind: every address is 127.0.0.1 (_node_ip_address), the session lives in the temporary
directory the harness made and removes ($CLUSTER_BENCH_TMP, _temp_dir), and usage statistics are not
sent (RAY_USAGE_STATS_ENABLED=0; the machine has no network)."""

import os

from _cluster_common import Library, Skip, main

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def load():
    try:
        import ray
        ray.init, ray.remote, ray.get  # a half-installed package must skip, not crash later
    except Exception as exc:
        raise Skip(f"ray not importable: {type(exc).__name__}: {exc}") from exc

    def init(num_cpus=None):
        kwargs = {"_node_ip_address": "127.0.0.1"}
        if os.environ.get("CLUSTER_BENCH_TMP"):
            kwargs["_temp_dir"] = os.environ["CLUSTER_BENCH_TMP"]
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)

    def describe():
        return {"resources": ray.cluster_resources()}

    return Library(ray, f"Ray {ray.__version__}", init, ray.shutdown, describe,
                   notes="ray.init() defaults; addresses on 127.0.0.1; usage stats off")


if __name__ == "__main__":
    main(load, "ray")
