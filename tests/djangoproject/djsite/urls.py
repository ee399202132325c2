from django.urls import include, path
from djapp import views

from jobkit.integrations.django import jobkit_urls

urlpatterns = [
    path("enqueue/add", views.enqueue_add),
    path("enqueue/async-add", views.enqueue_async_add),
    path("result/<str:result_id>", views.result),
    path("api/v1/", include(jobkit_urls())),
]
