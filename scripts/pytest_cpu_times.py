"""A pytest plugin: CPU seconds of every test's set-up, call and tear-down, this process and the
child processes it waited for (a `smile` subprocess counts), slowest first.

Wall times on a machine shared with other work say little; CPU seconds stay comparable. Run:

    OMP_NUM_THREADS=1 PYTHONPATH=scripts .venv/bin/python -m pytest Testing/test_training.py -p pytest_cpu_times

($CPU_TIMES_OUT, if set, names a file that gets the same table.)
"""
import os
import time

import pytest

_rows: list[tuple[float, float, str, str]] = []


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _timed(phase):
    @pytest.hookimpl(hookwrapper=True)
    def hook(item):
        cpu, wall = _cpu(), time.time()
        yield
        _rows.append((_cpu() - cpu, time.time() - wall, phase, item.nodeid))
    return hook


pytest_runtest_setup = _timed("setup")
pytest_runtest_call = _timed("call")
pytest_runtest_teardown = _timed("teardown")


def pytest_terminal_summary(terminalreporter):
    rows = sorted(_rows, reverse=True)
    lines = [f"CPU {sum(r[0] for r in rows):.1f} s, wall {sum(r[1] for r in rows):.1f} s in all"]
    lines += [f"{cpu:7.1f} s CPU {wall:7.1f} s wall  {phase:8s} {name}" for cpu, wall, phase, name in rows if cpu >= 0.5]
    for line in lines:
        terminalreporter.write_line(line)
    if os.environ.get("CPU_TIMES_OUT"):
        with open(os.environ["CPU_TIMES_OUT"], "w") as fh:
            fh.write("\n".join(lines) + "\n")
