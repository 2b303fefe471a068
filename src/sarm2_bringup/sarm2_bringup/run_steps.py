"""Resumable runs made of named steps, shared by ``make demo`` and ``spiral_loop``.

A run is a directory ``runs/<name>/`` holding its configuration (``config.json``) and one
directory per step. A step works in ``<step>.partial/`` and renames it to ``<step>/`` with its
completion record (``step.json``) inside once its outputs are in place, so after Ctrl-C, a
crash or a reboot a finished step is never redone and a half-written one is never trusted.
"""

from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import shutil
import signal
import sys
import time
from typing import Any, Callable

DONE_FILE = 'step.json'
PARTIAL_SUFFIX = '.partial'
CONFIG_FILE = 'config.json'


class RunError(Exception):
    """A problem the user can fix (missing build, a node that died, bad input): no traceback."""


@dataclass
class Step:
    """One stage of a run: ``run(ctx, out_dir) -> dict`` writes its outputs into out_dir.

    ``keeps_partial``: an interrupted attempt's directory is handed to the next attempt (the step
    skips the work it finds finished there); otherwise it is deleted and the step starts over.
    """

    name: str
    description: str
    run: Callable
    keeps_partial: bool = False


@dataclass
class RunContext:
    """What a step may read: the run directory, the configuration, earlier steps' results."""

    run_dir: Path
    config: Any
    results: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)

    def step_dir(self, name: str) -> Path:
        """Directory of a finished step's outputs."""
        return self.run_dir / name


def is_done(run_dir: Path, name: str) -> bool:
    """Say whether a step is complete: its directory holds its completion record."""
    return (run_dir / name / DONE_FILE).is_file()


def read_step(run_dir: Path, name: str) -> dict:
    """Completion record of a finished step: its result, wall time and finishing time."""
    return json.loads((run_dir / name / DONE_FILE).read_text())


def run_steps(ctx: RunContext, steps: list[Step], log=print) -> dict:
    """Run every unfinished step in order; return {step: record} for all of them."""
    for step in steps:
        final = ctx.step_dir(step.name)
        if is_done(ctx.run_dir, step.name):
            record = read_step(ctx.run_dir, step.name)
            ctx.results[step.name] = record['result']
            log(f'[{step.name}] done in an earlier run ({record["seconds"]:.0f} s), skipping')
            continue
        if final.exists():
            # A directory without its completion record was not written by run_steps (a
            # rename is atomic); it cannot be trusted.
            shutil.rmtree(final)
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        if partial.exists() and not step.keeps_partial:
            log(f'[{step.name}] discarding the interrupted attempt')
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        log(f'[{step.name}] {step.description}')
        started = time.monotonic()
        result = step.run(ctx, partial)
        seconds = time.monotonic() - started
        record = {'step': step.name, 'seconds': seconds, 'result': result,
                  'finished': time.strftime('%Y-%m-%dT%H:%M:%S%z')}
        write_json_atomic(partial / DONE_FILE, record)
        os.replace(partial, final)
        ctx.results[step.name] = result
        log(f'[{step.name}] finished in {seconds:.0f} s')
    return {s.name: read_step(ctx.run_dir, s.name) for s in steps}


def write_json_atomic(path: Path, data) -> None:
    """Write JSON so that a reader sees the old file or the whole new one, never a torn one."""
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def run_complete(run_dir: Path, steps: list[Step]) -> bool:
    """Say whether every step of a run has finished."""
    return all(is_done(run_dir, s.name) for s in steps)


def select_run(runs_dir: Path, config, steps: list[Step], fresh: bool = False,
               run: Path | None = None, now: Callable[[], str] | None = None) -> Path:
    """Return the run directory to use, creating it (with its config) when new.

    ``config`` has ``to_dict()``. ``run`` given: that directory (its saved config wins).
    Otherwise the newest unfinished run with the same configuration, unless ``fresh``; else a
    new ``runs_dir/<timestamp>``.
    """
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
        if not (run / CONFIG_FILE).is_file():
            write_json_atomic(run / CONFIG_FILE, config.to_dict())
        return run
    runs_dir.mkdir(parents=True, exist_ok=True)
    if not fresh:
        candidates = sorted((p for p in runs_dir.iterdir()
                             if p.is_dir() and not p.is_symlink() and (p / CONFIG_FILE).is_file()),
                            key=lambda p: p.name, reverse=True)
        for candidate in candidates:
            try:
                saved = json.loads((candidate / CONFIG_FILE).read_text())
            except (OSError, ValueError):
                continue
            if saved == config.to_dict() and not run_complete(candidate, steps):
                return candidate
    name = (now or (lambda: time.strftime('%Y%m%d-%H%M%S')))()
    path = runs_dir / name
    suffix = 1
    while path.exists():
        path = runs_dir / f'{name}-{suffix}'
        suffix += 1
    path.mkdir(parents=True)
    write_json_atomic(path / CONFIG_FILE, config.to_dict())
    return path


def link_latest(runs_dir: Path, run_dir: Path) -> None:
    """Point ``runs_dir/latest`` at ``run_dir`` (replaced atomically)."""
    link = runs_dir / 'latest'
    tmp = runs_dir / '.latest.tmp'
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    target = os.path.relpath(run_dir, runs_dir)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def read_jsonl(path: Path) -> list[dict]:
    """Read a JSON-lines file; a torn last line (killed mid-write) is ignored."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break
    return records


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record durably (flushed and fsynced: a crash keeps every finished line)."""
    with open(path, 'a') as stream:
        stream.write(json.dumps(record) + '\n')
        stream.flush()
        os.fsync(stream.fileno())


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Make `kill` (SIGTERM) stop a run like Ctrl-C: nodes shut down, finished steps kept."""
    signal.signal(signal.SIGTERM, _interrupt)


def execute(ctx: RunContext, steps: list[Step], program: str, resume_command: str,
            log=None) -> int:
    """Run the steps and print the report's summary; return the process exit code.

    0 when every step finished, 1 on a ``RunError`` (printed without a traceback), 130 when
    interrupted (with the command that resumes the run).
    """
    started = time.monotonic()
    try:
        run_steps(ctx, steps, log=log or (lambda message: print(message, flush=True)))
    except KeyboardInterrupt:
        print(f'\ninterrupted; run `{resume_command}` to continue {ctx.run_dir} '
              '(finished steps and episodes are kept)', file=sys.stderr)
        return 130
    except RunError as error:
        print(f'{program}: {error}', file=sys.stderr)
        return 1
    if 'report' not in ctx.results:
        print(f'stopped after step {steps[-1].name}; run `{resume_command}` to continue '
              f'{ctx.run_dir}')
        return 0
    print('\n' + ctx.results['report']['summary'])
    print(f'\nreport: {ctx.run_dir / "report" / "index.html"} '
          f'({time.monotonic() - started:.0f} s in this invocation)')
    return 0
