from django.urls import path

from deadletters import views

app_name = "deadletters"
urlpatterns = [
    path("", views.dead_letter_list, name="list"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/requeue/", views.requeue, name="requeue"),
    path("<int:pk>/discard/", views.discard, name="discard"),
]
