"""The toy service's fake: star ``n`` has ``4 + n % 3`` epochs, 1.5 days apart from MJD 60000,
those after the archive's "today" (``FakeArchive.now_mjd``) not observed yet."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from harvester.testing import FakeRequest, FakeRoute, Reply, json_reply, text_reply

if TYPE_CHECKING:
    from harvester.testing import FakeArchive


def epochs(star: int, now_mjd: float) -> list[dict[str, float]]:
    rows = [{"mjd": 60000.0 + 1.5 * k, "flux": round(star % 100 + 0.25 * k, 2)} for k in range(4 + star % 3)]
    return [row for row in rows if row["mjd"] <= now_mjd]


async def _lightcurve(req: FakeRequest, archive: FakeArchive) -> Reply:
    query = parse_qs(req.query)
    star = (query.get("id") or [""])[0]
    if not star.isdigit():
        return text_reply(400, "id must be a star number")
    since = float((query.get("since") or ["-inf"])[0])
    rows = [row for row in epochs(int(star), archive.now_mjd) if row["mjd"] > since]
    return json_reply({"rows": rows})


ROUTES = (FakeRoute("/toy/lightcurve", ("GET",), _lightcurve),)
