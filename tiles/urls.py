from django.urls import re_path

from tiles import views

urlpatterns = [
    # x, y, z in that order, as TVI requests them; an optional .png suffix on z.
    # [0-9], not \d, so that other scripts' digits never reach the handler.
    re_path(r"^layers/(?P<layer>[a-z0-9-]{1,40})/(?P<x>-?[0-9]{1,12})/(?P<y>-?[0-9]{1,12})/(?P<z>-?[0-9]{1,3})(?:\.png)?/?$",
            views.tile, name="tile"),
]
