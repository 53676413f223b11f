from rest_framework.routers import SimpleRouter

from campaigns.api.views import CampaignCacheViewSet, PointCacheViewSet, TaskViewSet

router = SimpleRouter()
# TVI requests the paths without a trailing slash; accept both forms.
router.trailing_slash = "/?"
router.register("cache/campaign", CampaignCacheViewSet, basename="cache-campaign")
router.register("cache/point", PointCacheViewSet, basename="cache-point")
router.register("tasks", TaskViewSet, basename="tasks")

urlpatterns = router.urls
