"""tether peer of bench/cluster_bench.py: the cases of _cluster_common on the `tether` module, whose
init() with no address starts a private local cluster (tetherd and its workers)."""

from _cluster_common import Library, Skip, main


def load():
    try:
        import tether
        tether.init, tether.remote, tether.get  # a half-built package must skip, not crash later
    except Exception as exc:
        raise Skip(f"tether cluster API not usable: {type(exc).__name__}: {exc}") from exc

    def init(num_cpus=None):
        tether.init(num_cpus=num_cpus)

    def describe():
        return {"resources": tether.cluster_resources()}

    return Library(tether, f"tether {getattr(tether, '__version__', '?')}", init, tether.shutdown, describe,
                   notes="tether.init() defaults")


if __name__ == "__main__":
    main(load, "tether")
