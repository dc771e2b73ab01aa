"""WebUI glue: the only part of the package that talks to the host's ``modules`` (through :mod:`.host`).

``scripts/sadtalker_tab.py`` builds one :class:`~.entry.Extension` and registers its callbacks.
"""
