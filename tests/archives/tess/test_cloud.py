"""Where a TESS product's cloud copy is: its key, its URL, and when the S3 route is on."""

from __future__ import annotations

import pytest

from harvester import api
from harvester.archives.tess.cloud import CloudRoute, cloud_route, product_key, s3_key
from harvester.archives.tess.settings import TessSettings
from harvester.archives.tess.source import TessSource
from harvester.errors import ConfigError
from harvester.settings import load_settings

UPSTREAM = "tess2020186164531-s0027-0000000469979925-0189-s_lc.fits"  # upstream-apis.md §4.2


def spoc(name: str, uri: str | None = None) -> dict[str, str]:
    return {"productFilename": name, "dataURI": uri or f"mast:TESS/product/{name}"}


def test_the_documented_example_key() -> None:
    """Sector, then the 16-digit TIC in four 4-digit folders, then the file name."""
    assert s3_key(469979925, 27, UPSTREAM) == f"tess/public/tid/s0027/0000/0004/6997/9925/{UPSTREAM}"


def test_a_product_key_comes_from_its_file_name() -> None:
    assert product_key(spoc(UPSTREAM)) == f"tess/public/tid/s0027/0000/0004/6997/9925/{UPSTREAM}"
    fast = "tess2023263165758-s0070-0000000278892590-0265-a_fast-lc.fits"
    assert product_key(spoc(fast)) == f"tess/public/tid/s0070/0000/0002/7889/2590/{fast}"


@pytest.mark.parametrize(
    "product",
    [
        spoc("hlsp_tess-spoc_tess_phot_0000000278892590-s0070_tess_v1_lc.fits"),  # HLSP: no cloud copy
        spoc(UPSTREAM, uri=f"mast:HLSP/tess-spoc/{UPSTREAM}"),  # not a mast:TESS/product/ URI
        spoc(UPSTREAM, uri="mast:TESS/product/other_lc.fits"),  # URI and name disagree
        spoc("tic55525572_lc.fits"),  # not the SPOC layout
        spoc("tess2020186164531-s0000-0000000469979925-0189-s_lc.fits"),  # sector 0
        spoc("tess2020186164531-s0027-0000000000000000-0189-s_lc.fits"),  # TIC 0
    ],
)
def test_products_without_a_cloud_copy_have_no_key(product: dict[str, str]) -> None:
    assert product_key(product) is None


def test_aws_is_virtual_hosted_and_an_endpoint_is_path_style() -> None:
    key = f"tess/public/tid/s0027/0000/0004/6997/9925/{UPSTREAM}"
    aws = CloudRoute("stpubdata")
    assert (
        aws.url(key) == f"https://stpubdata.s3.amazonaws.com/{key}"
        and aws.host == "stpubdata.s3.amazonaws.com"
    )
    mirror = CloudRoute("stpubdata", "http://127.0.0.1:9000")
    assert mirror.url(key) == f"http://127.0.0.1:9000/stpubdata/{key}" and mirror.host == "127.0.0.1"


def block(**tess: object) -> TessSettings:
    return TessSettings.model_validate(tess)


def test_the_route_is_on_by_default_and_follows_the_settings() -> None:
    assert cloud_route(block(), {}) == CloudRoute("stpubdata")
    assert cloud_route(block(cloud={"enabled": False}), {}) is None
    assert cloud_route(block(cloud={"bucket": "my-mirror"}), {}) == CloudRoute("my-mirror")


def test_aws_endpoint_variables_point_the_route_at_a_mirror() -> None:
    assert cloud_route(block(), {"AWS_ENDPOINT_URL": "http://minio:9000"}) == CloudRoute(
        "stpubdata", "http://minio:9000"
    )
    both = {"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://s3only:2"}
    assert cloud_route(block(), both) == CloudRoute("stpubdata", "http://s3only:2")
    setting = block(cloud={"endpoint_url": "https://mirror.example.org/"})
    assert cloud_route(setting, both) == CloudRoute("stpubdata", "https://mirror.example.org")


def test_a_bad_endpoint_variable_is_one_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^AWS_ENDPOINT_URL: must be an http\(s\) URL, got 'minio:9000'$"):
        cloud_route(block(), {"AWS_ENDPOINT_URL": "minio:9000"})


def test_a_mirror_of_mast_without_an_s3_endpoint_does_not_use_aws() -> None:
    """AWS's bucket is MAST's copy: a TESS base_url elsewhere (a mirror, a test server) keeps its files."""
    assert cloud_route(block(base_url="http://127.0.0.1:8080"), {}) is None
    with_endpoint = cloud_route(
        block(base_url="http://127.0.0.1:8080"), {"AWS_ENDPOINT_URL": "http://127.0.0.1:8080"}
    )
    assert with_endpoint == CloudRoute("stpubdata", "http://127.0.0.1:8080")


def test_bad_bucket_names_are_refused() -> None:
    settings = load_settings(None, data_sources={"tess": {"cloud": {"bucket": "stpubdata"}}})
    assert settings.data_sources.block("tess").cloud.bucket == "stpubdata"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"data_sources\.tess\.cloud\.bucket"):
        load_settings(None, data_sources={"tess": {"cloud": {"bucket": "S3://Bad_Bucket"}}})


def test_s3_has_its_own_budget_apart_from_mast() -> None:
    settings = load_settings(
        None,
        data_sources={
            "tess": {
                "query": {"tic_ids": [1]},
                "rate_limit": {"requests_per_second": 10, "max_concurrency": 8},
                "cloud": {"rate_limit": {"requests_per_second": 40, "max_concurrency": 12}},
            }
        },
    )
    budgets = api.host_limiters([TessSource(settings)]).budgets()
    assert budgets == {"mast.stsci.edu": (10, 8), "stpubdata.s3.amazonaws.com": (40, 12)}
    off = load_settings(None, data_sources={"tess": {"query": {"tic_ids": [1]}, "cloud": {"enabled": False}}})
    assert api.host_limiters([TessSource(off)]).budgets() == {"mast.stsci.edu": (10, 8)}
