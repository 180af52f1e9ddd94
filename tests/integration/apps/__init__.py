"""Small apps that the integration tests run under the ``dramatiq`` CLI.

Each app has a ``build(settings)`` function with no side effects at import,
so a test can build the same triggers in its own process, and a ``*_worker``
module that builds it from environment variables for ``dramatiq`` (or
``python -m dramatiq_triggers.cron_process``) to import.
"""
