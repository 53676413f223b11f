"""The Brazilian Portuguese catalog is complete, and the API, admin and commands speak it."""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import polib
import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone, translation

from campaigns.models import CachingRun, Campaign, RunState
from tests.conftest import BOTH_DATABASES
from tests.translations import LOCALE, catalogs, ensure_compiled

PLACEHOLDER = re.compile(r"%\(\w+\)[-#0 +]*\d*(?:\.\d+)?[sdifr]|%%")
PT_BR = "pt-BR"


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    ensure_compiled()


def entries() -> list[tuple[str, polib.POEntry]]:
    return [(str(path.relative_to(LOCALE)), entry) for path in catalogs() for entry in polib.pofile(str(path))]


def test_pt_br_catalog_exists():
    assert [path.relative_to(LOCALE).as_posix() for path in catalogs()] == ["pt_BR/LC_MESSAGES/django.po"]


def test_every_entry_is_translated():
    untranslated = []
    for name, entry in entries():
        if entry.obsolete:
            continue
        values = list(entry.msgstr_plural.values()) if entry.msgid_plural else [entry.msgstr]
        if not values or any(not value.strip() for value in values):
            untranslated.append(f"{name}: {entry.msgid!r}")
    assert untranslated == []


def test_no_entry_is_fuzzy():
    fuzzy = [f"{name}: {entry.msgid!r}" for name, entry in entries() if "fuzzy" in entry.flags]
    assert fuzzy == []
    for path in catalogs():
        assert not polib.pofile(str(path)).metadata_is_fuzzy, f"{path} has a fuzzy header"


def test_plural_forms_of_portuguese():
    for path in catalogs():
        assert polib.pofile(str(path)).metadata["Plural-Forms"] == "nplurals=2; plural=(n > 1);"


def test_translations_keep_placeholders():
    mismatched = []
    for name, entry in entries():
        sources = [entry.msgid_plural] * len(entry.msgstr_plural) if entry.msgid_plural else [entry.msgid]
        targets = list(entry.msgstr_plural.values()) if entry.msgid_plural else [entry.msgstr]
        for source, target in zip(sources, targets):
            if sorted(PLACEHOLDER.findall(source)) != sorted(PLACEHOLDER.findall(target)):
                mismatched.append(f"{name}: {source!r} -> {target!r}")
    assert mismatched == []


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="msgfmt (GNU gettext) is not installed")
def test_msgfmt_accepts_the_catalogs():
    for path in catalogs():
        checked = subprocess.run(
            ["msgfmt", "--check", "-o", "/dev/null", str(path)], capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, checked.stderr


@pytest.mark.django_db(databases=BOTH_DATABASES)
class TestPortugueseScreens:
    def test_api_message_in_portuguese(self, staff_client, make_campaign):
        make_campaign("teste", points=1)

        missing = staff_client.get("/api/cache/campaign/nope/status", HTTP_ACCEPT_LANGUAGE=PT_BR)
        status = staff_client.get("/api/cache/campaign/teste/status", HTTP_ACCEPT_LANGUAGE=PT_BR)
        cancel = staff_client.post("/api/cache/campaign/teste/cancel", HTTP_ACCEPT_LANGUAGE=PT_BR)

        assert missing.json()["message"] == "Campanha nope não encontrada."
        assert missing.json()["code"] == "campaign_not_found"
        assert status.json()["message"] == "Estado do cache da campanha teste"
        assert cancel.json()["message"] == "A campanha teste não está em cache."

    def test_admin_changelist_in_portuguese(self, staff_user, make_campaign):
        staff_user.is_superuser = True
        staff_user.save()
        make_campaign("andamento", points=2)
        started = timezone.make_aware(timezone.datetime(2026, 3, 5, 14, 30), timezone.get_fixed_timezone(-180))
        Campaign.objects.filter(pk="andamento").update(
            caching_in_progress=True, total_points=12345, cached_points=6583, cache_percentage=53.33,
            caching_started_at=started,
        )
        CachingRun.objects.create(campaign_id="andamento", task_id="t", group_id="g", state=RunState.RUNNING,
                                  batch_size=5, preset="seed")
        client = Client()
        client.force_login(staff_user)

        html = client.get("/admin/campaigns/campaign/", HTTP_ACCEPT_LANGUAGE=PT_BR).content.decode()

        assert '<html lang="pt-br"' in html
        assert "Campanhas" in html
        assert "Iniciar cache" in html
        assert "Limpar cache" in html
        assert "Refazer o cache dos pontos com falha" in html
        assert "6.583 / 12.345 · 53,33 %" in html
        assert ">em cache</span>" in html
        assert "5 de Março de 2026 às 14:30" in html

    def test_admin_messages_in_portuguese(self, staff_user, make_campaign, monkeypatch):
        from campaigns import tasks

        monkeypatch.setattr(tasks.dispatch_run, "apply_async", lambda *args, **kwargs: None)
        staff_user.is_superuser = True
        staff_user.save()
        make_campaign("teste", points=1)
        client = Client()
        client.force_login(staff_user)

        response = client.post(
            "/admin/campaigns/campaign/",
            {"action": "start_caching", "_selected_action": ["teste"], "apply": "yes", "batch_size": "5",
             "preset": ""},
            HTTP_ACCEPT_LANGUAGE=PT_BR, follow=True,
        )

        assert "Campanha teste: cache iniciado, 1 ponto a armazenar." in response.content.decode()

    def test_command_output_in_portuguese(self, make_campaign):
        make_campaign("teste", points=3)
        Campaign.objects.filter(pk="teste").update(total_points=3, cached_points=1, cache_percentage=33.33)
        output = io.StringIO()

        with translation.override("pt-br"):
            call_command("campaign_status", "teste", stdout=output)

        text = output.getvalue()
        assert "Campanha teste" in text
        assert "  Estado: ociosa" in text
        assert "  Pontos em cache: 1 de 3 (33,33 %)" in text
        assert "Nenhuma execução de cache ainda; inicie uma com cache_campaign teste." in text

    def test_command_help_in_portuguese(self):
        from campaigns.management.commands.clear_cache import Command

        with translation.override("pt-br"):
            help_text = Command().create_parser("manage.py", "clear_cache").format_help()

        assert "Apaga os tiles armazenados de uma campanha" in help_text
        assert "Limpa sem pedir confirmação." in help_text
