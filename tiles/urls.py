from django.urls import re_path

from tiles import views

urlpatterns = [
    # x, y, z in that order, as TVI requests them; an optional .png suffix on z.
    re_path(r"^layers/(?P<layer>[a-z0-9-]{1,40})/(?P<x>-?\d{1,12})/(?P<y>-?\d{1,12})/(?P<z>-?\d{1,3})(?:\.png)?/?$",
            views.tile, name="tile"),
]
