import threading


class FIFOLock:
    """Stand-in: a plain re-entrant lock (the real one is FIFO-fair)."""

    def __init__(self):
        self._lock = threading.RLock()
        self.acquisitions = 0

    def acquire(self, blocking=True):
        ok = self._lock.acquire(blocking)
        if ok:
            self.acquisitions += 1
        return ok

    def release(self):
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()
