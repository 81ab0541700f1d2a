"""Download NCBI gene knowledge (gene_info + RefSeq summaries) for offline use."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .._errors import KbfmInputError, KbfmUnavailableError
from .._settings import settings

GENE_INFO_PATHS = {
    "human": "gene/DATA/GENE_INFO/Mammalia/Homo_sapiens.gene_info.gz",
    "mouse": "gene/DATA/GENE_INFO/Mammalia/Mus_musculus.gene_info.gz",
}


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        # The URL never carries the API key (it is sent as a parameter we strip below).
        shown = url.split("&api_key=")[0]
        msg = f"Could not download {shown}: {getattr(err, 'reason', err)}"
        raise KbfmUnavailableError(msg) from None


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download_ncbi(
    species: str = "human",
    dest: str | os.PathLike | None = None,
    *,
    base_url: str = "https://ftp.ncbi.nlm.nih.gov",
    eutils_url: str = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils",
    batch: int = 400,
    timeout: float = 120.0,
) -> Path:
    """Download NCBI ``gene_info`` and RefSeq summaries of protein-coding genes.

    Writes ``gene_info.gz`` and ``summaries.tsv`` (``GeneID``, ``summary``) atomically to
    ``dest`` (default ``settings.cache_dir/knowledge/ncbi/<species>``), where
    ``load_gene_knowledge("ncbi")`` finds them. An ``NCBI_API_KEY`` environment variable
    raises E-utilities' rate limit; it is read from the environment only and never
    logged or written.

    Parameters
    ----------
    species
        ``"human"`` or ``"mouse"``.
    dest
        Target folder.
    base_url, eutils_url
        NCBI FTP-over-HTTPS and E-utilities roots (changeable for mirrors and tests).
    batch
        Gene ids per ``esummary`` request.
    timeout
        Seconds per request.

    Returns
    -------
    The folder holding the files.
    """
    from tqdm.auto import tqdm

    if species not in GENE_INFO_PATHS:
        msg = f"species must be one of {sorted(GENE_INFO_PATHS)}, got {species!r}."
        raise KbfmInputError(msg)
    local = base_url.startswith(("http://127.", "http://localhost"))
    if settings.offline and not local:
        msg = "kbfm is in offline mode (KBFM_OFFLINE / HF_HUB_OFFLINE); not downloading."
        raise KbfmUnavailableError(msg)
    folder = Path(dest) if dest else settings.cache_dir / "knowledge" / "ncbi" / species
    folder.mkdir(parents=True, exist_ok=True)
    raw = _fetch(f"{base_url.rstrip('/')}/{GENE_INFO_PATHS[species]}", timeout)
    lines = gzip.decompress(raw).decode().splitlines()
    header = lines[0].lstrip("#").split("\t")
    col_id, col_type = header.index("GeneID"), header.index("type_of_gene")
    ids = [
        ln.split("\t")[col_id] for ln in lines[1:] if ln.split("\t")[col_type] == "protein-coding"
    ]
    key = os.environ.get("NCBI_API_KEY")
    rows = ["GeneID\tsummary"]
    starts = range(0, len(ids), batch)
    for start in tqdm(starts, desc="NCBI summaries", disable=not settings.progress):
        query = {"db": "gene", "retmode": "json", "id": ",".join(ids[start : start + batch])}
        url = f"{eutils_url.rstrip('/')}/esummary.fcgi?{urllib.parse.urlencode(query)}"
        if key:
            url += f"&api_key={urllib.parse.quote(key)}"
        result = json.loads(_fetch(url, timeout)).get("result", {})
        for gid in result.get("uids", []):
            summary = " ".join(str(result.get(gid, {}).get("summary", "")).split())
            if summary:
                rows.append(f"{gid}\t{summary}")
        if not key and not local:
            time.sleep(0.34)  # NCBI allows 3 requests/s without a key
    _atomic_write(folder / "gene_info.gz", raw)
    _atomic_write(folder / "summaries.tsv", ("\n".join(rows) + "\n").encode())
    return folder
