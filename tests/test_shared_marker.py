"""The ``shared`` marker of tests/conftest.py: added to every test that uses a ../shared
fixture (directly or through another fixture), selectable with ``-m``, and a missing
../shared skips those tests, or errors them under S3EDIT_REQUIRE_SHARED=1.

Each case runs pytest in-process on a made-up repository whose tests/conftest.py is the
real one, so its ../shared is a folder of the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

INNER_TESTS = '''
import pytest

@pytest.fixture
def clip_folder(shared_clips):
    return shared_clips

def test_clips(shared_clips):
    assert shared_clips.name == "clips"

def test_faces(shared_faces):
    pass

def test_table(dva_reference_table):
    pass

def test_through_a_fixture(clip_folder):
    pass

@pytest.mark.shared
def test_marked_by_hand():
    pass

def test_plain(request):
    assert request.node.get_closest_marker("shared") is None
'''


@pytest.fixture
def tree(pytester, monkeypatch):
    """pytester.path/repo/tests: the real conftest and INNER_TESTS; ../shared is
    pytester.path/shared (absent until a test makes it)."""
    monkeypatch.delenv("S3EDIT_REQUIRE_SHARED", raising=False)
    tests = pytester.mkdir("repo") / "tests"
    tests.mkdir()
    (tests / "conftest.py").write_text(CONFTEST.read_text())
    (tests / "test_inner.py").write_text(INNER_TESTS)
    pytester.makeini("[pytest]\nmarkers =\n    shared: needs ../shared\n")
    return tests


def run(pytester, *args: str):
    return pytester.runpytest_inprocess("repo/tests", "-p", "no:cacheprovider", "--import-mode=importlib",
                                        "-rs", *args)


def test_missing_shared_skips(pytester, tree):
    result = run(pytester)
    result.assert_outcomes(passed=1, skipped=5)
    result.stdout.fnmatch_lines(["*../shared is absent*"])


def test_missing_shared_fails_where_required(pytester, tree, monkeypatch):
    monkeypatch.setenv("S3EDIT_REQUIRE_SHARED", "1")
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=5)
    result.stdout.fnmatch_lines(["*../shared is absent (*) and S3EDIT_REQUIRE_SHARED=1 requires it*"])
    assert result.ret != 0


def test_not_shared_deselects_every_shared_test(pytester, tree, monkeypatch):
    monkeypatch.setenv("S3EDIT_REQUIRE_SHARED", "1")
    run(pytester, "-m", "not shared").assert_outcomes(passed=1, deselected=5)
    run(pytester, "-m", "shared").assert_outcomes(errors=5, deselected=1)


def test_a_missing_part_of_shared_fails_only_its_tests(pytester, tree, monkeypatch):
    (pytester.path / "shared" / "clips").mkdir(parents=True)
    monkeypatch.setenv("S3EDIT_REQUIRE_SHARED", "1")
    result = run(pytester)
    result.assert_outcomes(passed=4, errors=2)  # faces and the reference table
    result.stdout.fnmatch_lines(["*../shared/faces is absent*", "*../shared/reference is absent*"])
    monkeypatch.delenv("S3EDIT_REQUIRE_SHARED")
    run(pytester).assert_outcomes(passed=4, skipped=2)
