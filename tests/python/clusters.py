"""A test module's own local cluster: `yield from own_cluster(n)` in a module-scoped fixture."""
import tether


def own_cluster(num_cpus: int):
    """Ends whatever cluster this process is in, starts one of `num_cpus` CPUs for the module, and
    shuts it down after the module's last test."""
    if tether.is_initialized():
        tether.shutdown()
    tether.init(num_cpus=num_cpus)
    yield
    tether.shutdown()
