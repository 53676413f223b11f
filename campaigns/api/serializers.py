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
    status = serializers.ChoiceField(choices=["scheduled", "completed"])
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
