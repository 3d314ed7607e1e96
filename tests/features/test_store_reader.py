"""Training readers over the store: torch FeatureDataset, corpus label tables, and the Ray Dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from core.errors import StoreError
from features.labels import read_corpus_labels
from features.reader import FeatureDataset, collate_features
from features.spec import EncoderSpec
from features.store import FeatureStore
from pipelines.operators import read_store

FACE = EncoderSpec("face", "clip:tiny", "aaaa", "image_embeds", "none", 16)
FRAME = EncoderSpec("frame", "clip:tiny", "aaaa", "image_embeds", "none", 16)
AUDIO = EncoderSpec("audio", "hubert:tiny", "bbbb", "mean_last_4", "time_mean", 12)
NAMES = [f"n{i:02d}" for i in range(12)]


def feats(names, spec, offset=0.0):
    return np.stack([np.full(spec.shape, i + offset, np.float32) for i, _ in enumerate(names)])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    store = FeatureStore(str(tmp_path_factory.mktemp("reader") / "store.zarr"))
    for chunk in (NAMES[:5], NAMES[5:]):
        idx = [NAMES.index(n) for n in chunk]
        store.write_part(
            [FACE, FRAME, AUDIO],
            {
                "name": np.array(chunk),
                "subtitle": np.array([f"sub {n}" for n in chunk]),
                "status": np.array(["failed" if n == "n03" else "ok" for n in chunk]),
                "error": np.array(["audio: unreadable wav /c/n03.wav" if n == "n03" else "" for n in chunk]),
                "face": np.stack([np.full(FACE.shape, i, np.float32) for i in idx]),
                "frame": np.stack([np.full(FRAME.shape, -i, np.float32) for i in idx]),
                "audio": np.stack([np.full(AUDIO.shape, i + 0.5, np.float32) for i in idx]),
            },
        )
    return store


LABELS = pd.DataFrame(
    {
        "name": ["n00", "n01", "n02", "zz"],
        "openset": ["[happy, relaxed]", "[]", None, "['sad']"],
        "reason": ["In the text, joy.", None, "In the text, calm.", "x"],
    }
)


def test_dataset_items_join_labels(store):
    ds = FeatureDataset(store, labels=LABELS)
    assert len(ds) == 11 and "n03" not in ds.names and ds.names == sorted(ds.names)
    item = ds[0]
    assert item["name"] == "n00" and item["subtitle"] == "sub n00"
    assert item["visual"].shape == (8, 16) and item["audio"].shape == (8, 12)
    assert (
        item["visual"].dtype == torch.float32 and float(item["visual"][0, 0]) == 0 and float(item["audio"][0, 0]) == 0.5
    )
    assert item["openset"] == ["happy", "relaxed"] and item["reason"] == "In the text, joy."
    assert (
        ds[1]["openset"] == [] and ds[1]["reason"] is None
    )  # an empty list stays empty (neutral is the prompt's call)
    assert ds[2]["openset"] == [] and ds[2]["reason"] == "In the text, calm."
    assert ds[ds.names.index("n07")]["openset"] == [] and ds[ds.names.index("n07")]["reason"] is None
    frame = FeatureDataset(store.path, visual="frame")
    assert float(frame[frame.names.index("n04")]["visual"][0, 0]) == -4
    assert FeatureDataset(store, labels=LABELS, require_labels=True).names == ["n00", "n01", "n02"]
    assert FeatureDataset(store, specs=[FACE, AUDIO], names=["n05", "n03"]).names == ["n05"]
    with pytest.raises(ValueError, match="visual"):
        FeatureDataset(store, visual="audio")


def test_batches(store):
    ds = FeatureDataset(store, labels=LABELS, dtype=torch.float32)
    batches = list(ds.random_batches(4, seed=1))
    assert [len(b["name"]) for b in batches] == [4, 4, 3]
    assert sorted(n for b in batches for n in b["name"]) == ds.names
    assert [b["name"] for b in ds.random_batches(4, seed=1)] == [b["name"] for b in batches]  # seeded
    b = batches[0]
    assert b["visual"].shape == (4, 8, 16) and b["audio"].shape == (4, 8, 12) and b["visual"].dtype == torch.float32
    for i, name in enumerate(b["name"]):
        assert float(b["visual"][i, 0, 0]) == NAMES.index(name)
    same = collate_features([ds[ds.names.index(n)] for n in b["name"]])
    assert torch.equal(same["visual"], b["visual"]) and same["openset"] == b["openset"]
    assert [len(b["name"]) for b in ds.random_batches(4, seed=1, drop_last=True)] == [4, 4]
    loader = torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=collate_features)
    assert next(iter(loader))["audio"].shape == (5, 8, 12)


def test_read_corpus_labels(tmp_path):
    pd.DataFrame({"name": ["a", "NA", "c"], "openset": ["[happy, relaxed]", "['sad', 'tired']", "[]"]}).to_csv(
        tmp_path / "track2_train_mercaptionplus.csv", index=False
    )
    pd.DataFrame({"name": ["a", "d"], "reason": ["In the text, a.", "In the text, d."]}).to_csv(
        tmp_path / "track3_train_mercaptionplus.csv", index=False
    )
    df = read_corpus_labels(tmp_path).set_index("name")
    assert sorted(df.index) == ["NA", "a", "c", "d"]
    assert df.loc["a", "openset"] == ["happy", "relaxed"] and df.loc["a", "reason"] == "In the text, a."
    assert df.loc["NA", "openset"] == ["sad", "tired"] and df.loc["NA", "reason"] is None
    assert df.loc["c", "openset"] == [] and df.loc["d", "openset"] is None
    assert read_corpus_labels(tmp_path, subset="ovmerd").empty
    (tmp_path / "track3_train_mercaptionplus.csv").write_text("name,text\na,b\n")
    with pytest.raises(ValueError, match="track3_train_mercaptionplus.csv: missing column"):
        read_corpus_labels(tmp_path)


def test_read_store_gives_the_feature_dataset_rows(store, ray_session):
    ds = read_store(store.path, labels=LABELS)
    rows = sorted(ds.take_all(), key=lambda r: r["name"])
    torch_ds = FeatureDataset(store, labels=LABELS)
    assert [r["name"] for r in rows] == torch_ds.names
    r0 = rows[0]
    assert r0["visual"].shape == (8, 16) and r0["audio"].shape == (8, 12) and r0["visual"].dtype == np.float32
    assert (
        list(r0["openset"]) == ["happy", "relaxed"]
        and r0["reason"] == "In the text, joy."
        and r0["subtitle"] == "sub n00"
    )
    assert list(rows[1]["openset"]) == [] and rows[1]["reason"] is None
    for r in rows:
        assert float(r["audio"][0, 0]) == NAMES.index(r["name"]) + 0.5
    with pytest.raises(StoreError, match="no samples"):
        read_store(store, names=["n03"])


def test_labels_stored_with_the_samples(tmp_path, ray_session):
    from features.reader import stored_labels

    store = FeatureStore(str(tmp_path / "labelled.zarr"))

    def part(names, **extra):
        store.write_part([FACE, AUDIO], {
            "name": np.array(names), "subtitle": np.array([f"sub {n}" for n in names]),
            "status": np.array(["failed" if n == "old2" else "ok" for n in names]),
            "error": np.array(["video/missing: x" if n == "old2" else "" for n in names]),
            "face": feats(names, FACE), "audio": feats(names, AUDIO), **extra,
        })

    part(["old0", "old1", "old2"])  # written before preprocessing stored labels
    part(["new0", "new1", "new2", "new3"],
         openset=np.array(["[happy]", "[]", "", "[sad, tired]"], dtype=object),
         reason=np.array(["In the text, joy.", "", "", "In the text, tired."], dtype=object))
    table, without = stored_labels(store.path)
    assert without == ["old0", "old1"]  # the failed old sample is no training sample either way
    assert {n: (o, r) for n, o, r in zip(table["name"], table["openset"], table["reason"])} == {
        "new0": (["happy"], "In the text, joy."),
        "new1": ([], None),  # labelled neutral
        "new2": (None, None),  # unlabelled
        "new3": (["sad", "tired"], "In the text, tired."),
    }
    ds = FeatureDataset(store)  # no table given: the stored labels
    assert ds[ds.names.index("new3")]["openset"] == ["sad", "tired"] and ds[ds.names.index("new1")]["reason"] is None
    assert FeatureDataset(store, require_labels=True).names == ["new0", "new1", "new3"]
    rows = read_store(store, require_labels=True).take_all()
    assert {r["name"]: list(r["openset"]) for r in rows} == {"new0": ["happy"], "new1": [], "new3": ["sad", "tired"]}
    # A table given replaces the stored labels.
    given = pd.DataFrame({"name": ["old0", "new2"], "openset": ["[angry]", "[worried]"]})
    over = FeatureDataset(store, labels=given, require_labels=True)
    assert over.names == ["new2", "old0"] and over.openset == [["worried"], ["angry"]]
