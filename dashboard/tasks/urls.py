from django.urls import path

from dashboard.tasks import views

urlpatterns = [
    path("tasks/", views.tasks, name="tasks"),
    # Task names may hold slashes: the name converter takes the rest of the path.
    path("tasks/<name:name>/", views.task_detail, name="task_detail"),
]
