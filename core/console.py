"""The console of one command: its own progress and summary on the terminal, everything else in a log file.

The CLI runs every command inside :func:`command_console`. Quiet (the default), it points the
process's stdout and stderr into ``<log dir>/<command>-<time>.log``: Python's ``sys.stdout`` and
``sys.stderr`` and every logger's console handler (ray, ray.data, transformers, deepspeed, mlflow),
so warnings and other libraries' progress bars too, and file descriptors 1 and 2 (C++ messages from
Ray's core, subprocesses such as ffmpeg). Ray Data, seeing no terminal, writes its progress reports
as log lines, which land there as well. What the command itself says goes through :func:`echo` and
:func:`progress`, which write to the terminal (echo into the log too). The log's path is printed
once: when the first stage starts or, if anything was logged, at the end; an empty log is removed.

Ray's start-up (:func:`core.runtime.init_ray`) asks :func:`current` whether the console is quiet:
then workers' output is not forwarded to the driver (``log_to_driver`` off) and stays in Ray's
session logs, whose folder the console names. ``verbose`` redirects nothing and forwards workers'
output, as a plain Python process would show it.

Outside a command (tests, benches, notebooks calling the job functions) :func:`current` is a
verbose console on the process's own streams.

The log is created owner-only (0600) in an owner-only folder, and nothing secret reaches it or the
terminal through us: its header's command line passes through :func:`core.redact.redact_argv`,
and every line written through ``echo`` or ``sys.stdout``/``sys.stderr`` through
:func:`core.redact.redact_text` (URI credentials, ``--storage-options`` values).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

from core.redact import redact_argv, redact_text

# Where the logs go, unless this environment variable names another folder.
LOG_DIR_ENV = "AFFECTFLOW_LOG_DIR"
DEFAULT_LOG_DIR = ".affectflow/logs"


class Bar:
    """One progress line on the console (tqdm): count, rate and ETA; its final state stays on screen.

    Call it as ``bar(n, total)`` after each batch (the job functions' ``progress`` callback), or
    ``bar.set(n, total, **postfix)`` with absolute values (training steps, with the loss). The
    line appears with the first count, so a job that fails while starting prints only its error.
    """

    def __init__(self, console: "Console", desc: str, unit: str, total: int | None = None):
        self._console, self._desc, self._unit, self._start_total = console, desc, unit, total
        self._t0 = time.time()  # elapsed counts from the stage's start; rate and ETA follow tqdm's moving average
        self._bar = None

    def _line(self, total: int | None):
        if self._bar is None:
            from tqdm import tqdm

            self._console.announce()
            tty = _isatty(self._console.err)
            # Off a terminal (a pipe, CI) every redraw is a line of the file: redraw seldom.
            self._bar = tqdm(total=total if total is not None else self._start_total, desc=self._desc,
                             unit=self._unit, file=self._console.err, dynamic_ncols=True,
                             mininterval=0.2 if tty else 10.0, leave=True)
            self._bar.start_t = self._bar.last_print_t = self._t0
            self._console._bars.append(self)
        return self._bar

    def __call__(self, n: int = 1, total: int | None = None) -> None:
        bar = self._line(total)
        self._total(bar, total)
        bar.update(n)

    def set(self, n: int, total: int | None = None, **postfix) -> None:
        bar = self._line(total)
        self._total(bar, total)
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        bar.update(n - bar.n)

    @staticmethod
    def _total(bar, total: int | None) -> None:
        if total is not None and total != bar.total:
            bar.total = total
            bar.refresh()

    def close(self) -> None:
        if self._bar is None or self._bar.disable:
            return
        final = str(self._bar)
        self._bar.close()
        self._console._bars.remove(self)
        self._console._log_line(final)

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Console:
    """Where a command's own output goes (``out``, ``err``) and where everything else went (``log_path``)."""

    def __init__(self, command: str, verbose: bool, out: TextIO | None = None, err: TextIO | None = None,
                 log_path: Path | None = None, log: TextIO | None = None):
        self.command, self.verbose, self.log_path = command, verbose, log_path
        self._out, self._err, self._log = out, err, log
        self._announced = False
        self._own_bytes = 0  # what echo and the bars wrote into the log themselves
        self._bars: list[Bar] = []  # open progress lines: cleared while echo writes, then redrawn
        self.ray_sessions: list[str] = []  # Ray session log folders named under this console

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    @property
    def err(self) -> TextIO:
        return self._err or sys.stderr

    def echo(self, *values, sep: str = " ", end: str = "\n", err: bool = False) -> None:
        """Print to the terminal (stdout, or stderr with ``err``), and into the log."""
        text = redact_text(sep.join(str(v) for v in values) + end)
        stream = self.err if err else self.out
        for bar in self._bars:
            bar._bar.clear()
        stream.write(text)
        stream.flush()
        for bar in self._bars:
            bar._bar.refresh()
        self._log_line(text.rstrip("\n"))

    def progress(self, desc: str, unit: str = "it", total: int | None = None) -> Bar:
        """A progress line for one stage (see :class:`Bar`)."""
        return Bar(self, desc, unit, total)

    def announce(self) -> None:
        """Name the log file on the terminal (stderr), once."""
        if self._log is not None and not self._announced:
            self._announced = True
            self.err.write(f"affectflow {self.command}: log -> {self.log_path}\n")
            self.err.flush()

    def ray_logs(self, logs_dir: str) -> None:
        """Called by Ray's start-up with the session's log folder: quiet, say (once) that workers' output
        stays there."""
        if logs_dir in self.ray_sessions:
            return
        self.ray_sessions.append(logs_dir)
        if self._log is not None:
            self.announce()
            self.echo(f"affectflow {self.command}: Ray workers' output -> {logs_dir}", err=True)

    def take_log_note(self) -> str | None:
        """After the command: the line naming its log, if the log was kept and not named yet (once)."""
        if self.log_path is None or self._announced or not self.log_path.is_file():
            return None
        self._announced = True
        return f"affectflow {self.command}: log -> {self.log_path}"

    def _log_line(self, text: str) -> None:
        if self._log is not None and not self._log.closed:
            self._log.write(text + "\n")
            self._own_bytes += len(text.encode("utf-8")) + 1


_current: Console | None = None
_PLAIN = Console("python", verbose=True)  # outside a command: the process's own streams, as they are at each write


def current() -> Console:
    """The running command's console; outside a command, a verbose one on sys.stdout/sys.stderr."""
    return _current or _PLAIN


def echo(*values, sep: str = " ", end: str = "\n", err: bool = False) -> None:
    """Print a command's own line: on the terminal even when the rest goes to the log."""
    current().echo(*values, sep=sep, end=end, err=err)


def progress(desc: str, unit: str = "it", total: int | None = None) -> Bar:
    """A progress line for one stage of the running command (see :class:`Bar`)."""
    return current().progress(desc, unit, total)


def log_dir() -> Path:
    """``$AFFECTFLOW_LOG_DIR``, else ``.affectflow/logs`` under the working directory."""
    return Path(os.environ.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR)


@contextmanager
def command_console(command: str, verbose: bool = False, argv: list[str] | None = None,
                    directory: str | Path | None = None) -> Iterator[Console]:
    """Run one command with its console: quiet, everything but `echo`/`progress` goes to a new log file."""
    global _current
    if _current is not None:  # already inside a command: its console serves
        yield _current
        return
    if verbose:
        _current = Console(command, verbose=True)
        try:
            yield _current
        finally:
            _current = None
        return
    redirect = _Redirect(command, Path(directory) if directory else log_dir(), argv)
    console = _current = redirect.console
    try:
        yield console
    finally:
        _current = None
        redirect.restore()
    note = console.take_log_note()  # on failure the caller names the log after the error
    if note:
        print(note, file=sys.stderr)


class _Redirect:
    """Quiet mode's plumbing: the log file, the terminal streams kept aside, and the redirections."""

    def __init__(self, command: str, directory: Path, argv: list[str] | None):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = directory / f"{command}-{stamp}.log"
        n = 1
        while path.exists():
            n += 1
            path = directory / f"{command}-{stamp}-{n}.log"
        self.path = path
        # Owner-only (0600): a log may hold paths, hosts and library messages nobody else should read.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.log = open(fd, "a", buffering=1, encoding="utf-8", errors="replace")
        line = " ".join(redact_argv(argv)) if argv is not None else command
        self._header = f"# affectflow {line}, {time.strftime('%Y-%m-%d %H:%M:%S')}, pid {os.getpid()}\n"
        self.log.write(self._header)
        self.saved_sys = (sys.stdout, sys.stderr)
        for stream in self.saved_sys:
            _flush(stream)
        # The terminal: the streams as they are now, or a copy of fd 1/2 when they write to them.
        self.saved_fds: list[tuple[int, int]] = []
        self.own: list[TextIO] = []
        out = self._terminal(sys.stdout, 1)
        err = self._terminal(sys.stderr, 2)
        for fd in (1, 2):
            try:
                self.saved_fds.append((fd, os.dup(fd)))
                os.dup2(self.log.fileno(), fd)
            except OSError:
                pass
        self.streams = (_LogStream("stdout", self.log, 1), _LogStream("stderr", self.log, 2))
        sys.stdout, sys.stderr = self.streams
        self.handlers = _retarget_handlers(self.streams, self.saved_sys[0])
        self.console = Console(command, verbose=False, out=out, err=err, log_path=path, log=self.log)

    def _terminal(self, stream: TextIO, fd: int) -> TextIO:
        try:
            same = stream.fileno() == fd
        except (AttributeError, OSError, ValueError):
            same = False
        if not same:
            return stream
        copy = open(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",
                    errors="replace")
        self.own.append(copy)
        return copy

    def restore(self) -> None:
        for stream in (*self.streams, *self.own):
            _flush(stream)
        for handler, stream in self.handlers:
            handler.stream = stream
        sys.stdout, sys.stderr = self.saved_sys
        for fd, saved in self.saved_fds:
            os.dup2(saved, fd)
            os.close(saved)
        for stream in self.own:
            stream.close()
        self.log.close()
        # Kept when anything but the command's own lines (and the header) went in, or it was named.
        others = self.path.stat().st_size - len(self._header.encode("utf-8")) - self.console._own_bytes
        for stream in self.streams:
            stream.detach_log()
        if others <= 0 and not self.console._announced:
            self.path.unlink(missing_ok=True)


class _LogStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` during a quiet command: into the log. Afterwards, whatever
    still holds it (a handler, a library's saved reference) writes to the then-current stream."""

    def __init__(self, name: str, log: TextIO, fd: int):
        super().__init__()
        self._name, self._log, self._fd = name, log, fd

    def detach_log(self) -> None:
        self._log = None

    def _target(self) -> TextIO | None:
        if self._log is not None and not self._log.closed:
            return self._log
        now = getattr(sys, self._name)
        return now if now is not self else getattr(sys, f"__{self._name}__")

    def write(self, s: str) -> int:
        target = self._target()
        if target is not None:
            target.write(redact_text(s))
        return len(s)

    def flush(self) -> None:
        _flush(self._target())

    def isatty(self) -> bool:
        target = self._target()
        return target is not self._log and _isatty(target)

    def fileno(self) -> int:
        return self._fd

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return "utf-8"

    @property
    def errors(self) -> str:
        return "replace"


def _retarget_handlers(streams: tuple[TextIO, TextIO], stdout: TextIO) -> list[tuple[logging.StreamHandler, object]]:
    """Point every logger's console handler into the log; returns (handler, old stream) to restore."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    done, seen = [], set()
    for lg in loggers:
        for h in lg.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) and id(h) not in seen:
                seen.add(id(h))
                old = h.stream
                try:
                    h.stream = streams[0] if old is stdout or old is sys.__stdout__ else streams[1]
                except AttributeError:  # logging's _StderrHandler (dill's logger has one): sys.stderr at each write
                    continue
                done.append((h, old))
    return done


def _flush(stream) -> None:
    try:
        if stream is not None:
            stream.flush()
    except (ValueError, OSError):
        pass


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
