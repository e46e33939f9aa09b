"""The folders the Docker image copies exist, and their starter files say only what is true."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import yaml

from archiver.config import retention_days
from archiver.retention_policy import load

ROOT = Path(__file__).resolve().parents[2]


def _copy_sources(dockerfile: Path) -> list[str]:
    """The source paths of every COPY instruction (without --from) in ``dockerfile``."""
    sources: list[str] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_every_path_the_dockerfile_copies_is_in_the_repository() -> None:
    sources = _copy_sources(ROOT / "Dockerfile")
    assert {"policies", "templates", "archiver", "requirements/serve.txt"} <= set(sources)
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert missing == []


def test_shipped_retention_example_loads_and_says_the_service_applies_it() -> None:
    policy = load(ROOT / "policies")
    assert [c.name for c in policy.classes] == ["finra-4511", "mifid-ii", "marketing", "default"]
    assert retention_days(str(policy.named("default").retain)) == retention_days("7y")
    text = (ROOT / "policies" / "retention.yaml").read_text()
    readme = (ROOT / "policies" / "README.md").read_text()
    assert "does not apply" not in text and "does not apply" not in readme  # the sealer classes records by it
    assert "sealed as a\n# `policy` record" in text and "retention extend" in readme


def test_shipped_schedule_is_read_by_the_jobs_and_the_readme_says_so() -> None:
    text = (ROOT / "policies" / "schedule.yaml").read_text()
    assert "does not read this file" not in text and "Read by `archiver jobs`" in text
    cron = yaml.safe_load(text)["worm-selftest"]
    assert re.fullmatch(r"(\S+ ){4}\S+", cron)
    readme = (ROOT / "policies" / "README.md").read_text()
    assert "| `schedule.yaml` | `archiver jobs`" in readme


def test_base_template_renders_blocks_of_a_child_without_external_assets() -> None:
    env = jinja2.Environment(loader=jinja2.DictLoader({
        "base.html": (ROOT / "templates" / "base.html").read_text(),
        "child.html": '{% extends "base.html" %}{% block title %}T{% endblock %}'
                      "{% block content %}{{ text }}{% endblock %}",
    }), autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.get_template("child.html").render(text="<b>x</b>", lang="en")
    assert "<title>T</title>" in html
    assert "<main>&lt;b&gt;x&lt;/b&gt;</main>" in html
    assert not re.search(r"(src|href)=|https?://|//cdn", (ROOT / "templates" / "base.html").read_text())
