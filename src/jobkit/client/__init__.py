"""An HTTP client for a jobkit REST API: ``pip install 'jobkit[client]'`` (httpx, httpx-sse).

:class:`JobClient` (``async with``, asyncio and trio) and :class:`BlockingJobClient`
(``with``) offer the management methods of :class:`~jobkit.JobManager` — submit, get,
list, cancel, retry, delete, artifacts, priorities, counts, audit, events, pause and
schedules — against the routes of ``jobkit.integrations.fastapi.job_router`` or
``jobkit.integrations.flask.job_blueprint``, raising the same errors::

    from jobkit.client import JobClient

    async with JobClient("https://example.com/api/v1", headers={"Authorization": token}) as jobs:
        job = await jobs.submit("report", {"month": "2030-01"})
        done = await jobs.wait(job.id, timeout=600)
"""

try:
    import httpx  # noqa: F401
    import httpx_sse  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError("jobkit.client needs httpx and httpx-sse: pip install 'jobkit[client]'") from exc

from ._async import JobClient as JobClient
from ._blocking import BlockingJobClient as BlockingJobClient
from ._decode import NotSupported as NotSupported

__all__ = ["BlockingJobClient", "JobClient", "NotSupported"]
