"""``modules.progress``: task bookkeeping used by wrap_gradio_gpu_call and /internal/progress."""

current_task = None
pending_tasks: dict = {}
finished_tasks: list = []
recorded_results: list = []


def add_task_to_queue(id_job):
    pending_tasks[id_job] = True


def start_task(id_task):
    global current_task
    current_task = id_task
    pending_tasks.pop(id_task, None)


def finish_task(id_task):
    global current_task
    if current_task == id_task:
        current_task = None
    finished_tasks.append(id_task)


def record_results(id_task, res):
    recorded_results.append((id_task, res))


def progress_fraction(state) -> float:
    """What POST /internal/progress reports: job_no/job_count + sampling share, capped at 1."""
    progress = 0.0
    if state.job_count > 0:
        progress += state.job_no / state.job_count
        if state.sampling_steps > 0:
            progress += 1 / state.job_count * state.sampling_step / state.sampling_steps
    return min(progress, 1.0)
