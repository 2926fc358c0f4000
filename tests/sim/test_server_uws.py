"""UWS jobs of the simulated TAP service on an event loop, without HTTP: phases, blocking waits, errors,
abort and delete, and the job documents pyvo reads."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from spxbatch.sim.server.uws import MAX_WAIT_S, JobStore, job_list_xml, job_xml

NS = {"uws": "http://www.ivoa.net/xml/UWS/v1.0", "xlink": "http://www.w3.org/1999/xlink"}


def _store(release: asyncio.Event | None = None, fail: str | None = None) -> JobStore:
    async def runner(params, uploads):
        if release is not None:
            await release.wait()
        if fail is not None:
            raise RuntimeError(fail)
        return params["QUERY"].encode(), "text/plain"

    return JobStore(runner)


def _doc(job, url="http://sim/TAP/async/x") -> ET.Element:
    return ET.fromstring(job_xml(job, url))


def test_job_runs_to_completed():
    async def scenario():
        release = asyncio.Event()
        store = _store(release)
        job = store.create({"QUERY": "SELECT 1", "LANG": "ADQL"}, {})
        assert job.phase == "PENDING" and store.get(job.job_id) is job and store.jobs() == [job]
        store.start(job)
        assert job.phase == "QUEUED"
        await asyncio.sleep(0)
        assert job.phase == "EXECUTING"
        await store.wait(job, 0.05)  # still running: returns after the timeout
        assert job.phase == "EXECUTING"
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, release.set)
        t = loop.time()
        await store.wait(job, -1)  # blocks until the phase changes, not for MAX_WAIT_S
        assert job.phase == "COMPLETED" and loop.time() - t < MAX_WAIT_S / 2
        assert (job.result, job.result_type) == (b"SELECT 1", "text/plain") and job.ended >= job.started
        store.start(job)  # RUN on a finished job changes nothing
        assert job.phase == "COMPLETED"
        return job

    job = asyncio.run(scenario())
    doc = _doc(job)
    assert doc.find("uws:phase", NS).text == "COMPLETED"
    result = doc.find("uws:results/uws:result", NS)
    assert result.get(f"{{{NS['xlink']}}}href") == "http://sim/TAP/async/x/results/result"
    params = {p.get("id"): p.text for p in doc.findall("uws:parameters/uws:parameter", NS)}
    assert params == {"query": "SELECT 1", "lang": "ADQL"}
    assert doc.find("uws:errorSummary", NS) is None


def test_failed_job_is_error_with_the_message():
    async def scenario():
        store = _store(fail="no such column: <bogus> & co")
        job = store.create({"QUERY": "x"}, {})
        store.start(job)
        await store.wait(job, 5)
        return job

    job = asyncio.run(scenario())
    assert job.phase == "ERROR" and job.result is None
    doc = _doc(job)
    assert doc.find("uws:errorSummary/uws:message", NS).text == "no such column: <bogus> & co"
    assert doc.find("uws:results/uws:result", NS) is None


def test_abort_and_delete():
    async def scenario():
        store = _store(asyncio.Event())  # never released
        running = store.create({"QUERY": "a"}, {})
        store.start(running)
        await asyncio.sleep(0)
        store.abort(running)
        await asyncio.sleep(0)
        assert running.phase == "ABORTED" and running.task.cancelled()
        pending = store.create({"QUERY": "b"}, {})
        assert store.delete(pending.job_id) and store.get(pending.job_id) is None
        assert not store.delete(pending.job_id)
        return store, running

    store, running = asyncio.run(scenario())
    listing = ET.fromstring(job_list_xml(store.jobs(), "http://sim/TAP/async"))
    refs = listing.findall("uws:jobref", NS)
    assert [(r.get("id"), r.find("uws:phase", NS).text) for r in refs] == [(running.job_id, "ABORTED")]
    assert refs[0].get(f"{{{NS['xlink']}}}href") == f"http://sim/TAP/async/{running.job_id}"
