"""Loaders: each on a small file the test writes in that format, and on the real files when present."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from routing_env.data import LoggedDataset, load_sample, loaders
from routing_env.data.loaders import (
    OPEN_BANDIT_PROPENSITY_FLOOR,
    ROUTELLM_MODEL_CARDS,
    estimate_tokens,
)
from routing_env.errors import ConfigurationError, DataWarning, FileFormatError, SchemaError
from tests.conftest import shared_dataset
from tests.data.datahelpers import assert_datasets_equal

MIX = "mistralai/Mixtral-8x7B-Instruct-v0.1"
GPT4 = "gpt-4-1106-preview"


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_estimate_tokens() -> None:
    np.testing.assert_array_equal(estimate_tokens(["", "abcd", "abcde", "x" * 400]), [1, 1, 2, 100])


# ---------------------------------------------------------------------------------------------------- RouteLLM
def make_routellm(root: Path) -> None:
    (root / "mmlu_responses").mkdir(parents=True)
    pd.DataFrame(
        {
            "prompt": ["What is 2+2?\nA. 3\nB. 4\nAnswer:", "Capital of France?\nAnswer:", "leaked\nAnswer:"],
            MIX: [True, False, True],
            GPT4: [True, True, False],
        }
    ).to_csv(root / "mmlu_responses" / "mmlu_arithmetic.csv", index=False)
    pd.DataFrame({"prompt": ["Who wrote Hamlet?\nAnswer:"], MIX: [False], GPT4: [False]}).to_csv(
        root / "mmlu_responses" / "mmlu_literature.csv", index=False
    )
    write_jsonl(
        root / "mmlu_contaminated_prompts.jsonl", [{"train_prompt": "x", "eval_prompt": "leaked\nAnswer:"}]
    )
    pd.DataFrame(
        {
            "prompt": ["Tom has 3 apples...", "A train leaves..."],
            MIX: [True, False],
            GPT4: [True, True],
            f"{MIX}_response": ["x" * 40, "y" * 400],
            f"{GPT4}_response": ["z" * 80, "w" * 120],
        }
    ).to_csv(root / "gsm8k_responses.csv", index=False)
    write_jsonl(root / "gsm8k_contaminated_prompts.jsonl", [])
    questions = [
        {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Now shorter."]},
        {"question_id": 82, "category": "math", "turns": ["Leaked question", "Second"]},
    ]
    write_jsonl(root / "mt_bench_questions.jsonl", questions)
    write_jsonl(root / "mt_bench_contaminated_prompts.jsonl", [{"eval_prompt": "Leaked question"}])
    judgements = []
    for qid in (81, 82):
        for model, s1, s2 in ((MIX, 1, 7), (GPT4, 10, 5.5)):
            single = f"[Instruction]\n...[The Start of Assistant's Answer]\n{'a' * 400}\n[The End of Assistant's Answer]"
            multi = (
                "<|The Start of Assistant A's Conversation with User|>\n\n### User:\nq1\n\n### Assistant A:\n"
                + "a" * 400
                + "\n\n### User:\nq2\n\n### Assistant A:\n"
                + "b" * 40
                + "\n\n<|The End of Assistant A's Conversation with User|>"
            )
            judgements.append(
                {"question_id": qid, "model": model, "turn": 1, "score": s1, "user_prompt": single}
            )
            judgements.append(
                {"question_id": qid, "model": model, "turn": 2, "score": s2, "user_prompt": multi}
            )
    write_jsonl(root / "mt_bench_judgements.jsonl", judgements)


class TestRouteLLM:
    def test_mmlu_written(self, tmp_path: Path) -> None:
        make_routellm(tmp_path)
        ds = loaders.load_routellm(tmp_path, "mmlu")
        assert ds.models == (MIX, GPT4)
        assert ds.query_ids.tolist() == ["mmlu/arithmetic/0", "mmlu/arithmetic/1", "mmlu/literature/0"]
        np.testing.assert_array_equal(ds.quality, [[1, 1], [0, 1], [0, 0]])
        assert ds.tasks is not None and ds.tasks.tolist() == ["arithmetic", "arithmetic", "literature"]
        assert ds.meta["contaminated_dropped"].startswith("1 of 4 prompts")
        assert ds.input_tokens is not None and ds.output_tokens is not None
        expected_in = np.ceil(len("What is 2+2?\nA. 3\nB. 4\nAnswer:") / 4)
        assert ds.input_tokens[0, 0] == expected_in and ds.output_tokens[0, 1] == 1
        gpt = ROUTELLM_MODEL_CARDS[GPT4]
        assert ds.cost[0, 1] == pytest.approx((expected_in * gpt.input_price + 1 * gpt.output_price) / 1e6)
        assert "estimated" in ds.meta["cost"]
        kept = loaders.load_routellm(tmp_path, "mmlu", drop_contaminated=False)
        assert kept.n_queries == 4

    def test_per_call_cost_is_each_models_mean_call(self, tmp_path: Path) -> None:
        # RouteLLM counts strong-model calls: every call of a model costs the same, the same mean USD as priced.
        make_routellm(tmp_path)
        priced = loaders.load_routellm(tmp_path, "mmlu")
        for task in ("mmlu", "mt_bench"):
            ds = loaders.load_routellm(tmp_path, task, cost="per_call")
            tokens = loaders.load_routellm(tmp_path, task)
            np.testing.assert_allclose(ds.cost, np.broadcast_to(tokens.cost.mean(axis=0), ds.cost.shape))
            np.testing.assert_array_equal(ds.quality, tokens.quality)
            assert ds.meta["cost"].startswith("per call") and "estimated" in ds.meta["cost"]
        assert priced.cost[0, 1] != priced.cost[2, 1]
        with pytest.raises(ConfigurationError, match="cost"):
            loaders.load_routellm(tmp_path, "mmlu", cost="calls")  # type: ignore[arg-type]

    def test_gsm8k_written_uses_response_lengths(self, tmp_path: Path) -> None:
        make_routellm(tmp_path)
        ds = loaders.load_routellm(tmp_path, "gsm8k")
        assert ds.n_queries == 2 and ds.tasks is not None and set(ds.tasks) == {"gsm8k"}
        assert ds.output_tokens is not None
        np.testing.assert_array_equal(ds.output_tokens, [[10, 20], [100, 30]])

    def test_mt_bench_written(self, tmp_path: Path) -> None:
        make_routellm(tmp_path)
        ds = loaders.load_routellm(tmp_path, "mt_bench")
        assert ds.query_ids.tolist() == ["mt_bench/81/turn1", "mt_bench/81/turn2"]
        np.testing.assert_allclose(ds.quality, [[0.0, 1.0], [6 / 9, 4.5 / 9]])
        assert ds.tasks is not None and ds.tasks.tolist() == ["writing", "writing"]
        assert ds.meta["quality_normalization"] == "minmax from [1.0, 10.0] to [0, 1]"
        assert ds.meta["contaminated_dropped"].startswith("1 of 2 questions")
        assert ds.output_tokens is not None and ds.input_tokens is not None
        np.testing.assert_array_equal(ds.output_tokens[:, 0], [100, 10])
        # The second turn carries the first question and answer as context.
        assert ds.input_tokens[1, 0] > 100

    def test_repo_layout(self, tmp_path: Path) -> None:
        evals = tmp_path / "evals"
        (evals / "mmlu" / "responses").mkdir(parents=True)
        pd.DataFrame({"prompt": ["q"], MIX: [True], GPT4: [False]}).to_csv(
            evals / "mmlu" / "responses" / "mmlu_x.csv", index=False
        )
        write_jsonl(evals / "mmlu" / "contaminated_prompts.jsonl", [])
        assert loaders.load_routellm(evals, "mmlu").n_queries == 1

    def test_errors(self, tmp_path: Path) -> None:
        with pytest.raises(
            ConfigurationError, match=r"task must be one of \['mmlu', 'gsm8k', 'mt_bench'\], got 'hellaswag'"
        ):
            loaders.load_routellm(tmp_path, "hellaswag")  # type: ignore[arg-type]
        with pytest.raises(FileNotFoundError, match="load_routellm\\(dir\\): no directory"):
            loaders.load_routellm(tmp_path / "nope")
        with pytest.raises(FileNotFoundError, match=r"none of \['mmlu_responses', 'mmlu/responses'\] exists"):
            loaders.load_routellm(tmp_path)

    @pytest.mark.datasets
    def test_real_mmlu_reproduces_published_accuracies(self) -> None:
        ds = loaders.load_routellm(shared_dataset("routellm"), "mmlu")
        assert ds.n_queries == 14042 - 5 and ds.is_full_information
        table = ds.summary().set_index("model")
        assert table.loc[MIX, "mean_quality"] == pytest.approx(0.681, abs=0.001)
        assert table.loc[GPT4, "mean_quality"] == pytest.approx(0.806, abs=0.001)
        assert table.loc["oracle", "mean_quality"] == pytest.approx(0.859, abs=0.001)
        assert ds.tasks is not None and len(set(ds.tasks)) == 57
        assert (ds.cost[:, 1] > ds.cost[:, 0]).all()

    @pytest.mark.datasets
    def test_real_gsm8k_and_mt_bench(self) -> None:
        root = shared_dataset("routellm")
        gsm = loaders.load_routellm(root, "gsm8k")
        assert gsm.n_queries == 1319 - 12
        acc = gsm.quality.mean(axis=0)
        assert acc[0] == pytest.approx(0.638, abs=0.01) and acc[1] == pytest.approx(0.857, abs=0.01)
        mt = loaders.load_routellm(root, "mt_bench")
        assert mt.n_queries == 2 * 72 and mt.is_full_information
        assert mt.quality.min() >= 0 and mt.quality.max() == 1
        assert mt.tasks is not None and len(set(mt.tasks)) == 8
        assert "without a quoted answer" not in mt.meta["cost"]


# ---------------------------------------------------------------------------------------------------- LLMRouter
def make_llmrouter(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    train = [
        {"question": "2+2?", "scores": {"m1": 1.0, "m2": 0.0}, "cluster_id": 0},
        {"question": "Capital of Peru?", "scores": {"m1": 0.5, "m2": 1.0}, "cluster_id": 1},
        {"question": "Shared question", "scores": {"m1": 1.0, "m2": 1.0}, "cluster_id": 2},
    ]
    test = [
        {"question": "Shared question", "scores": {"m1": 0.0, "m2": 1.0}},
        {"question": "Write a sort", "scores": {"m1": 0.0, "m2": 0.6666666667}},
    ]
    (root / "dcrouter_train.json").write_text(json.dumps(train))
    (root / "dcrouter_test.json").write_text(json.dumps(test))
    write_jsonl(
        root / "query_meta_train.jsonl",
        [
            {"task_name": "gsm8k", "query": "2+2?"},
            {"task_name": "trivia_qa", "query": "Capital of Peru?"},
            {"task_name": "mmlu", "query": "Shared question"},
            {"task_name": "arc_challenge", "query": "Shared question"},
        ],
    )
    write_jsonl(root / "query_meta_test.jsonl", [{"task_name": "mbpp", "query": "Write a sort"}])
    cands = {
        "m1": {"input_price": 0.2, "output_price": 0.2, "feature": "small model", "size": "7B"},
        "m2": {"input_price": 0.9, "output_price": 1.8, "feature": "large model", "size": "70B"},
        "unscored": {"input_price": 5.0, "output_price": 5.0},
    }
    (root / "llm_candidates.json").write_text(json.dumps(cands))


class TestLLMRouter:
    def test_train_written(self, tmp_path: Path) -> None:
        make_llmrouter(tmp_path)
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)
            ds = loaders.load_llmrouter(tmp_path, "train")
        assert ds.models == ("m1", "m2") and ds.n_queries == 3
        assert ds.tasks is not None and ds.tasks.tolist() == ["gsm8k", "trivia_qa", "mmlu"]
        assert "1 questions listed under two tasks" in ds.meta["tasks"]
        assert ds.meta["train_test_overlap"].startswith("1 questions occur in both")
        out = ds.output_tokens
        assert out is not None and out[0, 0] == 256 and out[1, 0] == 32
        expected = (np.ceil(4 / 4) * 0.9 + 256 * 1.8) / 1e6
        assert ds.cost[0, 1] == pytest.approx(expected)
        assert "estimated" in ds.meta["cost"] and ds.model_cards["m2"].description == "large model"

    def test_test_split_drops_overlap_with_warning(self, tmp_path: Path) -> None:
        make_llmrouter(tmp_path)
        with pytest.warns(
            DataWarning, match=r"1 questions occur in both .* \(1 with different scores\); dropped"
        ):
            ds = loaders.load_llmrouter(tmp_path, "test")
        assert ds.query_ids.tolist() == ["test/1"]
        assert ds.tasks is not None and ds.tasks.tolist() == ["mbpp"]
        assert ds.quality[0, 1] == pytest.approx(0.6666666667)

    def test_all_dedupes_keeping_train(self, tmp_path: Path) -> None:
        make_llmrouter(tmp_path)
        with pytest.warns(DataWarning, match="kept once, with the train scores"):
            ds = loaders.load_llmrouter(tmp_path, "all")
        assert ds.query_ids.tolist() == ["train/0", "train/1", "train/2", "test/1"]
        assert ds.prompts is not None and len(set(ds.prompts)) == 4
        np.testing.assert_array_equal(ds.quality[2], [1.0, 1.0])

    def test_output_tokens_override_and_errors(self, tmp_path: Path) -> None:
        make_llmrouter(tmp_path)
        ds = loaders.load_llmrouter(tmp_path, output_tokens={"gsm8k": 10})
        assert ds.output_tokens is not None and ds.output_tokens[0, 0] == 10
        with pytest.raises(ConfigurationError, match=r"output_tokens\['gsm8k'\] must be an int ≥ 0, got -1"):
            loaders.load_llmrouter(tmp_path, output_tokens={"gsm8k": -1})
        with pytest.raises(
            ConfigurationError, match=r"split must be one of \['train', 'test', 'all'\], got 'dev'"
        ):
            loaders.load_llmrouter(tmp_path, "dev")  # type: ignore[arg-type]
        (tmp_path / "llm_candidates.json").write_text(
            json.dumps({"m1": {"input_price": 1, "output_price": 1}})
        )
        with pytest.raises(SchemaError, match=r"no price for the scored models \['m2'\]"):
            loaders.load_llmrouter(tmp_path)

    @pytest.mark.datasets
    def test_real_files(self) -> None:
        root = shared_dataset("llmrouter")
        train = loaders.load_llmrouter(root, "train")
        assert train.n_queries == 5608 and train.n_models == 9 and train.is_full_information
        with pytest.warns(DataWarning, match="119 questions occur in both"):
            test = loaders.load_llmrouter(root, "test")
        assert test.n_queries == 500 - 119
        assert test.prompts is not None and train.prompts is not None
        assert not set(test.prompts) & set(train.prompts)
        assert "119 questions" in test.meta["train_test_overlap"]
        with pytest.warns(DataWarning):
            both = loaders.load_llmrouter(root, "all")
        assert both.n_queries == 5608 + 500 - 119
        assert both.tasks is not None and len(set(both.tasks)) == 14 and None not in set(both.tasks)
        oracle = both.summary().set_index("model").loc["oracle", "mean_quality"]
        assert 0.74 <= oracle <= 0.80


# ---------------------------------------------------------------------------------------------------- RouterArena
def arena_record(gid: str, model: str, score: float, cost: float, tin: int, tout: int) -> dict[str, object]:
    return {
        "global_index": gid,
        "question": f"Question {gid}",
        "llm_selected": model,
        "provider": "x",
        "generated_answer": "...",
        "token_usage": {"input_tokens": tin, "output_tokens": tout, "total_tokens": tin + tout},
        "success": True,
        "evaluation_result": {"score": score, "metric": "m", "inference_cost": cost},
    }


def make_routerarena(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(
        root / "haiku.jsonl",
        [
            arena_record("MMLUPro_law_1", "haiku", 1.0, 2e-4, 100, 20),
            arena_record("WMT19-de-en_2", "haiku", -0.02, 1e-4, 50, 30),
        ],
    )
    write_jsonl(
        root / "flash.jsonl",
        [
            arena_record("WMT19-de-en_2", "flash", 0.4, 3e-5, 50, 40),
            arena_record("MMLUPro_law_1", "flash", 0.0, 5e-5, 100, 10),
        ],
    )
    prices = {
        "haiku": {"input_token_price_per_million": 0.25, "output_token_price_per_million": 1.25},
        "other": {"input_token_price_per_million": 1, "output_token_price_per_million": 1},
    }
    (root / "model_cost.json").write_text(json.dumps(prices))


class TestRouterArena:
    def test_written_default_clips_with_warning(self, tmp_path: Path) -> None:
        make_routerarena(tmp_path)
        with pytest.warns(DataWarning, match="normalize='clip' changed 1 quality values"):
            ds = loaders.load_routerarena(tmp_path)
        assert ds.models == ("flash", "haiku")  # files in name order
        assert ds.query_ids.tolist() == ["WMT19-de-en_2", "MMLUPro_law_1"]
        np.testing.assert_array_equal(ds.quality, [[0.4, 0.0], [0.0, 1.0]])
        np.testing.assert_array_equal(ds.cost, [[3e-5, 1e-4], [5e-5, 2e-4]])
        assert ds.input_tokens is not None and ds.input_tokens[1, 1] == 100
        assert ds.tasks is not None and ds.tasks.tolist() == ["WMT19-de-en", "MMLUPro"]
        assert ds.meta["quality_normalization"] == "clipped into [0, 1] (1 values changed)"
        assert set(ds.model_cards) == {"haiku"}

    def test_normalize_none_refuses_negative_scores(self, tmp_path: Path) -> None:
        make_routerarena(tmp_path)
        with pytest.raises(SchemaError, match=r"must lie in \[0, 1\], got values in \[-0.02, 1.0\]"):
            loaders.load_routerarena(tmp_path, normalize=None)

    def test_subcategory_tasks(self, tmp_path: Path) -> None:
        make_routerarena(tmp_path)
        with pytest.warns(DataWarning):
            ds = loaders.load_routerarena(tmp_path, task_level="subcategory")
        assert ds.tasks is not None and ds.tasks.tolist() == ["WMT19-de-en", "MMLUPro_law"]

    def test_errors(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match=r"no per-model \.jsonl files"):
            loaders.load_routerarena(tmp_path)
        write_jsonl(tmp_path / "bad.jsonl", [{"question": "q"}])
        with pytest.raises(SchemaError, match=r"bad\.jsonl:1: RouterArena records need 'global_index'"):
            loaders.load_routerarena(tmp_path)
        with pytest.raises(ConfigurationError, match="normalize must be one of"):
            loaders.load_routerarena(tmp_path, normalize="zscore")  # type: ignore[arg-type]

    @pytest.mark.datasets
    def test_real_files(self) -> None:
        with pytest.warns(DataWarning, match="changed 1 quality values"):
            ds = loaders.load_routerarena(shared_dataset("routerarena"))
        assert ds.n_queries == 809 and ds.is_full_information
        table = ds.summary().set_index("model")
        assert table.loc["claude-3-haiku-20240307", "mean_quality"] == pytest.approx(0.523, abs=0.001)
        assert table.loc["gemini-2.0-flash-001", "mean_quality"] == pytest.approx(0.690, abs=0.001)
        assert table.loc["oracle", "mean_quality"] == pytest.approx(0.741, abs=0.001)
        assert table.loc["claude-3-haiku-20240307", "mean_cost_usd"] == pytest.approx(1.76e-4, rel=0.01)
        assert ds.tasks is not None and len(set(ds.tasks)) == 36
        assert set(ds.model_cards) == set(ds.models)


# ---------------------------------------------------------------------------------------------------- RouterBench
def make_routerbench(path: Path) -> pd.DataFrame:
    models = ["gpt-4-1106-preview", "mistralai/mixtral-8x7b-chat"]
    wide = pd.DataFrame(
        {
            "sample_id": ["mmlu.0", "mmlu.1", "mmlu.1", "gsm8k.0", "mmlu.0", "mtbench.3"],
            "prompt": ["q0", "q1", "q1 variant", "q2", "q0", "q3"],
            "eval_name": ["mmlu", "mmlu", "mmlu", "gsm8k", "mmlu", "mt-bench"],
            models[0]: [1.0, 1.0, 0.0, 1.0, 1.0, np.nan],
            models[1]: [0.0, 1.0, 1.0, 0.0, 0.0, 0.9],
            f"{models[0]}|model_response": ["A", "B", "C", "4", "A", "..."],
            f"{models[1]}|model_response": ["B", "B", "C", "5", "B", "..."],
            f"{models[0]}|total_cost": [0.01, 0.02, 0.02, 0.03, 0.01, 0.05],
            f"{models[1]}|total_cost": [0.001, 0.002, 0.002, 0.003, 0.001, 0.005],
            "oracle_model_to_route_to": [models[0], models[1], models[1], models[0], models[0], models[1]],
        }
    )
    if path.suffix == ".csv":
        wide.to_csv(path, index=False)
    else:
        wide.to_pickle(path)
    return wide


class TestRouterBench:
    @pytest.mark.parametrize("name", ["routerbench_0shot.pkl", "routerbench.csv"])
    def test_written(self, tmp_path: Path, name: str) -> None:
        make_routerbench(tmp_path / name)
        with pytest.warns(DataWarning) as record:
            ds = loaders.load_routerbench(tmp_path / name)
        messages = " | ".join(str(w.message) for w in record)
        assert "1 rows repeating an earlier row exactly were dropped" in messages
        assert "2 rows sharing a sample_id with different content got a '#<k>' suffix" in messages
        assert "1 queries with a NaN quality cell dropped" in messages
        assert ds.models == ("gpt-4-1106-preview", "mistralai/mixtral-8x7b-chat")
        assert ds.query_ids.tolist() == ["mmlu.0", "mmlu.1#1", "mmlu.1#2", "gsm8k.0"]
        assert ds.is_full_information
        np.testing.assert_array_equal(ds.cost[:, 1], [0.001, 0.002, 0.002, 0.003])
        assert ds.tasks is not None and ds.tasks.tolist() == ["mmlu", "mmlu", "mmlu", "gsm8k"]
        assert set(ds.meta) >= {"duplicate_sample_ids", "missing_quality"}

    @pytest.mark.filterwarnings("ignore:load_routerbench. duplicated sample_id")
    def test_keep_missing_quality_as_unobserved(self, tmp_path: Path) -> None:
        make_routerbench(tmp_path / "rb.csv")
        with (
            pytest.warns(DataWarning, match="1 NaN quality cells kept as unobserved"),
            pytest.warns(DataWarning, match=r"1 of 5 queries lack an outcome: .*complete_only\(\)"),
        ):
            ds = loaders.load_routerbench(tmp_path / "rb.csv", missing_quality="keep")
        assert ds.n_queries == 5 and not ds.is_full_information
        assert not ds.observed[-1, 0] and ds.observed[-1, 1]

    def test_errors(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="load_routerbench: no file at"):
            loaders.load_routerbench(tmp_path / "absent.pkl")
        pd.DataFrame({"sample_id": ["a"], "prompt": ["p"], "m": [1.0]}).to_csv(
            tmp_path / "x.csv", index=False
        )
        with pytest.raises(SchemaError, match=r"has no '<model>\|total_cost' columns"):
            loaders.load_routerbench(tmp_path / "x.csv")
        (tmp_path / "x.json").write_text("{}")
        with pytest.raises(SchemaError, match=r"expected a .pkl, .csv or .parquet file, got 'x.json'"):
            loaders.load_routerbench(tmp_path / "x.json")
        with pytest.raises(ConfigurationError, match="missing_quality must be one of"):
            loaders.load_routerbench(tmp_path / "x.csv", missing_quality="zero")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- Open Bandit
def make_obd(
    root: Path, policy: str = "bts", campaign: str = "men", propensities: list[float] | None = None
) -> None:
    folder = root / policy / campaign
    folder.mkdir(parents=True)
    props = propensities or [0.5, 0.25, 0.1, 0.02]
    raw = pd.DataFrame(
        {
            "timestamp": ["2019-11-24 00:00:00+00:00"] * 4,
            "item_id": [2, 0, 2, 1],
            "position": [1, 3, 2, 1],
            "click": [0, 1, 0, 0],
            "propensity_score": props,
            "user_feature_0": ["aa", "bb", "aa", "cc"],
            "user_feature_1": ["x", "x", "y", "y"],
            "user-item_affinity_0": [0.0, 1.0, 0.0, 0.0],
            "user-item_affinity_1": [0.0, 0.0, 2.0, 0.0],
            "user-item_affinity_2": [3.0, 0.0, 0.0, 0.0],
        },
        index=[10, 11, 12, 13],
    )
    raw.to_csv(folder / f"{campaign}.csv")
    pd.DataFrame({"item_id": [0, 1, 2], "item_feature_0": [0.1, 0.2, 0.3]}).to_csv(
        folder / "item_context.csv"
    )


class TestOpenBandit:
    def test_written(self, tmp_path: Path) -> None:
        make_obd(tmp_path)
        ds = loaders.load_open_bandit(tmp_path, policy="bts", campaign="men")
        assert ds.models == ("item_0", "item_1", "item_2")
        assert ds.query_ids.tolist() == ["bts/men/10", "bts/men/11", "bts/men/12", "bts/men/13"]
        assert ds.has_propensities and not ds.is_full_information
        np.testing.assert_array_equal(ds.logged_action, [2, 0, 2, 1])
        np.testing.assert_array_equal(ds.propensity, [0.5, 0.25, 0.1, 0.02])
        assert ds.observed.sum(axis=1).tolist() == [1, 1, 1, 1]
        assert ds.quality[1, 0] == 1.0 and np.isnan(ds.quality[1, 1])
        assert np.nanmax(ds.cost) == 0.0
        names = ds.feature_names
        assert names[:5] == (
            "user_feature_0=aa",
            "user_feature_0=bb",
            "user_feature_0=cc",
            "user_feature_1=x",
            "user_feature_1=y",
        )
        assert names[5:] == (
            "user-item_affinity_0",
            "user-item_affinity_1",
            "user-item_affinity_2",
            "position",
        )
        np.testing.assert_array_equal(ds.features[:, names.index("position")], [0, 2, 1, 0])
        np.testing.assert_array_equal(ds.features[0, :5], [1, 0, 0, 1, 0])
        assert ds.features[0, names.index("user-item_affinity_2")] == 3.0

    def test_hashed_user_features_share_a_layout(self, tmp_path: Path) -> None:
        make_obd(tmp_path)
        ds = loaders.load_open_bandit(tmp_path, "bts", "men", user_features="hashed", hash_buckets=8)
        assert ds.n_features == 2 * 8 + 3 + 1
        assert ds.feature_names[0] == "user_feature_0#0"
        np.testing.assert_array_equal(ds.features[:, :16].sum(axis=1), [2, 2, 2, 2])
        again = loaders.load_open_bandit(tmp_path, "bts", "men", user_features="hashed", hash_buckets=8)
        np.testing.assert_array_equal(ds.features, again.features)

    def test_zero_propensity_floor_default(self, tmp_path: Path) -> None:
        make_obd(tmp_path, propensities=[0.5, 0.0, 0.1, 0.0])
        with pytest.warns(
            DataWarning, match=r"2 zero propensities floored to 1e-06 \(zero_propensity='floor'\)"
        ):
            ds = loaders.load_open_bandit(tmp_path, "bts", "men")
        np.testing.assert_array_equal(
            ds.propensity, [0.5, OPEN_BANDIT_PROPENSITY_FLOOR, 0.1, OPEN_BANDIT_PROPENSITY_FLOOR]
        )
        assert "2 zero propensities floored" in ds.meta["zero_propensity"]

    @pytest.mark.filterwarnings("ignore:load_open_bandit. items .* are never shown")
    def test_zero_propensity_drop_and_error(self, tmp_path: Path) -> None:
        make_obd(tmp_path, propensities=[0.5, 0.0, 0.1, 0.0])
        with pytest.warns(DataWarning, match="2 impressions with zero propensity dropped"):
            ds = loaders.load_open_bandit(tmp_path, "bts", "men", zero_propensity="drop")
        assert ds.query_ids.tolist() == ["bts/men/10", "bts/men/12"]
        with pytest.raises(
            SchemaError,
            match=r"2 impressions of .* have propensity_score 0.0 .* zero_propensity='floor' or 'drop'",
        ):
            loaders.load_open_bandit(tmp_path, "bts", "men", zero_propensity="error")

    def test_invalid_propensity_is_always_an_error(self, tmp_path: Path) -> None:
        make_obd(tmp_path, propensities=[0.5, 1.5, 0.1, 0.2])
        with pytest.raises(SchemaError, match=r"propensity_score must lie in \[0, 1\], got 1.5 at row 11"):
            loaders.load_open_bandit(tmp_path, "bts", "men")

    def test_errors(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match=r"policy must be one of \['random', 'bts'\], got 'ucb'"):
            loaders.load_open_bandit(tmp_path, "ucb")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match=r"zero_propensity must be one of .* got 'ignore'"):
            loaders.load_open_bandit(tmp_path, zero_propensity="ignore")  # type: ignore[arg-type]
        with pytest.raises(FileNotFoundError, match=r"expected <dir>/<policy>/<campaign>/<campaign>.csv"):
            loaders.load_open_bandit(tmp_path, "random", "all")

    def test_corrupt_files_are_named(self, tmp_path: Path) -> None:
        make_obd(tmp_path)
        (tmp_path / "bts" / "men" / "men.csv").write_bytes(b'"unclosed,quote\n1,2\n')
        with pytest.raises(
            FileFormatError, match=r"men\.csv is not a readable CSV file: .*EOF inside string"
        ):
            loaders.load_open_bandit(tmp_path, "bts", "men")
        make_llmrouter(tmp_path / "llmrouter")
        (tmp_path / "llmrouter" / "llm_candidates.json").write_text('{"m1": ')
        with pytest.raises(FileFormatError, match=r"llm_candidates\.json is not a readable JSON file"):
            loaders.load_llmrouter(tmp_path / "llmrouter")
        (tmp_path / "rb.parquet").write_bytes(b"not parquet")
        with pytest.raises(FileFormatError, match=r"rb\.parquet is not a readable parquet file"):
            loaders.load_routerbench(tmp_path / "rb.parquet")

    @pytest.mark.datasets
    @pytest.mark.parametrize("policy", ["random", "bts"])
    def test_real_files(self, policy: str) -> None:
        root = shared_dataset("obd-small")
        for campaign, n_items in (("all", 80), ("men", 34), ("women", 46)):
            with warnings.catch_warnings():
                warnings.simplefilter("error", DataWarning)  # the sample has no zero propensities
                ds = loaders.load_open_bandit(root, policy, campaign)  # type: ignore[arg-type]
            assert ds.n_queries == 10_000 and ds.n_models == n_items
            assert ds.feature_names[-1] == "position"
            assert set(np.unique(ds.features[:, -1])) == {0.0, 1.0, 2.0}
            assert sum(n.startswith("user-item_affinity_") for n in ds.feature_names) == n_items
            assert ds.propensity is not None and (ds.propensity > 0).all()
            if policy == "random":
                np.testing.assert_allclose(ds.propensity, 1 / n_items)
        ctr = np.nanmean(loaders.load_open_bandit(root, policy, "all").quality)
        assert ctr == pytest.approx({"random": 0.0038, "bts": 0.0042}[policy], abs=0.0002)


# ---------------------------------------------------------------------------------------------------- dispatcher
class TestLoadDataset:
    def test_sample_and_paths(self, tmp_path: Path, small: LoggedDataset) -> None:
        assert_datasets_equal(loaders.load_dataset("sample"), load_sample())
        path = small.save(tmp_path / "logs.parquet")
        assert_datasets_equal(loaders.load_dataset(path), small)
        assert_datasets_equal(loaders.load_dataset(str(path)), small)

    def test_names_under_root(self, tmp_path: Path) -> None:
        make_routellm(tmp_path / "routellm")
        make_llmrouter(tmp_path / "llmrouter")
        make_routerarena(tmp_path / "routerarena")
        make_obd(tmp_path / "obd-small", policy="random", campaign="all")
        assert loaders.load_dataset("routellm-mmlu", root=tmp_path).n_queries == 3
        assert loaders.load_dataset("routellm-gsm8k", root=tmp_path).n_queries == 2
        assert loaders.load_dataset("routellm-mt_bench", root=tmp_path).n_queries == 2
        assert loaders.load_dataset("llmrouter", root=tmp_path).n_queries == 3
        with pytest.warns(DataWarning):
            assert loaders.load_dataset("llmrouter", root=tmp_path, split="test").n_queries == 1
            assert loaders.load_dataset("routerarena", root=tmp_path).n_queries == 2
        assert loaders.load_dataset("open-bandit-random", root=tmp_path).has_propensities

    def test_root_from_environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        make_routellm(tmp_path / "routellm")
        monkeypatch.setenv("ROUTING_ENV_DATASETS", str(tmp_path))
        assert loaders.load_dataset("routellm-mmlu").n_queries == 3

    def test_errors(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("ROUTING_ENV_DATASETS", raising=False)
        with pytest.raises(ConfigurationError, match=r"load_dataset\('llmrouter'\) needs root="):
            loaders.load_dataset("llmrouter")
        with pytest.raises(ConfigurationError, match="'routerbench-x' is neither a dataset name"):
            loaders.load_dataset("routerbench-x")
        with pytest.raises(ConfigurationError, match="takes no loader options"):
            loaders.load_dataset("sample", split="test")

    @pytest.mark.datasets
    def test_real_names(self) -> None:
        root = shared_dataset("routellm").parent
        assert loaders.load_dataset("routellm-mt_bench", root=root).n_queries == 144
        assert loaders.load_dataset("open-bandit-bts", root=root, campaign="men").n_models == 34


# ---------------------------------------------------------------------------------------------------- model order
class TestModelOrder:
    """Every split or file of a source gets the same, documented model order: the source's own list."""

    def test_llmrouter_splits_follow_the_candidate_list(self, tmp_path: Path) -> None:
        make_llmrouter(tmp_path)
        # The test file lists the scores in another order than the train file.
        test = [
            {"question": "Write a sort", "scores": {"m2": 0.5, "m1": 0.0}},
            {"question": "Name a prime", "scores": {"m2": 1.0, "m1": 1.0}},
        ]
        (tmp_path / "dcrouter_test.json").write_text(json.dumps(test))
        train = loaders.load_llmrouter(tmp_path, "train")
        held_out = loaders.load_llmrouter(tmp_path, "test")
        everything = loaders.load_llmrouter(tmp_path, "all")
        assert train.models == held_out.models == everything.models == ("m1", "m2")
        np.testing.assert_array_equal(held_out.quality[0], [0.0, 0.5])
        cands = json.loads((tmp_path / "llm_candidates.json").read_text())
        (tmp_path / "llm_candidates.json").write_text(
            json.dumps({k: cands[k] for k in ("m2", "unscored", "m1")})
        )
        assert (
            loaders.load_llmrouter(tmp_path, "train").models
            == loaders.load_llmrouter(tmp_path, "test").models
            == ("m2", "m1")
        )

    def test_routellm_tasks_share_the_weak_then_strong_order(self, tmp_path: Path) -> None:
        make_routellm(tmp_path)
        gsm = pd.read_csv(tmp_path / "gsm8k_responses.csv")
        gsm[["prompt", GPT4, MIX, f"{GPT4}_response", f"{MIX}_response"]].to_csv(
            tmp_path / "gsm8k_responses.csv", index=False
        )
        for task in ("mmlu", "gsm8k", "mt_bench"):
            assert loaders.load_routellm(tmp_path, task).models == (MIX, GPT4), task  # type: ignore[arg-type]
        ds = loaders.load_routellm(tmp_path, "gsm8k")
        np.testing.assert_array_equal(ds.quality, [[1, 1], [0, 1]])

    def test_open_bandit_items_follow_the_affinity_columns(self, tmp_path: Path) -> None:
        # Item 2 is never shown in this file, yet the campaign has three items (one affinity column each).
        make_obd(tmp_path, propensities=[0.5, 0.25, 0.1, 0.02])
        path = tmp_path / "bts" / "men" / "men.csv"
        raw = pd.read_csv(path, index_col=0)
        raw["item_id"] = [1, 0, 1, 0]
        raw.to_csv(path)
        with pytest.warns(DataWarning, match=r"items \['item_2'\] are never shown"):
            ds = loaders.load_open_bandit(tmp_path, "bts", "men")
        assert ds.models == ("item_0", "item_1", "item_2")
        raw["item_id"] = [3, 0, 1, 0]
        raw.to_csv(path)
        with pytest.raises(
            SchemaError,
            match=r"item_id 3 has no user-item_affinity_3 column; the affinity columns describe 3 items",
        ):
            loaders.load_open_bandit(tmp_path, "bts", "men")

    @pytest.mark.datasets
    def test_real_llmrouter_splits_share_one_order(self) -> None:
        root = shared_dataset("llmrouter")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            train, test = loaders.load_llmrouter(root, "train"), loaders.load_llmrouter(root, "test")
        cands = list(json.loads((root / "llm_candidates.json").read_text()))
        assert train.models == test.models == tuple(m for m in cands if m in set(train.models))
