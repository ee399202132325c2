"""Usage of jobkit.client that must type-check under mypy --strict (run by `make lint`)."""

from __future__ import annotations

from jobkit import Actor, Job, JobEvent, JobStatus, Page
from jobkit.client import BlockingJobClient, JobClient


async def manage(url: str) -> None:
    async with JobClient(url, headers={"Authorization": "Bearer token"}, timeout=10) as client:
        job: Job = await client.submit("report", {"month": "2030-01"}, delay=60.0)
        created: bool = (await client.submit_once("report", idempotency_key="k"))[1]
        page: Page = await client.list(status=[JobStatus.FAILED, "cancelled"], limit=10)
        full_id: str = await client.resolve(job.id[:8])
        counts: dict[JobStatus, int] = await client.counts(kind="report")
        moved: tuple[Job, int] = await client.set_priority(full_id, 5)
        me: Actor | None = await client.me()
        async with client.subscribe(job_id=job.id) as events:
            async for event in events:
                seen: JobEvent = event
                del seen
        done: Job = await client.wait(job.id, timeout=30)
        del created, page, counts, moved, me, done


def blocking(url: str) -> list[str]:
    with BlockingJobClient(url, backend="trio") as client:
        job = client.submit("report")
        with client.subscribe() as events:
            for event in events:
                if event.job_id == job.id:
                    break
        return client.artifacts(client.wait(job.id).id)
