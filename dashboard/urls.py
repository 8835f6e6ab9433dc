from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard import views
from metrics import views as metrics_views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("queues/", views.queues, name="queues"),
    path("queues/<path:name>/pause/", views.queue_pause, name="queue_pause"),
    path("queues/<path:name>/resume/", views.queue_resume, name="queue_resume"),
    path("queues/<path:name>/purge/", views.queue_purge, name="queue_purge"),
    path("workers/", views.workers, name="workers"),
    # Before the detail: Celery node names are name@host, never a bare "revoke".
    path("workers/revoke/", views.task_revoke, name="task_revoke"),
    # Node names may hold a slash: the controls match before the detail page.
    path("workers/<path:hostname>/pool/", views.worker_pool, name="worker_pool"),
    path("workers/<path:hostname>/autoscale/", views.worker_autoscale, name="worker_autoscale"),
    path("workers/<path:hostname>/", views.worker_detail, name="worker_detail"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("audit/", views.audit_log, name="audit"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_views.metrics, name="metrics"),
    path("deadletters/", include("deadletters.urls")),
    path("admin/", admin.site.urls),
]
