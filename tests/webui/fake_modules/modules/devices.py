"""``modules.devices`` (1.6-1.10): device chosen at start, get_device_for honours --use-cpu, torch_gc."""

import torch

cpu = torch.device("cpu")
gc_calls = 0


def get_optimal_device_name():
    return "cuda" if torch.cuda.is_available() else "cpu"


def get_optimal_device():
    return torch.device(get_optimal_device_name())


def get_device_for(task):
    from modules import shared

    if task in shared.cmd_opts.use_cpu or "all" in shared.cmd_opts.use_cpu:
        return cpu
    return get_optimal_device()


def torch_gc():
    global gc_calls
    gc_calls += 1
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


device = get_optimal_device()
dtype = torch.float16
