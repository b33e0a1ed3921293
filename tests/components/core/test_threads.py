"""components/core/threads.py: one torch thread while other processes take the cores, all of them again after."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from components.core.threads import SUSTAIN_S, UP_SLACK, ThreadGuard, cpu_seconds, thread_environment, usable_cores


class Machine:
    """A fake clock and CPU counters: `run(seconds, others)` advances time with other processes using `others` cores."""

    def __init__(self) -> None:
        self.now, self.busy, self.own = 100.0, 0.0, 0.0

    def run(self, seconds: float, others: float, own: float = 1.0) -> None:
        self.now += seconds
        self.own += own * seconds
        self.busy += (own + others) * seconds

    def reader(self) -> tuple[float, float]:
        return self.busy, self.own


@pytest.fixture(autouse=True)
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def guard_on(machine: Machine, threads: int = 2, cores: int = 2) -> tuple[ThreadGuard, list[str]]:
    messages: list[str] = []
    torch.set_num_threads(threads)
    guard = ThreadGuard(threads, cores=cores, name="tune", reader=machine.reader, clock=lambda: machine.now,
                        log=messages.append)
    return guard, messages


def steps(guard: ThreadGuard, machine: Machine, seconds: float, others: float, step_s: float = 0.5) -> None:
    for _ in range(round(seconds / step_s)):
        guard.tick()
        machine.run(step_s, others)
    guard.tick()


def test_an_idle_machine_keeps_every_thread_and_a_short_burst_changes_nothing():
    machine = Machine()
    guard, messages = guard_on(machine)
    steps(guard, machine, 60, others=0.05)  # Ray's own processes, a log flush
    steps(guard, machine, SUSTAIN_S / 2, others=1.0)  # a checkpoint copy, a browser tab loading
    steps(guard, machine, 10, others=0.05)
    assert guard.switches == 0 and messages == [] and torch.get_num_threads() == 2


def test_one_busy_process_takes_a_thread_away_until_it_stops():
    machine = Machine()
    guard, messages = guard_on(machine)
    steps(guard, machine, SUSTAIN_S + 1.5, others=0.7)  # what a busy loop gets beside two spinning threads
    assert guard.threads == 1 and torch.get_num_threads() == 1
    assert messages == ["tune: other processes use 0.7 of 2 cores: 1 torch thread(s) instead of 2"]
    steps(guard, machine, 30, others=1.0)  # with one thread the busy process gets its whole core: no flapping
    assert guard.switches == 1
    steps(guard, machine, 1.5, others=0.02)
    assert guard.threads == 2 and torch.get_num_threads() == 2 and guard.switches == 2
    assert messages[-1].startswith("tune: other processes now use only 0.0 of 2 cores: 2 torch thread(s)")


def test_a_step_that_collapsed_switches_at_once():
    machine = Machine()
    guard, _ = guard_on(machine)
    guard.tick()
    machine.run(14.0, others=0.67)  # one step under libgomp's spin beside a busy process
    assert guard.tick() == 1


def test_a_light_load_in_the_hysteresis_band_keeps_the_count():
    machine = Machine()
    guard, _ = guard_on(machine)
    steps(guard, machine, 20, others=0.2)  # above the 0.15 to go back up, below the 0.3 to go down
    assert guard.threads == 2
    steps(guard, machine, SUSTAIN_S + 1, others=1.0)
    steps(guard, machine, 20, others=0.2)
    assert guard.threads == 1


def test_spare_cores_absorb_other_processes_and_one_thread_has_nothing_to_give():
    machine = Machine()
    big, _ = guard_on(machine, threads=2, cores=16)
    steps(big, machine, 20, others=3.0)
    assert big.switches == 0
    machine = Machine()
    single, _ = guard_on(machine, threads=1)
    steps(single, machine, 20, others=1.5)
    assert not single.enabled and single.threads == 1 and torch.get_num_threads() == 1


def test_only_a_users_own_wait_settings_are_forwarded_to_workers():
    assert thread_environment({"HOME": "/x"}) == {}
    assert thread_environment({"OMP_WAIT_POLICY": "PASSIVE", "HOME": "/x"}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert thread_environment({"GOMP_SPINCOUNT": "500"}) == {"GOMP_SPINCOUNT": "500"}


def busiest_processes(seconds: float = 2.0, top: int = 5) -> str:
    """The processes that used the most CPU over `seconds`, as 'cores command' lines (for a failure message)."""

    def ticks() -> dict[int, tuple[int, str]]:
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # ended meanwhile
                continue
            fields = text[text.rindex(")") + 2:].split()
            found[int(stat.parent.name)] = (int(fields[11]) + int(fields[12]), cmdline.strip()[:120])
        return found

    before = ticks()
    time.sleep(seconds)
    after = ticks()
    hz = os.sysconf("SC_CLK_TCK")
    used = sorted(((t - before[pid][0]) / hz / seconds, command) for pid, (t, command) in after.items()
                  if pid in before)
    return "\n".join(f"{cores:.2f} {command}" for cores, command in reversed(used[-top:]))


def others_now(seconds: float = 1.0) -> float:
    """Cores other processes used over the next `seconds`."""
    busy0, own0 = cpu_seconds()
    time.sleep(seconds)
    busy1, own1 = cpu_seconds()
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / seconds


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/stat")
def test_a_real_busy_process_is_seen_and_its_end_too():
    # the premise is a machine busy only with the process this test starts: earlier tests' processes (a Ray
    # worker, a server winding down) get up to a minute to settle below the load that brings threads back
    deadline = time.monotonic() + 60
    while (background := others_now()) >= UP_SLACK and time.monotonic() < deadline:
        pass
    assert background < UP_SLACK, f"the machine never settled ({background:.2f} cores busy):\n{busiest_processes()}"
    cores = usable_cores()
    torch.set_num_threads(cores)
    guard = ThreadGuard(cores, name="test", log=lambda message: None)  # the real /proc/stat and clock
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 30
        while guard.tick() == cores and time.monotonic() < deadline:
            time.sleep(0.25)
        assert guard.threads < cores and torch.get_num_threads() == guard.threads
    finally:
        busy.kill()
        busy.wait()
    deadline = time.monotonic() + 30
    while guard.tick() < cores and time.monotonic() < deadline:
        time.sleep(0.25)
    assert guard.threads == cores, f"still {guard.threads} thread(s); busiest now:\n{busiest_processes()}"
