"""Web framework integrations: ``jobkit.integrations.fastapi`` (``pip install jobkit[fastapi]``)
and ``jobkit.integrations.flask`` (``pip install jobkit[flask]``).

Each is imported only when asked for and raises an error naming the extra to install
when its framework is missing.
"""
