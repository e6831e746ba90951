"""`LoggedDataset`: validation, lossless round trips, split, selection, summary, the generator and the sample."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from routing_env.data import LoggedDataset, ModelCard, make_synthetic
from routing_env.data.sample import SAMPLE_FILE
from routing_env.errors import (
    ConfigurationError,
    DataWarning,
    FileFormatError,
    ModelMismatchError,
    PartialInformationError,
    PriceError,
    SchemaError,
    ShapeError,
)
from tests.data.datahelpers import assert_datasets_equal

REPO = Path(__file__).resolve().parents[2]


def frame(**overrides: object) -> pd.DataFrame:
    """Two queries × two models in the canonical long format."""
    data: dict[str, object] = {
        "query_id": ["q1", "q1", "q2", "q2"],
        "model": ["small", "large", "small", "large"],
        "quality": [0.0, 1.0, 1.0, 1.0],
        "cost": [0.001, 0.01, 0.002, 0.02],
    }
    data.update(overrides)
    return pd.DataFrame(data)


# ---------------------------------------------------------------------------------------------------- validation
class TestValidation:
    def test_valid_frame(self) -> None:
        ds = LoggedDataset.from_frame(frame())
        assert ds.models == ("small", "large")
        assert ds.n_queries == 2 and ds.n_models == 2
        assert ds.is_full_information and not ds.has_propensities
        np.testing.assert_array_equal(ds.quality, [[0.0, 1.0], [1.0, 1.0]])
        assert ds.features.shape == (2, 0) and ds.features.dtype == np.float32
        assert not ds.quality.flags.writeable

    def test_missing_required_column(self) -> None:
        with pytest.raises(SchemaError, match=r"missing required columns \['quality'\]"):
            LoggedDataset.from_frame(frame().drop(columns="quality"))
        with pytest.raises(SchemaError, match=r"missing required columns \['query_id', 'model'\]"):
            LoggedDataset.from_frame(frame().drop(columns=["query_id", "model"]))

    def test_missing_cost_without_tokens_and_cards(self) -> None:
        with pytest.raises(
            SchemaError, match=r"missing required column 'cost'.*input_tokens and output_tokens"
        ):
            LoggedDataset.from_frame(frame().drop(columns="cost"))

    def test_not_a_frame_and_empty_frame(self) -> None:
        with pytest.raises(SchemaError, match="expects a pandas DataFrame, got dict"):
            LoggedDataset.from_frame({"query_id": []})  # type: ignore[arg-type]
        with pytest.raises(SchemaError, match="the frame has no rows"):
            LoggedDataset.from_frame(frame().iloc[:0])

    def test_duplicate_query_model_rows(self) -> None:
        f = pd.concat([frame(), frame().iloc[[1]]], ignore_index=True)
        with pytest.raises(
            SchemaError, match=r"duplicate \(query_id, model\) rows: \[\('q1', 'large'\)\] \(1 pairs\)"
        ):
            LoggedDataset.from_frame(f)

    def test_missing_ids(self) -> None:
        with pytest.raises(SchemaError, match="column 'query_id' has missing values in 1 rows"):
            LoggedDataset.from_frame(frame(query_id=["q1", None, "q2", "q2"]))

    @pytest.mark.parametrize("bad", [1.5, -0.25])
    def test_quality_outside_unit_interval(self, bad: float) -> None:
        with pytest.raises(SchemaError, match=r"column 'quality' must lie in \[0, 1\].*normalize='minmax'"):
            LoggedDataset.from_frame(frame(quality=[0.0, bad, 1.0, 1.0]))

    def test_quality_infinite(self) -> None:
        with pytest.raises(SchemaError, match="'quality' has ±inf values"):
            LoggedDataset.from_frame(frame(quality=[0.0, math.inf, 1.0, 1.0]))

    def test_quality_not_numeric(self) -> None:
        with pytest.raises(SchemaError, match="column 'quality' must be numeric, got values like 'good'"):
            LoggedDataset.from_frame(frame(quality=[0.0, "good", 1.0, 1.0]))

    def test_normalize_minmax_with_judge_range(self) -> None:
        ds = LoggedDataset.from_frame(
            frame(quality=[1.0, 10.0, 5.5, 7.0]), normalize="minmax", quality_range=(1, 10)
        )
        np.testing.assert_allclose(ds.quality, [[0.0, 1.0], [0.5, 6 / 9]])
        assert ds.meta["quality_normalization"] == "minmax from [1, 10] to [0, 1]"

    def test_normalize_minmax_default_range_is_observed(self) -> None:
        ds = LoggedDataset.from_frame(frame(quality=[2.0, 4.0, 3.0, 4.0]), normalize="minmax")
        np.testing.assert_allclose(ds.quality, [[0.0, 1.0], [0.5, 1.0]])

    def test_normalize_minmax_value_outside_range(self) -> None:
        with pytest.raises(SchemaError, match=r"fall outside quality_range=\(1, 10\)"):
            LoggedDataset.from_frame(
                frame(quality=[0.0, 10.0, 5.0, 7.0]), normalize="minmax", quality_range=(1, 10)
            )

    def test_normalize_minmax_bad_range(self) -> None:
        with pytest.raises(ConfigurationError, match=r"quality_range must have high > low, got \(5, 5\)"):
            LoggedDataset.from_frame(frame(), normalize="minmax", quality_range=(5, 5))

    def test_normalize_clip_warns_and_records(self) -> None:
        with pytest.warns(DataWarning, match="normalize='clip' changed 2 quality values"):
            ds = LoggedDataset.from_frame(frame(quality=[-0.03, 1.2, 0.5, 1.0]), normalize="clip")
        np.testing.assert_array_equal(ds.quality, [[0.0, 1.0], [0.5, 1.0]])
        assert ds.meta["quality_normalization"] == "clipped into [0, 1] (2 values changed)"

    def test_normalize_unknown(self) -> None:
        with pytest.raises(
            ConfigurationError, match="normalize must be None, 'minmax' or 'clip', got 'zscore'"
        ):
            LoggedDataset.from_frame(frame(), normalize="zscore")  # type: ignore[arg-type]

    def test_negative_cost(self) -> None:
        with pytest.raises(
            SchemaError, match=r"'cost' must be ≥ 0 USD, got -0.5 for query 'q2', model 'small'"
        ):
            LoggedDataset.from_frame(frame(cost=[0.001, 0.01, -0.5, 0.02]))

    def test_nan_cost(self) -> None:
        with pytest.raises(
            SchemaError, match=r"'cost' is NaN in 1 rows \(first: query 'q1', model 'large'\)"
        ):
            LoggedDataset.from_frame(frame(cost=[0.001, np.nan, 0.002, 0.02]))

    def test_cost_from_tokens_and_price_cards(self) -> None:
        f = frame(input_tokens=[1000, 1000, 2000, 2000], output_tokens=[500, 500, 0, 100]).drop(
            columns="cost"
        )
        cards = {"small": ModelCard("small", 0.5, 1.5), "large": {"input_price": 10.0, "output_price": 30.0}}
        ds = LoggedDataset.from_frame(f, model_cards=cards)  # type: ignore[arg-type]
        expected = [
            [(1000 * 0.5 + 500 * 1.5) / 1e6, (1000 * 10 + 500 * 30) / 1e6],
            [2000 * 0.5 / 1e6, (2000 * 10 + 100 * 30) / 1e6],
        ]
        np.testing.assert_allclose(ds.cost, expected)
        assert "price cards" in ds.meta["cost"]
        assert ds.model_cards["large"] == ModelCard("large", 10.0, 30.0)

    def test_logged_cost_wins_over_tokens(self) -> None:
        f = frame(input_tokens=[1000] * 4, output_tokens=[0] * 4, cost=[0.5, np.nan, 0.5, np.nan])
        cards = [ModelCard("small", 1.0, 1.0), ModelCard("large", 2.0, 2.0)]
        ds = LoggedDataset.from_frame(f, model_cards=cards)
        np.testing.assert_allclose(ds.cost, [[0.5, 0.002], [0.5, 0.002]])

    def test_unknown_model_in_price_table(self) -> None:
        cards = {"small": ModelCard("small", 1, 1), "gpt-5": ModelCard("gpt-5", 1, 1)}
        with pytest.raises(
            PriceError, match=r"the price table names models \['gpt-5'\] that are not in the data"
        ):
            LoggedDataset.from_frame(frame(), model_cards=cards)

    def test_missing_price_card_for_token_costs(self) -> None:
        f = frame(input_tokens=[1] * 4, output_tokens=[1] * 4).drop(columns="cost")
        with pytest.raises(PriceError, match=r"model 'large' has rows without a cost and no price card"):
            LoggedDataset.from_frame(f, model_cards={"small": ModelCard("small", 1, 1)})

    def test_bad_price_card(self) -> None:
        with pytest.raises(
            PriceError, match=r"ModelCard\('m'\).input_price must be a finite number .* got -1"
        ):
            ModelCard("m", -1, 1)
        with pytest.raises(PriceError, match="lacks the key 'output_price'"):
            ModelCard.from_dict({"name": "m", "input_price": 1})

    @pytest.mark.parametrize("bad", [0.0, 1.5, -0.1, np.nan])
    def test_propensity_outside_unit_interval(self, bad: float) -> None:
        f = frame(logged=[True, False, False, True], propensity=[bad, np.nan, np.nan, 0.5])
        with pytest.raises(
            SchemaError, match=r"'propensity' must lie in \(0, 1\] on logged rows.*queries 'q1'"
        ):
            LoggedDataset.from_frame(f)

    def test_bandit_logs_need_one_logged_row_per_query(self) -> None:
        f = frame(logged=[True, True, False, True], propensity=[0.5, 0.5, np.nan, 0.5])
        with pytest.raises(SchemaError, match=r"exactly one logged row per query; queries 'q1' have \[2\]"):
            LoggedDataset.from_frame(f)
        with pytest.raises(SchemaError, match="'logged' needs a 'propensity' column"):
            LoggedDataset.from_frame(frame(logged=[True, False, False, True]))

    def test_bandit_logs(self) -> None:
        f = frame(logged=[False, True, True, False], propensity=[np.nan, 0.25, 1.0, np.nan])
        ds = LoggedDataset.from_frame(f)
        assert ds.has_propensities
        np.testing.assert_array_equal(ds.logged_action, [1, 0])
        np.testing.assert_array_equal(ds.propensity, [0.25, 1.0])

    def test_ragged_features(self) -> None:
        f = frame(x_0=[1.0, 1.0, 2.0, 2.0], x_1=[0.0, 0.5, 3.0, 3.0])
        with pytest.raises(
            SchemaError, match=r"ragged features: x_\* differ between rows of the same query 'q1'"
        ):
            LoggedDataset.from_frame(f)

    def test_features_with_gaps_or_nan(self) -> None:
        with pytest.raises(SchemaError, match=r"x_0 … x_\{d-1\} without gaps, got \['x_0', 'x_2'\]"):
            LoggedDataset.from_frame(frame(x_0=[1.0] * 4, x_2=[1.0] * 4))
        with pytest.raises(SchemaError, match="queries 'q2' have NaN or non-numeric features"):
            LoggedDataset.from_frame(frame(x_0=[1.0, 1.0, np.nan, np.nan]))

    def test_per_query_columns_must_agree(self) -> None:
        with pytest.raises(SchemaError, match="column 'task' differs between rows of the same query: 'q2'"):
            LoggedDataset.from_frame(frame(task=["a", "a", "b", "c"]))

    def test_warning_for_model_without_outcomes(self) -> None:
        with (
            pytest.warns(DataWarning, match=r"models \['extra'\] have no observed quality"),
            pytest.warns(DataWarning, match=r"model 'extra' has no row on 2 queries"),
        ):
            ds = LoggedDataset.from_frame(frame(), models=["small", "large", "extra"])
        assert ds.n_models == 3 and not ds.observed[:, 2].any()
        with (
            pytest.warns(DataWarning, match=r"models \['large'\] have no observed quality"),
            pytest.warns(DataWarning, match=r"model 'large' has a NaN quality on 2 logged rows"),
        ):
            LoggedDataset.from_frame(frame(quality=[0.0, np.nan, 1.0, np.nan]))

    def test_models_argument_must_cover_the_frame(self) -> None:
        with pytest.raises(
            ModelMismatchError, match=r"the frame has models 'large' that are not in models=\['small'\]"
        ):
            LoggedDataset.from_frame(frame(), models=["small"])

    def test_extra_columns_warn(self) -> None:
        with pytest.warns(
            DataWarning, match=r"ignores columns that are not part of the canonical format: \['notes'\]"
        ):
            LoggedDataset.from_frame(frame(notes=["a", "b", "c", "d"]))

    def test_arrays_are_copied_unless_read_only(self) -> None:
        q, c = np.zeros((2, 2)), np.zeros((2, 2))
        ds = LoggedDataset(models=("a", "b"), query_ids=["x", "y"], quality=q, cost=c)
        assert not np.shares_memory(ds.quality, q) and q.flags.writeable
        q.setflags(write=False)
        c.setflags(write=False)
        shared = LoggedDataset(models=("a", "b"), query_ids=["x", "y"], quality=q, cost=c)
        assert np.shares_memory(shared.quality, q) and np.shares_memory(shared.cost, c)
        base = np.zeros((2, 2))
        view = base[:]
        view.setflags(write=False)  # read-only, but its writable base could still change it
        assert not np.shares_memory(
            LoggedDataset(models=("a", "b"), query_ids=["x", "y"], quality=view, cost=c).quality, base
        )
        sub = shared.select([1])
        assert not sub.quality.flags.writeable and sub.quality.shape == (1, 2)

    def test_constructor_validates_arrays(self) -> None:
        ok = {"models": ("a", "b"), "query_ids": ["q1"], "quality": [[0.0, 1.0]], "cost": [[0.0, 0.0]]}
        LoggedDataset(**ok)  # type: ignore[arg-type]
        with pytest.raises(ShapeError, match=r"quality must have shape \(n, K\) = \(1, 2\), got \(1, 3\)"):
            LoggedDataset(**{**ok, "quality": [[0.0, 1.0, 1.0]]})  # type: ignore[arg-type]
        with pytest.raises(SchemaError, match=r"models must be unique, got duplicates \['a'\]"):
            LoggedDataset(**{**ok, "models": ("a", "a")})  # type: ignore[arg-type]
        with pytest.raises(SchemaError, match=r"quality and cost are required \(n, K\) arrays, got None"):
            LoggedDataset(**{**ok, "quality": None})  # type: ignore[arg-type]
        with pytest.raises(ShapeError, match=r"features must have shape \(n, d\) with n = 1, got \(2, 3\)"):
            LoggedDataset(**{**ok, "features": np.zeros((2, 3))})  # type: ignore[arg-type]
        with pytest.raises(SchemaError, match="logged_action and propensity go together"):
            LoggedDataset(**{**ok, "logged_action": [0]})  # type: ignore[arg-type]
        with pytest.raises(SchemaError, match=r"propensity must lie in \(0, 1\]; query 'q1' has 0.0"):
            LoggedDataset(**{**ok, "logged_action": [0], "propensity": [0.0]})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- round trips
@st.composite
def datasets(draw: st.DrawFn) -> LoggedDataset:
    """Small datasets exercising every optional part of the format."""
    n = draw(st.integers(1, 6))
    k = draw(st.integers(1, 3))
    models = tuple(
        draw(st.lists(st.text("abcxyz-/.", min_size=1, max_size=6), min_size=k, max_size=k, unique=True))
    )
    qids = draw(
        st.lists(
            st.text(min_size=1, max_size=8).filter(lambda s: "\x00" not in s),
            min_size=n,
            max_size=n,
            unique=True,
        )
    )
    partial = draw(st.booleans())
    bandit = draw(st.booleans())
    observed = np.ones((n, k), dtype=bool)
    if partial or bandit:
        observed = np.array(
            draw(st.lists(st.lists(st.booleans(), min_size=k, max_size=k), min_size=n, max_size=n))
        )
        for i in range(n):
            if not observed[i].any():
                observed[i, draw(st.integers(0, k - 1))] = True
    unit = st.floats(0.0, 1.0, allow_nan=False)
    quality = np.array(
        draw(st.lists(st.lists(unit | st.just(math.nan), min_size=k, max_size=k), min_size=n, max_size=n))
    )
    cost = np.array(
        draw(
            st.lists(
                st.lists(st.floats(0.0, 1e3, allow_nan=False), min_size=k, max_size=k), min_size=n, max_size=n
            )
        )
    )
    quality[~observed] = np.nan
    cost[~observed] = np.nan
    kwargs: dict[str, object] = {}
    if draw(st.booleans()):
        tokens = np.array(
            draw(
                st.lists(
                    st.lists(st.integers(0, 10**6) | st.none(), min_size=k, max_size=k),
                    min_size=n,
                    max_size=n,
                )
            ),
            dtype=float,
        )
        kwargs["input_tokens"] = tokens
        kwargs["output_tokens"] = np.where(np.isnan(tokens), np.nan, tokens[::-1] if n > 1 else tokens)
        if draw(st.booleans()):
            cards = {m: ModelCard(m, draw(st.floats(0, 100)), draw(st.floats(0, 100))) for m in models}
            kwargs["model_cards"] = cards
    for name in ("latency", "signal"):
        if draw(st.booleans()):
            values = st.floats(0.0, 1e4, width=32) | st.just(math.nan)
            kwargs[name] = np.array(
                draw(st.lists(st.lists(values, min_size=k, max_size=k), min_size=n, max_size=n))
            )
    text = st.text(min_size=1, max_size=12).filter(lambda s: "\x00" not in s)
    if draw(st.booleans()):
        kwargs["prompts"] = np.array(draw(st.lists(text | st.none(), min_size=n, max_size=n)), dtype=object)
    if draw(st.booleans()):
        kwargs["tasks"] = np.array(draw(st.lists(text | st.none(), min_size=n, max_size=n)), dtype=object)
    d = draw(st.integers(0, 3))
    kwargs["features"] = np.array(
        draw(
            st.lists(st.lists(st.floats(-1e6, 1e6, width=32), min_size=d, max_size=d), min_size=n, max_size=n)
        ),
        dtype=np.float32,
    ).reshape(n, d)
    if bandit:
        actions = [int(draw(st.sampled_from(list(np.flatnonzero(observed[i]))))) for i in range(n)]
        kwargs["logged_action"] = actions
        kwargs["propensity"] = draw(st.lists(st.floats(1e-9, 1.0, exclude_min=False), min_size=n, max_size=n))
    if draw(st.booleans()):
        kwargs["meta"] = {"source": draw(text)}
    return LoggedDataset(
        models=models,
        query_ids=np.array(qids, dtype=object),
        quality=quality,
        cost=cost,
        observed=observed,
        **kwargs,
    )  # type: ignore[arg-type]


ROUND_TRIP = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.filterwarnings("ignore::routing_env.errors.DataWarning")
class TestRoundTrip:
    @ROUND_TRIP
    @given(ds=datasets())
    def test_frame_round_trip(self, ds: LoggedDataset) -> None:
        back = LoggedDataset.from_frame(
            ds.to_frame(), models=ds.models, model_cards=ds.model_cards, meta=ds.meta
        )
        assert_datasets_equal(ds, back, meta=False)

    @pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
    @ROUND_TRIP
    @given(ds=datasets())
    def test_file_round_trip(self, tmp_path: Path, suffix: str, ds: LoggedDataset) -> None:
        path = ds.save(tmp_path / f"logs{suffix}")
        back = LoggedDataset.read(path)
        if suffix == ".csv" and ds.prompts is not None:
            pass  # prompts are never empty strings here, so csv keeps them exactly
        assert_datasets_equal(ds, back, meta=False)
        for key, value in ds.meta.items():
            assert back.meta[key] == value

    def test_price_card_costs_survive_files(self, tmp_path: Path) -> None:
        f = frame(
            input_tokens=[10, 20, 30, 40], output_tokens=[1, 2, 3, 4], prompt=["a", "a", "NA", "NA"]
        ).drop(columns="cost")
        ds = LoggedDataset.from_frame(
            f, model_cards=[ModelCard("small", 0.3, 0.6), ModelCard("large", 3.0, 15.0)]
        )
        for suffix in (".parquet", ".csv", ".jsonl"):
            back = LoggedDataset.read(ds.save(tmp_path / f"x{suffix}"))
            assert_datasets_equal(ds, back)
            assert back.prompts is not None and back.prompts[1] == "NA"

    def test_read_errors(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="no logged data at"):
            LoggedDataset.read(tmp_path / "absent.parquet")
        (tmp_path / "x.txt").write_text("hi")
        with pytest.raises(SchemaError, match=r"expected a .parquet, .csv or .jsonl file, got '.txt'"):
            LoggedDataset.read(tmp_path / "x.txt")
        with pytest.raises(SchemaError, match=r"expected a .parquet, .csv or .jsonl suffix, got '.xlsx'"):
            LoggedDataset.from_frame(frame()).save(tmp_path / "x.xlsx")
        (tmp_path / "bad.jsonl").write_text('{"query_id": "q"}\nnot json\n')
        with pytest.raises(SchemaError, match=r"bad.jsonl:2 is not valid JSON"):
            LoggedDataset.read(tmp_path / "bad.jsonl")

    def test_corrupt_files_are_named(self, tmp_path: Path) -> None:
        good = LoggedDataset.from_frame(frame()).save(tmp_path / "good.parquet").read_bytes()
        cases = {
            "truncated.parquet": (good[: len(good) // 2], "parquet", "magic bytes"),
            "text.parquet": (b"query_id,model\n", "parquet", "magic bytes"),
            "empty.csv": (b"", "CSV", "No columns to parse"),
            "binary.csv": (good, "CSV", ""),
            "open_quote.csv": (b'query_id,model,quality,cost\n"q1,a,1,0.1\n', "CSV", "EOF inside string"),
            "binary.jsonl": (good, "JSON-lines", "codec can't decode"),
        }
        for name, (content, kind, reason) in cases.items():
            (tmp_path / name).write_bytes(content)
            with pytest.raises(
                FileFormatError, match=rf"{name} is not a readable {kind} file: .*{reason}"
            ) as info:
                LoggedDataset.read(tmp_path / name)
            assert "\n" not in str(info.value), name
        (tmp_path / "side.csv").write_text("query_id,model,quality,cost\nq1,a,1,0.1\n")
        (tmp_path / "side.csv.meta.json").write_text("{not json")
        with pytest.raises(FileFormatError, match=r"side\.csv\.meta\.json is not a readable JSON file"):
            LoggedDataset.read(tmp_path / "side.csv")

    def test_sample_round_trip(self, tmp_path: Path, small: LoggedDataset) -> None:
        for suffix in (".parquet", ".csv", ".jsonl"):
            assert_datasets_equal(small, LoggedDataset.read(small.save(tmp_path / f"s{suffix}")))


# ---------------------------------------------------------------------------------------------------- split
class TestSplit:
    def test_duplicated_prompts_never_straddle(self) -> None:
        ds = make_synthetic(n_queries=400, models=3, seed=3)
        assert ds.prompts is not None
        prompts = np.array([f"prompt {i % 150}" for i in range(ds.n_queries)], dtype=object)
        dup = LoggedDataset(**{**_fields(ds), "prompts": prompts})
        for seed in range(5):
            train, test = dup.split(test_size=0.3, seed=seed)
            assert train.n_queries + test.n_queries == dup.n_queries
            assert not set(train.prompts) & set(test.prompts)  # type: ignore[arg-type]
            assert not set(train.query_ids) & set(test.query_ids)

    def test_by_query_id_ignores_prompts(self) -> None:
        ds = make_synthetic(n_queries=200, models=2, seed=1)
        same = LoggedDataset(**{**_fields(ds), "prompts": np.array(["same"] * 200, dtype=object)})
        with pytest.raises(ConfigurationError, match="leaves one side empty with 1 groups"):
            same.split()
        _train, test = same.split(by="query_id", test_size=0.25)
        assert test.n_queries == 50

    def test_queries_without_prompt_are_their_own_group(self) -> None:
        ds = make_synthetic(n_queries=200, models=2, seed=1)
        prompts = np.array([None] * 200, dtype=object)
        _train, test = LoggedDataset(**{**_fields(ds), "prompts": prompts}).split(test_size=0.2)
        assert test.n_queries == 40

    def test_stratified_by_task(self) -> None:
        ds = make_synthetic(n_queries=1000, models=2, seed=5)
        assert ds.tasks is not None
        train, test = ds.split(test_size=0.2, seed=0)
        assert train.tasks is not None and test.tasks is not None
        for task in set(ds.tasks):
            n_task = int((ds.tasks == task).sum())
            assert abs(int((test.tasks == task).sum()) - 0.2 * n_task) <= 1

    def test_single_query_tasks_can_reach_the_test_side(self) -> None:
        ds = LoggedDataset.from_frame(frame(task=["math", "math", "geo", "geo"], prompt=["a", "a", "b", "b"]))
        train, test = ds.split(test_size=0.5, seed=0)
        assert train.n_queries == test.n_queries == 1
        tasks = {frozenset(ds.split(test_size=0.5, seed=s)[1].tasks.tolist()) for s in range(8)}  # type: ignore[union-attr]
        assert tasks == {frozenset({"math"}), frozenset({"geo"})}

    def test_deterministic_under_seed(self, small: LoggedDataset) -> None:
        a = small.split(seed=11)[1].query_ids.tolist()
        assert a == small.split(seed=11)[1].query_ids.tolist()
        assert a != small.split(seed=12)[1].query_ids.tolist()

    def test_bad_arguments(self, small: LoggedDataset) -> None:
        with pytest.raises(ConfigurationError, match=r"test_size must be in \(0, 1\), got 1.5"):
            small.split(test_size=1.5)
        with pytest.raises(ConfigurationError, match="by must be 'auto', 'prompt' or 'query_id', got 'task'"):
            small.split(by="task")  # type: ignore[arg-type]
        bare = LoggedDataset.from_frame(frame())
        with pytest.raises(ConfigurationError, match=r"split\(by='prompt'\) needs prompts"):
            bare.split(by="prompt")


def _fields(ds: LoggedDataset) -> dict[str, object]:
    names = ("models", "query_ids", "quality", "cost", "observed", "features", "feature_names", "latency", "signal",
             "input_tokens", "output_tokens", "prompts", "tasks", "logged_action", "propensity", "model_cards", "meta")  # fmt: skip
    return {n: getattr(ds, n) for n in names}


# ---------------------------------------------------------------------------------------------------- selection
class TestSelection:
    def test_subset_models(self, small: LoggedDataset) -> None:
        sub = small.subset_models([small.models[2], small.models[0]])
        assert sub.models == (small.models[2], small.models[0])
        np.testing.assert_array_equal(sub.quality, small.quality[:, [2, 0]])
        np.testing.assert_array_equal(sub.cost, small.cost[:, [2, 0]])
        assert sub.input_tokens is not None and small.input_tokens is not None
        np.testing.assert_array_equal(sub.input_tokens, small.input_tokens[:, [2, 0]])
        assert set(sub.model_cards) == set(sub.models)
        assert sub.n_queries == small.n_queries

    def test_subset_models_errors(self, small: LoggedDataset) -> None:
        with pytest.raises(ModelMismatchError, match=r"unknown model 'gpt-9'; the dataset has \["):
            small.subset_models(["gpt-9"])
        with pytest.raises(ConfigurationError, match="subset_models got duplicate model names"):
            small.subset_models([small.models[0], small.models[0]])
        with pytest.raises(ConfigurationError, match="needs at least one model"):
            small.subset_models([])

    def test_subset_models_on_bandit_logs(self) -> None:
        f = frame(logged=[False, True, True, False], propensity=[np.nan, 0.25, 0.5, np.nan])
        ds = LoggedDataset.from_frame(f)
        with pytest.warns(DataWarning, match="drops 1 bandit-log queries whose logged model was removed"):
            sub = ds.subset_models(["small"])
        assert sub.query_ids.tolist() == ["q2"]
        np.testing.assert_array_equal(sub.logged_action, [0])
        np.testing.assert_array_equal(sub.propensity, [0.5])

    def test_filter_and_select(self, small: LoggedDataset) -> None:
        mask = np.arange(small.n_queries) % 3 == 0
        sub = small.filter(mask)
        assert sub.n_queries == int(mask.sum())
        np.testing.assert_array_equal(sub.features, small.features[mask])
        assert sub.prompts is not None and small.prompts is not None
        assert sub.prompts.tolist() == small.prompts[mask].tolist()
        with pytest.raises(
            ShapeError, match=r"mask must be a boolean array of shape \(300,\), got int64 \(300,\)"
        ):
            small.filter(np.arange(small.n_queries))
        with pytest.raises(ConfigurationError, match=r"indices must lie in \[0, 300\), got 0..300"):
            small.select([0, 300])

    def test_with_features(self, small: LoggedDataset) -> None:
        x = np.arange(small.n_queries * 2, dtype=np.float64).reshape(-1, 2)
        out = small.with_features(x, names=["a", "b"])
        assert out.features.dtype == np.float32 and out.feature_names == ("a", "b")
        assert small.n_features == 8  # the original is untouched
        with pytest.raises(ShapeError, match=r"features must have shape \(n, d\) with n = 300, got \(3,\)"):
            small.with_features(np.zeros(3))


# ---------------------------------------------------------------------------------------------------- summary
class TestSummary:
    def test_summary_matches_arrays(self, small: LoggedDataset) -> None:
        table = small.summary(cost_weight=0.5)
        assert list(table["model"]) == [*small.models, "oracle"]
        body = table.iloc[:-1]
        np.testing.assert_allclose(body["mean_quality"], small.quality.mean(axis=0))
        np.testing.assert_allclose(body["mean_cost_usd"], small.cost.mean(axis=0))
        r = small.rewards(0.5)
        np.testing.assert_allclose(body["mean_reward"], r.mean(axis=0))
        assert body["best_single"].sum() == 1
        assert body.loc[body["best_single"], "model"].item() == small.models[int(r.mean(axis=0).argmax())]
        oracle = small.oracle_actions(0.5)
        assert table.iloc[-1]["mean_reward"] == pytest.approx(r[np.arange(small.n_queries), oracle].mean())
        assert table.iloc[-1]["mean_reward"] >= body["mean_reward"].max()
        assert body["oracle_share"].sum() == pytest.approx(1.0)

    def test_oracle_ties_go_to_the_cheaper_model(self) -> None:
        ds = LoggedDataset.from_frame(frame(quality=[1.0, 1.0, 0.0, 1.0]))
        np.testing.assert_array_equal(ds.oracle_actions(0.0), [0, 1])

    def test_partial_data_has_no_oracle_row(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            ds = LoggedDataset.from_frame(frame().iloc[[0, 1, 2]], models=["small", "large"])
        table = ds.summary()
        assert list(table["model"]) == ["small", "large"]
        assert table["n_observed"].tolist() == [2, 1]


# ---------------------------------------------------------------------------------------------------- generator
class TestSynthetic:
    def test_deterministic_under_seed(self) -> None:
        a, b = make_synthetic(n_queries=150, seed=4), make_synthetic(n_queries=150, seed=4)
        assert_datasets_equal(a, b)
        c = make_synthetic(n_queries=150, seed=5)
        assert not np.array_equal(a.quality, c.quality)

    def test_shapes_and_ground_truth_structure(self) -> None:
        ds = make_synthetic(n_queries=3000, seed=0)
        assert ds.is_full_information and ds.n_models == 7 and ds.features.shape == (3000, 16)
        acc = ds.quality.mean(axis=0)
        # Abilities rise along DEFAULT_MODELS except the cheap distilled model, so the frontier model beats the small one.
        assert acc[-1] > acc[0] + 0.3
        assert (ds.cost.mean(axis=0)[-1] > ds.cost.mean(axis=0)[:-1]).all()

    @pytest.mark.parametrize("auroc", [0.7, 0.85])
    def test_signal_has_the_requested_auroc(self, auroc: float) -> None:
        # With discrimination 0 every prior is 0.5, so the whole sample sits at one prior.
        ds = make_synthetic(
            n_queries=6000, models=1, tasks=("math",), discrimination=0.0, signal_auroc=auroc, seed=2
        )
        assert ds.signal is not None
        y, s = ds.quality[:, 0], ds.signal[:, 0]
        assert set(np.unique(y)) == {0.0, 1.0}
        assert roc_auc_score(y, s) == pytest.approx(auroc, abs=0.025)

    def test_signal_is_calibrated(self) -> None:
        ds = make_synthetic(n_queries=4000, tasks=("math", "code"), seed=3)
        assert ds.signal is not None
        s, y = ds.signal.ravel().astype(float), ds.quality.ravel()
        edges = np.quantile(s, np.linspace(0, 1, 6))
        bins = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, 4)
        for b in range(5):
            assert y[bins == b].mean() == pytest.approx(s[bins == b].mean(), abs=0.03)

    def test_bad_arguments(self) -> None:
        with pytest.raises(ConfigurationError, match=r"signal_auroc must lie in \(0.5, 1\), got 1.2"):
            make_synthetic(signal_auroc=1.2)
        with pytest.raises(ConfigurationError, match="n_queries must be ≥ 1, got 0"):
            make_synthetic(n_queries=0)
        with pytest.raises(ConfigurationError, match=r"models must be in \[1, 7\] as an int, got 9"):
            make_synthetic(models=9)


def test_bundled_sample_file_equals_load_sample(sample: LoggedDataset) -> None:
    path = REPO / "logged_data" / "sample" / SAMPLE_FILE
    assert path.stat().st_size < 5_000_000
    assert_datasets_equal(LoggedDataset.read(path), sample)
    assert sample.n_queries == 4000 and sample.n_models == 7


# ---------------------------------------------------------------------------------------------------- partial data
def holes() -> pd.DataFrame:
    """Four queries × three models: 'c' has no row on q2 and q3, 'b' a NaN quality on q4."""
    rows = [
        (q, m, 0.5, 0.01)
        for q in ("q1", "q2", "q3", "q4")
        for m in ("a", "b", "c")
        if not (m == "c" and q in ("q2", "q3"))
    ]
    out = pd.DataFrame(rows, columns=["query_id", "model", "quality", "cost"])
    out.loc[(out["query_id"] == "q4") & (out["model"] == "b"), "quality"] = np.nan
    return out


class TestMissingOutcomes:
    def test_loading_partial_data_warns_with_the_counts(self, tmp_path: Path) -> None:
        expected = (
            r"3 of 4 queries lack an outcome: model 'c' has no row on 2 queries; model 'b' has a NaN quality "
            r"on 1 logged row\. .*complete_only\(\)"
        )
        with pytest.warns(DataWarning, match=expected):
            ds = LoggedDataset.from_frame(holes())
        assert not ds.is_full_information
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            path = ds.save(tmp_path / "holes.csv")
        with pytest.warns(DataWarning, match=expected):
            LoggedDataset.read(path)

    def test_full_information_and_bandit_logs_load_silently(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)
            LoggedDataset.from_frame(frame())
            LoggedDataset.from_frame(
                frame(logged=[True, False, False, True], propensity=[0.5, np.nan, np.nan, 0.5]).iloc[[0, 3]],
                models=["small", "large"],
            )

    def test_missing_outcomes_counts_per_model(self) -> None:
        with pytest.warns(DataWarning):
            ds = LoggedDataset.from_frame(holes())
        gaps = ds.missing_outcomes()
        assert gaps.n_queries == 4 and gaps.n_incomplete == 3 and not gaps.complete
        assert dict(gaps.unlogged) == {"c": 2} and dict(gaps.nan_quality) == {"b": 1}
        assert not gaps.bandit_logs
        full = LoggedDataset.from_frame(frame()).missing_outcomes()
        assert full.complete and full.n_incomplete == 0 and not full.unlogged and not full.nan_quality
        assert full.describe() == "every model has an outcome on each of the 2 queries"

    def test_complete_only_drops_incomplete_queries(self) -> None:
        with pytest.warns(DataWarning):
            ds = LoggedDataset.from_frame(holes(), meta={"source": "test"})
        full = ds.complete_only()
        assert full.is_full_information and full.query_ids.tolist() == ["q1"]
        assert full.models == ds.models
        assert full.meta["source"] == "test"
        assert full.meta["complete_only"].startswith("kept 1 of 4 queries")
        assert ds.n_queries == 4  # the original is untouched
        again = full.complete_only()
        assert again.query_ids.tolist() == ["q1"]

    def test_complete_only_refuses_to_return_nothing(self) -> None:
        bandit = LoggedDataset.from_frame(
            frame(logged=[True, False, False, True], propensity=[0.5, np.nan, np.nan, 0.5]).iloc[[0, 3]],
            models=["small", "large"],
        )
        with pytest.raises(PartialInformationError, match=r"no query .* bandit logs .*routing_env\.ope"):
            bandit.complete_only()

    def test_require_full_information_names_counts_and_remedy(self) -> None:
        with pytest.warns(DataWarning):
            ds = LoggedDataset.from_frame(holes())
        with pytest.raises(
            PartialInformationError,
            match=(
                r"exact scoring needs every model's outcome on every query, but 3 of 4 queries lack an outcome: "
                r"model 'c' has no row on 2 queries; model 'b' has a NaN quality on 1 logged row\. "
                r"Keep the 1 complete queries with dataset\.complete_only\(\)"
            ),
        ):
            ds.require_full_information("exact scoring")
        with pytest.raises(PartialInformationError, match=r"or impute them"):
            ds.require_full_information("replay", alternative="or impute them")
        LoggedDataset.from_frame(frame()).require_full_information("anything")
