from django.urls import path

import views

urlpatterns = [
    path("", views.index),
    path("items/", views.ItemView.as_view()),
    path("slow/", views.slow),
]
