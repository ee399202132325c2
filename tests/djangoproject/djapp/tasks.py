"""The test project's tasks: a module-level ``@task`` each, as Django requires."""

import anyio

from jobkit.integrations.django import job_context

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task


@task
def add(a, b):
    return a + b


@task
async def async_add(a, b):
    await anyio.sleep(0)
    return a + b


@task
def fail(message):
    raise ValueError(message)


@task(takes_context=True)
def which_attempt(context, label):
    return {"attempt": context.attempt, "label": label, "id": context.task_result.id}


@task(queue_name="emails")
def send_email(to):
    return f"sent to {to}"


@task
def write_then_wait_for_cancel(name):
    """Writes an artifact and a partial result, then runs until it is cancelled."""
    context = job_context()
    context.put_artifact(name, "half of the work")
    context.set_result({"written": name})
    context.progress(0.5, "waiting for a cancel")
    context.token.wait_blocking(60)
    context.checkpoint()
    return "not cancelled"


@task
async def async_wait_forever():
    """Never returns: only a cancel ends it (by force, after the cancel grace)."""
    context = job_context()
    await context.progress(0.1, "waiting forever")
    await anyio.sleep_forever()


@task
def write_artifact(name, text):
    job_context().put_artifact(name, text)
    return name
