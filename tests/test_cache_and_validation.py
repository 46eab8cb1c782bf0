"""The rationale cache's row limit (least recently used rows go first, old files keep working) and
the server-side checks of EncodeSettings and GraceConfig (what a script may send a public app)."""

from __future__ import annotations

import math
import sqlite3

import pytest

from grace.evaluation.cache import MAX_ROWS_ENV, RationaleCache
from grace.model.prompts import TEMPLATES
from grace.model.settings import EncodeSettings
from grace.training.config import GraceConfig

# -- the rationale cache -------------------------------------------------------------------


def test_cache_drops_the_least_recently_used_rows(tmp_path):
    cache = RationaleCache(tmp_path / "r.sqlite", max_rows=3)
    for i, text in enumerate(["first", "second", "third"]):
        cache.put_many("s", [text], [[i]])
    assert cache.get_many("s", ["first"]) == {0: [0]}  # reading "first" makes "second" the oldest
    cache.put_many("s", ["fourth"], [[3]])
    assert cache.count() == 3
    assert cache.get_many("s", ["first", "second", "third", "fourth"]) == {0: [0], 2: [2], 3: [3]}


def test_cache_keeps_the_order_within_one_batch(tmp_path):
    cache = RationaleCache(tmp_path / "r.sqlite", max_rows=3)
    cache.put_many("s", ["a", "b", "c"], [[1], [2], [3]])
    cache.put_many("s", ["d", "e"], [[4], [5]])
    assert cache.get_many("s", ["a", "b", "c", "d", "e"]) == {2: [3], 3: [4], 4: [5]}


def test_cache_row_limit_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_ROWS_ENV, "7")
    assert RationaleCache(tmp_path / "r.sqlite").max_rows == 7
    assert RationaleCache(tmp_path / "r.sqlite", max_rows=3).max_rows == 3
    monkeypatch.setenv(MAX_ROWS_ENV, "many")
    with pytest.raises(ValueError, match=MAX_ROWS_ENV):
        RationaleCache(tmp_path / "r.sqlite")
    monkeypatch.delenv(MAX_ROWS_ENV)
    assert RationaleCache(tmp_path / "r.sqlite").max_rows == 200_000
    with pytest.raises(ValueError, match="max_rows"):
        RationaleCache(tmp_path / "r.sqlite", max_rows=0)


def test_cache_opens_a_file_from_before_the_row_limit(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as c:  # the table as the cache wrote it before it had a "used" column
        c.execute("CREATE TABLE rationales (settings TEXT NOT NULL, text_hash TEXT NOT NULL, "
                  "ids TEXT NOT NULL, finished INTEGER NOT NULL, PRIMARY KEY (settings, text_hash))")
        c.execute("INSERT INTO rationales VALUES (?, ?, ?, ?)", ("s", RationaleCache._h("old"), "[7, 8]", 1))
    c.close()
    cache = RationaleCache(path, max_rows=2)
    assert cache.get_many("s", ["old"]) == {0: [7, 8]}
    cache.put_many("s", ["new", "newer"], [[1], [2]])  # the old row, read before them, is the oldest
    assert cache.get_many("s", ["old", "new", "newer"]) == {1: [1], 2: [2]}
    assert RationaleCache(path).count() == 2  # and the migrated file opens again


# -- EncodeSettings ------------------------------------------------------------------------


def test_encode_defaults_and_known_prompts_are_valid():
    EncodeSettings().validate(known_prompt_only=True)
    EncodeSettings(sample=True, seed=1).validate(known_prompt_only=True)
    for name in TEMPLATES:
        EncodeSettings(prompt=name).validate(known_prompt_only=True)


def test_template_files_are_for_the_library_only(tmp_path):
    path = str(tmp_path / "mine.txt")
    EncodeSettings(prompt=path).validate()
    with pytest.raises(ValueError, match="Unknown prompt"):
        EncodeSettings(prompt=path).validate(known_prompt_only=True)


@pytest.mark.parametrize("changes, message", [
    ({"prompt": "no-such-template"}, "Unknown prompt 'no-such-template'"),
    ({"prompt": 3}, "Unknown prompt"),
    ({"temperature": math.nan}, "--temperature must be a finite number"),
    ({"temperature": math.inf, "sample": True}, "--temperature must be a finite number"),
    ({"top_p": math.nan}, "--top-p must be a finite number"),
    ({"repetition_penalty": -math.inf}, "--repetition-penalty must be a finite number"),
    ({"batch_size": math.nan}, "--batch-size must be a finite number"),
    ({"max_new_tokens": "48"}, "--max-new-tokens must be a finite number"),
    ({"seed": True}, "--seed must be a finite number"),
    ({"sample": True, "temperature": 0.0}, "--temperature above 0"),
    ({"sample": True, "temperature": -1.0}, "--temperature above 0"),
    ({"top_p": 0.0}, r"--top-p must be in \(0, 1\]"),
    ({"top_p": 1.01}, r"--top-p must be in \(0, 1\]"),
    ({"max_new_tokens": 0}, "--max-new-tokens must be between 1 and 512"),
    ({"max_new_tokens": 513}, "--max-new-tokens must be between 1 and 512"),
    ({"batch_size": 0}, "--batch-size must be at least 1"),
    ({"no_repeat_ngram": -1}, "--no-repeat-ngram must be 0"),
])
def test_encode_settings_refusals(changes, message):
    with pytest.raises(ValueError, match=message) as info:
        EncodeSettings(**changes).validate()
    assert "\n" not in str(info.value)


def test_encode_bounds_that_stay_valid():
    EncodeSettings(max_new_tokens=1).validate()
    EncodeSettings(max_new_tokens=512).validate()
    EncodeSettings(top_p=1.0).validate()
    EncodeSettings(temperature=0.0).validate()  # greedy decoding ignores the temperature


# -- GraceConfig ---------------------------------------------------------------------------


def test_config_defaults_are_valid():
    GraceConfig(data="x").validate()
    for method, mode in [("cl", "supervised"), ("simcse", "unsupervised")]:
        GraceConfig(data="x", method=method, mode=mode).validate()


@pytest.mark.parametrize("changes, message", [
    ({"reward_temperature": math.nan}, "--reward-temperature must be a finite number"),
    ({"sampling_temperature": math.nan}, "--sampling-temperature must be a finite number"),
    ({"lr": math.inf}, "--lr must be a finite number"),
    ({"lambda_hard": math.nan}, "--lambda-hard must be a finite number"),
    ({"max_minutes": math.inf}, "--max-minutes must be a finite number"),
    ({"lora_dropout": -math.inf}, "--lora-dropout must be a finite number"),
    ({"steps": math.nan}, "--steps must be a finite number"),
    ({"lambda_consistency": -0.1}, "--lambda-consistency must be 0"),
    ({"lambda_hard": -1.0}, "--lambda-hard must be 0"),
    ({"sampling_temperature": 0.0}, "--sampling-temperature must be above 0"),
    ({"top_p": 0.0}, r"--top-p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"--top-p must be in \(0, 1\]"),
    ({"max_minutes": -1.0}, "--max-minutes must be 0"),
])
def test_config_refusals(changes, message):
    with pytest.raises(ValueError, match=message) as info:
        GraceConfig(data="x", **changes).validate()
    assert "\n" not in str(info.value)
