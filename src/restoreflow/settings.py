"""One typed settings object, read from the environment (prefix ``RESTOREFLOW_``).

Credentials are read from the standard AWS variables (or an AWS profile) and held as
``SecretStr``: they never appear in ``repr``, logs, manifests or reports. Use
:meth:`Settings.public` for anything that is written down.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_FIELDS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RESTOREFLOW_", extra="ignore", frozen=True)

    store: str = Field("restoreflow-store", description="local path or s3://bucket/prefix")
    tile_size: int = Field(256, ge=16, le=8192, description="Tile edge T (one tile per chunk)")
    max_pixels: int = Field(
        400_000_000, ge=1, description="Images with more pixels are rejected (decompression bombs)"
    )
    min_side: int = Field(8, ge=1, description="Images with a side shorter than this are rejected")
    max_band_bytes: int = Field(
        256 * 2**20, ge=1,
        description="Images whose band of one tile row (tile_size rows, or the file's own "
                    "strip or tile row when taller) decodes to more bytes are rejected",
    )
    stream_min_bytes: int = Field(
        16 * 2**20, ge=0,
        description="PNG, TIFF and FITS images that decode to more bytes than this are "
                    "ingested one band of tile rows at a time",
    )

    s3_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("RESTOREFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
    )
    s3_region: str | None = Field(
        None, validation_alias=AliasChoices("RESTOREFLOW_S3_REGION", "AWS_DEFAULT_REGION")
    )
    aws_profile: str | None = Field(
        None, validation_alias=AliasChoices("RESTOREFLOW_AWS_PROFILE", "AWS_PROFILE")
    )
    aws_access_key_id: SecretStr | None = Field(None, validation_alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(
        None, validation_alias="AWS_SECRET_ACCESS_KEY"
    )
    aws_session_token: SecretStr | None = Field(None, validation_alias="AWS_SESSION_TOKEN")

    device: str = Field("cpu", description="torch device for model work: cpu, cuda:N, mps, auto")
    dask_address: str | None = Field(None, description="tcp://host:port of a Dask scheduler")
    dask_workers: int = Field(
        default_factory=lambda: max(1, min(os.cpu_count() or 1, 4)), ge=1,
        description="workers of the embedded local cluster (one thread each)",
    )
    gpu_resource: str = Field("GPU", description="Dask worker resource that model tasks need")
    lock_timeout: float = Field(
        3600.0, ge=0,
        description="seconds a run waits while another run holds the store's writer lock",
    )
    lock_lease: float = Field(
        120.0, gt=0,
        description="S3 stores: seconds a writer lock stays valid unless its holder renews "
                    "it (every quarter lease); a crashed driver on another host blocks "
                    "others for this long, not for lock_timeout",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    prior: str | None = Field(None, description="prior: ffdnet, unet, hybrid, a weight file, a "
                              "diffusers model dir or hub id; None = ffdnet")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper() if isinstance(v, str) else v

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    def storage_options(self) -> dict:
        """fsspec/s3fs options for s3:// URIs (contains secrets: never log this)."""
        opts: dict = {}
        if self.aws_profile:
            opts["profile"] = self.aws_profile
        if self.aws_access_key_id and self.aws_secret_access_key:
            opts["key"] = self.aws_access_key_id.get_secret_value()
            opts["secret"] = self.aws_secret_access_key.get_secret_value()
        if self.aws_session_token:
            opts["token"] = self.aws_session_token.get_secret_value()
        client = {}
        if self.s3_endpoint_url:
            client["endpoint_url"] = self.s3_endpoint_url
        if self.s3_region:
            client["region_name"] = self.s3_region
        if client:
            opts["client_kwargs"] = client
        return opts

    def public(self) -> dict:
        """Settings safe to write into manifests and reports (no credentials)."""
        return self.model_dump(mode="json", exclude=set(SECRET_FIELDS))


def resolve_device(device: str) -> str:
    """``auto`` -> the best device of THIS process's machine (cuda, mps, else cpu); other
    names unchanged. Workers call it themselves: a CPU-only driver must not decide for
    GPU workers."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
