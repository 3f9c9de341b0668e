from __future__ import annotations

from pathlib import Path

import pytest

from mgrhooks.budget import ENV_BUDGET, SPILL_BYTES, exec_size, spill_plan
from mgrhooks.env import Facts, call_environment
from mgrhooks.errors import RootError
from mgrhooks.model import Request
from mgrhooks.settings import Settings, load_settings
from mgrhooks.xmldoc import add, new_doc, serialise, xml_safe


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mgrhooks.conf"
    path.write_text(text)
    return path


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "none.conf") == Settings()


def test_every_key(tmp_path: Path) -> None:
    text = "[handlers]\ntimeout = 5 ; seconds\nkill_grace = 0.5\ndrain_grace = 2\noutput_limit = 8M\npass_env = A B\n"
    assert load_settings(write(tmp_path, text)) == Settings(5.0, 0.5, 2.0, 8 * 1024 * 1024, ("A", "B"))
    assert load_settings(write(tmp_path, "[handlers]\noutput_limit = 1500\n")).output_limit == 1500


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[handlers]\ntimeout = soon\n", "[handlers] timeout: expected seconds > 0, got 'soon'"),
        ("[handlers]\ntimeout = -1\n", "[handlers] timeout: expected seconds > 0, got '-1'"),
        ("[handlers]\noutput_limit = lots\n", "[handlers] output_limit: expected bytes > 0 (like 64M), got 'lots'"),
        (
            "[handlers]\ntimout = 5\n",
            "[handlers] unknown key(s) timout; known: drain_grace, kill_grace, output_limit, pass_env, timeout",
        ),
        ("timeout = 5\n", "File contains no section headers"),
        (
            "[handlers]\ntimeout = 1e9\n",
            "line 2: [handlers] timeout: expected at most 86400 seconds (a day), got '1e9'",
        ),
        ("[handlers]\ntimeout = inf\n", "[handlers] timeout: expected at most 86400 seconds (a day), got 'inf'"),
        ("[handlers]\ntimeout = nan\n", "[handlers] timeout: expected seconds > 0, got 'nan'"),
        ("[handlers]\n\nKill_Grace = 1e300\n", "line 3: [handlers] kill_grace: expected at most 86400 seconds"),
        ("[handlers]\ndrain_grace = 86401\n", "[handlers] drain_grace: expected at most 86400 seconds"),
        ("[notify.x]\ndriver = http\nurl = u\ntimeout = 1e12\n", "line 4: [notify.x] timeout: expected at most"),
        ("[notify.x]\ndriver = http\nurl = u\nbackoff = inf\n", "line 4: [notify.x] backoff: expected at most"),
        ("[handlers]\ntimeout = 5\ntimeout = 6\n", "line 3: option 'timeout' in section 'handlers' already exists"),
    ],
)
def test_bad_settings_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RootError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def spilled(request: Request) -> list[str]:
    fixed = call_environment({}, request._replace(params=()), Facts("billmgr", "/srv/root", "1"))
    return list(spill_plan(request, fixed, path_bytes=60).files)


def test_spill_rules() -> None:
    big = "x" * (SPILL_BYTES + 1)
    assert spilled(Request("f", (("a", "small"), ("b", big), ("c", "nul\0"), ("d", "x" * SPILL_BYTES)))) == ["b", "c"]
    many = tuple((f"k{n}", "y" * (SPILL_BYTES - n)) for n in range(8))
    spill = spilled(Request("f", many))
    kept = [size for (key, value) in many if key not in spill for size in [len(value)]]
    # the largest go first, until QUERY_STRING is one string exec takes (128 KiB: the four
    # values kept before made it 256 KiB, and every handler failed with E2BIG)
    assert 2 * sum(kept) <= ENV_BUDGET and spill == [f"k{n}" for n in range(7)]
    many = tuple((f"k{n}", "y" * 40000) for n in range(20))  # each fits, and 3 in QUERY_STRING
    spill = spilled(Request("f", many))
    kept = [(k, v) for k, v in many if k not in spill]
    assert sum(exec_size(f"PARAM_{k}", v) + len(f"&{k}={v}") for k, v in kept) <= ENV_BUDGET
    assert len(kept) == 3


def test_xml_safe_replaces_what_xml_cannot_hold() -> None:
    assert xml_safe("ok\tline\n\x00\x1b\udcff é 𝄞") == "ok\tline\n\ufffd\ufffd\ufffd é 𝄞"
    doc = new_doc("f")
    add(doc, "v", "bad\x00byte", attr="\udcfe")
    assert '<v attr="\ufffd">bad\ufffdbyte</v>' in serialise(doc).decode()


def test_a_day_is_the_longest_time(tmp_path: Path) -> None:
    text = "[handlers]\ntimeout = 86400\nkill_grace = 86400\ndrain_grace = 1e-3\n"
    assert load_settings(write(tmp_path, text))[:3] == (86400.0, 86400.0, 0.001)
