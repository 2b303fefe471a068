"""Run independent episode jobs side by side, one process per core, with one progress bar.

In-process episodes (MuJoCo rendering + a policy's forward pass on one torch thread) are
CPU-bound and a job's episodes depend only on the job, so a 2-core machine runs two jobs in
the time of one. Jobs and their results must pickle; the function must be importable by name.
"""

from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
import multiprocessing
import os
import queue
from typing import Callable, Sequence, TypeVar

Job = TypeVar('Job')
Result = TypeVar('Result')


class BarProgress:
    """The progress sink of a job run in this process: counts go straight to the bar."""

    def __init__(self, bar):
        self.bar = bar

    def put(self, count: int) -> None:
        self.bar.update(count)


def run_in_processes(function: Callable[[Job, object], Result], jobs: Sequence[Job],
                     episodes: int, desc: str, workers: int | None = None) -> list[Result]:
    """Return ``[function(job, progress) for job in jobs]``, computed on up to ``workers``.

    ``function`` calls ``progress.put(1)`` after each episode; ``episodes`` is their total, for
    the bar. ``workers`` defaults to one per core; with one, everything runs in this process.
    A job that raises cancels the jobs not yet started and its error is raised here.
    """
    from tqdm import tqdm

    workers = max(1, min(len(jobs), workers or os.cpu_count() or 1))
    with tqdm(total=episodes, desc=desc, unit='episode') as bar:
        if workers == 1:
            return [function(job, BarProgress(bar)) for job in jobs]
        # Spawn, not fork: the parent may already hold a rendering context and torch threads.
        context = multiprocessing.get_context('spawn')
        with context.Manager() as manager, \
                ProcessPoolExecutor(workers, mp_context=context) as pool:
            progress = manager.Queue()
            futures = [pool.submit(function, job, progress) for job in jobs]
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                _drain(progress, bar)
                for future in finished:
                    if future.exception() is not None:
                        for other in pending:
                            other.cancel()
                        raise future.exception()
            _drain(progress, bar)
            return [future.result() for future in futures]


def _drain(progress, bar) -> None:
    while True:
        try:
            bar.update(progress.get_nowait())
        except queue.Empty:
            return
