"""Settings: layering, validation with one clear line, tokens as secrets, .env.example in sync."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from harvester.archives.common import MastCone, read_targets_file
from harvester.archives.ztf.settings import IrsaCone
from harvester.errors import ConfigError
from harvester.settings import Settings, load_settings, packaged_targets

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


def test_without_a_config_file_sources_with_no_target_get_the_packaged_samples() -> None:
    """No config file: each source that names no target gets the sample targets shipped in the package."""
    s = load_settings()
    irsa, tess, mast = s.data_sources.ztf.irsa, s.data_sources.tess.query, s.data_sources.mast.query
    assert irsa.cone_search is not None
    assert (irsa.cone_search.ra, irsa.cone_search.dec, irsa.cone_search.radius) == (210.8023, 54.3489, 0.05)
    assert (irsa.filters, irsa.mjd_range) == (["zg", "zr"], (59800, 59850))
    assert tess.tic_ids == [261136679, 21132157, 278892590]
    assert mast.cone_search is not None and mast.cone_search.radius == 0.05
    assert set(packaged_targets()) == {"ztf", "tess", "mast"}


def test_a_source_with_its_own_target_never_sees_the_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cone of the user's own keeps every other query setting at its built-in default (no sample
    filters or MJD range); the sources left without targets still get theirs."""
    s = load_settings(data_sources={"ztf": {"irsa": {"cone_search": {"ra": 1, "dec": 2, "radius": 0.01}}}})
    irsa = s.data_sources.ztf.irsa
    assert irsa.cone_search is not None and irsa.cone_search.ra == 1
    assert (irsa.filters, irsa.mjd_range) == ([], None)
    assert s.data_sources.tess.query.tic_ids == [261136679, 21132157, 278892590]
    monkeypatch.setenv("HARVESTER_DATA_SOURCES__TESS__QUERY__TIC_IDS", "[5]")
    monkeypatch.setenv("HARVESTER_DATA_SOURCES__MAST__QUERY__COLLECTIONS", '["HST"]')
    s = load_settings()
    assert s.data_sources.tess.query.tic_ids == [5]
    assert s.data_sources.mast.query.cone_search is None  # constraints alone are a MAST query
    # a setting of a source without targets stays on top of its samples
    s = load_settings(data_sources={"ztf": {"irsa": {"filters": ["zi"]}}})
    assert s.data_sources.ztf.irsa.filters == ["zi"] and s.data_sources.ztf.irsa.cone_search is not None


def test_a_config_file_is_never_mixed_with_the_samples(tmp_path: Path) -> None:
    """With a config file (--config or config/base.yaml), a source it leaves without targets has none."""
    s = load_settings(write(tmp_path / "c.yaml", "data_sources:\n  tess:\n    query:\n      tic_ids: [7]\n"))
    assert s.data_sources.ztf.irsa.cone_search is None and s.data_sources.mast.query.cone_search is None
    assert s.data_sources.tess.query.tic_ids == [7]
    write(tmp_path / "config/base.yaml", "output: here\n")
    s = load_settings()
    assert s.data_sources.ztf.irsa.cone_search is None and s.data_sources.tess.query.tic_ids == []


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
        (
            "data_sources:\n  ztf:\n    irsa:\n      cone_search: {ra: 10, dec: 20, radius: 0.2}\n",
            "data_sources.ztf.irsa.cone_search.radius",
        ),
        (
            "data_sources:\n  mast:\n    query:\n      cone_search: {ra: 10, dec: 20, radius: 12}\n",
            "data_sources.mast.query.cone_search.radius",
        ),
        (
            "data_sources:\n  mast:\n    query:\n      targets: [{ra: 10, dec: 20, radius: 0}]\n",
            "data_sources.mast.query.targets.0.radius",
        ),
        (
            "data_sources:\n  mast:\n    query:\n      cone_search: {ra: 10, dec: 95, radius: 0.2}\n",
            "data_sources.mast.query.cone_search.dec",
        ),
    ],
)
def test_bad_value_is_one_line_naming_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    """A bad or unknown value is a ConfigError of one line that names the dotted key."""
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path / "c.yaml", yaml_text))
    message = str(info.value)
    assert "\n" not in message
    assert f"invalid setting {key}:" in message


def test_mast_cone_takes_mast_s_radius_not_irsa_s(tmp_path: Path) -> None:
    """0.2° (astroquery's default MAST radius) is a valid MAST cone and leaves ZTF alone; ZTF keeps
    IRSA's 0.1667° cap; each cone is its archive's model."""
    config = write(
        tmp_path / "c.yaml",
        "data_sources:\n  ztf:\n    irsa:\n      cone_search: {ra: 10, dec: 20, radius: 0.05}\n"
        "  mast:\n    query:\n      cone_search: {ra: 10, dec: 20, radius: 0.2}\n"
        "      targets: [{ra: 11, dec: 21, radius: 10}]\n",
    )
    s = load_settings(config)
    mast, ztf = s.data_sources.mast.query, s.data_sources.ztf.irsa
    assert isinstance(mast.cone_search, MastCone) and mast.cone_search.radius == 0.2
    assert mast.targets[0].radius == 10
    assert isinstance(ztf.cone_search, IrsaCone) and ztf.cone_search.radius == 0.05


def test_ztf_radius_over_irsa_s_cap_is_one_line_naming_the_ztf_key(tmp_path: Path) -> None:
    """0.2° for ZTF is refused in one line that names the ztf key and IRSA's cap."""
    config = write(
        tmp_path / "c.yaml",
        "data_sources:\n  ztf:\n    irsa:\n      cone_search: {ra: 10, dec: 20, radius: 0.2}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert str(info.value) == (
        "invalid setting data_sources.ztf.irsa.cone_search.radius: "
        "Input should be less than or equal to 0.1667 (got 0.2)"
    )


def test_run_ztf_is_not_stopped_by_a_mast_radius_of_0_2(tmp_path: Path) -> None:
    """A MAST cone of 0.2° in the config no longer stops `run --source ztf` (exit 0, records written)."""
    from typer.testing import CliRunner

    from harvester.cli import app

    config = write(
        tmp_path / "c.yaml",
        "data_sources:\n  ztf:\n    irsa:\n      cone_search: {ra: 210.8023, dec: 54.3489, radius: 0.05}\n"
        "  mast:\n    query:\n      cone_search: {ra: 210.8023, dec: 54.3489, radius: 0.2}\n",
    )
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--source",
            "ztf",
            "--offline",
            "--limit",
            "5",
            "--config",
            str(config),
            "--log-format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "data/raw/ztf").glob("record_*.json"))) == 5


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
    ztf, tess = s.token("ztf"), s.token("tess")
    assert ztf is not None and ztf.get_secret_value() == "ztf-sekrit"
    assert tess is not None and tess.get_secret_value() == "mast-sekrit"  # TESS falls back to MAST's
    assert "sekrit" not in repr(s)
    assert "sekrit" not in str(s.digest_dict())
    assert sorted(s.secrets()) == ["mast-sekrit", "ztf-sekrit"]


def test_targets_file_rows(tmp_path: Path) -> None:
    """A targets CSV gives one cone per row, with the default radius where none is given."""
    path = write(tmp_path / "t.csv", "name,ra,dec,radius\nM101,210.8,54.35,0.01\nother,10,-5,\n")
    targets = read_targets_file(path, default_radius=0.002, cone=IrsaCone)
    assert [(t.name, t.ra, t.dec, t.radius) for t in targets] == [
        ("M101", 210.8, 54.35, 0.01),
        ("other", 10.0, -5.0, 0.002),
    ]


def test_targets_file_rows_meet_the_archive_s_cone(tmp_path: Path) -> None:
    """A targets-file row is checked against its archive's cone: 0.2° is a MAST cone, not an IRSA one."""
    path = write(tmp_path / "t.csv", "name,ra,dec,radius\nwide,10,20,0.2\n")
    (cone,) = read_targets_file(path, default_radius=0.05, cone=MastCone)
    assert isinstance(cone, MastCone) and cone.radius == 0.2
    with pytest.raises(ConfigError, match=r"line 2: radius: Input should be less than or equal to 0\.1667"):
        read_targets_file(path, default_radius=0.002, cone=IrsaCone)
    with pytest.raises(ConfigError, match=r"line 2: radius: Input should be less than or equal to 10"):
        read_targets_file(
            write(tmp_path / "w.csv", "ra,dec,radius\n1,2,11\n"), default_radius=1, cone=MastCone
        )


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
        read_targets_file(write(tmp_path / "t.csv", text), default_radius=0.002, cone=IrsaCone)


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
    """.env.example names every token and every top-level setting's variable, and nothing unknown
    but the standard AWS variables harvester honours (for S3 mirrors and signed reads)."""
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
    aws = {
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
    }
    assert listed - expected - nested == aws, "unknown variables in .env.example"


def test_a_mast_targets_file_is_read_with_mast_s_cone(tmp_path: Path) -> None:
    """The MAST source and its work units read a targets file with MAST's limit, not IRSA's."""
    from harvester.archives.mast.source import MastSource
    from harvester.executors.units import plan_units

    path = write(tmp_path / "t.csv", "name,ra,dec,radius\nwide,10,20,0.2\n")
    settings = load_settings(
        None, data_sources={"mast": {"query": {"cone_search": None, "targets_file": str(path)}}}
    )
    (target,) = MastSource(settings).targets()
    assert target.cone is not None and target.cone.radius == 0.2
    (unit,) = plan_units("mast", settings)
    assert [t["radius"] for t in unit.targets] == [0.2]


def test_the_standard_aws_variables_come_from_the_environment_over_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 routes read AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... like every AWS tool, and from the
    .env file too (under the environment); the secret ones are redacted like archive tokens."""
    import os

    from harvester.archives.ztf.source import ZtfSource

    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    write(
        tmp_path / ".env",
        "AWS_ENDPOINT_URL=http://dotenv:9000\nAWS_ACCESS_KEY_ID=AKIADOTENV\nAWS_SECRET_ACCESS_KEY=dotenv-secret\n",
    )
    s = load_settings(data_sources={"ztf": {"route": "hats"}})
    assert s.aws_environ() == {
        "AWS_ENDPOINT_URL": "http://dotenv:9000",
        "AWS_ACCESS_KEY_ID": "AKIADOTENV",
        "AWS_SECRET_ACCESS_KEY": "dotenv-secret",
    }
    assert "dotenv-secret" in s.secrets() and "AKIADOTENV" not in s.secrets()
    assert ZtfSource(s).hats_route.endpoint == "http://dotenv:9000"
    shipped = pickle.loads(pickle.dumps(s))  # noqa: S301  (to a Dask worker or a Prefect task: no .env there)
    assert shipped.aws_environ() == s.aws_environ() and shipped.secrets() == s.secrets()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env:9000")
    assert ZtfSource(load_settings()).hats_route.endpoint == "http://env:9000"
