from django.urls import path

from dashboard.tasks import views

urlpatterns = [
    path("tasks/", views.tasks, name="tasks"),
    # Before the task names: "where is task X?" by id (ids may hold slashes too).
    path("tasks/id/", views.task_search, name="task_search"),
    # The id travels in the form or the query: an id may end in anything a path could.
    path("tasks/queue-scan/", views.task_queue_scan, name="task_queue_scan"),
    path("tasks/id/<name:task_id>/", views.task_lookup, name="task_lookup"),
    # Task names may hold slashes: the name converter takes the rest of the path.
    path("tasks/<name:name>/", views.task_detail, name="task_detail"),
]
