"""``modules.call_queue`` (1.6-1.10 semantics, shared/docs/a1111-api.md §3)."""

import html
import time
from functools import wraps

from modules import errors, fifo_lock, progress, shared

queue_lock = fifo_lock.FIFOLock()


def wrap_queued_call(func):
    def f(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)

    return f


def wrap_gradio_gpu_call(func, extra_outputs=None):
    @wraps(func)
    def f(*args, **kwargs):
        if args and isinstance(args[0], str) and args[0].startswith("task(") and args[0].endswith(")"):
            id_task = args[0]
            progress.add_task_to_queue(id_task)
        else:
            id_task = None
        with queue_lock:
            shared.state.begin(job=id_task)
            progress.start_task(id_task)
            try:
                res = func(*args, **kwargs)
                progress.record_results(id_task, res)
            finally:
                progress.finish_task(id_task)
            shared.state.end()
        return res

    return wrap_gradio_call(f, extra_outputs=extra_outputs, add_stats=True)


def wrap_gradio_call(func, extra_outputs=None, add_stats=False):
    @wraps(func)
    def f(*args, extra_outputs_array=extra_outputs, **kwargs):
        run_memmon = add_stats
        t = time.perf_counter()
        try:
            res = list(func(*args, **kwargs))
        except Exception as e:
            errors.report(f"Error completing request\nArguments: {args} {kwargs}"[:1024], exc_info=True)
            shared.state.job = ""
            shared.state.job_count = 0
            if extra_outputs_array is None:
                extra_outputs_array = [None, ""]
            error_message = f"{type(e).__name__}: {e}"
            res = [*list(extra_outputs_array), f"<div class='error'>{html.escape(error_message)}</div>"]
        shared.state.skipped = False
        shared.state.interrupted = False
        shared.state.stopping_generation = False
        shared.state.job_count = 0
        shared.state.job = ""
        if not add_stats:
            return tuple(res)
        elapsed = time.perf_counter() - t
        _ = run_memmon
        res[-1] += (
            f"<div class='performance'><p class='time'>Time taken: <wbr><span class='measurement'>{elapsed:.1f} sec.</span></p></div>"
        )
        return tuple(res)

    return f
