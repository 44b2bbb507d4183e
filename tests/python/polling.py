"""Waiting in tests for what happens in other processes, without letting timing decide a test."""
import time


def eventually(predicate, timeout=60, interval=0.02):
    """Polls `predicate` until it is true or `timeout` passes; returns its last value (the caller
    asserts on it, so a slow machine makes a test slower, never wrong)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
