"""A work queue on a tuple space: the driver writes ("task", i, n) tuples, two worker tasks take them
with in_ until a poison pill, and write ("result", i, value) tuples that the driver takes back."""
import tether

SPACE = "work-queue"


@tether.remote
def worker(name):
    space = tether.TupleSpace(SPACE)  # inside a task, the cluster's head is found by itself
    done = 0
    while True:
        _, i, n = space.in_(("task", int, tether.ANY))
        if i == -1:  # the poison pill: one per worker
            return f"{name} did {done} tasks"
        space.out(("result", i, sum(k * k for k in range(n))))
        done += 1


def main():
    tether.init(num_cpus=2)
    space = tether.TupleSpace(SPACE)
    workers = [worker.remote(f"worker {w}") for w in range(2)]
    count = 10
    for i in range(count):
        space.out(("task", i, 1_000_000 + 100_000 * i))
    results = {}
    for _ in range(count):
        _, i, value = space.in_(("result", int, int), timeout=60)
        results[i] = value
    for _ in workers:
        space.out(("task", -1, None))
    for i in sorted(results):
        print(f"task {i}: {results[i]}")
    print(tether.get(workers, timeout=60))
    print("tuples left:", space.count())
    tether.shutdown()


if __name__ == "__main__":
    main()
