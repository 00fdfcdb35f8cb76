"""The writer: the only code that puts files in public/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from feedpub import writer
from feedpub.errors import FeedpubError
from feedpub.writer import Output


def test_atomic_write_replaces_and_leaves_identical_bytes_untouched(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "feed.xml"

    assert writer.atomic_write(target, b"one") is True
    assert target.read_bytes() == b"one"
    assert target.stat().st_mode & 0o777 == 0o644
    target.chmod(0o640)
    before = target.stat().st_mtime_ns
    assert writer.atomic_write(target, b"one") is False
    assert target.stat().st_mtime_ns == before
    assert writer.atomic_write(target, b"two") is True
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["feed.xml"]


def test_atomic_write_into_a_file_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "public"
    blocker.write_text("not a folder", encoding="utf-8")

    with pytest.raises(FeedpubError) as caught:
        writer.atomic_write(blocker / "atom.xml", b"x")
    assert caught.value.path == blocker / "atom.xml"


def test_write_outputs_returns_only_what_changed(tmp_path: Path) -> None:
    public = tmp_path / "public"
    outputs = [Output("atom.xml", b"a"), Output("editions/weekly/1.html", b"<p>1</p>")]

    assert writer.write_outputs(public, outputs) == [
        public / "atom.xml", public / "editions" / "weekly" / "1.html"
    ]
    assert writer.write_outputs(public, outputs) == []
    changed = [Output("atom.xml", b"b"), outputs[1]]
    assert writer.write_outputs(public, changed) == [public / "atom.xml"]


def test_a_blocked_path_fails_the_whole_set_before_anything_is_written(tmp_path: Path) -> None:
    public = tmp_path / "public"
    (public / "rss.xml").mkdir(parents=True)

    with pytest.raises(FeedpubError) as caught:
        writer.write_outputs(public, [Output("atom.xml", b"a"), Output("rss.xml", b"r")])

    assert caught.value.path == public / "rss.xml"
    assert not (public / "atom.xml").exists()


def _everything_below(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_staged_set_lands_together_and_a_failure_leaves_no_trace(tmp_path: Path) -> None:
    public = tmp_path / "public"
    (public / "old.html").parent.mkdir(parents=True)
    (public / "old.html").write_bytes(b"old")
    (public / "blocked").write_bytes(b"a file where a folder goes")
    # More files than are fsynced one by one: the set is flushed with one syncfs.
    pages = [Output(f"{n}/index.html", f"<p>{n}</p>".encode()) for n in range(200)]

    with pytest.raises(FeedpubError), writer.Staging(public) as staging:
        for page in pages:
            staging.add(page)
        assert not (public / "0" / "index.html").exists()  # staged, not landed
        staging.add(Output("blocked/index.html", b"x"))
    assert [name for name in _everything_below(public) if not name[0].isdigit()] == [
        "blocked", "old.html"
    ]
    assert not any(name.endswith(".tmp") for name in _everything_below(public))
    assert not any((public / str(n) / "index.html").exists() for n in range(200))

    with writer.Staging(public) as staging:
        for page in [*pages, Output("old.html", b"old")]:
            staging.add(page)
        assert "0/index.html" in staging and "old.html" not in staging  # same bytes
        written = staging.commit()
    assert len(written) == 200
    assert (public / "42" / "index.html").read_bytes() == b"<p>42</p>"
    assert not any(name.endswith(".tmp") for name in _everything_below(public))


def test_the_last_output_staged_for_a_path_wins(tmp_path: Path) -> None:
    public = tmp_path / "public"
    writer.write_outputs(public, [Output("a.html", b"old")])
    assert writer.write_outputs(public, [Output("a.html", b"new"), Output("a.html", b"old")]) == []
    assert (public / "a.html").read_bytes() == b"old"
    assert not any(name.endswith(".tmp") for name in _everything_below(public))


def test_a_staged_file_swept_away_by_another_process_fails_the_whole_set(
    tmp_path: Path,
) -> None:
    public = tmp_path / "public"
    writer.write_outputs(public, [Output(f"p{n}.html", b"old") for n in range(40)])
    with pytest.raises(FeedpubError, match="build again") as caught, \
            writer.Staging(public) as staging:
        for n in range(40):
            staging.add(Output(f"p{n}.html", b"new"))
        swept = next(public.glob(".p20.html.*.tmp"))
        swept.unlink()  # what another process's sweep does to a temp older than ten minutes
        staging.commit()
    assert caught.value.path == public / "p20.html"
    assert {(public / f"p{n}.html").read_bytes() for n in range(40)} == {b"old"}
    assert not any(name.endswith(".tmp") for name in _everything_below(public))


def test_a_set_staged_for_long_stays_younger_than_a_sweep_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = tmp_path / "public"
    monkeypatch.setattr(writer, "TEMPORARY_FILE_MAX_AGE", 0.0)  # refresh on every add
    with writer.Staging(public) as staging:
        staging.add(Output("first.html", b"1"))
        first = next(public.glob(".first.html.*.tmp"))
        an_hour_ago = first.stat().st_mtime - 3600
        os.utime(first, (an_hour_ago, an_hour_ago))
        staging.add(Output("second.html", b"2"))
        assert first.stat().st_mtime > an_hour_ago + 3000
        monkeypatch.undo()
        assert writer.remove_temporary_files(public) == []  # young, and its writer is alive
        staging.commit()
    assert (public / "first.html").read_bytes() == b"1"


def test_a_set_given_up_leaves_no_folder_it_made(tmp_path: Path) -> None:
    public = tmp_path / "public"
    (public / "kept").mkdir(parents=True)
    with writer.Staging(public) as staging:
        staging.add(Output("2026/01/new-post/index.html", b"<p>new</p>"))
        staging.add(Output("kept/index.html", b"<p>kept</p>"))
    assert sorted(p.name for p in public.iterdir()) == ["kept"]
    assert list((public / "kept").iterdir()) == []


@pytest.mark.parametrize("relpath", ["../secret", "/etc/passwd", "a/../../b", ""])
def test_paths_that_leave_public_are_refused(tmp_path: Path, relpath: str) -> None:
    with pytest.raises(FeedpubError, match="not a path inside public"):
        writer.write_outputs(tmp_path / "public", [Output(relpath, b"x")])
    assert not (tmp_path / "secret").exists()


def test_prune_removes_only_owned_files_of_folders_no_longer_kept(tmp_path: Path) -> None:
    folder = tmp_path / "categories"
    for name in ("old", "kept", "mine"):
        (folder / name).mkdir(parents=True)
    (folder / "old" / "atom.xml").write_bytes(b"stale")
    (folder / "kept" / "atom.xml").write_bytes(b"fresh")
    (folder / "kept" / "rss.xml").write_bytes(b"format dropped")
    (folder / "mine" / "notes.txt").write_text("a person's file", encoding="utf-8")

    writer.prune(folder, keep={"kept"}, owned=("atom.xml", "rss.xml"), wanted={"atom.xml"})

    assert not (folder / "old").exists()
    assert (folder / "kept" / "atom.xml").exists()
    assert not (folder / "kept" / "rss.xml").exists()
    assert (folder / "mine" / "notes.txt").exists()


def test_leftovers_of_a_killed_write_go_and_a_write_in_progress_stays(tmp_path: Path) -> None:
    public = tmp_path / "public"
    (public / "a").mkdir(parents=True)
    old = public / "a" / ".atom.xml.k3j2.tmp"
    fresh = public / ".rss.xml.x9q1.tmp"
    mine = public / "notes.tmp"
    for path in (old, fresh, mine):
        path.write_bytes(b"half")
    os.utime(old, (1_000_000, 1_000_000))

    assert writer.remove_temporary_files(public) == [old]
    assert fresh.exists() and mine.exists()


def test_the_manifest_removes_only_files_still_as_written(tmp_path: Path) -> None:
    public, cache = tmp_path / "public", tmp_path / "cache"
    writer.write_outputs(public, [Output("a/index.html", b"a"), Output("b/index.html", b"b")])
    with writer.Manifest.open(public, cache) as manifest:
        manifest.record("a/index.html", "key-a")
        manifest.record("b/index.html", "key-b")
    assert (public / "b/index.html").write_bytes(b"changed by hand")
    with writer.Manifest.open(public, cache) as manifest:
        assert manifest.is_current("a/index.html", "key-a")
        assert not manifest.is_current("a/index.html", "other key")
        assert not manifest.is_current("b/index.html", "key-b")
        assert manifest.remove_others(keep=set()) == [public / "a/index.html"]
    assert not (public / "a").exists()
    assert (public / "b/index.html").read_bytes() == b"changed by hand"


def test_a_dead_writers_temporary_file_goes_at_once_a_live_ones_stays(tmp_path: Path) -> None:
    public = tmp_path / "public"
    public.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    killed = public / f".atom.xml.{dead}-x1y2.tmp"
    mine = public / f".rss.xml.{os.getpid()}-a1b2.tmp"
    unnamed = public / ".feed.json.q9w8.tmp"  # an older feedpub's name: by age only
    for path in (killed, mine, unnamed):
        path.write_bytes(b"half")
    assert writer.remove_temporary_files(public) == [killed]
    assert mine.exists() and unnamed.exists()
