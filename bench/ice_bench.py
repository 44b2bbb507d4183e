"""tether against ZeroC Ice 3.7, side by side in one run (issue: the C++ face).

    python3 bench/ice_bench.py [--build DIR] [--ice-python /usr/bin/python3]

C++ rows: tether_bench_ice (bench/ice/ice_bench.cpp, built by the project's CMake when Debian's
zeroc-ice-all-dev is installed), a client process against a server process of the same system.
Python rows: bench/peers/tether_peer.py against bench/peers/ice_peer.py (Ice's Python mapping, Debian
python3-zeroc-ice, which lives in the system Python). Every number is the best of 3 runs after a
warm-up; ratios are tether / Ice."""

import argparse
import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
REPO = os.path.dirname(HERE)

# (row, key in the results, unit, target ratio tether/Ice or None)
CPP_ROWS = [
    ("C++ sync twoway small calls", "sync", "calls/s", 1.0),
    ("C++ pipelined async calls (50,000 in flight)", "async", "calls/s", 2.0),
    ("C++ 1 MiB bytes echo", "bytes", "MB/s", 1.0),
]
PY_ROWS = [
    ("Python sync small calls", "sync_calls_per_s", "calls/s", 2.0),
    ("Python pipelined calls (50,000 in flight)", "pipelined_calls_per_s", "calls/s", None),
    ("Python 1 MiB bytes echo", "big_mb_per_s", "MB/s", None),
]


def find_program(build):
    candidates = [os.path.join(build, "tether_bench_ice")] if build else glob.glob(os.path.join(REPO, "build", "*", "tether_bench_ice"))
    candidates = [os.path.abspath(c) for c in candidates if os.access(c, os.X_OK)]
    return max(candidates, key=os.path.getmtime) if candidates else None


import run as harness  # noqa: E402  (bench/run.py: the same CPU placement as the other benchmarks)


def pin_to(role):
    return harness.pin_to(role)


def serve(command):
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=os.path.join(HERE, "peers"),
                              preexec_fn=pin_to("server"))
    line = server.stdout.readline().strip()
    if not line.startswith("READY "):
        server.stdin.close()
        server.wait(timeout=30)
        raise RuntimeError(f"{command[:3]} did not start: {line!r}")
    return server, line[len("READY "):]


def run_pair(server_command, client_command):
    server, address = serve(server_command)
    try:
        out = subprocess.run(client_command + [address], capture_output=True, text=True, timeout=900, cwd=os.path.join(HERE, "peers"),
                             preexec_fn=pin_to("client"))
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return line[len("RESULT "):]
    raise RuntimeError(f"{client_command[:3]} gave no result:\n{out.stdout}\n{out.stderr}")


def cpp_results(program, system):
    text = run_pair([program, "server", system], [program, "client", system])
    return {k: float(v) for k, v in (item.split("=") for item in text.split())}


def python_results(python, peer):
    peer_path = os.path.join(HERE, "peers", f"{peer}_peer.py")
    text = run_pair([python, peer_path, "server"],
                    [python, peer_path, "client", "--sync-calls", "20000", "--pipe-calls", "50000", "--big-bytes", str(1 << 20)])
    return json.loads(text)


def table(rows, tether, ice):
    lines = ["| benchmark | tether | Ice | tether / Ice | target | met? |", "| --- | --- | --- | --- | --- | --- |"]
    for name, key, unit, target in rows:
        t, i = tether.get(key), ice.get(key)
        ratio = t / i if t and i else None
        met = "-" if target is None or ratio is None else ("yes" if ratio >= target else "**no**")
        lines.append(f"| {name} ({unit}) | {t:,.0f} | {i:,.0f} | {ratio:.2f}x | {'-' if target is None else f'>= {target:g}x'} | {met} |"
                     if ratio is not None else f"| {name} ({unit}) | {t} | {i} | - | - | - |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", help="the CMake build directory holding tether_bench_ice")
    parser.add_argument("--ice-python", default="/usr/bin/python3", help="a Python with Ice's Python mapping")
    parser.add_argument("--pin", choices=("split", "same", "none"), default="none",
                        help="split: servers on one CPU and clients on another; same: all on one CPU")
    args = parser.parse_args()
    harness.PLACEMENT = harness.placement_for(args.pin)
    load = os.getloadavg()[0]
    print(f"# tether vs ZeroC Ice, {time.strftime('%Y-%m-%d %H:%M')}, load average {load:.2f}, {os.cpu_count()} CPUs, "
          f"--pin {args.pin}")
    program = find_program(args.build)
    if program:
        tether_cpp, ice_cpp = cpp_results(program, "tether"), cpp_results(program, "ice")
        print(table(CPP_ROWS, tether_cpp, ice_cpp))
    else:
        print("C++ rows skipped: tether_bench_ice is not built (install zeroc-ice-all-dev, then rebuild)")
    tether_py = python_results(sys.executable, "tether")
    ice_py = python_results(args.ice_python, "ice")
    print(table(PY_ROWS, tether_py, ice_py))
    print(f"(tether Python: {tether_py.get('label')}; Ice Python: {ice_py.get('label')} on {args.ice_python})")


if __name__ == "__main__":
    main()
