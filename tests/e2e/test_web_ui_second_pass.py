"""The web view, second pass, in the real browser against a real server: what a new user tripped over
(a cancelled step still spinning, a stale step after reject and retry, an unknown id keeping the last
task, a retry countdown that never ended, a phone-width page, the favicon, /docs offline) and what
people expect (timings on a timeline, retry from a step, search and paging, the pipeline's graph)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.server import REPO, LocalServer
from tests.e2e.test_cli_finding import colliding_keys

pytestmark = pytest.mark.e2e

DESCRIPTION = "Explain how exponential backoff with jitter prevents retry storms"


def events_until(api: httpx.Client, task_id: str, event_type: str) -> list[dict]:
    seen = []
    with api.stream("GET", f"/tasks/{task_id}/events") as response:
        for line in response.iter_lines():
            if line.strip():
                seen.append(json.loads(line))
                if seen[-1]["event_type"] == event_type:
                    return seen
    raise AssertionError(f"no {event_type} in {[e['event_type'] for e in seen]}")


def step_state(page, step_id: str) -> tuple[str | None, str | None]:
    row = f'#steps li[data-step-id="{step_id}"]'
    return page.get_attribute(row, "data-state"), page.text_content(f"{row} .step-state")


def test_cancel_asks_first_then_stops_the_running_step_with_the_reason(tmp_path, page):
    with (
        LocalServer(tmp_path / "db.sqlite", AGENT_LATENCY_SCALE="100") as server,
        httpx.Client(base_url=server.url, timeout=30) as api,
    ):
        task_id = api.post("/tasks", json={"description": DESCRIPTION, "execute": True}).json()["task_id"]
        page.goto(f"{server.url}/ui#/tasks/{task_id}")
        page.wait_for_selector('#steps li[data-step-id="step_001"][data-state="running"]')
        # When the user clicks Cancel and says no, nothing happens
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.click('[data-action="cancel"]')
        assert api.get(f"/tasks/{task_id}/status").json()["status"] == "executing"
        # And when they confirm, the task is cancelled and its running step shows it stopped
        page.once("dialog", lambda dialog: dialog.accept())
        page.click('[data-action="cancel"]')
        page.wait_for_selector('#task-status[data-status="cancelled"]')
        page.wait_for_selector('#steps li[data-step-id="step_001"][data-state="stopped"]')
        assert step_state(page, "step_001") == ("stopped", "stopped: task cancelled")
        assert page.query_selector('#steps li[data-state="running"]') is None
        assert "running" not in page.inner_text("#steps")
        assert page.is_visible('[data-action="retry"]')


def test_approval_is_a_notice_with_its_summary_and_reject_then_retry_leaves_no_stale_step(tmp_path, page):
    with LocalServer(tmp_path / "db.sqlite") as server, httpx.Client(base_url=server.url, timeout=30) as api:
        task_id = api.post("/tasks", json={"description": DESCRIPTION, "approval": True, "execute": True}).json()[
            "task_id"
        ]
        summary = events_until(api, task_id, "approval_requested")[-1]["data"]["summary"]
        page.goto(f"{server.url}/ui#/tasks/{task_id}")
        page.wait_for_selector("#approval-box:not([hidden])")
        # The request is a notice, not an error, and shows what the analyzer found
        assert page.text_content("#task-error") == ""
        assert "waits for your approval" in page.text_content("#task-notice")
        assert page.text_content("#approval-box pre") == summary
        # When the user rejects, the writer fails with ApprovalRejected
        page.click('[data-action="reject"]')
        page.wait_for_selector('#task-status[data-status="failed"]')
        page.wait_for_selector('#steps li[data-step-id="step_003"][data-state="failed"]')
        # And when they retry, the run asks for approval again: the writer is pending, as the API says
        page.click('[data-action="retry"]')
        page.wait_for_selector("#events li[data-type='task_retried']")
        page.wait_for_selector('#task-status[data-status="awaiting_approval"]')
        api_step = api.get(f"/tasks/{task_id}/status").json()["steps"][2]
        assert api_step["status"] == "pending"
        assert step_state(page, "step_003") == ("pending", "pending")
        assert page.is_visible("#approval-box")
        page.goto("about:blank")  # close the stream of the waiting task, so the server can stop


def test_an_unknown_task_id_keeps_nothing_of_the_task_before(tmp_path, page):
    with (
        LocalServer(tmp_path / "db.sqlite", FAULTS="writer:permanent") as server,
        httpx.Client(base_url=server.url, timeout=30) as api,
    ):
        task_id = api.post("/tasks", json={"description": DESCRIPTION, "execute": True}).json()["task_id"]
        events_until(api, task_id, "task_failed")
        page.goto(f"{server.url}/ui#/tasks/{task_id}")
        page.wait_for_selector('[data-action="retry"]:not([hidden])')
        page.evaluate("location.hash = '#/tasks/no-such-task'")
        page.wait_for_selector("#task-error:has-text('not found')")
        assert page.text_content("#task-title") == "No such task"
        assert not page.is_visible("#task-status")
        assert not page.is_visible('[data-action="retry"]')
        assert page.query_selector("#steps li") is None


def test_a_retry_counts_down_then_runs_and_the_timeline_shows_both_attempts(tmp_path, page):
    # Given an analyzer whose first attempt fails, with a 3 s wait before the second (which takes 1 s)
    with (
        LocalServer(
            tmp_path / "db.sqlite", AGENT_LATENCY_SCALE="5", RETRY_TIME_SCALE="3", FAULTS="analyzer:transient:1"
        ) as server,
        httpx.Client(base_url=server.url, timeout=30) as api,
    ):
        task_id = api.post("/tasks", json={"description": DESCRIPTION, "execute": True}).json()["task_id"]
        page.goto(f"{server.url}/ui#/tasks/{task_id}")
        row = '#steps li[data-step-id="step_002"] .step-state'
        page.wait_for_selector(f"{row}:has-text('attempt 2 in')")
        # Then the countdown ends and says the attempt runs, before the step completes
        page.wait_for_selector(f"{row}:has-text('attempt 2 running')")
        assert page.get_attribute('#steps li[data-step-id="step_002"]', "data-state") == "retrying"
        page.wait_for_selector('#report[data-ready="true"]')
        # And the timeline has a bar per attempt: the analyzer's first retried, its second done
        bars = page.eval_on_selector_all(
            '#timeline .timeline-row[data-step-id="step_002"] .bar', "bars => bars.map(b => b.dataset.outcome)"
        )
        assert bars == ["retried", "ok"]
        rows = page.eval_on_selector_all("#timeline .timeline-row", "rows => rows.map(r => r.dataset.stepId)")
        assert rows == ["step_001", "step_002", "step_003"]
        assert float(page.get_attribute("#timeline-total", "data-seconds")) > 1.0
        total = api.get(f"/tasks/{task_id}/status").json()["duration_seconds"]
        page.wait_for_selector(f"#task-total:has-text('took {total:.2f} s')")


def test_retry_from_a_chosen_step(tmp_path, page):
    with (
        LocalServer(tmp_path / "db.sqlite", FAULTS="writer:permanent") as server,
        httpx.Client(base_url=server.url, timeout=30) as api,
    ):
        task_id = api.post("/tasks", json={"description": DESCRIPTION, "execute": True}).json()["task_id"]
        events_until(api, task_id, "task_failed")
        page.goto(f"{server.url}/ui#/tasks/{task_id}")
        page.wait_for_selector("#retry-from-label:not([hidden])")
        page.select_option("#retry-from", "step_001")
        page.click('[data-action="retry"]')
        page.wait_for_selector("#events li[data-type='task_retried']")
        # The stream of a retried task ends with the retried run's end
        with api.stream("GET", f"/tasks/{task_id}/events") as response:
            log = [json.loads(line) for line in response.iter_lines() if line.strip()]
        retried = [e for e in log if e["event_type"] == "task_retried"]
        assert retried[-1]["data"]["from_step"] == "step_001"
        assert log[-1]["event_type"] == "task_failed"
        assert api.get(f"/tasks/{task_id}/status").json()["steps"][0]["attempts"] == 2
        page.wait_for_selector('#steps li[data-step-id="step_001"][data-state="completed"]')


def test_the_list_searches_by_text_and_date_and_pages_on(tmp_path, page):
    with LocalServer(tmp_path / "db.sqlite") as server, httpx.Client(base_url=server.url, timeout=30) as api:
        ids = [
            api.post("/tasks", json={"description": f"Task {n} about {'jitter' if n == 7 else 'backoff'}"}).json()[
                "task_id"
            ]
            for n in range(23)
        ]
        page.goto(f"{server.url}/ui")
        page.wait_for_selector("#task-table tbody tr")
        assert len(page.query_selector_all("#task-table tbody tr")) == 20
        page.click("#more")
        page.wait_for_selector("#task-table tbody tr:nth-child(23)")
        assert len(page.query_selector_all("#task-table tbody tr")) == 23
        assert page.is_hidden("#more")
        # Search by words, in any case
        page.fill("#search", "JITTER")
        page.wait_for_selector(f'#task-table tbody tr:only-child[data-task-id="{ids[7]}"]')
        # Or by an id prefix
        page.fill("#search", ids[3][:8])
        page.wait_for_selector(f'#task-table tbody tr:only-child[data-task-id="{ids[3]}"]')
        # And a date after every task matches none
        page.fill("#search", "")
        page.fill("#since", "2999-01-01")
        page.dispatch_event("#since", "change")
        page.wait_for_selector("#list-empty:not([hidden])")
        assert page.text_content("#list-empty") == "No task matches."


def test_the_pipeline_is_drawn_from_the_asl_file_with_the_current_step(tmp_path, page):
    asl = json.loads((REPO / "statemachine" / "pipeline.asl.json").read_text())
    with (
        LocalServer(tmp_path / "db.sqlite", AGENT_LATENCY_SCALE="10") as server,
        httpx.Client(base_url=server.url, timeout=30) as api,
    ):
        task_id = api.post("/tasks", json={"description": DESCRIPTION, "execute": True}).json()["task_id"]
        page.goto(f"{server.url}/ui#/tasks/{task_id}")
        page.click("#pipeline-details summary")  # the graph is folded away until asked for
        page.wait_for_selector("#pipeline g.state")
        names = page.eval_on_selector_all("#pipeline g.state", "gs => gs.map(g => g.dataset.stateName)")
        assert sorted(names) == sorted(asl["States"])
        page.wait_for_selector('#pipeline g.state.current[data-step-id="step_002"]')
        assert page.query_selector('#pipeline g.state.done[data-step-id="step_001"]') is not None
        page.wait_for_selector('#report[data-ready="true"]')
        done = page.eval_on_selector_all("#pipeline g.state.done", "gs => gs.map(g => g.dataset.stepId)")
        assert done == ["step_001", "step_002", "step_003"]
        assert page.query_selector("#pipeline g.state.current") is None


def test_a_phone_width_page_fits_and_the_favicon_is_served(tmp_path, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    phone = context.new_page()
    try:
        with LocalServer(tmp_path / "db.sqlite") as server, httpx.Client(base_url=server.url, timeout=30) as api:
            long = "A task with a long description " * 8
            task_id = api.post("/tasks", json={"description": long, "execute": True}).json()["task_id"]
            events_until(api, task_id, "task_completed")
            favicon = api.get("/favicon.ico")
            for url, ready in (
                (f"{server.url}/ui", "#task-table tbody tr"),
                (f"{server.url}/ui#/tasks/{task_id}", "#report[data-ready]"),
            ):
                phone.goto(url)
                phone.wait_for_selector(ready)
                width = phone.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, (url, width)
        assert favicon.status_code == 200
        assert favicon.headers["content-type"] == "image/svg+xml"
    finally:
        context.close()


def test_docs_and_redoc_render_with_no_network_but_the_server(tmp_path, page):
    with LocalServer(tmp_path / "db.sqlite") as server:
        outside: list[str] = []

        def only_the_server(route):
            if route.request.url.startswith(server.url):
                route.continue_()
            else:  # ReDoc's "powered by" logo is an image from its CDN: cosmetic, the page works without
                if route.request.resource_type != "image":
                    outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_the_server)
        page.goto(f"{server.url}/docs")
        page.wait_for_selector(".swagger-ui .info .title:has-text('Agentic task system')")
        page.wait_for_selector(".opblock-summary-path[data-path='/tasks/{task_id}/cancel']")
        page.goto(f"{server.url}/redoc")
        page.wait_for_selector("h1:has-text('Agentic task system')")
    assert outside == []


def test_a_short_id_in_the_address_opens_its_task_or_lists_the_candidates(tmp_path, page):
    first_key, second_key = colliding_keys()
    with LocalServer(tmp_path / "db.sqlite") as server, httpx.Client(base_url=server.url, timeout=30) as api:
        first, second = (
            api.post("/tasks", json={"description": name}, headers={"Idempotency-Key": key}).json()["task_id"]
            for name, key in (("first", first_key), ("second", second_key))
        )
        shared = first[:4]
        unique = first[: next(i for i in range(5, 36) if first[:i] != second[:i])]
        # A unique prefix opens the task, under its full id
        page.goto(f"{server.url}/ui#/tasks/{unique}")
        page.wait_for_selector(f"#task-id:has-text('{first}')")
        page.wait_for_selector("#task-title:text-is('first')")  # read from the status, after the id
        assert page.url.endswith(f"#/tasks/{first}")
        # A prefix two tasks share lists both, as links
        page.goto(f"{server.url}/ui#/tasks/{shared}")
        page.wait_for_selector("#task-error a.candidate")
        assert page.text_content("#task-title") == f"2 tasks start with {shared}"
        links = page.eval_on_selector_all("#task-error a.candidate", "as => as.map(a => a.getAttribute('href'))")
        assert sorted(links) == sorted([f"#/tasks/{first}", f"#/tasks/{second}"])
