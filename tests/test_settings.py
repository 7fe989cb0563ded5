"""Settings: layering, validation with one clear line, tokens as secrets, .env.example in sync."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from harvester.errors import ConfigError
from harvester.settings import Settings, load_settings, read_targets_file

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_any_file() -> None:
    """With no config file, the built-in defaults apply (IRSA URL, polite budgets)."""
    s = load_settings()
    assert s.data_sources.ztf.irsa.base_url == "https://irsa.ipac.caltech.edu/cgi-bin/ZTF/nph_light_curves"
    assert s.data_sources.ztf.rate_limit.requests_per_second == 2
    assert s.data_sources.ztf.rate_limit.max_concurrency == 4
    assert s.data_sources.tess.rate_limit.requests_per_second == 10
    assert s.data_sources.mast.rate_limit.max_concurrency == 8
    assert s.output == Path("data/raw")


def test_precedence_yaml_dotenv_env_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each layer overrides the one below: defaults < YAML < .env < environment < CLI overrides."""
    url = "HARVESTER_DATA_SOURCES__ZTF__IRSA__BASE_URL"
    write(
        tmp_path / "config/base.yaml",
        "data_sources:\n  ztf:\n    irsa:\n      base_url: http://yaml/x\n"
        "output: from-yaml\nformat: jsonl\nlimit: 3\n",
    )
    assert load_settings().data_sources.ztf.irsa.base_url == "http://yaml/x"
    write(tmp_path / ".env", f"{url}=http://dotenv/x\nHARVESTER_OUTPUT=from-dotenv\n")
    s = load_settings()
    assert (s.data_sources.ztf.irsa.base_url, s.output, s.format) == (
        "http://dotenv/x",
        Path("from-dotenv"),
        "jsonl",
    )
    monkeypatch.setenv(url, "http://env/x")
    assert load_settings().data_sources.ztf.irsa.base_url == "http://env/x"
    s = load_settings(data_sources={"ztf": {"irsa": {"base_url": "http://cli/x"}}})
    assert s.data_sources.ztf.irsa.base_url == "http://cli/x"
    assert s.limit == 3  # untouched keys keep their lower-layer values


def test_cli_override_merges_into_nested_yaml(tmp_path: Path) -> None:
    """Overriding only the cone's ra keeps dec and radius from the YAML."""
    write(
        tmp_path / "c.yaml",
        "data_sources:\n  ztf:\n    irsa:\n      cone_search: {ra: 10, dec: 20, radius: 0.01}\n",
    )
    s = load_settings(tmp_path / "c.yaml", data_sources={"ztf": {"irsa": {"cone_search": {"ra": 11.5}}}})
    cone = s.data_sources.ztf.irsa.cone_search
    assert cone is not None and (cone.ra, cone.dec, cone.radius) == (11.5, 20, 0.01)


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        (
            "data_sources:\n  ztf:\n    irsa:\n      cone_search: {ra: 10, dec: 20, radius: 0.5}\n",
            "data_sources.ztf.irsa.cone_search.radius",
        ),
        (
            "data_sources:\n  ztf:\n    irsa:\n      cone_search: {ra: 360, dec: 20, radius: 0.01}\n",
            "data_sources.ztf.irsa.cone_search.ra",
        ),
        (
            "data_sources:\n  ztf:\n    irsa:\n      cone_search: {ra: 1, dec: -91, radius: 0.01}\n",
            "data_sources.ztf.irsa.cone_search.dec",
        ),
        ("data_sources:\n  ztf:\n    irsa:\n      filters: [g]\n", "data_sources.ztf.irsa.filters.0"),
        (
            "data_sources:\n  ztf:\n    irsa:\n      mjd_range: [59850, 59800]\n",
            "data_sources.ztf.irsa.mjd_range",
        ),
        (
            "data_sources:\n  ztf:\n    rate_limit: {requests_per_second: 0, max_concurrency: 1}\n",
            "data_sources.ztf.rate_limit.requests_per_second",
        ),
        ("data_sources:\n  ztf:\n    irsa:\n      radius_typo: 1\n", "data_sources.ztf.irsa.radius_typo"),
        ("limit: many\n", "limit"),
    ],
)
def test_bad_value_is_one_line_naming_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    """A bad or unknown value is a ConfigError of one line that names the dotted key."""
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path / "c.yaml", yaml_text))
    message = str(info.value)
    assert "\n" not in message
    assert f"invalid setting {key}:" in message


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    """Malformed YAML is reported with the file and line, not a parser traceback."""
    with pytest.raises(ConfigError, match=r"c\.yaml: malformed YAML at line 2"):
        load_settings(write(tmp_path / "c.yaml", "output: x\n  bad: [\n"))


def test_missing_config_file() -> None:
    """An explicit --config that does not exist is a clear error."""
    with pytest.raises(ConfigError, match=r"config file not found: nope\.yaml"):
        load_settings("nope.yaml")


def test_tokens_use_unprefixed_names_and_stay_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """ZTF/TESS/MAST tokens come from the guide's unprefixed variables and never show in repr or dumps."""
    monkeypatch.setenv("ZTF_API_TOKEN", "ztf-sekrit")
    monkeypatch.setenv("MAST_API_TOKEN", "mast-sekrit")
    s = load_settings()
    assert s.ztf_api_token is not None and s.ztf_api_token.get_secret_value() == "ztf-sekrit"
    assert "sekrit" not in repr(s)
    assert "sekrit" not in str(s.digest_dict())
    assert sorted(s.secrets()) == ["mast-sekrit", "ztf-sekrit"]


def test_targets_file_rows(tmp_path: Path) -> None:
    """A targets CSV gives one cone per row, with the default radius where none is given."""
    path = write(tmp_path / "t.csv", "name,ra,dec,radius\nM101,210.8,54.35,0.01\nother,10,-5,\n")
    targets = read_targets_file(path, default_radius=0.002)
    assert [(t.name, t.ra, t.dec, t.radius) for t in targets] == [
        ("M101", 210.8, 54.35, 0.01),
        ("other", 10.0, -5.0, 0.002),
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name,ra\nx,1\n", "needs a header with ra and dec"),
        ("name,ra,dec\nx,abc,1\n", "line 2: could not convert"),
        ("name,ra,dec\nx,1,95\n", "line 2: dec: Input should be less than or equal to 90"),
    ],
)
def test_bad_targets_file(tmp_path: Path, text: str, match: str) -> None:
    """A malformed targets file names the file and the line."""
    with pytest.raises(ConfigError, match=match):
        read_targets_file(write(tmp_path / "t.csv", text), default_radius=0.002)


def _env_names(model: type, prefix: str) -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        alias = field.validation_alias
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            continue  # nested models are set with "__" paths, checked separately
        if alias is not None:
            names.update(c for c in alias.choices)
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def test_env_example_lists_every_top_level_variable() -> None:
    """.env.example names every token and every top-level setting's variable, and nothing unknown."""
    text = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.M))
    expected = _env_names(Settings, "HARVESTER_")
    assert expected - listed == set(), "missing from .env.example"
    nested = {n for n in listed if "__" in n}
    for name in nested:  # every nested example must be a real settings path
        path = name.removeprefix("HARVESTER_").lower().split("__")
        model: object = Settings()
        for part in path:
            assert hasattr(model, part), f"{name}: no setting {part!r}"
            model = getattr(model, part)
    assert listed - expected - nested == set(), "unknown variables in .env.example"
