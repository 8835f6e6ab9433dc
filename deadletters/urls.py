from django.urls import path

from deadletters import views

app_name = "deadletters"
urlpatterns = [
    path("", views.DeadLetterListView.as_view(), name="list"),
    path("groups/", views.groups, name="groups"),
    path("bulk/", views.bulk_create, name="bulk_create"),
    path("bulk/<int:pk>/", views.bulk_detail, name="bulk"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/requeue/", views.requeue, name="requeue"),
    path("<int:pk>/discard/", views.discard, name="discard"),
    path("<int:pk>/edit/", views.edit, name="edit"),
]
