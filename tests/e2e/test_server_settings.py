"""``python -m agentic.local``: a bad setting stops it with one line and exit code 2; ACCESS_LOG."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.server import LocalServer, run_to_exit

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("setting", "value", "line"),
    [
        ("FAULTS", "retriever:sometimes", "invalid setting FAULTS: bad fault rule 'retriever:sometimes'"),
        ("API_TOKENS", "alice", "invalid setting API_TOKEN/API_TOKENS: API_TOKENS must look like"),
        ("MAX_QUEUE_SIZE", "-1", "invalid setting MAX_QUEUE_SIZE='-1': Input should be greater than or equal to 0"),
        ("PIPELINE_DEFINITION", "/no/such/pipeline.json", "invalid setting PIPELINE_DEFINITION: [Errno 2]"),
        ("KNOWLEDGE_DIR", "/no/such/docs", "invalid setting KNOWLEDGE_DIR: '/no/such/docs' is not a folder"),
        ("LEASE_SECONDS", "0.3", "invalid setting LEASE_SECONDS=0.3 is below the floor of 2 s"),
        ("LEASE_RENEW_SECONDS", "2.5", "invalid setting LEASE_RENEW_SECONDS=2.5 must be at most a third of"),
        ("WORKERS", "0", "invalid setting WORKERS='0': Input should be greater than or equal to 1"),
        ("WORKERS", "65", "invalid setting WORKERS='65': Input should be less than or equal to 64"),
    ],
)
def test_a_bad_setting_stops_the_server_with_one_line_and_exit_code_2(tmp_path, setting, value, line):
    result = run_to_exit(1, DATABASE_PATH=str(tmp_path / "db.sqlite"), **{setting: value})
    assert result.returncode == 2
    assert result.stderr.startswith(f"python -m agentic.local: {line}")
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert not (tmp_path / "db.sqlite").exists()  # it stopped before opening anything


@pytest.mark.parametrize("access_log", ["true", "false"])
def test_access_log_logs_one_line_per_request_when_on(tmp_path, access_log):
    with LocalServer(tmp_path / "db.sqlite", ACCESS_LOG=access_log) as server:
        assert httpx.get(f"{server.url}/tasks?limit=3").status_code == 200
    logged = '"GET /tasks?limit=3 HTTP/1.1" 200' in server.log.read_text()
    assert logged is (access_log == "true")
