"""Corpus and feature store on S3 (a moto server on 127.0.0.1): preprocess, then read training batches back.

The session's local Ray started before the S3 fixture set the AWS variables, so its workers
do not see them: the job gets the endpoint and credentials through ``storage_options``, the
way a cluster without instance credentials would. The readers in this process use only the
environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), as every command does by default.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.pipeline import models_dir, pipeline_config  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow  # end-to-end jobs: `make test-slow` (CI runs both tiers)

BUCKET = "affectflow-test"
LIMIT = 8


@pytest.fixture(scope="module")
def s3_corpus(s3_server, synth_corpus):
    """The synthetic corpus uploaded to ``s3://BUCKET/corpus``, less one face stack (a missing object)."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_server, key="testing", secret="testing")
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    fs.put(str(synth_corpus), f"{BUCKET}/corpus", recursive=True)
    first = sorted(p.stem for p in (synth_corpus / "video").glob("*.mp4"))[0]
    fs.rm(f"{BUCKET}/corpus/openface_face/{first}/{first}.npy")
    fs.invalidate_cache()
    assert fs.isfile(f"{BUCKET}/corpus/subtitle_chieng.csv"), fs.ls(f"{BUCKET}/corpus")
    return f"s3://{BUCKET}/corpus", first


def test_manifest_from_s3(s3_corpus, synth_corpus, s3_server):
    from pipelines.manifest import read_mer2025

    url, _ = s3_corpus
    remote = read_mer2025(url)  # credentials and endpoint from the environment
    local = read_mer2025(synth_corpus)
    assert [r.name for r in remote] == [r.name for r in local]
    for r, ref in zip(remote, local):
        assert r.video == f"{url}/video/{r.name}.mp4" and r.face == f"{url}/openface_face/{r.name}/{r.name}.npy"
        assert bool(r.audio) == bool(ref.audio)
        assert (r.subtitle, r.openset, r.reason, r.error) == (ref.subtitle, ref.openset, ref.reason, ref.error)


def test_preprocess_s3_corpus_to_s3_store_and_read_batches(ray_session, s3_server, s3_corpus, models_dir):  # noqa: F811
    from features.labels import read_corpus_labels
    from features.reader import FeatureDataset
    from features.store import FeatureStore
    from pipelines.job import PreprocessRequest, preprocess
    from pipelines.operators import read_store

    corpus, missing = s3_corpus
    store = f"s3://{BUCKET}/stores/mer.zarr"
    opts = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    request = PreprocessRequest(corpus, store, pipeline_config(), models=models_dir, limit=LIMIT, storage_options=opts)
    summary = preprocess(request)
    assert (summary.ok, summary.failed) == (LIMIT - 1, 1), summary.format()
    assert summary.failures == {"face/missing": 1}
    assert f"{corpus}/openface_face/{missing}/{missing}.npy does not exist" in summary.examples["face/missing"]

    # Rerun = resume: nothing left (the failed sample stays failed without --retry-failed).
    again = preprocess(request)
    assert (again.skipped, again.processed) == (LIMIT, 0)

    report = FeatureStore(store).inspect()  # environment credentials from here on
    assert (report["samples"]["ok"], report["samples"]["failed"]) == (LIMIT - 1, 1)

    labels = read_corpus_labels(corpus)
    data = FeatureDataset(store, labels=labels)
    assert len(data) == LIMIT - 1 and missing not in data.names
    batches = list(data.random_batches(3, seed=0))
    assert [len(b["name"]) for b in batches] == [3, 3, 1]
    b = batches[0]
    assert tuple(b["visual"].shape[:2]) == (3, 8) and tuple(b["audio"].shape[:2]) == (3, 8)
    assert all(b["subtitle"]) and all(isinstance(o, list) for o in b["openset"])

    # The same rows through Ray Data: workers read the chunks from S3 themselves.
    rows = sorted(read_store(store, labels=labels, storage_options=opts).take_all(), key=lambda r: r["name"])
    assert [r["name"] for r in rows] == sorted(data.names)
    ref = data[data.names.index(rows[0]["name"])]
    np.testing.assert_allclose(rows[0]["visual"], ref["visual"].numpy())
    np.testing.assert_allclose(rows[0]["audio"], ref["audio"].numpy())
