"""The operator of a real-robot evaluation: yes/no questions and messages, on a terminal or through a FIFO.

`Operator` asks and tells through two injectable functions (defaults: `input` and `print`), so tests
drive it with scripted answers. A scheduled job (SLURM, cron) has no terminal: `FifoChannel` then
writes every message to `<dir>/operator.log` and reads answers from the named pipe `<dir>/operator.in`,
and the operator joins from any shell with

    python -m workflows.robot_eval attach <dir>      # shows the prompts, sends what you type
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

YES, NO = ("y", "yes"), ("n", "no")


class OperatorUnavailable(RuntimeError):
    """Nobody can answer: the input stream is closed (e.g. a batch job started without a FIFO channel)."""


class Operator:
    """The person at the robot."""

    def __init__(self, input_fn: Callable[[str], str] = input, output_fn: Callable[[str], None] = print) -> None:
        """Args: input_fn shows a prompt and returns one answer line; output_fn shows a message."""
        self._input, self._output = input_fn, output_fn

    def say(self, message: str) -> None:
        """Show a message."""
        self._output(message)

    def confirm(self, question: str) -> bool:
        """Ask a yes/no question until the answer is y(es) or n(o).

        Raises:
            OperatorUnavailable: the input stream ended.
        """
        while True:
            try:
                answer = self._input(f"{question} [y/n] ").strip().lower()
            except EOFError as err:
                raise OperatorUnavailable(f"no operator answered {question!r}: the input stream is closed; run "
                                          "interactively, or with --operator-fifo and `robot_eval attach`") from err
            if answer in YES or answer in NO:
                return answer in YES
            self._output(f"please answer y or n (got {answer!r})")


class FifoChannel:
    """Operator I/O for a job without a terminal: messages to `operator.log`, answers from the FIFO `operator.in`.

    The job holds the FIFO open for reading *and* writing for its whole life: the pipe then never
    reports end-of-file between the operator's answers and never drops a line written between two
    prompts. Input that arrived before a prompt is discarded, so a stale "y" never confirms a motion.
    """

    def __init__(self, folder: Path) -> None:
        """Create `folder`, its log and its FIFO (kept if they exist, so a resumed job reuses them)."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path, self.fifo_path = self.folder / "operator.log", self.folder / "operator.in"
        if not self.fifo_path.exists():
            os.mkfifo(self.fifo_path)
        elif not self.fifo_path.is_fifo():
            raise ValueError(f"{self.fifo_path}: exists and is not a FIFO")
        self._fd: int | None = None

    def output(self, message: str) -> None:
        """Append a message to the log (and echo it to this job's stdout)."""
        with self.log_path.open("a") as log:
            log.write(message + "\n")
        print(message, flush=True)

    def input(self, prompt: str) -> str:
        """Drop unread input, log the prompt, then block until the operator writes one line (Ctrl-C interrupts)."""
        if self._fd is None:
            self._fd = os.open(self.fifo_path, os.O_RDWR)
        self._drain()
        self.output(prompt)
        line = b""
        while not line.endswith(b"\n"):  # byte by byte: never consume the start of the next answer
            line += os.read(self._fd, 1)
        return line[:-1].decode(errors="replace")

    def _drain(self) -> None:
        os.set_blocking(self._fd, False)
        try:
            while os.read(self._fd, 4096):
                pass
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(self._fd, True)

    def close(self) -> None:
        """Release the FIFO (it stays on disk for a resumed job)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def operator(self) -> Operator:
        """An Operator speaking through this channel."""
        return Operator(input_fn=self.input, output_fn=self.output)


def attach_console(folder: Path, *, stdin=sys.stdin, stdout=sys.stdout, poll_s: float = 0.2) -> None:
    """Follow a job's `operator.log` on `stdout` and send each line typed on `stdin` to its FIFO, until EOF."""
    channel = FifoChannel(folder)
    stop = threading.Event()

    def follow() -> None:
        channel.log_path.touch()
        with channel.log_path.open() as log:
            while True:
                text = log.read()
                if text:
                    stdout.write(text)
                    stdout.flush()
                elif stop.is_set():  # drained: all the log held when the operator's input ended is shown
                    return
                else:
                    time.sleep(poll_s)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        for line in stdin:
            with channel.fifo_path.open("w") as fifo:  # blocks only until the job has opened its end
                fifo.write(line if line.endswith("\n") else line + "\n")
    finally:
        stop.set()
        thread.join(timeout=2 * poll_s + 5)
