"""Request and response shapes of the cache API."""

from __future__ import annotations

from django.conf import settings
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers


class StrictIntegerField(serializers.IntegerField):
    """An integer that must arrive as a JSON number, not as a string or a boolean."""

    default_error_messages = {"invalid": _("A JSON integer is required, such as 5.")}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            if not (isinstance(data, float) and data.is_integer()):
                self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A string that must arrive as a JSON string; numbers are not turned into ids."""

    default_error_messages = {"invalid": _("A JSON string is required.")}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StartCampaignRequest(serializers.Serializer):
    campaign_id = StrictCharField(max_length=255, trim_whitespace=False)
    batch_size = StrictIntegerField(required=False, min_value=1, max_value=settings.CACHE_MAX_BATCH_SIZE)
    preset = StrictCharField(required=False, max_length=100)


class StartCampaignData(serializers.Serializer):
    task_id = serializers.CharField()
    campaign_id = serializers.CharField()
    total_points = serializers.IntegerField()
    already_cached = serializers.IntegerField()
    points_to_cache = serializers.IntegerField()
    group_id = serializers.CharField()
    run_id = serializers.CharField()
    batch_size = serializers.IntegerField()
    preset = serializers.CharField()
    tiles_per_point = serializers.IntegerField()
    total_tiles = serializers.IntegerField()


class StartCampaignResponse(serializers.Serializer):
    status = serializers.CharField(help_text="one of: " + ", ".join(["scheduled", "completed"]))
    message = serializers.CharField()
    data = StartCampaignData()


class CampaignStatusData(serializers.Serializer):
    campaign_id = serializers.CharField()
    total_points = serializers.IntegerField()
    cached_points = serializers.IntegerField()
    cache_percentage = serializers.FloatField()
    caching_in_progress = serializers.BooleanField()
    caching_started_at = serializers.DateTimeField(allow_null=True)
    last_point_cached_at = serializers.DateTimeField(allow_null=True)
    points_to_cache = serializers.IntegerField()
    all_points_cached = serializers.BooleanField()
    caching_completed_at = serializers.DateTimeField(allow_null=True)
    caching_error = serializers.CharField(allow_null=True)
    caching_error_at = serializers.DateTimeField(allow_null=True)
    run = serializers.DictField(allow_null=True)


class CampaignStatusResponse(serializers.Serializer):
    status = serializers.CharField()
    message = serializers.CharField()
    data = CampaignStatusData()


class TaskEntry(serializers.Serializer):
    task_id = serializers.CharField()
    name = serializers.CharField()
    state = serializers.CharField()
    args = serializers.ListField()
    worker = serializers.CharField()


class TaskListResponse(serializers.Serializer):
    active = TaskEntry(many=True)
    scheduled = TaskEntry(many=True)
    reserved = TaskEntry(many=True)
    stats = serializers.DictField(child=serializers.IntegerField())


class TaskStatusResponse(serializers.Serializer):
    task_id = serializers.CharField()
    state = serializers.CharField()
    ready = serializers.BooleanField()
    successful = serializers.BooleanField()
    result = serializers.JSONField(allow_null=True)


class ErrorResponse(serializers.Serializer):
    status = serializers.CharField()
    message = serializers.CharField()
    code = serializers.CharField()


class RunSummary(serializers.Serializer):
    run_id = serializers.CharField()
    task_id = serializers.CharField()
    group_id = serializers.CharField()
    state = serializers.CharField()
    batch_size = serializers.IntegerField()
    preset = serializers.CharField()
    tiles_per_point = serializers.IntegerField()
    total_tiles = serializers.IntegerField()
    finished_points = serializers.IntegerField()
    succeeded_points = serializers.IntegerField()
    failed_points = serializers.IntegerField()
    tiles_stored = serializers.IntegerField()
    tiles_skipped = serializers.IntegerField()
    tiles_failed = serializers.IntegerField()


class CancelCampaignResponse(serializers.Serializer):
    status = serializers.CharField(help_text="one of: " + ", ".join(["cancelled"]))
    message = serializers.CharField()
    data = RunSummary()


class ClearData(serializers.Serializer):
    campaign_id = serializers.CharField()
    point_id = serializers.CharField(allow_null=True)
    points_reset = serializers.IntegerField()
    points_were_cached = serializers.IntegerField()
    tiles_planned = serializers.IntegerField()
    tiles_deleted = serializers.IntegerField()
    tiles_not_stored = serializers.IntegerField()
    tiles_kept_shared = serializers.IntegerField()
    interrupted = serializers.BooleanField()


class ClearResponse(serializers.Serializer):
    status = serializers.CharField(help_text="one of: " + ", ".join(["success"]))
    message = serializers.CharField()
    data = ClearData()


class TileBytes(serializers.Serializer):
    bytes = serializers.IntegerField()
    source = serializers.ChoiceField(choices=["sampled", "default"])
    sampled_tiles = serializers.IntegerField()


class EstimateData(serializers.Serializer):
    campaign_id = serializers.CharField()
    layer = serializers.CharField()
    preset = serializers.CharField()
    years = serializers.ListField(child=serializers.IntegerField())
    vis_params = serializers.ListField(child=serializers.CharField())
    points_to_cache = serializers.IntegerField()
    tiles_per_point = serializers.IntegerField()
    total_tiles = serializers.IntegerField()
    unique_tiles = serializers.IntegerField()
    bytes_per_tile = serializers.DictField(child=TileBytes())
    expected_bytes = serializers.IntegerField()
    tiles_per_second = serializers.FloatField()
    throughput_source = serializers.ChoiceField(choices=["recent_runs", "default"])
    throughput_runs = serializers.IntegerField()
    expected_seconds = serializers.FloatField()


class EstimateResponse(serializers.Serializer):
    status = serializers.CharField(help_text="one of: " + ", ".join(["success"]))
    message = serializers.CharField()
    data = EstimateData()


class StartPointRequest(serializers.Serializer):
    point_id = StrictCharField(max_length=300, trim_whitespace=False)


class PointCacheData(serializers.Serializer):
    status = serializers.CharField(help_text="one of: " + ", ".join(["completed", "already_cached", "failed"]))
    point_id = serializers.CharField()
    campaign_id = serializers.CharField()
    counted = serializers.BooleanField()
    total_tiles = serializers.IntegerField()
    successful_tiles = serializers.IntegerField()
    failed_tiles = serializers.IntegerField()
    stored_tiles = serializers.IntegerField()
    skipped_tiles = serializers.IntegerField()
    error = serializers.CharField(allow_null=True)


class StartPointResponse(serializers.Serializer):
    status = serializers.CharField(help_text="one of: " + ", ".join(["completed", "already_cached"]))
    message = serializers.CharField()
    data = PointCacheData()


class PointStatusData(serializers.Serializer):
    point_id = serializers.CharField()
    campaign_id = serializers.CharField()
    lon = serializers.FloatField()
    lat = serializers.FloatField()
    cached = serializers.BooleanField()
    cached_at = serializers.DateTimeField(allow_null=True)
    cached_by = serializers.CharField(allow_null=True)
    enhance_in_cache = serializers.IntegerField(allow_null=True)
    preset = serializers.CharField(allow_null=True)
    total_tiles = serializers.IntegerField(allow_null=True)
    stored_tiles = serializers.IntegerField(allow_null=True)
    missing_tiles = serializers.IntegerField(allow_null=True)
    plan_error = serializers.CharField(allow_null=True)


class PointStatusResponse(serializers.Serializer):
    status = serializers.CharField(help_text="one of: " + ", ".join(["success"]))
    message = serializers.CharField()
    data = PointStatusData()
