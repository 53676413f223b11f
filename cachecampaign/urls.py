from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("campaigns.api.urls")),
    path("api/", include("tiles.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="openapi-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="openapi-schema"), name="openapi-docs"),
]

handler400 = "campaigns.api.errors.json_bad_request"
handler404 = "campaigns.api.errors.json_not_found"
handler500 = "campaigns.api.errors.json_server_error"
