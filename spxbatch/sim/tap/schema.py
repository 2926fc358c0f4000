"""The service's tables, with IRSA's names: `spherex.plane`, `artifact`, `observation`, `obscore`.

Each table is built from a header index (`spxbatch.plan.index.index_directory` of the IBE root), one row
per image file (one per observation in `observation`), in the order of the images' start times. Geometry
columns hold pgSphere text (`plane.poly`, `plane.pt`) or STC-S (`obscore.s_region`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spxbatch.level2.constants import EXPOSURE_S, PIXEL_SCALE_ARCSEC
from spxbatch.level2.naming import IBE_ROOT, IRSA_BASE_URL, make_did
from spxbatch.sim.tap.notation import point_text, polygon_text, stcs_polygon

#: Units of result columns by name (VOTable FIELD unit).
COLUMN_UNITS = {
    "time_bounds_lower": "d",
    "time_bounds_upper": "d",
    "t_min": "d",
    "t_max": "d",
    "energy_bounds_lower": "m",
    "energy_bounds_upper": "m",
    "em_min": "m",
    "em_max": "m",
    "s_ra": "deg",
    "s_dec": "deg",
    "poly": "deg",
    "pt": "deg",
    "s_pixel_scale": "arcsec",
    "t_exptime": "s",
    "size": "byte",
    "contentlength": "byte",
    "access_estsize": "kbyte",
}


@dataclass(frozen=True)
class Images:
    """The index in table order and what several tables derive from it (ids, DIDs, URIs, corners)."""

    df: pd.DataFrame
    planeid: np.ndarray
    obs_keys: list[str]
    obsid_of: dict[str, int]
    did: list[str]
    uri: list[str]
    ra_corners: np.ndarray
    dec_corners: np.ndarray

    @classmethod
    def from_index(cls, index: pd.DataFrame) -> Images:
        df = index.sort_values(["time_bounds_lower", "obs_id", "detector", "relpath"]).reset_index(drop=True)
        obs_keys = list(dict.fromkeys(df["obs_id"]))
        return cls(
            df=df,
            planeid=np.arange(1, len(df) + 1, dtype=np.int64),
            obs_keys=obs_keys,
            obsid_of={o: i + 1 for i, o in enumerate(obs_keys)},
            did=[make_did(o, int(d), c) for o, d, c in zip(df["obs_id"], df["detector"], df["collection"],
                                                            strict=True)],
            uri=[f"{IBE_ROOT}/{p}" for p in df["relpath"]],
            ra_corners=df[[f"ra{i}" for i in range(1, 5)]].to_numpy(float),
            dec_corners=df[[f"dec{i}" for i in range(1, 5)]].to_numpy(float),
        )

    @property
    def size_bytes(self) -> np.ndarray:
        return self.df["size_bytes"].to_numpy(np.int64)


def plane_table(im: Images) -> pd.DataFrame:
    """CAOM `plane`: one row per image file, its time and energy bounds, footprint and version."""
    df = im.df
    return pd.DataFrame(
        {
            "planeid": im.planeid,
            "obsid": [im.obsid_of[o] for o in df["obs_id"]],
            "obs_publisher_did": im.did,
            "time_bounds_lower": df["time_bounds_lower"].to_numpy(float),
            "time_bounds_upper": df["time_bounds_upper"].to_numpy(float),
            "energy_bandpassname": df["band"],
            "energy_bounds_lower": df["energy_bounds_lower"].to_numpy(float),
            "energy_bounds_upper": df["energy_bounds_upper"].to_numpy(float),
            "poly": [polygon_text(r, d) for r, d in zip(im.ra_corners, im.dec_corners, strict=True)],
            "pt": [point_text(float(r), float(d)) for r, d in zip(df["ra"], df["dec"], strict=True)],
            "dataproducttype": "image",
            "calibrationlevel": 2,
            "provenance_version": df["pipeline_version"],
            "quality_flag": 0,
        }
    )


def artifact_table(im: Images) -> pd.DataFrame:
    """CAOM `artifact`: the file of each plane (its URI below the IRSA root and its size)."""
    return pd.DataFrame(
        {
            "artifactid": im.planeid,
            "planeid": im.planeid,
            "uri": im.uri,
            "producttype": "science",
            "contenttype": "image/fits",
            "contentlength": im.size_bytes,
            "size": im.size_bytes,
        }
    )


def observation_table(im: Images) -> pd.DataFrame:
    """CAOM `observation`: one row per exposure, with its collection."""
    df = im.df
    return pd.DataFrame(
        {
            "obsid": [im.obsid_of[o] for o in im.obs_keys],
            "observationid": im.obs_keys,
            "collection": [df.loc[df["obs_id"] == o, "collection"].iloc[0] for o in im.obs_keys],
        }
    )


def obscore_table(im: Images, base_url: str) -> pd.DataFrame:
    """ObsCore: one row per image file; `access_url` is the direct file URL (the simulator has no DataLink)."""
    df = im.df
    return pd.DataFrame(
        {
            "obs_id": df["obs_id"],
            "obs_publisher_did": im.did,
            "obs_collection": df["collection"],
            "dataproduct_type": "image",
            "calib_level": 2,
            "s_region": [stcs_polygon(r, d) for r, d in zip(im.ra_corners, im.dec_corners, strict=True)],
            "s_ra": df["ra"].to_numpy(float),
            "s_dec": df["dec"].to_numpy(float),
            "s_xel1": df["nx"].to_numpy(np.int64),
            "s_xel2": df["ny"].to_numpy(np.int64),
            "s_pixel_scale": PIXEL_SCALE_ARCSEC,
            "t_min": df["time_bounds_lower"].to_numpy(float),
            "t_max": df["time_bounds_upper"].to_numpy(float),
            "t_exptime": EXPOSURE_S,
            "em_min": df["energy_bounds_lower"].to_numpy(float),
            "em_max": df["energy_bounds_upper"].to_numpy(float),
            "energy_bandpassname": df["band"],
            "access_url": [f"{base_url.rstrip('/')}/{u}" for u in im.uri],
            "access_format": "image/fits",
            "access_estsize": (im.size_bytes + 1023) // 1024,
        }
    )


def build_tables(index: pd.DataFrame, base_url: str = IRSA_BASE_URL) -> dict[str, pd.DataFrame]:
    """`plane`, `artifact`, `observation` and `obscore` (IRSA column names) from a header index.

    `index` is `spxbatch.plan.index.index_directory(root)` with root = the IBE root
    (`.../ibe/data/spherex`); `base_url` makes obscore's `access_url`.
    """
    im = Images.from_index(index)
    return {
        "plane": plane_table(im),
        "artifact": artifact_table(im),
        "observation": observation_table(im),
        "obscore": obscore_table(im, base_url),
    }
