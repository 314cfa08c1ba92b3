"""Model ids or folders -> local folders, never downloading; one wording for "how to get it"."""

from __future__ import annotations

import os

from spatialctl.errors import SpatialctlError, UsageError


def fetch_hint(name: str, option: str | None = None) -> str:
    where = f"pass a local folder with {option}" if option else "pass a local folder"
    return f"fetch it with `huggingface-cli download {name}` or {where}"


def resolve_model_dir(name: str, default: str | None = None, *, option: str | None = None, what: str = "model",
                      marker: str = "config.json") -> str:
    """A local folder for ``name``: a folder holding ``marker`` (config.json; diffusers: model_index.json), or a
    hub id already in the Hugging Face cache.

    Never downloads (multi-GB weights fetched implicitly on every rank of a launch is not what anyone wants) and
    never retries: the cache lookup is local files only, so a missing model fails at once. With ``option`` (the
    flag that names the model) the failure is a UsageError (exit 2) naming that flag.
    """
    error = UsageError if option else SpatialctlError
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, marker)):
            raise error(f"{name}: no {marker}; not a Hugging Face {what} folder")
        return name
    if os.path.exists(name) or name.startswith((".", "/")) or name.count("/") != 1:
        raise error(f"{name}: no such {what} folder; {fetch_hint(default or name, option)}")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception as e:  # LocalEntryNotFoundError, RepositoryNotFoundError
        raise error(f"{what} {name} is not available locally ({type(e).__name__}); {fetch_hint(name, option)}") from e
