"""`--model-args k=v,...`: splitting that copes with commas and '=' in values, typed options, clear errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from unibench.errors import UserError
from unibench.modelargs import build_options, parse_kv


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    (None, {}),
    ("path=/a/b", {"path": "/a/b"}),
    ("path=/a,b/c,name=x", {"path": "/a,b/c", "name": "x"}),          # a comma not followed by key= stays
    ("a=1, b=2", {"a": "1", "b": "2"}),
    ("prompt=\"a, b=c\",n=2", {"prompt": "a, b=c", "n": "2"}),        # quoted values hold anything
    ("prompt='x,y'", {"prompt": "x,y"}),
    ("url=http://h:1/v1?x=1&y=2", {"url": "http://h:1/v1?x=1&y=2"}),  # '=' inside a value
    ("empty=,next=1", {"empty": "", "next": "1"}),
    ("dotted.key=1,dash-key=2", {"dotted.key": "1", "dash-key": "2"}),
    ("trailing=1,", {"trailing": "1,"}),                             # nothing follows: the comma is data
])
def test_parse_kv(text, expected):
    assert parse_kv(text) == expected


@pytest.mark.parametrize("text, needle", [
    ("novalue", "--model-args: expected key=value at 'novalue'"),
    ("=x", "--model-args: expected key=value at '=x'"),
    ("a=1,a=2", "--model-args: 'a' given twice"),
    ("a=\"open", "--model-args: unterminated quote in value of 'a'"),
    ("a=\"x\"y", "--model-args: unexpected text after quoted value of 'a'"),
])
def test_parse_kv_errors(text, needle):
    with pytest.raises(UserError) as info:
        parse_kv(text)
    assert str(info.value) == needle


def test_flag_name_in_errors():
    with pytest.raises(UserError, match="^--extractor-args: expected key=value"):
        parse_kv("oops", flag="--extractor-args")


@dataclass
class Opts:
    path: Path
    batch: int = 1
    temperature: float = 0.0
    sample: bool = False
    limit: int | None = None        # PEP 604 spelling, as the adapters write it
    device: Optional[str] = None
    name: str = "m"
    tags: list = field(default_factory=list)


def test_build_options_converts_types():
    o = build_options(Opts, "path=~/x,batch=4,temperature=0.7,sample=yes,limit=none,device=cuda:0")
    assert o.path == Path("~/x").expanduser() and o.batch == 4 and o.temperature == 0.7
    assert o.sample is True and o.limit is None and o.device == "cuda:0" and o.name == "m"
    assert build_options(Opts, "path=p,limit=5").limit == 5
    assert build_options(Opts, "path=p,device=").device is None
    for value, expected in [("1", True), ("true", True), ("ON", True), ("0", False), ("false", False), ("No", False)]:
        assert build_options(Opts, f"path=p,sample={value}").sample is expected


@pytest.mark.parametrize("text, needle", [
    ("", "--model-args: 'path' is required for model 'demo'"),
    ("path=p,batch=four", "--model-args: 'batch' must be an integer, got 'four'"),
    ("path=p,temperature=hot", "--model-args: 'temperature' must be a number, got 'hot'"),
    ("path=p,sample=maybe", "--model-args: 'sample' must be true or false, got 'maybe'"),
    ("path=p,limit=x", "--model-args: 'limit' must be an integer, got 'x'"),
    ("path=p,colour=red", "--model-args: unknown key 'colour' for model 'demo' (known: path, batch, temperature, "
                          "sample, limit, device, name, tags)"),
])
def test_build_options_errors(text, needle):
    with pytest.raises(UserError) as info:
        build_options(Opts, text, owner="model 'demo'")
    assert str(info.value) == needle


def test_no_options_dataclass():
    @dataclass
    class Nothing:
        pass

    assert build_options(Nothing, "") == Nothing()
    with pytest.raises(UserError, match=r"unknown key 'x' \(known: none\)"):
        build_options(Nothing, "x=1")
