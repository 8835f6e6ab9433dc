from django.urls import path

from dashboard.periodic import views

urlpatterns = [
    path("periodic/", views.periodic, name="periodic"),
    path("periodic/<name:name>/run/", views.periodic_run, name="periodic_run"),
]
