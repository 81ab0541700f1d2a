"""Download NCBI gene knowledge (``gene_info`` + RefSeq gene summaries) for offline use.

Two steps: the species' ``gene_info.gz`` from the NCBI FTP site (over HTTPS), then the
summaries of its protein-coding genes from E-utilities ``esummary``, in batches. The
files land where ``load_gene_knowledge("ncbi")`` reads them. Only ``urllib`` is used.
"""

from __future__ import annotations

import datetime
import gzip
import io
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .._atomic import atomic_write_bytes
from .._errors import KbfmInputError, KbfmUnavailableError
from .._settings import settings

logger = logging.getLogger(__name__)

GENE_INFO_PATHS = {
    "human": "gene/DATA/GENE_INFO/Mammalia/Homo_sapiens.gene_info.gz",
    "mouse": "gene/DATA/GENE_INFO/Mammalia/Mus_musculus.gene_info.gz",
}
#: E-utilities allow 3 requests/s without an API key, 10 with one.
_PAUSE_WITHOUT_KEY_S = 0.34
_TOOL = "kbfm"


def _fetch(url: str, *, shown: str, timeout: float) -> bytes:
    """GET ``url``; errors name ``shown``, a copy of the URL without secrets."""
    request = urllib.request.Request(url, headers={"User-Agent": _TOOL})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as err:
        msg = f"Could not download {shown}: HTTP {err.code} {err.reason}."
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        msg = f"Could not download {shown}: {getattr(err, 'reason', err)}."
    msg += " Check the connection (or set base_url / eutils_url to a reachable mirror)."
    raise KbfmUnavailableError(msg)


def _protein_coding_ids(gene_info_gz: bytes, source: str) -> list[str]:
    with gzip.open(io.BytesIO(gene_info_gz), "rt") as fh:
        header = fh.readline().lstrip("#").rstrip("\n").split("\t")
        if "GeneID" not in header or "type_of_gene" not in header:
            msg = f"{source} is not an NCBI gene_info table (no GeneID / type_of_gene columns)."
            raise KbfmUnavailableError(msg)
        col_id, col_type = header.index("GeneID"), header.index("type_of_gene")
        ids = []
        for line in fh:
            fields = line.rstrip("\n").split("\t")
            if len(fields) > col_type and fields[col_type] == "protein-coding":
                ids.append(fields[col_id])
    return ids


def _summaries(result: dict, shown: str) -> list[tuple[str, str]]:
    if "error" in result and "result" not in result:
        msg = f"E-utilities answered an error for {shown}: {result['error']}"
        raise KbfmUnavailableError(msg)
    block = result.get("result", {})
    rows = []
    for gene_id in block.get("uids", []):
        summary = " ".join(str(block.get(gene_id, {}).get("summary", "")).split())
        if summary:
            rows.append((str(gene_id), summary))
    return rows


def download_ncbi(
    species: str = "human",
    dest: str | os.PathLike | None = None,
    *,
    base_url: str = "https://ftp.ncbi.nlm.nih.gov",
    eutils_url: str = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils",
    batch: int = 400,
    email: str | None = None,
    timeout: float = 120.0,
) -> Path:
    """Download NCBI ``gene_info`` and the gene summaries of protein-coding genes.

    Writes ``gene_info.gz``, ``summaries.tsv`` (``GeneID``, ``summary``) and
    ``download.json`` (date, URLs, counts), each atomically, to ``dest``, where
    ``load_gene_knowledge("ncbi")`` finds them. Requests are paced at 3 per second
    unless an ``NCBI_API_KEY`` environment variable is set; the key is read from the
    environment only, and never logged, written or shown in errors.

    Parameters
    ----------
    species
        ``"human"`` or ``"mouse"``.
    dest
        Target folder (default ``settings.cache_dir/knowledge/ncbi/<species>``).
    base_url
        Root of the NCBI FTP site over HTTPS (or a mirror).
    eutils_url
        Root of E-utilities (or a mirror).
    batch
        Gene ids per ``esummary`` request.
    email
        Contact address passed to E-utilities, as NCBI asks of scripted clients.
    timeout
        Seconds allowed per request.

    Returns
    -------
    The folder holding the files.

    Raises
    ------
    KbfmUnavailableError
        When kbfm is offline (``settings.offline``) or a URL cannot be fetched.

    Examples
    --------
    >>> folder = download_ncbi("human")  # doctest: +SKIP
    >>> load_gene_knowledge("ncbi").text("CD4")[:40]  # doctest: +SKIP
    'CD4: CD4 molecule. This gene encodes the'
    """
    from tqdm.auto import tqdm

    if species not in GENE_INFO_PATHS:
        msg = f"species must be one of {sorted(GENE_INFO_PATHS)}, got {species!r}."
        raise KbfmInputError(msg)
    if batch < 1:
        msg = f"batch must be a positive number of gene ids per request, got {batch}."
        raise KbfmInputError(msg)
    if settings.offline:
        msg = (
            "kbfm is offline (settings.offline, from KBFM_OFFLINE / HF_HUB_OFFLINE); "
            "not downloading NCBI gene knowledge. Unset it to download."
        )
        raise KbfmUnavailableError(msg)
    folder = Path(dest) if dest is not None else settings.cache_dir / "knowledge" / "ncbi" / species
    folder.mkdir(parents=True, exist_ok=True)

    info_url = f"{base_url.rstrip('/')}/{GENE_INFO_PATHS[species]}"
    logger.info("downloading %s", info_url)
    gene_info = _fetch(info_url, shown=info_url, timeout=timeout)
    ids = _protein_coding_ids(gene_info, info_url)

    key = os.environ.get("NCBI_API_KEY")
    endpoint = f"{eutils_url.rstrip('/')}/esummary.fcgi"
    rows: list[tuple[str, str]] = []
    starts = range(0, len(ids), batch)
    for n, start in enumerate(tqdm(starts, desc="NCBI summaries", disable=not settings.progress)):
        if n and not key:
            time.sleep(_PAUSE_WITHOUT_KEY_S)
        query = {"db": "gene", "retmode": "json", "tool": _TOOL}
        query["id"] = ",".join(ids[start : start + batch])
        if email:
            query["email"] = email
        shown = f"{endpoint}?{urllib.parse.urlencode({**query, 'id': f'<{batch} ids>'})}"
        if key:
            query["api_key"] = key
        raw = _fetch(f"{endpoint}?{urllib.parse.urlencode(query)}", shown=shown, timeout=timeout)
        try:
            answer = json.loads(raw)
        except json.JSONDecodeError as err:
            msg = f"E-utilities sent something that is not JSON for {shown}: {err}"
            raise KbfmUnavailableError(msg) from None
        rows += _summaries(answer, shown)

    table = "GeneID\tsummary\n" + "".join(f"{gid}\t{text}\n" for gid, text in rows)
    meta = {
        "date": datetime.date.today().isoformat(),
        "species": species,
        "gene_info_url": info_url,
        "eutils_url": endpoint,
        "n_protein_coding": len(ids),
        "n_summaries": len(rows),
    }
    atomic_write_bytes(folder / "gene_info.gz", gene_info)
    atomic_write_bytes(folder / "summaries.tsv", table.encode())
    atomic_write_bytes(folder / "download.json", json.dumps(meta, indent=2).encode())
    logger.info("NCBI gene knowledge: %d summaries for %d genes in %s", len(rows), len(ids), folder)
    return folder
