"""Clusters for test modules: a module's own local cluster (`yield from own_cluster(n)` in a
module-scoped fixture), and `Node`, one more daemon joining this process's cluster."""
import signal
import subprocess

import tether
from polling import eventually
from tether._private import cluster_state, launcher


def own_cluster(num_cpus: int):
    """Ends whatever cluster this process is in, starts one of `num_cpus` CPUs for the module, and
    shuts it down after the module's last test."""
    if tether.is_initialized():
        tether.shutdown()
    tether.init(num_cpus=num_cpus)
    yield
    tether.shutdown()


def stop_daemon(process, timeout=30):
    """Stops a daemon started with --watch-stdin as its starter does (closing its stdin), if it
    still runs; kills it when it does not stop in time."""
    if process.poll() is None:
        process.stdin.close()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


class Node:
    """A tetherd that joined this process's head (the cluster of tether.init()) on this machine;
    ended by `kill` (SIGKILL) or `stop`, after which `remove_leftovers` removes what a killed daemon
    could not (its shared memory and session directory), as the program that starts a daemon must."""

    def __init__(self, num_cpus=1, resources=None):
        head = cluster_state.info()
        # Its output is not printed here: its workers' lines reach this driver through the head.
        self.process, self.info = launcher.start_embedded(num_cpus, resources, None, join=head["address"],
                                                          secret=head["secret"], forward_output=False)
        self.id = self.info["node_id"]
        self.session = self.info["session"]
        assert eventually(lambda: self.id in {n["node_id"] for n in tether.nodes()}), "the node never joined"

    def uri_of_its_workers(self) -> str:
        return launcher.unix_uri(self.info["node_socket"])

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, remove_leftovers=True):
        """Stops the daemon as its starter does (closing its stdin), if it still runs."""
        stop_daemon(self.process)
        if remove_leftovers:
            self.remove_leftovers()

    def remove_leftovers(self):
        launcher.remove_leftovers(self.info)
