"""The cluster in one screen: tasks, actors and shared-memory objects on a private local cluster
that tether.init() starts and the end of the program stops (Ray's API, tether's engine)."""
import time

import numpy as np

import tether


@tether.remote
def square(x):
    return x * x


@tether.remote
def add(a, b):
    return a + b


@tether.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n


@tether.remote
def column_sums(matrix):
    return matrix.sum(axis=0)


def main():
    started = time.perf_counter()
    tether.init(num_cpus=2)
    print(f"cluster up at {tether.cluster_address()} with {tether.cluster_resources()}")
    print("tasks:      ", tether.get([square.remote(i) for i in range(10)]))
    print(f"first results after {time.perf_counter() - started:.2f} s")
    print("task graph: ", tether.get(add.remote(square.remote(3), square.remote(4))))  # refs resolved first

    counter = Counter.remote()
    print("actor:      ", tether.get([counter.incr.remote() for _ in range(3)]))

    matrix = tether.put(np.ones((1000, 1000)))         # 8 MB into shared memory
    view = tether.get(matrix)                          # mapped, not copied: read-only
    print("object:     ", view.shape, "writeable:", view.flags.writeable,
          "column sums:", tether.get(column_sums.remote(matrix))[:3])

    ready, pending = tether.wait([square.remote(i) for i in range(4)], num_returns=2)
    print(f"wait:        {len(ready)} ready, {len(pending)} pending")
    with tether.Executor() as pool:                    # PEP 3148 over the cluster
        print("executor:   ", list(pool.map(pow, [2, 3, 4], [2, 2, 2])))
    tether.shutdown()
    print("cluster stopped")


if __name__ == "__main__":
    main()
