"""The warm Lean language server and the Kimina client, both on the real ``lean``.

The Kimina client talks to a real aiohttp server on 127.0.0.1 that speaks the Kimina Lean
Server API and checks with the real binary (tests/servers/kimina_server.py).
"""

from __future__ import annotations

import time

import pytest
from servers.kimina_server import KiminaServer

from proofcritic.errors import SetupError
from proofcritic.lean_checker import (
    KiminaChecker,
    LeanServerChecker,
    LocalLeanChecker,
    prepare,
)
from proofcritic.lean_checker.samples import (
    PATHOLOGICAL,
    PRELUDE,
    PRELUDE_LINES,
    correct_file,
    on_preamble,
    preamble,
    prelude_file,
)

WRONG_LINE = "/- 𝔸𝔸 é -/ theorem bad : Eq (N.add N.zero (N.succ N.zero)) N.zero := Eq.refl N.zero"
WRONG = prelude_file(WRONG_LINE)
SORRY = prelude_file("theorem s (n : N) : Eq (N.add n N.zero) n := sorry")
AXIOM = prelude_file("axiom cheat : Eq N.zero (N.succ N.zero)\ntheorem t : Eq (N.succ N.zero) N.zero := Eq.symm' cheat")


def _verdict(result):
    messages = sorted((m.severity, m.line, m.column, m.end_line, m.end_column, m.text) for m in result.messages)
    return (result.status, messages, result.uses_sorry, result.disallowed_axioms, result.axioms, result.reasons)


async def test_warm_server_reuses_one_process_and_agrees_with_cold_lean(lean_bin):
    files = [correct_file(2), WRONG, SORRY, AXIOM, correct_file(4)]
    async with LocalLeanChecker(lean_bin, timeout=60) as cold:
        expected = [await cold.check(f) for f in files]
    async with LeanServerChecker(lean_bin, timeout=60) as warm:
        got = [await warm.check(f) for f in files]
        pid = warm._slots[0].conn.proc.pid
        again = await warm.check(WRONG)
        assert warm._slots[0].conn.proc.pid == pid and warm.restarts == 0
    assert [r.backend for r in got] == ["lean-server"] * 5
    assert [r.ok for r in got] == [True, False, False, False, True]
    for mine, reference in zip(got, expected):
        assert _verdict(mine) == _verdict(reference)
    # columns are code points even though the server counts UTF-16 units (𝔸 is two of them)
    first = next(m for m in got[1].messages if m.text.startswith("Type mismatch"))
    assert (first.line, first.column) == (PRELUDE_LINES + 1, WRONG_LINE.index("Eq.refl N.zero"))
    assert _verdict(again) == _verdict(expected[1])


@pytest.mark.slow
async def test_warm_server_timeout_restarts_the_server(lean_bin):
    async with LeanServerChecker(lean_bin, timeout=60) as warm:
        first = await warm.check(correct_file(1))
        start = time.monotonic()
        stuck = await warm.check(PATHOLOGICAL, timeout=1.5)
        elapsed = time.monotonic() - start
        after = await warm.check(correct_file(3))
        assert warm.restarts == 1
    assert first.ok and after.ok
    assert stuck.status == "timeout" and not stuck.ok and 1.4 <= elapsed < 10


async def test_warm_server_pool_checks_in_parallel(lean_bin):
    async with LeanServerChecker(lean_bin, timeout=60, pool_size=2) as warm:
        results = await warm.check_many([correct_file(i) for i in range(4)] + [WRONG])
        started = [slot.starts for slot in warm._slots]
    assert [r.ok for r in results] == [True] * 4 + [False]
    assert started == [1, 1]


# -- Kimina Lean Server API --------------------------------------------------------------------


async def test_kimina_client_against_a_real_server(lean_bin):
    # blank lines before `prelude` belong to the server's header: the client must add them back
    shifted = "\n\n" + WRONG
    async with KiminaServer(str(lean_bin), api_key="secret") as server:
        async with KiminaChecker(server.url, api_key="secret", timeout=60) as client:
            assert await client.health()
            good = await client.check(correct_file(2))
            bad = await client.check(shifted)
            sorry = await client.check(SORRY)
            axiom = await client.check(AXIOM)
        async with KiminaChecker(server.url, api_key="wrong", timeout=60) as intruder:
            refused = await intruder.check(correct_file(2))
        kinds = [kind for kind, _ in server.requests]
        sent = server.requests[0][1]
    assert good.ok and good.backend == "kimina" and good.axioms["sum_2"] == []
    assert not bad.ok
    first = bad.errors[0]
    assert (first.line, first.column) == (PRELUDE_LINES + 3, WRONG_LINE.index("Eq.refl N.zero"))
    assert not sorry.ok and sorry.uses_sorry
    assert not axiom.ok and axiom.disallowed_axioms == ["cheat"]
    assert refused.status == "error" and "401" in (refused.error or "")
    assert kinds[:4] == ["check"] * 4
    # the file as written, with the probes on lines of their own
    assert (
        sent["snippet"]["code"] == prepare(correct_file(2)).text
        and "#print axioms _root_.sum_2\n" in sent["snippet"]["code"]
    )


async def test_kimina_client_falls_back_to_verify_and_reports_timeouts(lean_bin):
    async with KiminaServer(str(lean_bin), endpoints=("verify",)) as server:
        async with KiminaChecker(server.url, timeout=60) as client:
            good = await client.check(correct_file(1))
            slow = await client.check(PATHOLOGICAL, timeout=1.5)
        kinds = [kind for kind, _ in server.requests]
    assert good.ok
    assert slow.status == "timeout" and not slow.ok
    assert kinds == ["verify", "verify"]


async def test_kimina_client_reports_an_unreachable_server():
    async with KiminaChecker("http://127.0.0.1:9", timeout=5) as client:
        result = await client.check(correct_file(1))
    assert result.status == "error" and not result.ok and "127.0.0.1:9" in (result.error or "")


async def test_warm_server_survives_a_crash_and_a_header_change(lean_bin):
    import asyncio
    import os
    import signal

    needs_init = "import Mathlib\n\ntheorem t : 1 + 1 = 2 := by norm_num\n"
    async with LeanServerChecker(lean_bin, timeout=60) as warm:
        before = await warm.check(correct_file(1))
        with pytest.raises(SetupError, match="no Init library") as other_header:  # this lean has no library at all
            await warm.check(needs_init)  # a fresh document for the new imports
        back = await warm.check(correct_file(2))
        assert warm.restarts == 0 and warm._slots[0].reopens == 2  # a fresh document for each header
        os.killpg(warm._slots[0].conn.proc.pid, signal.SIGKILL)
        await asyncio.sleep(0.1)
        after = await warm.check(correct_file(3))
        assert warm.restarts == 1
    assert before.ok and back.ok and after.ok
    assert "unknown module prefix 'Init'" in str(other_header.value)


async def test_files_sharing_a_preamble_are_checked_incrementally_with_cold_verdicts(lean_bin):
    """One open document, changed from file to file: the same verdicts and messages as a cold
    lean on each file, and never a message left over from the file before."""
    shared = preamble(24)
    wrong = on_preamble(shared, 1, wrong=True)
    files = [
        on_preamble(shared, 0),
        wrong,
        on_preamble(shared, 1),  # the same theorem, now right: no error of the wrong one may stay
        on_preamble(shared, 2).replace(":=\n  Eq.refl _", ":= sorry"),
        shared + "axiom cheat : Eq N.zero (N.succ N.zero)\ntheorem final : Eq N.zero (N.succ N.zero) := cheat\n",
        # a change in the middle of the preamble, then one near its start
        on_preamble(
            shared.replace("theorem v_7_comm", "theorem v_7_comm' : Eq v_1 v_1 := Eq.refl _\ntheorem v_7_comm"), 3
        ),
        on_preamble(shared.replace("theorem v_0_comm : Eq v_0", "theorem v_0_comm : Eq v_1", 1), 4),
        wrong,
        on_preamble(shared, 5),
        shared,  # nothing after the preamble: the file shrinks
    ]
    async with LocalLeanChecker(lean_bin, timeout=60) as cold:
        expected = [await cold.check(f) for f in files]
    async with LeanServerChecker(lean_bin, timeout=60) as warm:
        got = [await warm.check(f) for f in files]
        slot = warm._slots[0]
        assert slot.starts == 1 and slot.reopens == 0 and slot.version == len(files)
    assert [r.ok for r in expected] == [True, False, True, False, False, True, False, False, True, True]
    for index, (mine, reference) in enumerate(zip(got, expected)):
        assert _verdict(mine) == _verdict(reference), index
    bad = got[1].errors
    assert bad[0].text.startswith("Type mismatch") and (bad[0].line, bad[0].column) == (shared.count("\n") + 2, 2)
    assert got[2].messages == [] and got[8].messages == [] and got[9].messages == []
    assert got[4].disallowed_axioms == ["cheat"] and got[3].uses_sorry
    assert set(got[0].axioms) == {"Eq.symm'", "final_0", *(f"v_{k}_comm" for k in range(12))}


async def test_a_check_goes_to_the_server_whose_document_shares_the_most(lean_bin):
    first, second = preamble(10), preamble(10).replace("v_", "w_")
    async with LeanServerChecker(lean_bin, timeout=60, pool_size=2) as warm:
        await warm.check_many([on_preamble(first, 0), on_preamble(second, 0)])  # one on each server
        holds_first = next(s for s in warm._slots if "v_0" in s.text)
        holds_second = next(s for s in warm._slots if s is not holds_first)
        assert "w_0" in holds_second.text
        results = [
            await warm.check(f)
            for f in (on_preamble(second, 1), on_preamble(first, 2), on_preamble(second, 3, wrong=True))
        ]
        assert "final_2" in holds_first.text and "final_3" in holds_second.text
        assert holds_first.version == 2 and holds_second.version == 3
    assert [r.ok for r in results] == [True, True, False]
    assert PRELUDE in first and not results[2].ok


def test_diagnostics_of_an_older_version_never_replace_newer_ones():
    from proofcritic.lean_checker._server import LspConnection

    conn = LspConnection(["lean"])

    def publish(version, text):
        diagnostic = {
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 1}},
            "message": text,
        }
        params = {"uri": "file:///a.lean", "diagnostics": [diagnostic]}
        if version is not None:
            params["version"] = version
        conn._dispatch({"jsonrpc": "2.0", "method": "textDocument/publishDiagnostics", "params": params})

    publish(3, "new")
    publish(2, "late")  # an older version's, arriving after
    publish(None, "no version")
    assert conn.diagnostics["file:///a.lean"][0] == 3
    assert conn.diagnostics["file:///a.lean"][1][0]["message"] == "new"
    publish(4, "newer")
    assert conn.diagnostics["file:///a.lean"][1][0]["message"] == "newer"
