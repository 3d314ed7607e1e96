"""The three manifest readers: MER2025 layout, a plain folder of videos, WebDataset shards."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest

from pipelines.manifest import name_error, read_folder, read_mer2025, read_webdataset

# The shared fixtures (session-scoped: built once however many modules use them).


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "..", "", " x", "x\x00"])
def test_bad_names(name):
    assert name_error(name).startswith("manifest/bad-name")


def test_good_names():
    assert name_error("sample_00000001") == "" and name_error("Ses05F_impro01_F000") == ""


def test_mer2025_rows(synth_corpus):
    rows = read_mer2025(synth_corpus)
    assert len(rows) == 24 and [r.name for r in rows] == sorted(r.name for r in rows)
    for r in rows:
        assert not r.error and r.subtitle and r.reason.startswith("In the text")
        assert r.video.endswith(f"video/{r.name}.mp4") and r.audio.endswith(f"audio/{r.name}.wav")
        assert r.face.endswith(f"openface_face/{r.name}/{r.name}.npy")
        assert all(w == w.lower() for w in r.openset)


def test_mer2025_bad_rows_name_the_file(bad_corpus):
    rows = {r.name: r for r in read_mer2025(bad_corpus)}
    assert rows["../evil"].error.startswith("manifest/bad-name") and "subtitle_chieng.csv line" in rows["../evil"].error
    assert (
        rows["bad_missing"].error.startswith("manifest/missing-file") and "bad_missing.mp4" in rows["bad_missing"].error
    )
    assert rows["bad_utf8"].error.startswith("subtitle/not-utf8") and "subtitle_chieng.csv" in rows["bad_utf8"].error
    assert rows["good_nowav"].audio == "" and not rows["good_nowav"].error
    assert not rows["good_0"].error and rows["good_0"].openset


def test_mer2025_labels_are_the_label_reader_s(tmp_path):
    """The manifest takes its labels from `read_corpus_labels`: first row of a name, None when unlabelled."""
    from features.labels import read_corpus_labels

    (tmp_path / "subtitle_chieng.csv").write_text("name,english\na,hi\nb,yo\nc,hey\nd,hm\n")
    (tmp_path / "track2_train_mercaptionplus.csv").write_text("name,openset\na,[Happy]\nb,[]\na,[sad]\n")
    (tmp_path / "track3_train_mercaptionplus.csv").write_text(
        'name,reason\nc,"In the text, c."\na,"In the text, a."\nc,"In the text, c again."\n')
    (tmp_path / "track2_train_ovmerd.csv").write_text("name,openset\nd,[worried]\n")  # not the training subset
    rows = {r.name: r for r in read_mer2025(tmp_path)}
    labels = read_corpus_labels(tmp_path).set_index("name")
    for name in ("a", "b", "c"):
        assert rows[name].openset == labels.loc[name, "openset"] and rows[name].reason == (
            labels.loc[name, "reason"] or ""
        )
    assert (rows["a"].openset, rows["a"].reason) == (["happy"], "In the text, a.")
    assert (rows["b"].openset, rows["b"].reason) == ([], "")  # labelled neutral
    assert (rows["c"].openset, rows["c"].reason) == (None, "In the text, c.")  # a description, no label list
    assert (rows["d"].openset, rows["d"].reason) == (None, "")  # unlabelled


def test_folder_rows(tmp_path, synth_corpus):
    root = tmp_path / "clips"
    (root / "nested").mkdir(parents=True)
    shutil.copy(synth_corpus / "video" / "sample_00000000.mp4", root / "a.mp4")
    shutil.copy(synth_corpus / "video" / "sample_00000001.mp4", root / "nested" / "b.mkv")
    (root / "notes.txt").write_text("not a video")
    (root / "subtitles.csv").write_text("name,english\na,hello there\nghost,never seen\n")
    rows = {r.name: r for r in read_folder(root)}
    assert set(rows) == {"a", "b", "ghost"}
    assert rows["a"].subtitle == "hello there" and rows["b"].subtitle == "" and rows["b"].video.endswith("b.mkv")
    assert rows["a"].openset is None and rows["a"].reason == ""  # a folder of videos has no labels
    assert rows["ghost"].error.startswith("manifest/missing-file") and "subtitles.csv" in rows["ghost"].error



# Subtitle cells as the release's prompt receives them: it reads subtitles with pandas' read_csv and turns a
# missing cell into "" (my_affectgpt/datasets/datasets/mer2023.py lines 53-57, mercaptionplus_dataset.py lines
# 62-66); read_csv's default na_values (pandas 2.2.3, environment.yml line 203) make these cells missing, quoted
# or not, while "na", "Nan" and "none" stay text.
NA_SUBTITLES = {"a": ("NA", ""), "b": ("None", ""), "c": ("null", ""), "d": ("nan", ""), "e": ("N/A", ""),
                "f": ("NULL", ""), "g": ("<NA>", ""), "h": ('"NA"', ""), "i": ("na", "na"), "j": ("Nan", "Nan"),
                "k": ("none", "none"), "l": ("I said NA.", "I said NA.")}


def test_na_subtitle_cells_are_empty_subtitles_as_in_the_release(tmp_path):
    csv_text = "name,english\n" + "".join(f"{n},{cell}\n" for n, (cell, _) in NA_SUBTITLES.items())
    (tmp_path / "mer").mkdir()
    (tmp_path / "mer" / "subtitle_chieng.csv").write_text(csv_text)
    rows = {r.name: r.subtitle for r in read_mer2025(tmp_path / "mer")}
    assert rows == {n: want for n, (_, want) in NA_SUBTITLES.items()}
    (tmp_path / "clips").mkdir()
    for n in NA_SUBTITLES:
        (tmp_path / "clips" / f"{n}.mp4").write_bytes(b"")
    (tmp_path / "clips" / "subtitles.csv").write_text(csv_text)
    assert {r.name: r.subtitle for r in read_folder(tmp_path / "clips")} == rows


def test_folder_links_stay_inside_the_root(tmp_path, synth_corpus):
    """A link out of the corpus root is refused (unless follow_symlinks), a dangling one is a failed row."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(synth_corpus / "video" / "sample_00000000.mp4", outside / "real.mp4")
    root = tmp_path / "clips"
    root.mkdir()
    shutil.copy(synth_corpus / "video" / "sample_00000001.mp4", root / "inside.mp4")
    (root / "alias.mp4").symlink_to(root / "inside.mp4")  # inside the root: fine
    (root / "x.mp4").symlink_to("/etc/passwd")
    (root / "away.mp4").symlink_to(outside / "real.mp4")
    (root / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    rows = {r.name: r for r in read_folder(root)}
    assert set(rows) == {"inside", "alias", "x", "away", "gone"}
    assert rows["inside"].error == "" and rows["alias"].error == ""
    assert rows["x"].error.startswith("manifest/link-outside-root: ") and "/etc/passwd" in rows["x"].error
    assert f"-> {outside / 'real.mp4'} leaves the corpus root" in rows["away"].error
    assert rows["gone"].error.startswith("manifest/dangling-link: ") and "deleted.mp4" in rows["gone"].error
    followed = {r.name: r for r in read_folder(root, follow_symlinks=True)}
    assert followed["away"].error == "" and followed["gone"].error.startswith("manifest/dangling-link")

def write_shards(out, corpus, names, per_shard=2):
    """WebDataset shards: ``{key}.mp4``, ``{key}.wav``, ``{key}.npy`` (face stack), ``{key}.json``
    (subtitle, labels)."""
    import pandas as pd

    subs = pd.read_csv(corpus / "subtitle_chieng.csv").set_index("name")["english"]
    out.mkdir(parents=True, exist_ok=True)
    for s in range(0, len(names), per_shard):
        with tarfile.open(out / f"shard-{s // per_shard:05d}.tar", "w") as tar:
            for name in names[s:s + per_shard]:
                members = {
                    "mp4": (corpus / "video" / f"{name}.mp4").read_bytes(),
                    "wav": (corpus / "audio" / f"{name}.wav").read_bytes(),
                    "npy": (corpus / "openface_face" / name / f"{name}.npy").read_bytes(),
                    "json": json.dumps({"subtitle": subs[name], "openset": "[Happy]"}).encode(),
                }
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{name}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return out


def test_webdataset_rows(tmp_path, ray_session, synth_corpus):
    names = [f"sample_{i:08d}" for i in range(3)]
    shards = write_shards(tmp_path / "shards", synth_corpus, names)
    rows = {r["name"]: r for r in read_webdataset(shards).take_all()}
    assert set(rows) == set(names)
    r = rows[names[0]]
    assert bytes(r["video_bytes"]) == (synth_corpus / "video" / f"{names[0]}.mp4").read_bytes()
    assert len(r["audio_bytes"]) > 0 and r["subtitle"] and list(r["openset"]) == ["happy"] and not r["error"]
