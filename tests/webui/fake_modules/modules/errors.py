"""``modules.errors``: report() logs a traceback and never raises."""

import logging
import traceback

reported: list[str] = []


def report(message: str, *, exc_info: bool = False) -> None:
    text = message + ("\n" + traceback.format_exc() if exc_info else "")
    reported.append(text)
    logging.getLogger("fake_webui").error(text)


def display(e: Exception, task: str) -> None:
    report(f"{task}: {type(e).__name__}: {e}")
