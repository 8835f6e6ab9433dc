from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard import views
from metrics import views as metrics_views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("", include("dashboard.queues.urls")),
    path("", include("dashboard.tasks.urls")),
    path("", include("dashboard.periodic.urls")),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("audit/", views.audit_log, name="audit"),
    path("preferences/theme/", views.theme, name="theme"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_views.metrics, name="metrics"),
    path("deadletters/", include("deadletters.urls")),
    path("api/v1/", include("dashboard.api.urls")),
    path("admin/", admin.site.urls),
]
