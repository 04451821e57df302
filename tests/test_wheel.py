"""The built wheel, installed into a clean virtual environment, as a user gets it.

Built offline from a copy of the tracked files (no build isolation: the dev
extra installs setuptools and wheel), installed with ``pip --no-index``; the
dependencies come from the test environment's site-packages through a path
entry, which does not activate the repository's editable install.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from harness import ROOT

pytestmark = pytest.mark.slow

CHECK = r"""
import importlib.util, sys
from pathlib import Path

venv = Path(sys.prefix)
assert importlib.util.find_spec("django_app") is None, "a top-level django_app is importable"

import celery_durable, celery_durable_django
for module in (celery_durable, celery_durable_django):
    assert Path(module.__file__).resolve().is_relative_to(venv.resolve()), module.__file__

import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.admin", "django.contrib.auth",
                    "django.contrib.contenttypes", "django.contrib.sessions",
                    "django.contrib.messages", "django_celery_results",
                    "celery_durable_django"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                           "NAME": str(Path.cwd() / "db.sqlite3")}},
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True, "OPTIONS": {"context_processors": []}}],
    USE_TZ=True)
django.setup()
from django.apps import apps
from django.core.management import call_command
from django.template.loader import get_template

config = apps.get_app_config("celery_durable")
assert config.name == "celery_durable_django", config.name
call_command("migrate", verbosity=0)
get_template("admin/celery_durable/run/change_form.html")
from django.contrib.staticfiles import finders  # noqa: F401 - the CSS ships in the wheel
assert (Path(celery_durable_django.__file__).parent / "static/celery_durable/admin.css").exists()

from celery_durable.stores.redis._scripts import SCRIPTS
assert "redis.call('TIME')" in SCRIPTS["BEGIN"] and "holds(" in SCRIPTS["SAVE_STEP"]
from celery_durable_django.store import DjangoStore
from celery_durable.stores.base import CAPABILITIES
assert all(issubclass(DjangoStore, c) for c in CAPABILITIES)
print("WHEEL-OK")
"""


def _tracked_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\n")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(source.read_bytes())
    return dest


def test_the_wheel_installs_the_engine_and_the_django_app_under_their_own_names(
        tmp_path: Path) -> None:
    """The wheel holds ``celery_durable`` and ``celery_durable_django`` (with the Lua scripts,
    templates and static files) and no ``django_app``; in a clean venv the documented
    ``INSTALLED_APPS`` entry migrates and renders, and ``import django_app`` fails."""
    src = _tracked_copy(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"), "."],
                   cwd=src, check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("celery_durable-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"celery_durable", "celery_durable_django",
                    f"{wheel.name.split('-py3')[0]}.dist-info"}

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    venv_site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies (celery, django, ...) from this environment, appended after the
    # wheel's own files; a path line does not run the editable install's .pth hook.
    (venv_site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run([str(python), "-c", CHECK], cwd=work, capture_output=True, text=True,
                         timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert "WHEEL-OK" in out.stdout, out.stderr[-3000:]
