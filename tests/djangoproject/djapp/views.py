"""Views enqueuing tasks, as a Django app would."""

import json

from django.http import HttpRequest, HttpResponse, JsonResponse

from djapp import tasks


def enqueue_add(request: HttpRequest) -> HttpResponse:
    result = tasks.add.enqueue(int(request.GET["a"]), int(request.GET["b"]))
    return JsonResponse({"id": result.id, "status": str(result.status)})


async def enqueue_async_add(request: HttpRequest) -> HttpResponse:
    result = await tasks.async_add.aenqueue(int(request.GET["a"]), b=int(request.GET["b"]))
    return JsonResponse({"id": result.id, "status": str(result.status)})


async def result(request: HttpRequest, result_id: str) -> HttpResponse:
    found = await tasks.add.get_backend().aget_result(result_id)
    body = {"status": str(found.status), "args": found.args, "kwargs": found.kwargs}
    if found.is_finished and not found.errors:
        body["return_value"] = found.return_value
    return HttpResponse(json.dumps(body), content_type="application/json")
