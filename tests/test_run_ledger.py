"""The run ledger's hot query: claiming the next pending point costs the same however long the run is."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from campaigns import runs
from campaigns.models import CachingRun, RunPoint, RunPointState, RunState
from tests.conftest import BOTH_DATABASES

pytestmark = pytest.mark.django_db(databases=BOTH_DATABASES)

LEDGER_SIZE = 5000


def make_ledger(make_campaign) -> CachingRun:
    campaign = make_campaign("ledger", points=1)
    run = CachingRun.objects.create(
        id=uuid.uuid4(), campaign_id=campaign.id, task_id=str(uuid.uuid4()), state=RunState.RUNNING,
        batch_size=5, plan={}, total_points=LEDGER_SIZE, points_to_cache=LEDGER_SIZE, dispatch_complete=True,
    )
    states = [RunPointState.SUCCEEDED, RunPointState.DISPATCHED, RunPointState.PENDING]
    RunPoint.objects.bulk_create(
        RunPoint(run=run, point_id=f"{index:05d}_ledger", state=states[min(index * 3 // LEDGER_SIZE, 2)])
        for index in range(LEDGER_SIZE)
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {RunPoint._meta.db_table}")
    return run


def test_claim_query_uses_index_without_sort(make_campaign):
    run = make_ledger(make_campaign)

    plan = runs.pending_in_order(run.pk).values_list("pk", "point_id")[:1].explain()

    print(f"{connection.vendor} plan of the claim query:\n{plan}")
    assert "runpoint_run_state_id" in plan
    assert "TEMP B-TREE" not in plan.upper()
    assert "Sort" not in plan


def test_pending_points_come_in_ledger_order(make_campaign):
    run = make_ledger(make_campaign)
    expected = list(
        RunPoint.objects.filter(run=run, state=RunPointState.PENDING).order_by("pk").values_list("point_id", flat=True)
    )

    first_three = list(runs.pending_in_order(run.pk).values_list("point_id", flat=True)[:3])

    assert len(expected) == LEDGER_SIZE - 2 * LEDGER_SIZE // 3 - 1
    assert first_three == expected[:3]
    assert first_three[0] == f"{2 * LEDGER_SIZE // 3 + 1:05d}_ledger"
