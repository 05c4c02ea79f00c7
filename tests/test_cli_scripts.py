"""``python -m auditor scripts`` as a real subprocess against a simulator served by the test.

The simulator runs in the test's event loop and the CLI is awaited with
``asyncio.create_subprocess_exec``, so the server keeps answering while the CLI runs. Every
run goes through :func:`run_cli`, which checks that neither the client secret nor a token
the PBX minted appears in its stdout or stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from auditor.simulator import Pbx, RequestRecord, Simulator, pbx_url, serve

SECRET = "cli-Secret-Value-93kQ"
SECRET_ENV = "HQ_AUDITOR_SECRET"


class RecordingPbx(Pbx):
    """A simulated PBX that remembers every token it minted, so tests can look for them."""

    def __init__(self, name: str, **options: Any) -> None:
        self.issued: list[str] = []
        super().__init__(name, client_secret=SECRET, **options)

    def issue_token(self, client_id: str | None = None) -> str:
        token = super().issue_token(client_id)
        self.issued.append(token)
        return token


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str

    @property
    def err_lines(self) -> list[str]:
        return self.stderr.splitlines()


@dataclass
class Hq:
    pbx: RecordingPbx
    config: Path

    def listing_requests(self) -> list[RequestRecord]:
        return self.pbx.stats.for_endpoint("scripts")

    async def run_cli(self, *args: str, secret: str = SECRET) -> Done:
        # No AUDITOR_* overrides, and no journald prefix on the JSON log lines.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AUDITOR_") and k != "JOURNAL_STREAM"
        }
        env[SECRET_ENV] = secret
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "auditor", "--config", str(self.config), *args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            cwd=self.config.parent,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        done = Done(proc.returncode, out.decode(), err.decode())
        for text in (done.stdout, done.stderr):
            for secret_value in (SECRET, secret, *self.pbx.issued):
                assert secret_value not in text, "a secret or token reached the CLI's output"
        return done


def write_config(path: Path, url: str) -> Path:
    path.write_text(
        "[[targets]]\n"
        'name = "hq"\n'
        f'url = "{url}"\n'
        'client_id = "auditor"\n'
        f'client_secret_env = "{SECRET_ENV}"\n'
        # Retries are the client's business (tests/xapi/); here they would only wait.
        "retries = 0\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
async def hq(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Hq]:
    scripts = getattr(request, "param", 250)
    pbx = RecordingPbx("hq", scripts=scripts, seed=3)
    async with serve(Simulator([pbx])) as base:
        yield Hq(pbx, write_config(tmp_path / "auditor.toml", pbx_url(base, "hq")))


@pytest.mark.parametrize("hq", [1000], indirect=True)
async def test_all_as_json_pages_through_everything(hq: Hq) -> None:
    done = await hq.run_cli("scripts", "--target", "hq", "--all", "--json")

    assert done.code == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"target", "count", "pages", "items"}
    assert (result["target"], result["count"], result["pages"]) == ("hq", 1000, 10)
    assert result["items"] == hq.pbx.items()
    assert hq.pbx.stats.logins == 1
    assert hq.pbx.stats.max_top == 100
    assert all(int(r.query["$top"]) <= 100 for r in hq.listing_requests())
    assert [r.query["$skip"] for r in hq.listing_requests()] == [
        str(skip) for skip in range(0, 1000, 100)
    ]


async def test_query_options_are_passed_through(hq: Hq) -> None:
    done = await hq.run_cli(
        *("scripts", "--target", "hq", "--json", "--count"),
        *("--top", "5", "--skip", "3", "--search", "notify ops"),
        *("--filter", "endswith(Filename,'.sh')"),
    )

    assert done.code == 0, done.stderr
    (request,) = hq.listing_requests()
    assert request.query == {
        "$top": "5",
        "$skip": "3",
        "$search": '"notify ops"',
        "$filter": "endswith(Filename,'.sh')",
        "$count": "true",
    }
    result = json.loads(done.stdout)
    assert (result["count"], result["pages"], result["items"]) == (0, 1, [])


async def test_plain_output_is_one_filename_per_line(hq: Hq) -> None:
    page, narrowed = await asyncio.gather(
        hq.run_cli("scripts", "--target", "hq", "--top", "7", "--skip", "2"),
        hq.run_cli(
            *("scripts", "--target", "hq", "--all"),
            *("--search", "flush-arp", "--filter", "endswith(Filename,'.sh')"),
        ),
    )

    assert page.code == 0, page.stderr
    assert page.stdout.splitlines() == hq.pbx.filenames[2:9]
    assert narrowed.code == 0, narrowed.stderr
    expected = [n for n in hq.pbx.filenames if "flush-arp" in n and n.endswith(".sh")]
    assert expected
    assert narrowed.stdout.splitlines() == expected


async def test_a_refused_query_exits_2_before_any_request(hq: Hq) -> None:
    refused = {
        ("--filter", "Filename eq 'a' and"): "error: $filter: ",
        ("--all", "--filter", "contains(Filename"): "error: $filter: ",
        ("--top", "101"): "error: $top: ",
    }
    runs = await asyncio.gather(
        *(hq.run_cli("scripts", "--target", "hq", *args) for args in refused)
    )

    for done, starts in zip(runs, refused.values(), strict=True):
        assert done.code == 2
        assert len(done.err_lines) == 1
        assert done.err_lines[0].startswith(starts)
        assert done.stdout == ""
    assert hq.pbx.stats.requests_total == 0


async def test_a_wrong_secret_exits_1_with_one_line_naming_the_target(hq: Hq) -> None:
    done = await hq.run_cli("scripts", "--target", "hq", "--all", secret="not-the-secret-4j")

    assert done.code == 1
    assert len(done.err_lines) == 1
    assert done.err_lines[0].startswith("pbx: hq: login refused")
    assert done.stdout == ""
    assert (hq.pbx.stats.logins, hq.pbx.stats.failed_logins) == (1, 1)


async def test_a_persistent_500_on_page_3_exits_1_naming_the_pbx_and_page(hq: Hq) -> None:
    hq.pbx.add_fault("status", endpoint="scripts", skip=200, status=500)
    done = await hq.run_cli("scripts", "--target", "hq", "--all", "--json")

    assert done.code == 1
    assert done.stdout == ""
    # A one-shot command logs warnings only: the error is the one line on stderr.
    assert done.err_lines == [
        "pbx: hq, page 3: GetFailoverScripts $skip=200: HTTP 500 (Internal Server Error)"
    ]
    assert [r.query["$skip"] for r in hq.listing_requests()] == ["0", "100", "200"]


async def test_the_targets_filter_and_search_apply_with_and_without_all(hq: Hq) -> None:
    with hq.config.open("a", encoding="utf-8") as config:
        config.write('filter = "endswith(Filename, \'.sh\')"\nsearch = "failover"\n')
    for extra in ((), ("--all",)):
        hq.pbx.stats.reset()
        done = await hq.run_cli("scripts", "--target", "hq", "--json", *extra)
        assert done.code == 0, done.stderr
        names = [item["Filename"] for item in json.loads(done.stdout)["items"]]
        assert names
        assert all(n.endswith(".sh") and "failover" in n.lower() for n in names)
        for record in hq.listing_requests():
            assert record.query["$filter"] == "endswith(Filename, '.sh')"
            assert record.query["$search"] == "failover"
