from django.urls import path

from deadletters import views

app_name = "deadletters"
urlpatterns = [
    path("", views.DeadLetterListView.as_view(), name="list"),
    path("groups/", views.groups, name="groups"),
    path("bulk/", views.bulk_create, name="bulk_create"),
    path("bulk/<id:pk>/", views.bulk_detail, name="bulk"),
    path("bulk/<id:pk>/<slug:verb>/", views.bulk_control, name="bulk_control"),
    path("<id:pk>/", views.detail, name="detail"),
    path("<id:pk>/requeue/", views.requeue, name="requeue"),
    path("<id:pk>/discard/", views.discard, name="discard"),
    path("<id:pk>/edit/", views.edit, name="edit"),
]
