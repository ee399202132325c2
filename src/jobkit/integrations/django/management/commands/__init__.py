"""``jobkit_worker``, ``jobkit_sweep`` and ``jobkit``: each module is one ``manage.py`` command."""
