"""Each broken case under cases/ is caught with exactly the problems its `# expect:` lines name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from kai_flows.lint import Problem, lint_paths

HERE = Path(__file__).parent
CASES = sorted((HERE / "cases").glob("*.yaml"))


def _expectations(case: Path) -> list[tuple[str, str, str, str]]:
    out = []
    for line in case.read_text().splitlines():
        if line.startswith("# expect: "):
            obj, template, field, message = (part.strip() for part in line[len("# expect: "):].split(" | ", 3))
            out.append((obj, template, field, message))
    return out


def _matches(p: Problem, exp: tuple[str, str, str, str]) -> bool:
    obj, template, field, message = exp
    return ((obj == "-" or p.object == obj) and (p.template or "-") == template
            and (field == "-" or p.field == field) and message in p.message)


def test_every_check_has_a_case() -> None:
    assert len(CASES) >= 40


def test_cases_are_up_to_date_with_their_generator() -> None:
    spec = importlib.util.spec_from_file_location("kai_lint_make_cases", HERE / "make_cases.py")
    assert spec is not None and spec.loader is not None
    make_cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_cases)
    files = make_cases.render()
    assert {c.name for c in CASES} == set(files) | make_cases.HAND_WRITTEN
    stale = [name for name, text in files.items() if (HERE / "cases" / name).read_text() != text]
    assert not stale, f"run `python tests/lint/make_cases.py`: {stale}"


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_broken_case_is_caught(case: Path, images_dir: Path) -> None:
    expected = _expectations(case)
    assert expected, f"{case.name} has no '# expect:' line"
    problems = lint_paths([case], images_dir=images_dir)
    assert all(p.file == str(case) for p in problems)
    for exp in expected:
        assert any(_matches(p, exp) for p in problems), f"{exp} not reported; got:\n" + "\n".join(map(str, problems))
    unexpected = [p for p in problems if not any(_matches(p, e) for e in expected)]
    assert not unexpected, "unexpected problems:\n" + "\n".join(map(str, unexpected))
