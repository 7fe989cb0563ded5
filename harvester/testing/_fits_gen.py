"""Synthetic TESS SPOC light-curve files, laid out like the real ones (upstream-apis.md §3).

:func:`make_spoc_lightcurve` writes PRIMARY (header only), LIGHTCURVE (the 20 real columns with
their formats and units) and APERTURE (11×11 int32), with the header keys clients read and the
quirks they must survive: a block of NaN-TIME rows flagged 8 (Earth point), NaN PDCSAP_FLUX on many
flagged cadences, assorted QUALITY bits, an empty TEFF card for some targets. The flux is a sinusoid
(period and amplitude from :func:`~harvester.testing._tess.tess_target`) plus white noise, so a
periodogram finds the period when the file spans a few periods.

The bytes are a pure function of the arguments: DATE and the checksum comments are derived from the
sector, never from the wall clock.
"""

from __future__ import annotations

import io
import math

import numpy as np
from astropy.io import fits

from harvester.testing._sky import mjd_to_datetime, rng
from harvester.testing._tess import (
    BTJD_TO_MJD,
    TT_MINUS_UTC_D,
    camera_ccd,
    sector_start_btjd,
    tess_target,
)

__all__ = ["LIGHTCURVE_COLUMNS", "make_spoc_lightcurve"]

# (name, FITS format, unit, display format), as in every SPOC 2-minute file.
LIGHTCURVE_COLUMNS: tuple[tuple[str, str, str | None, str], ...] = (
    ("TIME", "D", "BJD - 2457000, days", "D14.7"),
    ("TIMECORR", "E", "d", "E14.7"),
    ("CADENCENO", "J", None, "I10"),
    ("SAP_FLUX", "E", "e-/s", "E14.7"),
    ("SAP_FLUX_ERR", "E", "e-/s", "E14.7"),
    ("SAP_BKG", "E", "e-/s", "E14.7"),
    ("SAP_BKG_ERR", "E", "e-/s", "E14.7"),
    ("PDCSAP_FLUX", "E", "e-/s", "E14.7"),
    ("PDCSAP_FLUX_ERR", "E", "e-/s", "E14.7"),
    ("QUALITY", "J", None, "B16.16"),
    ("PSF_CENTR1", "D", "pixel", "F10.5"),
    ("PSF_CENTR1_ERR", "E", "pixel", "E14.7"),
    ("PSF_CENTR2", "D", "pixel", "F10.5"),
    ("PSF_CENTR2_ERR", "E", "pixel", "E14.7"),
    ("MOM_CENTR1", "D", "pixel", "F10.5"),
    ("MOM_CENTR1_ERR", "E", "pixel", "E14.7"),
    ("MOM_CENTR2", "D", "pixel", "F10.5"),
    ("MOM_CENTR2_ERR", "E", "pixel", "E14.7"),
    ("POS_CORR1", "E", "pixels", "E14.7"),
    ("POS_CORR2", "E", "pixels", "E14.7"),
)

# Scattered QUALITY bits and how often each turns up among flagged cadences.
_SCATTERED_FLAGS = np.array([32, 128, 1024, 4096, 16384, 32768, 16, 2048, 512], dtype=np.int32)
_SCATTERED_WEIGHTS = np.array([0.18, 0.12, 0.2, 0.2, 0.05, 0.12, 0.04, 0.05, 0.04])
_PDC_NAN_FLAGS = 8 | 32 | 128 | 16384


def _utc_iso(btjd: float) -> str:
    return mjd_to_datetime(btjd + BTJD_TO_MJD - TT_MINUS_UTC_D).isoformat(timespec="milliseconds")[:23]


def _put(header: fits.Header, key: str, value: object, comment: str) -> None:
    """Set a card, cutting the comment to fit 80 columns as SPOC does (astropy would warn)."""
    used = len(fits.Card(key, value).image.rstrip())
    header[key] = (value, comment[: max(0, 80 - used - 3)])


def _cdpp(rel_sigma: float, hours: float, cadence_s: int) -> float:
    """White-noise CDPP (ppm) over ``hours``."""
    return round(rel_sigma * 1e6 / math.sqrt(hours * 3600.0 / cadence_s), 8)


def _procver(sector: int) -> str:
    if sector < 14:
        return "spoc-4.0.14-20190529"
    if sector < 40:
        return "spoc-4.0.37-20200818"
    if sector < 65:
        return "spoc-5.0.77-20221025"
    return "spoc-5.0.101-20231004"


def make_spoc_lightcurve(
    tic_id: int, sector: int, *, seed: int = 0, n_cadences: int = 2000, cadence_s: int = 120
) -> bytes:
    """A SPOC-layout light-curve FITS file for ``tic_id`` in ``sector``, as bytes.

    ``n_cadences`` rows at ``cadence_s`` seconds start near BTJD ``1325.29 + 27.4 (sector - 1)``
    (real 2-minute files have about 19,000 rows; the default keeps test suites fast). The same
    arguments always give the same bytes.
    """
    if n_cadences < 1 or cadence_s < 1 or tic_id < 1 or sector < 1:
        raise ValueError("tic_id, sector, n_cadences and cadence_s must be positive")
    target = tess_target(tic_id)
    camera, ccd = camera_ccd(tic_id, sector)
    g = rng(seed, "spoc-lc", tic_id, sector, cadence_s, n_cadences)
    n = n_cadences
    dt = cadence_s / 86400.0

    start = sector_start_btjd(sector) + 0.0021
    idx = np.arange(n)
    time = start + (idx + 0.5) * dt
    cadenceno = (90_000 + (sector - 1) * 19_728) * (120 // min(cadence_s, 120)) + idx

    quality = np.zeros(n, dtype=np.int32)
    block = max(1, round(0.02 * n)) if n >= 20 else 0
    block_start = int(n * 0.46)
    nan_time = np.zeros(n, dtype=bool)
    nan_time[block_start : block_start + block] = True
    quality[nan_time] = 8
    scattered = (g.random(n) < 0.035) & ~nan_time
    quality[scattered] |= g.choice(_SCATTERED_FLAGS, size=int(scattered.sum()), p=_SCATTERED_WEIGHTS)

    flux0 = 15000.0 * 10.0 ** (-0.4 * (target.tessmag - 10.0))
    rel_sigma = 1.0 / math.sqrt(flux0 * cadence_s * 0.8) + 60e-6
    signal = 1.0 + target.amplitude * np.sin(2.0 * np.pi * (time - 1325.0) / target.period_d + target.phase)
    pdc = flux0 * signal + g.normal(0.0, rel_sigma * flux0, n)
    pdc_err = rel_sigma * flux0 * (1.0 + 0.02 * g.standard_normal(n))
    span = max(time[-1] - time[0], dt)
    crowd = float(g.uniform(0.85, 0.99))
    sap = pdc * crowd * (1.0 - 0.003 * (time - time[0]) / span) + g.normal(0.0, 0.2 * rel_sigma * flux0, n)
    sap_err = pdc_err * crowd
    bkg_level = float(g.uniform(150.0, 1500.0))
    bkg = bkg_level * (1.0 + 0.3 * np.sin((time - time[0]) / span * np.pi)) + g.normal(0.0, 3.0, n)
    bkg_err = np.sqrt(np.abs(bkg)) * 0.06 + 0.5
    timecorr = 0.0055 * math.cos(math.radians(target.dec)) + 1e-5 * (time - time[0]) / span
    col0, row0 = float(g.uniform(60.0, 2000.0)), float(g.uniform(50.0, 2000.0))
    mom1 = col0 + g.normal(0.0, 0.002, n)
    mom2 = row0 + g.normal(0.0, 0.002, n)
    mom_err = np.abs(g.normal(0.008, 0.0005, n))
    psf_ok = sector < 14  # newer SPOC files no longer fit PSF centroids: all NaN
    psf1 = col0 + 0.1 + g.normal(0.0, 0.003, n) if psf_ok else np.full(n, np.nan)
    psf2 = row0 - 0.1 + g.normal(0.0, 0.003, n) if psf_ok else np.full(n, np.nan)
    psf_err = np.abs(g.normal(0.005, 0.0005, n)) if psf_ok else np.full(n, np.nan)
    pos1 = 0.01 * np.sin((time - time[0]) / span * 3.0) + g.normal(0.0, 0.002, n)
    pos2 = -0.01 * np.cos((time - time[0]) / span * 2.0) + g.normal(0.0, 0.002, n)

    pdc_nan = (quality & _PDC_NAN_FLAGS) != 0
    pdc_nan |= ((quality & 4096) != 0) & (g.random(n) < 0.6)
    for arr in (pdc, pdc_err):
        arr[pdc_nan] = np.nan
    for arr in (sap, sap_err, bkg, bkg_err, mom1, mom2, mom_err, psf1, psf2, psf_err, pos1, pos2):
        arr[nan_time] = np.nan
    time[nan_time] = np.nan
    timecorr[nan_time] = 0.0

    arrays: dict[str, np.ndarray] = {
        "TIME": time,
        "TIMECORR": timecorr,
        "CADENCENO": cadenceno,
        "SAP_FLUX": sap,
        "SAP_FLUX_ERR": sap_err,
        "SAP_BKG": bkg,
        "SAP_BKG_ERR": bkg_err,
        "PDCSAP_FLUX": pdc,
        "PDCSAP_FLUX_ERR": pdc_err,
        "QUALITY": quality,
        "PSF_CENTR1": psf1,
        "PSF_CENTR1_ERR": psf_err,
        "PSF_CENTR2": psf2,
        "PSF_CENTR2_ERR": psf_err,
        "MOM_CENTR1": mom1,
        "MOM_CENTR1_ERR": mom_err,
        "MOM_CENTR2": mom2,
        "MOM_CENTR2_ERR": mom_err,
        "POS_CORR1": pos1,
        "POS_CORR2": pos2,
    }
    columns = [
        fits.Column(name=name, format=fmt, unit=unit, disp=disp, array=arrays[name])
        for name, fmt, unit, disp in LIGHTCURVE_COLUMNS
    ]

    tstart = float(start)
    tstop = float(start + n * dt)
    sector_end = sector_start_btjd(sector) + 27.4
    date = mjd_to_datetime(sector_end + BTJD_TO_MJD + 9.0).strftime("%Y-%m-%d")
    checksum_note = f"HDU checksum updated {date}T15:30:20Z"
    obj = f"TIC {tic_id}"
    num_frm = max(1, round(cadence_s / 2.0))
    deadc = 0.792
    telapse = tstop - tstart
    pmtotal = math.hypot(target.pmra, target.pmdec)

    primary = fits.PrimaryHDU()
    ph = primary.header
    for key, value, comment in (
        ("NEXTEND", 2, "number of standard extensions"),
        ("EXTNAME", "PRIMARY", "name of extension"),
        ("EXTVER", 1, "extension version number (not format version)"),
        ("SIMDATA", False, "file is based on simulated data"),
        ("ORIGIN", "NASA/Ames", "institution responsible for creating this file"),
        ("DATE", date, "file creation date."),
        ("TSTART", tstart, "observation start time in BTJD"),
        ("TSTOP", tstop, "observation stop time in BTJD"),
        ("DATE-OBS", _utc_iso(tstart), "TSTART as UTC calendar date"),
        ("DATE-END", _utc_iso(tstop), "TSTOP as UTC calendar date"),
        ("CREATOR", f"{10000 + sector * 97} LightCurveExporterPipelineModule", "pipeline job and program"),
        ("PROCVER", _procver(sector), "SW version"),
        ("FILEVER", "1.0", "file format version"),
        ("TIMVERSN", "OGIP/93-003", "OGIP memo number for file format"),
        ("TELESCOP", "TESS", "telescope"),
        ("INSTRUME", "TESS Photometer", "detector type"),
        ("DATA_REL", sector + 25, "data release version number"),
        ("OBJECT", obj, "string version of target id"),
        ("TICID", tic_id, "unique tess target identifier"),
        ("SECTOR", sector, "Observing sector"),
        ("CAMERA", camera, "Camera number"),
        ("CCD", ccd, "CCD chip number"),
        ("PXTABLE", 100 + sector * 4, "pixel table id"),
        ("RADESYS", "ICRS", "reference frame of celestial coordinates"),
        ("RA_OBJ", target.ra, "[deg] right ascension"),
        ("DEC_OBJ", target.dec, "[deg] declination"),
        ("EQUINOX", 2000.0, "equinox of celestial coordinate system"),
        ("PMRA", round(target.pmra, 5), "[mas/yr] RA proper motion"),
        ("PMDEC", round(target.pmdec, 5), "[mas/yr] Dec proper motion"),
        ("PMTOTAL", round(pmtotal, 5), "[mas/yr] total proper motion"),
        ("TESSMAG", round(target.tessmag, 8), "[mag] TESS magnitude"),
        ("TEFF", None if target.teff is None else round(target.teff, 8), "[K] Effective temperature"),
        ("LOGG", round(target.logg, 8), "[cm/s2] log10 surface gravity"),
        ("MH", round(target.mh, 8), "[log10([M/H])] metallicity"),
        ("RADIUS", round(target.radius, 8), "[solar radii] stellar radius"),
        ("TICVER", "8.2", "TIC version"),
        ("CRMITEN", True, "spacecraft cosmic ray mitigation enabled"),
        ("CRBLKSZ", 10, "[exposures] s/c cosmic ray mitigation block siz"),
        ("CRSPOC", False, "SPOC cosmic ray cleaning enabled"),
    ):
        _put(ph, key, value, comment)

    lc = fits.BinTableHDU.from_columns(columns, name="LIGHTCURVE")
    lh = lc.header
    for key, value, comment in (
        ("INHERIT", True, "inherit the primary header"),
        ("EXTVER", 1, "extension version number (not format version)"),
        ("SIMDATA", False, "file is based on simulated data"),
        ("TELESCOP", "TESS", "telescope"),
        ("INSTRUME", "TESS Photometer", "detector type"),
        ("OBJECT", obj, "string version of target id"),
        ("TICID", tic_id, "unique tess target identifier"),
        ("RADESYS", "ICRS", "reference frame of celestial coordinates"),
        ("RA_OBJ", target.ra, "[deg] right ascension"),
        ("DEC_OBJ", target.dec, "[deg] declination"),
        ("EQUINOX", 2000.0, "equinox of celestial coordinate system"),
        ("EXPOSURE", telapse * deadc, "[d] time on source"),
        ("TIMEREF", "SOLARSYSTEM", "barycentric correction applied to times"),
        ("TASSIGN", "SPACECRAFT", "where time is assigned"),
        ("TIMESYS", "TDB", "time system is Barycentric Dynamical Time (TDB)"),
        ("BJDREFI", 2457000, "integer part of BTJD reference date"),
        ("BJDREFF", 0.0, "fraction of the day in BTJD reference date"),
        ("TIMEUNIT", "d", "time unit for TIME, TSTART and TSTOP"),
        ("TELAPSE", telapse, "[d] TSTOP - TSTART"),
        ("LIVETIME", telapse * deadc, "[d] TELAPSE multiplied by DEADC"),
        ("TSTART", tstart, "observation start time in BTJD"),
        ("TSTOP", tstop, "observation stop time in BTJD"),
        ("DATE-OBS", _utc_iso(tstart), "TSTART as UTC calendar date"),
        ("DATE-END", _utc_iso(tstop), "TSTOP as UTC calendar date"),
        ("DEADC", deadc, "deadtime correction"),
        ("TIMEPIXR", 0.5, "bin time beginning=0 middle=0.5 end=1"),
        ("TIERRELA", 1.16e-05, "[d] relative time error"),
        ("INT_TIME", 1.98, "[s] photon accumulation time per frame"),
        ("READTIME", 0.02, "[s] readout time per frame"),
        ("FRAMETIM", 2.0, "[s] frame time (INT_TIME + READTIME)"),
        ("NUM_FRM", num_frm, "number of frames per time stamp"),
        ("TIMEDEL", dt, "[d] time resolution of data"),
        ("BACKAPP", True, "background is subtracted"),
        ("DEADAPP", True, "deadtime applied"),
        ("VIGNAPP", True, "vignetting or collimator correction applied"),
        ("GAINA", 5.32, "[electrons/count] CCD output A gain"),
        ("READNOIA", 9.95, "[electrons] read noise CCD output A"),
        ("CDPP0_5", _cdpp(rel_sigma, 0.5, cadence_s), "RMS CDPP on 0.5-hr time scales"),
        ("CDPP1_0", _cdpp(rel_sigma, 1.0, cadence_s), "RMS CDPP on 1.0-hr time scales"),
        ("CDPP2_0", _cdpp(rel_sigma, 2.0, cadence_s), "RMS CDPP on 2.0-hr time scales"),
        ("CROWDSAP", round(crowd, 8), "Ratio of target flux to total flux in op. ap."),
        ("FLFRCSAP", round(float(g.uniform(0.6, 0.9)), 8), "Frac. of target flux w/in the op. aperture"),
        ("PDCVAR", round(float(g.uniform(0.5, 3.0)), 8), "Target variability"),
        ("PDCMETHD", "msMAP", "PDC algorithm used for target"),
        ("NUMBAND", 3, "Number of scale bands"),
        ("PDC_TOT", round(float(g.uniform(0.9, 1.0)), 8), "PDC total goodness metric for target"),
        ("PDC_VAR", None, "PDC variability goodness metric for target"),
    ):
        _put(lh, key, value, comment)

    aperture = np.full((11, 11), 65, dtype=np.int32)
    yy, xx = np.mgrid[0:11, 0:11]
    r2 = (xx - 5.0) ** 2 + (yy - 5.0) ** 2
    aperture[(r2 > 9.0) & (g.random((11, 11)) < 0.5)] = 69  # background pixels
    aperture[r2 <= 2.5] = 75  # optimal aperture
    ap = fits.ImageHDU(data=aperture, name="APERTURE")
    ah = ap.header
    for key, value, comment in (
        ("INHERIT", True, "inherit the primary header"),
        ("EXTVER", 1, "extension version number (not format version)"),
        ("TELESCOP", "TESS", "telescope"),
        ("INSTRUME", "TESS Photometer", "detector type"),
        ("OBJECT", obj, "string version of target id"),
        ("TICID", tic_id, "unique tess target identifier"),
        ("RADESYS", "ICRS", "reference frame of celestial coordinates"),
        ("RA_OBJ", target.ra, "[deg] right ascension"),
        ("DEC_OBJ", target.dec, "[deg] declination"),
        ("WCSAXES", 2, "number of WCS axes"),
        ("CTYPE1", "RA---TAN", "right ascension coordinate type"),
        ("CTYPE2", "DEC--TAN", "declination coordinate type"),
        ("CRPIX1", 6.0, "[pixel] reference pixel along image axis 1"),
        ("CRPIX2", 6.0, "[pixel] reference pixel along image axis 2"),
        ("CRVAL1", target.ra, "[deg] right ascension at reference pixel"),
        ("CRVAL2", target.dec, "[deg] declination at reference pixel"),
        ("CUNIT1", "deg", "physical unit in column dimension"),
        ("CUNIT2", "deg", "physical unit in row dimension"),
        ("CDELT1", -0.00562915333480079, "[deg] pixel scale in RA dimension"),
        ("CDELT2", 0.00562915333480079, "[deg] pixel scale in Dec dimension"),
        ("NPIXSAP", int((aperture == 75).sum()), "Number of pixels in optimal aperture"),
        ("NPIXMISS", 0, "Number of op. aperture pixels not collected"),
    ):
        _put(ah, key, value, comment)

    hdus = fits.HDUList([primary, lc, ap])
    for hdu in hdus:
        hdu.add_checksum(when=checksum_note)
    buf = io.BytesIO()
    hdus.writeto(buf, checksum=False)
    return buf.getvalue()
