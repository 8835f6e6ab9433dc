from django.urls import path

from dashboard.queues import views

urlpatterns = [
    path("queues/", views.queues, name="queues"),
    path("queues/<name:name>/pause/", views.queue_pause, name="queue_pause"),
    path("queues/<name:name>/resume/", views.queue_resume, name="queue_resume"),
    path("queues/<name:name>/purge/", views.queue_purge, name="queue_purge"),
    # After the controls: a queue's name may hold a slash ("a/pause").
    path("queues/<name:name>/", views.queue_detail, name="queue_detail"),
    path("workers/", views.workers, name="workers"),
    # Before the detail: Celery node names are name@host, never a bare "revoke".
    path("workers/revoke/", views.task_revoke, name="task_revoke"),
    # Node names may hold a slash: the controls match before the detail page.
    path("workers/<name:hostname>/pool/", views.worker_pool, name="worker_pool"),
    path("workers/<name:hostname>/autoscale/", views.worker_autoscale, name="worker_autoscale"),
    path(
        "workers/<name:hostname>/checks/silence/",
        views.worker_check_silence,
        name="worker_check_silence",
    ),
    path(
        "workers/<name:hostname>/checks/unsilence/",
        views.worker_check_unsilence,
        name="worker_check_unsilence",
    ),
    path("workers/<name:hostname>/", views.worker_detail, name="worker_detail"),
]
