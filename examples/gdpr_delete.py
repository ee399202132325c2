"""GDPR: permanently delete finished transcription jobs, their audio and their transcripts.

A transcription service stores each job's files under ``jobs/<job_id>/`` (``input/``
audio, ``tasks/`` intermediate output, ``output/`` transcript). Its users ask:
"delete my recording". What the team once wrote by hand in every layer is here a call
to ``jobs.delete``, with the rules built in:

- only finished jobs can be deleted; a pending, running or cancelling job is refused
  with ``InvalidState`` and a message that says what to do instead;
- a user of another tenant gets ``JobNotFound`` -- the same answer as for a job that
  never existed, so a job's existence does not leak;
- a delete removes every artifact of the job, then the record;
- the audit trail records who deleted what, and outlives the deleted job.

``api_delete`` shows the answer an HTTP endpoint would give: each error has a stable
``code`` that maps to exactly one status (404, 409, 403, 422).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import structlog

from jobkit import Actor, JobContext, JobkitError, JobManager, JobNotFound
from jobkit.blobs import MemoryBlobStore
from jobkit.stores import MemoryStore

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

blobs = MemoryBlobStore()
jobs = JobManager(MemoryStore(), blobs, concurrency=1)  # one transcription at a time
alice = Actor("alice", tenant="acme")
bob = Actor("bob", tenant="globex")
privacy_officer = Actor("dpo", tenant="acme", roles={"admin"})  # reading the audit trail is admin-only
HTTP_STATUS = {"job_not_found": 404, "invalid_state": 409, "forbidden": 403, "invalid_input": 422}


@jobs.handler("transcribe")
async def transcribe(ctx: JobContext, payload: Any) -> dict[str, Any]:
    await ctx.put_artifact("input/audio.wav", b"RIFF....WAVEfmt ")  # the uploaded recording
    words = []
    for i in range(payload["chunks"]):
        await ctx.checkpoint()
        await anyio.sleep(0.1)  # speech-to-text on one chunk
        words.append(f"word{i}")
        await ctx.put_artifact(f"tasks/chunk-{i:03}.json", json.dumps({"words": [words[-1]]}))
        await ctx.progress((i + 1) / payload["chunks"])
    await ctx.put_artifact("output/transcript.txt", " ".join(words))
    return {"words": len(words)}


async def api_delete(job_id: str, actor: Actor) -> str:
    """What ``DELETE /v1/audio/transcriptions/{job_id}`` answers."""
    try:
        await jobs.delete(job_id, actor=actor)
    except JobkitError as exc:
        body = {"error": {"code": exc.code, "message": exc.message}}
        return f"{HTTP_STATUS[exc.code]} {json.dumps(body)}"
    return "204 No Content"


async def wait_until_running(job_id: str) -> None:
    async with jobs.subscribe(job_id=job_id) as events:
        if (await jobs.get(job_id)).status == "running":
            return
        async for event in events:
            if event.type == "started":
                return


async def stored_files(job_id: str) -> list[str]:
    """Straight from the blob store, to prove that nothing is left behind."""
    return await blobs.list(f"jobs/{job_id}/")


async def main() -> None:
    async with jobs:
        meeting = await jobs.submit("transcribe", {"file": "meeting.wav", "chunks": 3}, actor=alice)
        await jobs.wait(meeting.id, actor=alice)
        print(f"alice's meeting.wav is transcribed; files: {await jobs.artifacts(meeting.id, actor=alice)}")

        interview = await jobs.submit("transcribe", {"file": "interview.wav", "chunks": 20}, actor=alice)
        podcast = await jobs.submit("transcribe", {"file": "podcast.wav", "chunks": 3}, actor=alice)
        names = {meeting.id: "meeting.wav", interview.id: "interview.wav", podcast.id: "podcast.wav"}
        await wait_until_running(interview.id)

        print("\nOnly finished jobs can be deleted:")
        print(f"  DELETE interview.wav (running)    -> {await api_delete(interview.id, alice)}")
        print(f"  DELETE podcast.wav (pending)      -> {await api_delete(podcast.id, alice)}")
        await jobs.cancel(interview.id, actor=alice, reason="GDPR erasure request")
        print(f"  DELETE interview.wav (cancelling) -> {await api_delete(interview.id, alice)}")

        print("\nTenants are isolated: bob (tenant globex) cannot tell alice's job from a missing one:")
        print(f"  DELETE meeting.wav as bob         -> {await api_delete(meeting.id, bob)}")
        print(f"  DELETE no-such-job as bob         -> {await api_delete('no-such-job', bob)}")

        print("\nalice deletes her finished jobs, and every stored file goes with them:")
        await jobs.cancel(podcast.id, actor=alice, reason="not needed any more")
        await jobs.wait(interview.id, actor=alice)
        for name, job_id in (("meeting.wav", meeting.id), ("interview.wav", interview.id)):
            job = await jobs.get(job_id, actor=alice)
            before = len(await stored_files(job_id))
            answer = await api_delete(job_id, alice)
            after = await stored_files(job_id)
            what = f"{name} ({job.status} at {job.progress or 0:.0%}, {before} files)"
            print(f"  DELETE {what} -> {answer}; files left: {after}")
        print(f"  DELETE podcast.wav (cancelled before it ran) -> {await api_delete(podcast.id, alice)}")
        try:
            await jobs.get(meeting.id, actor=alice)
        except JobNotFound as exc:
            print(f"  GET meeting.wav as alice -> {HTTP_STATUS[exc.code]}: the record is gone too")

        print("\nThe audit trail outlives the jobs (read by acme's privacy officer, oldest first):")
        for record in reversed(await jobs.audit(actor=privacy_officer)):
            what = f"{record.action:<6} {names[record.job_id]:<13} by {record.actor_id}"
            print(f"  {record.at:%H:%M:%S} {what}: {dict(record.details)}")


if __name__ == "__main__":
    anyio.run(main)
